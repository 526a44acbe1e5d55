"""One training step of the van de Ven protocol's learners on one thread, and what bounds it.

For each method: milliseconds per ``observe`` in task 2 (one boundary passed: ER holds a store,
EWC one penalty, SI its importances, DGR a frozen generator), best of ``--repeats`` blocks of
``--steps`` steps, on split-MNIST class-IL batches of 128 with the 2×400 MLP, with Adam's
per-tensor and multi-tensor update in alternating blocks (a ratio the machine's load affects
little). Beside it, the
floor the arithmetic sets: a plain forward and backward of the MLP on 128 items, and the Adam
update per-tensor (torch's default on CPU) against multi-tensor (``foreach``, what
``strategies.adam`` builds), with whether the two give the same weights bit for bit.

Run: ``PYTHONPATH=src python benchmarks/replay_vandeven_step.py`` (``--quick`` for a smoke run);
point ``PYTHONPATH`` at another checkout's ``src`` to time its learners with the same script.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from engram.data.location import data_root
from engram.data.streams import make_stream
from engram.replay.experiments.continual_train import Heads, mlp
from engram.replay.experiments.vandeven_train import ProtocolConfig, build

METHODS = ("none", "ewc", "si", "er", "dgr", "sleep-replay")


def best_block_ms(step, steps: int, repeats: int) -> float:
    """Least mean milliseconds per call over ``repeats`` blocks of ``steps`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(steps):
            step()
        best = min(best, (time.process_time() - start) / steps)
    return 1000 * best


def _use_foreach(learner, foreach: bool) -> None:
    """Switch every Adam of ``learner`` between the per-tensor and multi-tensor update (their
    state is the same, so the switch changes only how the next step computes)."""
    for name in ("optimizer", "generator_optimizer"):
        opt = getattr(learner, name, None)
        for group in opt.param_groups if opt is not None else ():
            group["foreach"] = foreach


def method_step_ms(stream, method: str, steps: int, repeats: int) -> tuple[float, float]:
    """ms per observe of ``method`` in task 2 (after 20 steps of task 1 and its boundary), with
    Adam per-tensor and multi-tensor in alternating blocks of one run."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = ProtocolConfig(method=method, iters=50, fisher_samples=200, sleep_steps=30)
    heads = Heads(stream, torch.device("cpu"))
    learner = build(stream, cfg, heads, 0)
    for task in stream.tasks[:2]:
        heads.see(task.index)

        def sample(n: int, task=task) -> tuple[torch.Tensor, torch.Tensor]:
            return task.train_batch(torch.randint(task.n_train, (n,), generator=gen))

        learner.before_experience(task.index, sample)
        where = torch.full((cfg.batch,), task.index)

        def step(sample=sample, where=where) -> None:
            learner.observe(*sample(cfg.batch), where)

        if task.index == 0:
            for _ in range(20):
                step()
            learner.after_experience()
    best = {False: float("inf"), True: float("inf")}
    for _ in range(repeats):
        for foreach in (False, True):
            _use_foreach(learner, foreach)
            best[foreach] = min(best[foreach], best_block_ms(step, steps, 1))
    return best[False], best[True]


def adam_ms(foreach: bool, steps: int, repeats: int) -> tuple[float, torch.Tensor]:
    """ms per Adam step on the MLP's gradients, and the weights after ``steps`` steps."""
    torch.manual_seed(0)
    model = mlp(784, 400, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=foreach)
    x, y = torch.rand(128, 784), torch.randint(10, (128,))
    F.cross_entropy(model(x), y).backward()
    for _ in range(steps):
        opt.step()
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    return best_block_ms(opt.step, steps, repeats), weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    steps, repeats = (3, 1) if args.quick else (args.steps, args.repeats)
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.2f}; engram from "
          f"{os.path.dirname(os.path.dirname(build.__code__.co_filename))}")
    model = mlp(784, 400, 10)
    x, y = torch.rand(128, 784), torch.randint(10, (128,))

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    # Multiply-adds of one item: forward, weight gradients, input gradients above layer 1.
    macs = 3 * (784 * 400 + 400 * 400 + 400 * 10) - 784 * 400
    ms = best_block_ms(fwd_bwd, steps, repeats)
    print(f"MLP 784-400-400-10 forward+backward, 128 items: {ms:.2f} ms "
          f"({2 * macs * 128 / ms / 1e6:.1f} GFLOP/s)")
    single, w_single = adam_ms(False, steps, repeats)
    multi, w_multi = adam_ms(True, steps, repeats)
    print(f"Adam step: per-tensor {single:.2f} ms, multi-tensor {multi:.2f} ms "
          f"(×{single / multi:.2f}); same weights bit for bit: {torch.equal(w_single, w_multi)}")
    stream = make_stream("split-mnist", "class", str(data_root() / "mnist" / "mnist.npz"))
    print("ms per step in task 2 (Adam per-tensor / multi-tensor, alternating blocks):")
    for method in METHODS if not args.quick else METHODS[:2]:
        single, multi = method_step_ms(stream, method, steps, repeats)
        print(f"{method:13s} {single:6.2f} / {multi:6.2f} ms (×{single / multi:.2f})", flush=True)


if __name__ == "__main__":
    main()
