"""Gate calibration: cues from stored episodes vs cues from novel ones (same distribution).

The store calibrates its CA1 gate on itself (``MemoryStore.calibrate``); then fresh partial,
noisy cues are drawn from stored episodes and from episodes of the same clusters that were
never stored. An answer is correct when a stored cue is answered with its own episode; a novel
cue has no correct answer, so accepting it is always wrong. Reported: accept/refuse rates,
a reliability diagram and the expected calibration error (ECE) of the calibrated gate, next
to the uncalibrated prior and to the raw masked cosine used as a confidence.

    .venv/bin/python benchmarks/store_gate_calibration.py [--out runs] [--seed 0] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass, replace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from engram.codes import noisy_partial_cues
from engram.data.episodes import clustered_episodes
from engram.runs import RunFolder, markdown_table, seed_everything
from engram.stats import proportion_ci
from engram.store import GateModel, MemoryStore, RecallConfig, expected_calibration_error


@dataclass(frozen=True)
class Config:
    episodes: int = 5000
    novel: int = 500
    cues: int = 500
    dim: int = 768
    clusters: int = 100
    spread: float = 0.6
    rank: int = 16
    known_range: tuple[float, float] = (0.3, 0.5)
    noise: float = 0.5
    calibration_samples: int = 512
    threshold: float = 0.5
    bins: int = 10
    seed: int = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    cfg = Config(seed=args.seed)
    if args.quick:
        cfg = replace(cfg, episodes=600, novel=100, cues=100, dim=128, clusters=20, calibration_samples=128)
    rng = seed_everything(cfg.seed)
    run = RunFolder.create(args.out, "store_gate_calibration", asdict(cfg), cfg.seed)
    everything, _ = clustered_episodes(cfg.episodes + cfg.novel, cfg.dim, cfg.clusters, cfg.spread,
                                       cfg.rank, rng)
    stored, novel = everything[: cfg.episodes], everything[cfg.episodes :]
    sources = rng.choice(cfg.episodes, cfg.cues, replace=False)
    stored_cues, stored_known = noisy_partial_cues(stored[sources], cfg.known_range, cfg.noise, rng)
    novel_cues, novel_known = noisy_partial_cues(novel[: cfg.cues], cfg.known_range, cfg.noise, rng)
    with tempfile.TemporaryDirectory() as tmp:
        store = MemoryStore(tmp, dim=cfg.dim, durable=False, seed=cfg.seed,
                            config=RecallConfig(threshold=cfg.threshold, min_calibration=10**9))
        ids = store.add_batch(stored, ids=[f"e{i}" for i in range(cfg.episodes)])
        fit = store.calibrate(samples=cfg.calibration_samples, seed=cfg.seed)
        answers = store.recall_batch(np.vstack([stored_cues, novel_cues]), k=1,
                                     known=np.vstack([stored_known, novel_known]))
        # The same answers scored by the prior, to show what calibration buys.
        features = store.gate_features(answers)
        store.close()
    n = cfg.cues
    top = np.array([a.trace["completion_winner"] for a in answers])
    correct = np.concatenate([top[:n] == np.array(ids)[sources], np.zeros(n, dtype=bool)])
    scorers = {
        "calibrated gate": np.array([a.confidence for a in answers]),
        "uncalibrated prior": GateModel.prior().confidence(features),
        "raw masked cosine": np.clip(features[:, 0], 0.0, 1.0),
    }
    rows = []
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    edges = np.linspace(0, 1, cfg.bins + 1)
    for name, conf in scorers.items():
        accepted = conf >= cfg.threshold
        acc_stored = proportion_ci(int(accepted[:n].sum()), n)
        refuse_novel = proportion_ci(int((~accepted[n:]).sum()), n)
        right_when_accepted = correct[accepted].mean() if accepted.any() else float("nan")
        rows.append({
            "confidence": name, "ECE": expected_calibration_error(conf, correct, cfg.bins),
            "accept_stored": acc_stored.estimate,
            "accept_stored_ci": f"[{acc_stored.low:.3f}, {acc_stored.high:.3f}]",
            "refuse_novel": refuse_novel.estimate,
            "refuse_novel_ci": f"[{refuse_novel.low:.3f}, {refuse_novel.high:.3f}]",
            "precision_accepted": float(right_when_accepted),
            "stored_top1": float(correct[:n].mean()),
        })
        which = np.clip(np.digitize(conf, edges[1:-1]), 0, cfg.bins - 1)
        xs, ys = [], []
        for b in range(cfg.bins):
            inside = which == b
            if inside.sum() >= 5:
                xs.append(conf[inside].mean())
                ys.append(correct[inside].mean())
        ax.plot(xs, ys, "o-", label=f"{name} (ECE {rows[-1]['ECE']:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("fraction correct")
    ax.set_title("Reliability: stored and novel partial cues")
    ax.legend(fontsize=8)
    run.save_figure("reliability.png", fig)
    run.write_json("results.json", {"rows": rows, "fit": asdict(fit)})
    run.write_csv("results.csv", rows)
    table = markdown_table(rows)
    run.write_report(f"# Gate calibration\n\n{table}\nself-calibration: {fit}\n\n![](reliability.png)\n")
    print(table)
    print(f"self-calibration on the store: {fit}")
    print(f"run folder: {run.path}")


if __name__ == "__main__":
    main()
