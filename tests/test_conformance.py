"""Every in-process memory class through the same checks, in the spirit of scikit-learn's
``check_estimator``: bad input is refused by name, a saved memory loads back exactly, the
``device`` argument is honoured (CUDA where there is one), and a seed fixes every answer.

Each class enters as a ``Case``: how to build it on a device, how to store a seeded workload
and recall from it, what it refuses, and (where it saves) how it saves and loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engram import codes, hebb
from engram.ca3 import AttractorMemory, CA1Gate, ModernHopfield
from engram.replay import EpisodicBuffer
from engram.streaming.memories import KNNMemory, MatrixMemory, ParallelInputs, ProjectionWrites

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@dataclass(frozen=True)
class Case:
    """One memory class under test.

    ``make(device, seed)`` builds an empty memory; ``run(memory, seed)`` stores a workload
    drawn from ``seed`` and returns what recall gives (arrays or tensors); ``bad`` are calls
    that must raise the given error naming the given argument; ``save(memory, path)`` and
    ``load(path, device)`` where the class persists.
    """

    name: str
    make: Callable[[str, int], Any]
    run: Callable[[Any, int], Any]
    bad: list[tuple[Callable[[], Any], type[Exception], str]] = field(default_factory=list)
    save: Callable[[Any, Path], Any] | None = None
    load: Callable[[Path, str], Any] | None = None
    recall_after_load: Callable[[Any, int], Any] | None = None


# ---------------------------------------------------------------- the classes


def _attractor(code: str, rule: str, update: str) -> Case:
    n = 64

    def patterns(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if code == "sparse":
            return codes.random_sparse(6, n, 0.1, rng)
        return codes.random_bipolar(5, n, rng)

    def cues(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed + 1)
        stored = patterns(seed)
        return codes.partial_cue(stored, 0.6, rng) if code == "sparse" else codes.flip_bits(stored, 6, rng)

    def recall(memory: AttractorMemory, seed: int) -> np.ndarray:
        return memory.recall_batch(cues(seed)).states

    def recall_fixed(memory: AttractorMemory, seed: int) -> tuple[Any, ...]:
        """Weights, patterns and a recall whose asynchronous visiting orders are fixed (the
        generator's position is not part of a saved memory)."""
        batch = cues(seed)
        g = torch.Generator().manual_seed(seed)
        orders = torch.rand(memory.max_iterations, len(batch), n, generator=g).argsort(-1)
        states = memory.recall_batch(batch, orders=orders.to(memory.device)).states
        return memory.weights, memory.patterns, states

    def run(memory: AttractorMemory, seed: int) -> np.ndarray:
        memory.store(patterns(seed))
        return recall(memory, seed)

    def make(device: str, seed: int) -> AttractorMemory:
        return AttractorMemory(n, code=code, sparsity=0.1, rule=rule, update=update, device=device, seed=seed)

    return Case(
        name=f"AttractorMemory[{code},{rule},{update}]",
        make=make,
        run=run,
        bad=[
            (lambda: AttractorMemory(0, code=code), ValueError, "n_units"),
            (lambda: AttractorMemory(n, code=code, update="sometimes"), ValueError, "update"),
            (lambda: AttractorMemory(n, code=code, max_iterations=2.5), TypeError, "max_iterations"),
            (lambda: make("cpu", 0).store(np.ones((2, n + 1))), ValueError, "patterns"),
            (lambda: make("cpu", 0).recall(np.ones(n)), ValueError, "memory: nothing is stored"),
            (lambda: make("cpu", 0).store(patterns(0)).recall(np.full(n, np.nan)), ValueError, "cue"),
        ],
        save=lambda memory, path: memory.save(path),
        load=lambda path, device: AttractorMemory.load(path, device=device),
        recall_after_load=recall_fixed,
    )


ATTRACTORS = [
    _attractor("bipolar", "hebbian", "sync"),
    _attractor("bipolar", "hebbian", "async"),
    _attractor("bipolar", "storkey", "sync"),
    _attractor("bipolar", "pseudoinverse", "sync"),
    _attractor("sparse", "covariance", "sync"),
    _attractor("sparse", "covariance", "async"),
    _attractor("sparse", "pseudoinverse", "sync"),
]


def _modern_run(memory: ModernHopfield, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(10, 16, generator=g)
    memory.store(patterns)
    return memory.recall(patterns[:4] + 0.3 * torch.randn(4, 16, generator=g))


def _modern_load(path: Path, device: str) -> ModernHopfield:
    memory = ModernHopfield(16, beta=4.0, device=device)
    memory.load_state_dict(torch.load(path, map_location=device))
    return memory


def _modern_recall(memory: ModernHopfield, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(10, 16, generator=g)
    return memory.recall(patterns[:4] + 0.3 * torch.randn(4, 16, generator=g))


MODERN = Case(
    name="ModernHopfield",
    make=lambda device, seed: ModernHopfield(16, beta=4.0, device=device),
    run=_modern_run,
    bad=[
        (lambda: ModernHopfield(0), ValueError, "dim"),
        (lambda: ModernHopfield(4, beta="hot"), TypeError, "beta"),
        (lambda: ModernHopfield(4, steps=0), ValueError, "steps"),
        (lambda: ModernHopfield(4).store(torch.ones(2, 5)), ValueError, "patterns"),
        (lambda: ModernHopfield(4).recall(torch.ones(4)), ValueError, "memory: nothing is stored"),
    ],
    save=lambda memory, path: torch.save(memory.state_dict(), path),
    load=_modern_load,
    recall_after_load=_modern_recall,
)


def _gate_run(gate: CA1Gate, seed: int) -> tuple[torch.Tensor, ...]:
    rng = np.random.default_rng(seed)
    patterns = torch.from_numpy(codes.random_bipolar(4, 32, rng)).float()
    states = torch.from_numpy(codes.flip_bits(patterns.numpy(), 4, rng)).float()
    cues = torch.from_numpy(codes.flip_bits(codes.partial_cue(states.numpy(), 0.5, rng), 3, rng)).float()
    device = gate.device
    verdict = gate.assess(cues.to(device), states.to(device), patterns.to(device), "bipolar")
    return verdict.nearest, verdict.overlap_score, verdict.accepted


class _DeviceGate(CA1Gate):
    """The gate has no state on a device; the check runs its inputs there."""

    def __init__(self, device: str):
        super().__init__(0.5)
        self.device = device


GATE = Case(
    name="CA1Gate",
    make=lambda device, seed: _DeviceGate(device),
    run=_gate_run,
    bad=[
        (lambda: CA1Gate(1.5), ValueError, "threshold"),
        (lambda: CA1Gate("high"), TypeError, "threshold"),
    ],
)


def _matrix_run(memory: hebb.AssociativeMatrix, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    keys, values = torch.randn(6, 12, generator=g), torch.randn(6, 5, generator=g)
    memory.store(keys.to(memory.device), values.to(memory.device), rate=0.5, delta=True)
    return memory.recall(keys.to(memory.device))


ASSOCIATIVE = Case(
    name="hebb.AssociativeMatrix",
    make=lambda device, seed: hebb.AssociativeMatrix(12, 5, device=device),
    run=_matrix_run,
    bad=[
        (lambda: hebb.AssociativeMatrix(0, 5), ValueError, "d_key"),
        (lambda: hebb.AssociativeMatrix(4, (5,)), TypeError, "d_value"),
        (lambda: hebb.AssociativeMatrix(4, 5).store(torch.ones(2, 3), torch.ones(2, 5)), ValueError, "keys"),
        (lambda: hebb.AssociativeMatrix(4, 5).recall(torch.ones(1, 3)), ValueError, "queries"),
    ],
)


class _DeviceBuffer:
    """An EpisodicBuffer whose samples go to a device (its ``device`` is an argument of
    ``sample``); stores and recalls like the others."""

    def __init__(self, device: str, seed: int, buffer: EpisodicBuffer | None = None):
        self.device = device
        self.buffer = buffer if buffer is not None else EpisodicBuffer(20, eviction="priority", seed=seed)


def _buffer_run(memory: _DeviceBuffer, seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(30, 3, generator=g), torch.randint(0, 4, (30,), generator=g)
    memory.buffer.add(x, y, task=1, priority=torch.rand(30, generator=g) + 0.1)
    return _buffer_recall(memory, seed)


def _buffer_recall(memory: _DeviceBuffer, seed: int) -> tuple[torch.Tensor, ...]:
    batch = memory.buffer.sample(8, mode="prioritized", device=memory.device)
    return batch.x, batch.y, batch.indices, batch.weights


BUFFER = Case(
    name="replay.EpisodicBuffer",
    make=lambda device, seed: _DeviceBuffer(device, seed),
    run=_buffer_run,
    bad=[
        (lambda: EpisodicBuffer(0), ValueError, "capacity"),
        (lambda: EpisodicBuffer(5, eviction="fifo"), ValueError, "eviction"),
        (lambda: EpisodicBuffer(5).add(torch.ones(2, 3), torch.ones(3)), ValueError, "y"),
        (lambda: EpisodicBuffer(5).sample(0), ValueError, "n"),
    ],
    save=lambda memory, path: memory.buffer.save(path),
    load=lambda path, device: _DeviceBuffer(device, 0, EpisodicBuffer.load(path)),
    recall_after_load=_buffer_recall,
)


def _parallel_inputs(seed: int, device: str) -> ParallelInputs:
    g = torch.Generator().manual_seed(seed)
    b, h, t, d = 2, 2, 10, 4
    window = 3
    positions = torch.arange(t)
    evicted = positions[None, :] <= positions[:, None] - window  # token j has left query t's window
    tensors = [torch.randn(b, h, t, d, generator=g) for _ in range(4)]
    importance = torch.rand(b, h, t, generator=g)
    q, k, v, assoc = (x.to(device) for x in tensors)
    return ParallelInputs(q, k, v, importance.to(device), assoc, evicted.to(device))


def _read_all(memory: torch.nn.Module, x: ParallelInputs) -> torch.Tensor:
    """The parallel read of every position (``parallel_read`` once the streaming memories
    share one interface; ``parallel`` before)."""
    read = getattr(memory, "parallel_read", None) or memory.parallel
    return read(x)


class _DeviceModule:
    """A streaming memory (an ``nn.Module`` moved with ``.to``) with the device it runs on."""

    def __init__(self, module: torch.nn.Module, device: str):
        self.module, self.device = module.to(device), device


def _streaming(name: str, build: Callable[[], torch.nn.Module], bad: list) -> Case:
    def run(memory: _DeviceModule, seed: int) -> torch.Tensor:
        return _read_all(memory.module, _parallel_inputs(seed, memory.device))

    return Case(name=name, make=lambda device, seed: _DeviceModule(build(), device), run=run, bad=bad)


STREAMING = [
    _streaming("streaming.MatrixMemory", MatrixMemory,
               [(lambda: MatrixMemory("sometimes"), ValueError, "weighting")]),
    _streaming("streaming.MatrixMemory[delta]", lambda: MatrixMemory(delta=True), []),
    _streaming("streaming.KNNMemory", lambda: KNNMemory(top_k=2, capacity=4),
               [(lambda: KNNMemory(top_k=0), ValueError, "top_k"),
                (lambda: KNNMemory(capacity=0), ValueError, "capacity")]),
    _streaming("streaming.KNNMemory[unbounded]", lambda: KNNMemory(top_k=3), []),
]
PROJECTION_BAD = [(lambda: ProjectionWrites(rate=-1.0), ValueError, "rate")]

CASES = [*ATTRACTORS, MODERN, GATE, ASSOCIATIVE, BUFFER, *STREAMING]
SAVING = [case for case in CASES if case.save is not None]
BAD = [(case.name, *bad) for case in CASES for bad in case.bad] + [
    ("streaming.ProjectionWrites", *bad) for bad in PROJECTION_BAD
]


def _as_numpy(out: Any) -> list[np.ndarray]:
    items = out if isinstance(out, tuple) else (out,)
    return [x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in items]


def _devices_of(out: Any) -> set[str]:
    items = out if isinstance(out, tuple) else (out,)
    return {x.device.type for x in items if isinstance(x, torch.Tensor)}


# ---------------------------------------------------------------- the checks


@pytest.mark.parametrize(("name", "call", "error", "argument"), BAD, ids=[f"{b[0]}-{b[3]}" for b in BAD])
def test_bad_input_is_refused_naming_the_argument(name, call, error, argument):
    with pytest.raises(error, match=rf"^{argument}\b"):
        call()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_same_seed_gives_the_same_answers(case):
    first = _as_numpy(case.run(case.make("cpu", 7), 7))
    again = _as_numpy(case.run(case.make("cpu", 7), 7))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_different_workload_gives_different_answers(case):
    """The determinism check is not vacuous: the answers depend on the seeded workload."""
    first = _as_numpy(case.run(case.make("cpu", 7), 7))
    other = _as_numpy(case.run(case.make("cpu", 8), 8))
    assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_device_argument_is_honoured_and_answers_agree_with_the_cpu(case, device):
    out = case.run(case.make(device, 3), 3)
    assert _devices_of(out) <= {device}
    expected = _as_numpy(case.run(case.make("cpu", 3), 3))
    for got, want in zip(_as_numpy(out), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", SAVING, ids=[c.name for c in SAVING])
def test_a_saved_memory_loads_back_exactly(case, tmp_path):
    memory = case.make("cpu", 5)
    case.run(memory, 5)
    path = tmp_path / "memory.bin"
    case.save(memory, path)
    before = _as_numpy(case.recall_after_load(memory, 5))
    loaded = case.load(path, "cpu")
    after = _as_numpy(case.recall_after_load(loaded, 5))
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
