"""``AttractorMemory``: CA3-style pattern completion with a CA1 gate.

Store patterns with a local learning rule, complete cues by settling toward a stored
attractor within the theta deadline, and let the gate refuse when the evidence is weak.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engram import hebb
from engram.ca3 import dynamics, single
from engram.ca3.gate import CA1Gate
from engram.ca3.monitor import ConvergenceStats
from engram.codes import CODES, active_count, check_sparsity
from engram.io import atomic_write_bytes, content_digest
from engram.params import Instance, Interval, Options, validated

UPDATES = ("sync", "async")
_DEFAULT_RULE = {"bipolar": "hebbian", "sparse": "covariance"}
_RULE_CODES = {
    "hebbian": ("bipolar",),
    "storkey": ("bipolar",),
    "covariance": ("sparse",),
    "pseudoinverse": ("bipolar", "sparse"),
}
_FORMAT = "engram.AttractorMemory"
_NO_FIELD = np.empty(0, dtype=np.float64)
# numba's portable threading layer (workqueue) must not run two parallel kernels at once,
# so batches from different Python threads (e.g. a web server's workers) take turns.
_PARALLEL_KERNEL = threading.Lock()
_FORMAT_VERSION = 1
# "sha256" (of the other metadata and the tensors) is absent from files written before
# checksums; those load unverified.
_METADATA_KEYS = {"format", "version", "config", "sha256"}
# Float32 sums of integers are exact below 2^24: the bound on |C·s| for Hebbian counts C.
_EXACT_FLOAT32 = 2**24


def _freeze(*arrays: np.ndarray) -> None:
    """Make a result's arrays read-only: results are never changed after construction."""
    for array in arrays:
        if isinstance(array, np.ndarray):
            array.flags.writeable = False


@dataclass(frozen=True)
class CompletionResult:
    """One completion: the settled state, how it got there, and the CA1 gate's verdict.

    ``answer`` is the completed pattern when the gate accepts and ``None`` ("insufficient
    evidence") when it refuses; ``state`` is always the raw CA3 state, for diagnosis.
    ``overlap_score`` = max(overlap, 0) · (1 − novelty) is the gate's heuristic score (not a
    calibrated probability); arrays are read-only.
    """

    state: np.ndarray
    converged: bool
    iterations: int
    energy: np.ndarray
    nearest: int
    overlap: float
    overlap_score: float
    novelty: float
    accepted: bool
    cycled: bool = False

    def __post_init__(self) -> None:
        _freeze(self.state, self.energy)

    @property
    def answer(self) -> np.ndarray | None:
        return self.state if self.accepted else None


@dataclass(frozen=True)
class BatchCompletion:
    """Completions of a batch of cues as arrays; ``batch[i]`` gives one ``CompletionResult``.

    ``energy`` is (B, max_iterations) with NaN after each cue's last step; arrays are read-only.
    """

    states: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray
    energy: np.ndarray
    nearest: np.ndarray
    overlap: np.ndarray
    overlap_score: np.ndarray
    novelty: np.ndarray
    accepted: np.ndarray
    cycled: np.ndarray

    def __post_init__(self) -> None:
        _freeze(*(getattr(self, f.name) for f in fields(self)))

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, i: int) -> CompletionResult:
        trace = self.energy[i]
        return CompletionResult(
            state=self.states[i],
            converged=bool(self.converged[i]),
            iterations=int(self.iterations[i]),
            energy=trace[~np.isnan(trace)],
            nearest=int(self.nearest[i]),
            overlap=float(self.overlap[i]),
            overlap_score=float(self.overlap_score[i]),
            novelty=float(self.novelty[i]),
            accepted=bool(self.accepted[i]),
            cycled=bool(self.cycled[i]),
        )


_POSITIVE = Interval(int, 1, None)
# The constructor's declared constraints; the rules that relate two arguments are checked inline.
PARAMETERS = {
    "n_units": [_POSITIVE],
    "code": [Options(CODES)],
    "update": [Options(UPDATES)],
    "k": [_POSITIVE, None],
    "rule": [Options(tuple(_RULE_CODES)), None],
    "max_iterations": [_POSITIVE],
    "threshold": [Interval(float, 0.0, 1.0)],
    "prune": [Interval(float, 0.0, 1.0, closed="left", noun="fraction")],
    "device": [Instance((str, torch.device), "a device name or torch.device")],
    "seed": [Interval(int, None, None)],
}


def _file_digest(metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> str:
    """The checksum a memory file carries: SHA-256 of its metadata (but the checksum) and its
    tensors, each in name order."""
    described = {key: metadata[key] for key in sorted(metadata) if key != "sha256"}
    return content_digest({"metadata": described, "tensors": {k: tensors[k] for k in sorted(tensors)}})


class AttractorMemory:
    """A Hopfield attractor memory over ``n_units`` units.

    Args:
        n_units: network size N.
        code: ``"bipolar"`` (±1 states, sign threshold) or ``"sparse"`` ({0,1} states,
            k-winners-take-all with k = round(sparsity · N)).
        sparsity: coding level a of sparse codes; ignored for bipolar codes.
        k: number of winners, overriding round(sparsity · N).
        rule: ``"hebbian"`` (bipolar), ``"covariance"`` (sparse), ``"storkey"`` (bipolar) or
            ``"pseudoinverse"`` (both); defaults to the classical rule of the code.
        update: ``"sync"`` (all units at once) or ``"async"`` (one unit at a time, random order).
        max_iterations: the theta deadline, in updates (sync) or sweeps (async).
        threshold: the CA1 gate's threshold on its overlap score.
        prune: fraction of the smallest weights dropped after each ``store``; when at most 10%
            remain, dense products use a sparse CSR matrix.
        device: torch device of the batched path (the single-cue path runs on the CPU).
        seed: seed of the asynchronous visiting orders.

    With the Hebbian rule the completion paths work on the integer counts C = XᵀX, not on
    W = C / N: sign dynamics are the same, but every field is exact, so a tie (h = 0) keeps
    the unit (an unknown unit → +1) instead of going the way float rounding of W pushes it.

    ``recall`` / ``recall_batch`` are ``complete`` / ``complete_batch`` under the in-process
    memories' common names. ``weights`` and ``patterns`` are read-only copies: replace the
    weights with ``set_weights``, which re-derives the compiled paths' views.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> memory = AttractorMemory(768, code="sparse", sparsity=0.05)
        >>> patterns = random_sparse(100, 768, 0.05, rng)                 # doctest: +SKIP
        >>> memory.store(patterns)                                        # doctest: +SKIP
        >>> memory.complete(partial_cue(patterns[3], 0.3, rng)[0]).nearest  # doctest: +SKIP
        3
    """

    @validated(PARAMETERS)
    def __init__(
        self,
        n_units: int,
        *,
        code: str = "bipolar",
        sparsity: float = 0.05,
        k: int | None = None,
        rule: str | None = None,
        update: str = "sync",
        max_iterations: int = 7,
        threshold: float = 0.7,
        prune: float = 0.0,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        if n_units < 2:
            raise ValueError(f"n_units: expected at least 2 units, got {n_units}")
        self.n_units = n_units
        self.code = code
        self.update = update
        self.sparsity = check_sparsity(sparsity)
        if self.code == "sparse":
            self.k = active_count(self.n_units, self.sparsity) if k is None else k
            if self.k >= self.n_units:
                raise ValueError(f"k: expected 1 ≤ k < n_units = {self.n_units}, got {self.k}")
        else:
            self.k = self.n_units
        self.rule = _DEFAULT_RULE[self.code] if rule is None else rule
        if self.code not in _RULE_CODES[self.rule]:
            raise ValueError(
                f"rule: {self.rule!r} is for {' or '.join(_RULE_CODES[self.rule])} codes, "
                f"got code={self.code!r}"
            )
        self.max_iterations = max_iterations
        self.gate = CA1Gate(threshold)
        self.prune = prune
        self.device = torch.device(device)
        self.seed = seed
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self._kernel_weights = torch.zeros(self.n_units, self.n_units, device=self.device)
        # the Hebbian kernels work on the exact counts C, W = C / N; other rules on W itself
        self._divisor = self.n_units if self.rule == "hebbian" else 1
        self._patterns = torch.zeros(0, self.n_units, dtype=torch.int8, device=self.device)
        self.stats = ConvergenceStats(self.max_iterations)
        self._refresh()

    # ------------------------------------------------------------------ storing

    @property
    def n_stored(self) -> int:
        return int(self._patterns.shape[0])

    @property
    def alpha(self) -> float:
        """Load α = P / N."""
        return self.n_stored / self.n_units

    @property
    def weights(self) -> torch.Tensor:
        """A copy of the weight matrix W (N, N); for the Hebbian rule computed as C / N from the
        exact integer counts C = XᵀX the completion paths use. Editing it changes nothing."""
        if self._divisor == 1:
            return self._kernel_weights.clone()
        return self._kernel_weights / self._divisor

    @weights.setter
    def weights(self, value: torch.Tensor) -> None:
        raise AttributeError(
            "weights: read-only (the compiled paths keep their own views of it); "
            "call set_weights(matrix) to replace it"
        )

    @property
    def patterns(self) -> torch.Tensor:
        """A copy of the stored patterns (P, N), int8, in the order stored."""
        return self._patterns.clone()

    @patterns.setter
    def patterns(self, value: torch.Tensor) -> None:
        raise AttributeError("patterns: read-only; store(patterns) adds to them")

    def set_weights(self, weights: torch.Tensor | np.ndarray) -> AttractorMemory:
        """Replace W by any finite (N, N) matrix (a damaged or hand-built network) and rebuild
        every derived view; its fields are then float sums, ties decided by rounding."""
        w = torch.as_tensor(weights)
        if w.shape != (self.n_units, self.n_units):
            raise ValueError(
                f"weights: expected shape ({self.n_units}, {self.n_units}), got {tuple(w.shape)}"
            )
        if not w.is_floating_point() or not bool(torch.isfinite(w).all()):
            raise ValueError("weights: expected a finite floating-point matrix")
        self._kernel_weights = w.to(self.device, torch.float32).clone()
        self._divisor = 1
        self._refresh()
        return self

    def store(self, patterns: np.ndarray | torch.Tensor) -> AttractorMemory:
        """Store one pattern (N,) or a batch (P, N), adding to what is already stored."""
        new = self._check_states(patterns, "patterns", allow_unknown=False)
        new_t = torch.from_numpy(new).to(self.device)
        if self.rule == "hebbian":
            counts = hebb.hebbian_counts(new_t)
            self._kernel_weights += counts if self._divisor != 1 else counts / self.n_units
        elif self.rule == "covariance":
            self._kernel_weights += hebb.covariance(new_t, self.sparsity)
        elif self.rule == "storkey":
            self._kernel_weights = hebb.storkey(new_t, self._kernel_weights)
        self._patterns = torch.cat([self._patterns, new_t.to(torch.int8)])
        if self.rule == "pseudoinverse":
            centre = self.sparsity if self.code == "sparse" else 0.0
            self._kernel_weights = hebb.pseudoinverse(self._patterns, centre)
        if self.prune:  # magnitudes rank alike in C and in C / N: the same weights are kept
            self._kernel_weights = hebb.prune(self._kernel_weights, self.prune).to_dense()
        self._refresh()
        return self

    def _refresh(self) -> None:
        """Rebuild the derived views the completion paths use after the weights changed."""
        self._patterns_f = self._patterns.float()
        weights = self._kernel_weights
        kept = float((weights != 0).float().mean()) if self.prune else 1.0
        self._product_weights = hebb.prune(weights, 0.0) if self.prune and kept <= 0.1 else weights
        if self._divisor != 1 and (self.n_units - 1) * self.n_stored > _EXACT_FLOAT32:
            # past float32's exact integers the torch path sums the counts in float64
            self._product_weights = self._product_weights.double()
        self._single_path = self.device.type == "cpu" and self.update == "sync"
        if self._single_path:
            self._weights_np = np.ascontiguousarray(weights.numpy())
            self._patterns_t_np = np.ascontiguousarray(self._patterns.numpy().T, dtype=np.float32)
            self._pattern_sizes = np.maximum(self._patterns_t_np.sum(0), 1.0)

    # ------------------------------------------------------------------ completing

    def complete(self, cue: np.ndarray | torch.Tensor) -> CompletionResult:
        """Complete one cue (N,): settle, then gate."""
        cue_np = self._check_states(cue, "cue", allow_unknown=True, one_cue=True)
        self._require_patterns()
        if not self._single_path:
            return self.complete_batch(cue_np[None])[0]
        state = np.empty(self.n_units, dtype=np.int8)
        energy = np.empty(self.max_iterations, dtype=np.float32)
        if self.code == "sparse":
            out = single.complete_sparse(
                self._weights_np, self._patterns_t_np, self._pattern_sizes, cue_np, self.k,
                self.max_iterations, state, energy,
            )
        else:
            out = single.complete_bipolar(
                self._weights_np, self._patterns_t_np, cue_np, self.max_iterations, state, energy,
                _NO_FIELD, 1.0 / self._divisor,
            )
        iterations, converged, cycled, changed, rises, nearest, overlap, novelty = out
        self.stats.record_one(iterations, converged, cycled, rises, changed)
        score = max(float(overlap), 0.0) * (1.0 - novelty)
        return CompletionResult(
            state=state,
            converged=converged,
            iterations=iterations,
            energy=energy[:iterations],
            nearest=nearest,
            overlap=float(overlap),
            overlap_score=score,
            novelty=float(novelty),
            accepted=score >= self.gate.threshold,
            cycled=cycled,
        )

    def complete_batch(
        self, cues: np.ndarray | torch.Tensor, orders: torch.Tensor | None = None
    ) -> BatchCompletion:
        """Complete a batch of cues (B, N) on ``device``; converged cues leave the batch early.

        ``orders`` (max_iterations, B, N) fixes the asynchronous visiting orders (for tests).
        """
        cues_np = self._check_states(cues, "cues", allow_unknown=True)
        self._require_patterns()
        if self._single_path:
            return self._complete_many_cpu(cues_np)
        cues_t = torch.from_numpy(cues_np).to(self.device, self._product_weights.dtype)
        if self.update == "sync":
            out = dynamics.run_sync(
                self._product_weights, cues_t, self.code, self.k, self.max_iterations
            )
        else:
            out = dynamics.run_async(
                self._product_weights if self.code == "bipolar" else self._kernel_weights,
                cues_t,
                self.code,
                self.k,
                self.max_iterations,
                orders=orders,
                generator=self._generator,
            )
        states = out.states.float()
        verdict = self.gate.assess(cues_t.float(), states, self._patterns_f, self.code)
        energy = (out.energy / self._divisor).float().cpu().numpy()
        iterations = out.iterations.cpu().numpy()
        converged = out.converged.cpu().numpy()
        cycled = out.cycled.cpu().numpy()
        self.stats.record(
            iterations, converged, cycled, energy, int(out.changed.sum()), self.update
        )
        return BatchCompletion(
            states=states.cpu().numpy().astype(np.int8),
            converged=converged,
            iterations=iterations,
            energy=energy,
            nearest=verdict.nearest.cpu().numpy(),
            overlap=verdict.overlap.cpu().numpy(),
            overlap_score=verdict.overlap_score.cpu().numpy(),
            novelty=verdict.novelty.cpu().numpy(),
            accepted=verdict.accepted.cpu().numpy(),
            cycled=cycled,
        )

    recall = complete
    recall_batch = complete_batch

    def _complete_many_cpu(self, cues: np.ndarray) -> BatchCompletion:
        """Synchronous batch on the CPU: the compiled single-cue kernel, cues over all cores."""
        b, n, steps = cues.shape[0], self.n_units, self.max_iterations
        states = np.empty((b, n), dtype=np.int8)
        energy = np.full((b, steps), np.nan, dtype=np.float32)
        iterations = np.empty(b, dtype=np.int64)
        converged = np.empty(b, dtype=np.bool_)
        cycled = np.empty(b, dtype=np.bool_)
        changed = np.empty(b, dtype=np.int64)
        rises = np.empty(b, dtype=np.int64)
        nearest = np.empty(b, dtype=np.int64)
        overlap = np.empty(b, dtype=np.float32)
        novelty = np.empty(b, dtype=np.float32)
        outputs = (states, energy, iterations, converged, cycled, changed, rises, nearest, overlap,
                   novelty)
        with _PARALLEL_KERNEL:
            if self.code == "sparse":
                single.complete_sparse_many(
                    self._weights_np, self._patterns_t_np, self._pattern_sizes, cues, self.k,
                    steps, *outputs,
                )
            else:
                fields = self._exact_fields(cues)
                single.complete_bipolar_many(
                    self._weights_np, self._patterns_t_np, cues, fields, steps,
                    1.0 / self._divisor, *outputs,
                )
            self.stats.record_many(iterations, converged, cycled, rises, int(changed.sum()))
        score = np.maximum(overlap, 0.0) * (1.0 - novelty)
        return BatchCompletion(
            states=states,
            converged=converged,
            iterations=iterations,
            energy=energy,
            nearest=nearest,
            overlap=overlap,
            overlap_score=score,
            novelty=novelty,
            accepted=score >= self.gate.threshold,
            cycled=cycled,
        )

    def _exact_fields(self, cues: np.ndarray, block: int = 1024) -> np.ndarray:
        """W·cue for a batch as BLAS products in float64, exact for Hebbian counts and so equal
        to the compiled kernel's own sums; column blocks keep the float64 copy of W small."""
        cues64 = torch.from_numpy(cues).double()
        fields = np.empty(cues.shape, dtype=np.float64)
        for start in range(0, self.n_units, block):
            columns = self._kernel_weights[:, start : start + block].double()
            fields[:, start : start + block] = (cues64 @ columns).numpy()
        return fields

    def energy(self, state: np.ndarray | torch.Tensor) -> float:
        """E = −½ sᵀWs of any state, on demand."""
        s = torch.from_numpy(self._check_states(state, "state", allow_unknown=True, one_cue=True))
        s = s.to(self.device, torch.float32)
        field = (self._kernel_weights @ s).double()
        return float(-0.5 * (s.double() @ field) / self._divisor)

    # ------------------------------------------------------------------ checking input

    def _require_patterns(self) -> None:
        if self.n_stored == 0:
            raise ValueError("memory: nothing is stored yet; call store(patterns) before completing")

    def _check_states(
        self, values: Any, name: str, allow_unknown: bool, one_cue: bool = False
    ) -> np.ndarray:
        """Validate patterns/cues and return them as an int8 or float32 numpy array, naming
        ``name`` in errors."""
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise TypeError(
                f"{name}: expected an array of {self.n_units} unit values, "
                f"got {type(values).__name__} {values!r}"
            )
        try:
            # int8 (what engram.codes makes) goes to the kernels as it is; the rest as float32
            dtype = np.int8 if getattr(values, "dtype", None) == np.int8 else np.float32
            array = np.ascontiguousarray(values, dtype=dtype)
            if not array.flags.writeable:  # e.g. a result's read-only state, fed back as a cue
                array = array.copy()
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name}: expected a numeric array, got {type(values).__name__}") from error
        if array.ndim == 1 and not one_cue:
            array = array[None]
        if array.ndim != (1 if one_cue else 2) or array.shape[-1] != self.n_units or not array.size:
            expected = f"({self.n_units},)" if one_cue else f"({self.n_units},) or (B, {self.n_units})"
            raise ValueError(f"{name}: expected shape {expected}, got {tuple(np.shape(values))}")
        bipolar = self.code == "bipolar"
        if one_cue:  # plain Python values: this is on the single-cue latency path
            where = int(single.cue_violation(array, bipolar))
            no_evidence = where == -2
            unknown_units = where == -1 and bipolar and not allow_unknown and not array.all()
        else:
            bad, known = single.check_rows(array, bipolar)
            rows = np.flatnonzero(bad >= 0)
            where = rows[0] * self.n_units + bad[rows[0]] if rows.size else -1
            no_evidence = bool((known == 0).any())
            unknown_units = bipolar and not allow_unknown and bool((known != self.n_units).any())
        allowed = "{-1, +1}" if bipolar else "{0, 1}"
        if bipolar and allow_unknown:
            allowed = "{-1, 0, +1} (0 marks an unknown unit)"
        if where >= 0:
            value = float(array.reshape(-1)[where])
            raise ValueError(f"{name}: a {self.code} code takes values {allowed}, got {value:g}")
        if no_evidence:
            raise ValueError(f"{name}: a row has no known (non-zero) units, so there is no evidence")
        if unknown_units:
            raise ValueError(f"{name}: a {self.code} code takes values {allowed}, got 0")
        return array

    # ------------------------------------------------------------------ persistence

    def config(self) -> dict[str, Any]:
        return {
            "n_units": self.n_units,
            "code": self.code,
            "sparsity": self.sparsity,
            "k": self.k if self.code == "sparse" else None,
            "rule": self.rule,
            "update": self.update,
            "max_iterations": self.max_iterations,
            "threshold": self.gate.threshold,
            "prune": self.prune,
            "seed": self.seed,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write weights, patterns and config to one safetensors file, atomically."""
        from safetensors.torch import save

        metadata = {
            "format": _FORMAT,
            "version": str(_FORMAT_VERSION),
            "config": json.dumps(self.config()),
        }
        tensors = {"weights": self.weights.cpu().contiguous(), "patterns": self._patterns.cpu()}
        metadata["sha256"] = _file_digest(metadata, tensors)
        return atomic_write_bytes(path, save(tensors, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> AttractorMemory:
        """Read a memory written by ``save``, verifying its checksum; a truncated, damaged or
        foreign file raises ValueError naming it."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: no memory file at {path}")
        data = path.read_bytes()
        try:
            tensors = load(data)
            header_size = int.from_bytes(data[:8], "little")
            metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__", {})
        except (SafetensorError, ValueError, UnicodeDecodeError) as error:
            raise ValueError(
                f"path: {path} is not a readable safetensors file (truncated or foreign): {error}"
            ) from error
        if metadata.get("format") != _FORMAT or set(tensors) != {"weights", "patterns"}:
            raise ValueError(f"path: {path} is a safetensors file but not an Engram memory")
        if set(metadata) - _METADATA_KEYS:
            unknown = sorted(set(metadata) - _METADATA_KEYS)
            raise ValueError(f"path: {path} has unknown metadata {unknown}: damaged or foreign")
        if "sha256" in metadata and metadata["sha256"] != _file_digest(metadata, tensors):
            raise ValueError(f"path: {path} fails its checksum, so it is damaged")
        version = metadata.get("version", "")
        if version.isdigit() and int(version) > _FORMAT_VERSION:
            raise ValueError(f"path: {path} has format version {version}, newer than this Engram")
        if not version.isdigit() or int(version) < 1:
            raise ValueError(f"path: {path} has no valid format version (got {version!r})")
        try:
            config = json.loads(metadata["config"])
            memory = cls(config.pop("n_units"), device=device, **config)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"path: {path} holds an unreadable config: {error}") from error
        n = memory.n_units
        if tensors["weights"].shape != (n, n) or tensors["patterns"].shape[1:] != (n,):
            raise ValueError(f"path: {path} holds tensors whose shapes do not match n_units={n}")
        memory._kernel_weights = tensors["weights"].to(memory.device)
        memory._divisor = 1
        if memory.rule == "hebbian":
            memory._restore_counts()
        memory._patterns = tensors["patterns"].to(memory.device)
        memory._refresh()
        return memory

    def _restore_counts(self) -> None:
        """Recover the exact counts C from a saved W = C / N (rounding moved each entry by at
        most P·2⁻²⁴ of a count); weights that are not such a matrix stay as they are."""
        scaled = self._kernel_weights.double() * self.n_units
        counts = scaled.round()
        if bool(((scaled - counts).abs() <= 1e-3).all()):
            self._kernel_weights = counts.float()
            self._divisor = self.n_units

    def __repr__(self) -> str:
        extra = f", k={self.k}" if self.code == "sparse" else ""
        return (
            f"AttractorMemory(n_units={self.n_units}, code={self.code!r}{extra}, rule={self.rule!r}, "
            f"update={self.update!r}, stored={self.n_stored}, alpha={self.alpha:.3f})"
        )

