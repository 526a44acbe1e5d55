"""The strategy objects train exactly as the old name-branching loop did, bit for bit.

``continual_golden.json`` holds, for each case below, the accuracy matrix and a SHA-256 of the
trained network's weights as the pre-redesign ``train_stream`` (commit ec1aa70, one torch
thread) produced them on a seeded split-digits stream; the test reruns each case through
today's code and asks for the same bytes.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from engram.data.streams import make_stream
from engram.replay.experiments import continual_train

GOLDEN = Path(__file__).with_name("continual_golden.json")
SMALL = dict(hidden=16, iters=12, batch=16, buffer_size=40, replay_batch=16, sleep_steps=5)

# The method was called "ours" in ec1aa70; the golden cases keep their old names.
RENAMED = {"ours": "sleep-replay", "ours+ewc": "sleep-replay+ewc"}
# name → (scenario, overrides of the small config, old strategy names).
CASES: dict[str, tuple[str, dict]] = {
    "finetune": ("class", {"strategy": "finetune"}),
    "ewc": ("class", {"strategy": "ewc"}),
    "ewc-task": ("task", {"strategy": "ewc"}),
    "replay": ("class", {"strategy": "replay"}),
    "replay-distill": ("class", {"strategy": "replay", "distill": 0.5}),
    "joint": ("class", {"strategy": "joint"}),
    "ours": ("class", {"strategy": "ours"}),
    "ours-task": ("task", {"strategy": "ours"}),
    "ours-domain": ("domain", {"strategy": "ours"}),
    "ours+ewc": ("class", {"strategy": "ours+ewc"}),
    "ours-pair": ("class", {"strategy": "ours", "pair": True}),
    "ours-latent": ("class", {"strategy": "ours", "latent": 1, "storage": "float16"}),
    "ours-distill": ("class", {"strategy": "ours", "distill": 0.5}),
    "ours-every": ("class", {"strategy": "ours", "schedule": "every", "sleep_every": 4}),
    "ours-every-at-boundary": ("class", {"strategy": "ours", "schedule": "every",
                                         "sleep_every": 6}),
    "ours-adaptive": ("class", {"strategy": "ours", "schedule": "adaptive"}),
    "ours-uniform": ("class", {"strategy": "ours", "sampling": "uniform", "recombine": False}),
    "ours-no-reward": ("class", {"strategy": "ours", "signals_off": ("reward",)}),
    "ours-mean-keep": ("class", {"strategy": "ours", "weight_norm": "mean",
                                 "reset_optimizer": False, "sleep_current": 0.25}),
}


def digest(model: torch.nn.Module) -> str:
    """SHA-256 over the model's parameters and buffers, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def fingerprint(case: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Train one case and return its accuracy matrix, costs and weight digest."""
    scenario, overrides = CASES[case]
    built: list[torch.nn.Module] = []
    make = continual_train.mlp

    def recording_mlp(*args, **kwargs):
        built.append(make(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(continual_train, "mlp", recording_mlp)
    overrides = {**overrides, "strategy": RENAMED.get(overrides["strategy"], overrides["strategy"])}
    cfg = continual_train.LearnerConfig(**{**SMALL, **overrides})
    result = continual_train.train_stream(make_stream("split-digits", scenario), cfg, seed=3)
    (model,) = built
    return {
        "accuracy": result.accuracy.tolist(),
        "buffer_bytes": result.buffer_bytes,
        "buffer_items": result.buffer_items,
        "sleeps": result.sleeps,
        "weights": digest(model),
    }


@pytest.mark.parametrize("case", list(CASES))
def test_strategy_objects_reproduce_the_old_loop_bit_for_bit(case, monkeypatch):
    expected = json.loads(GOLDEN.read_text())[case]
    assert fingerprint(case, monkeypatch) == expected
