"""Batched attractor dynamics in torch (CPU or CUDA); the single-cue path is ``single.py``.

Both keep the field h = W·s up to date incrementally (only the rows of units that changed
are added), so every step's energy E = −½ s·h comes from the field the next step needs
anyway, never from a second product. Sparse states use an active-set field (the sum of the
weight rows of the active units) and k-WTA by ``codes.winners`` (ties to the lower index,
as in the reference and the compiled kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engram import codes

# Incremental updates gather one weight row per changed unit; above this share of changed
# units a dense product (a BLAS call) is cheaper.
_DENSE_SHARE = 0.125


@dataclass(frozen=True)
class Trajectories:
    """Outcome of a batch of completions (torch tensors on the kernel's device)."""

    states: torch.Tensor  # (B, N) in the cues' dtype: ±1, or 0/1 for sparse codes
    iterations: torch.Tensor  # (B,) int64: updates (sync) or sweeps (async) performed
    converged: torch.Tensor  # (B,) bool: stopped at a fixed point
    cycled: torch.Tensor  # (B,) bool: synchronous 2-cycle (reported as not converged)
    energy: torch.Tensor  # (B, max_iterations) in the cues' dtype, NaN after the last step
    changed: torch.Tensor  # (B,) int64: unit changes summed over all steps


# ---------------------------------------------------------------- torch, batched


def _sum_rows(
    weights: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, batch: int
) -> torch.Tensor:
    """Σ_j values_j · W[cols_j] grouped by ``rows`` (sorted), without materialising the rows:
    one ``embedding_bag`` over the batch, each cue a bag."""
    counts = torch.bincount(rows, minlength=batch)
    offsets = torch.zeros_like(counts)
    offsets[1:] = counts.cumsum(0)[:-1]
    return F.embedding_bag(cols, weights, offsets, mode="sum", per_sample_weights=values)


def field_of(weights: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """h = s·W for a batch (W symmetric); sums weight rows of the non-zero units when that is
    cheaper than the dense product (sparse codes, partial cues)."""
    if weights.layout == torch.sparse_csr:
        return (weights @ states.T).T.contiguous()
    rows, cols = states.nonzero(as_tuple=True)
    if rows.numel() >= _DENSE_SHARE * states.numel():
        return states @ weights
    return _sum_rows(weights, rows, cols, states[rows, cols], states.shape[0])


def _add_changes(
    weights: torch.Tensor, field: torch.Tensor, old: torch.Tensor, new: torch.Tensor
) -> torch.Tensor:
    """Bring h = W·old up to h = W·new by adding the rows of the units that changed."""
    delta = new - old
    rows, cols = delta.nonzero(as_tuple=True)
    if weights.layout == torch.sparse_csr or rows.numel() >= _DENSE_SHARE * delta.numel():
        return field_of(weights, new)
    return field.add_(_sum_rows(weights, rows, cols, delta[rows, cols], delta.shape[0]))


def _threshold(field: torch.Tensor, state: torch.Tensor, code: str, k: int) -> torch.Tensor:
    if code == "sparse":
        return codes.kwta(field, k).to(field.dtype)
    keep = torch.where(state == 0, torch.ones_like(state), state)
    return torch.where(field > 0, 1.0, torch.where(field < 0, -1.0, keep))


class _Recorder:
    """Collects per-cue outcomes while finished cues leave the live batch."""

    def __init__(self, cues: torch.Tensor, max_iterations: int):
        b = cues.shape[0]
        device = cues.device
        self.states = cues.clone()
        self.iterations = torch.zeros(b, dtype=torch.int64, device=device)
        self.converged = torch.zeros(b, dtype=torch.bool, device=device)
        self.cycled = torch.zeros(b, dtype=torch.bool, device=device)
        self.energy = torch.full((b, max_iterations), float("nan"), dtype=cues.dtype, device=device)
        self.changed = torch.zeros(b, dtype=torch.int64, device=device)

    def step(self, live: torch.Tensor, t: int, energy: torch.Tensor, changed: torch.Tensor):
        self.energy[live, t] = energy
        self.iterations[live] = t + 1
        self.changed[live] += changed

    def finish(self, live, states, converged=None, cycled=None) -> None:
        self.states[live] = states
        if converged is not None:
            self.converged[live] = converged
        if cycled is not None:
            self.cycled[live] = cycled

    def result(self) -> Trajectories:
        return Trajectories(
            self.states, self.iterations, self.converged, self.cycled, self.energy, self.changed
        )


def run_sync(
    weights: torch.Tensor, cues: torch.Tensor, code: str, k: int, max_iterations: int
) -> Trajectories:
    """Synchronous dynamics for a batch; cues leave the batch at a fixed point or 2-cycle."""
    if code == "sparse":
        return _run_sync_sparse(weights, cues, k, max_iterations)
    record = _Recorder(cues, max_iterations)
    live = torch.arange(cues.shape[0], device=cues.device)
    state = cues.clone()
    previous = None
    h = field_of(weights, state)
    for t in range(max_iterations):
        new = _threshold(h, state, code, k)
        changes = (new != state).sum(1)
        same = changes == 0
        cycled = (
            torch.zeros_like(same) if previous is None else (new == previous).all(1) & ~same
        )
        h = _add_changes(weights, h, state, new)
        record.step(live, t, -0.5 * (new * h).sum(1), changes)
        done = same | cycled
        if bool(done.any()):
            record.finish(live[done], new[done], same[done], cycled[done])
            keep = ~done
            live, new, state, h = live[keep], new[keep], state[keep], h[keep]
            if live.numel() == 0:
                break
        previous, state = state, new
    if live.numel():
        record.finish(live, state)
    return record.result()


def _run_sync_sparse(
    weights: torch.Tensor, cues: torch.Tensor, k: int, max_iterations: int
) -> Trajectories:
    """k-WTA dynamics on active sets: every test and update touches the k winners of each
    cue (B × k), and the field is the sum of the winners' weight rows (``embedding_bag``);
    only the new state itself is written at full width."""
    record = _Recorder(cues, max_iterations)
    live = torch.arange(cues.shape[0], device=cues.device)
    state = cues.clone()
    size = state.sum(1)
    previous: torch.Tensor | None = None
    h = field_of(weights, state)
    for t in range(max_iterations):
        winners = codes.winners(h, k)
        inside = state.gather(1, winners).sum(1)
        same = (size == k) & (inside == k)
        if previous is None:
            cycled = torch.zeros_like(same)
        else:
            cycled = (previous.gather(1, winners).sum(1) == k) & ~same
        energy = -0.5 * h.gather(1, winners).sum(1)  # valid where the state did not change
        moving = (~same).nonzero().squeeze(1)
        h = F.embedding_bag(winners[moving], weights, mode="sum")
        energy[moving] = -0.5 * h.gather(1, winners[moving]).sum(1)
        record.step(live, t, energy, ((k - inside) + (size - inside)).long())
        new = torch.zeros_like(state).scatter_(1, winners, 1.0)
        done = same | cycled
        if bool(done.any()):
            record.finish(live[done], new[done], same[done], cycled[done])
            keep = ~done
            live, new, state = live[keep], new[keep], state[keep]
            h = h[keep[moving]]
            if live.numel() == 0:
                break
        previous, state = state, new
        size = torch.full_like(size[: live.numel()], float(k))
    if live.numel():
        record.finish(live, state)
    return record.result()


def run_async(
    weights: torch.Tensor,
    cues: torch.Tensor,
    code: str,
    k: int,
    max_iterations: int,
    orders: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Trajectories:
    """Asynchronous dynamics for a batch: each sweep visits units in a random order per cue.

    Within a sweep every cue jumps straight to the next unit (in its order) that wants to
    change, so one micro-step per change, each vectorised over the batch. Semantics match
    ``reference.complete_async``; ``orders`` (max_iterations, B, N) fixes the visiting orders.
    """
    b, n = cues.shape
    device = cues.device
    record = _Recorder(cues, max_iterations)
    live = torch.arange(b, device=device)
    state = cues.clone()
    h = field_of(weights, state)
    if code == "sparse":
        wrong_size = state.sum(1) != k
        if bool(wrong_size.any()):
            fixed = torch.where(wrong_size[:, None], _threshold(h, state, code, k), state)
            h = _add_changes(weights, h, state, fixed)
            state = fixed
    positions = torch.arange(n, device=device)
    for t in range(max_iterations):
        if orders is not None:
            order = orders[t][live]
        else:
            noise = torch.rand(live.numel(), n, device=device, generator=generator)
            order = torch.argsort(noise, dim=1)
        pointer = torch.zeros(live.numel(), dtype=torch.int64, device=device)
        changes = torch.zeros(live.numel(), dtype=torch.int64, device=device)
        while True:
            want, partner = _wants_change(weights, h, state, code)
            ahead = want.gather(1, order) & (positions[None, :] >= pointer[:, None])
            has = ahead.any(1)
            if not bool(has.any()):
                break
            rows = has.nonzero().squeeze(1)
            first = ahead[rows].to(torch.int8).argmax(1)
            units = order[rows, first]
            if code == "bipolar":
                value = torch.where(h[rows, units] < 0, -1.0, 1.0)
                delta = value - state[rows, units]
                state[rows, units] = value
                h[rows] += delta[:, None] * weights[units]
            else:
                out = partner[rows]
                state[rows, units] = 1.0
                state[rows, out] = 0.0
                h[rows] += weights[units] - weights[out]
            pointer[rows] = first + 1
            changes[rows] += 1
        record.step(live, t, -0.5 * (state * h).sum(1), changes)
        done = changes == 0
        if bool(done.any()):
            record.finish(live[done], state[done], converged=done[done])
            keep = ~done
            live, state, h = live[keep], state[keep], h[keep]
            if live.numel() == 0:
                break
    if live.numel():
        record.finish(live, state)
    return record.result()


def _wants_change(
    weights: torch.Tensor, h: torch.Tensor, state: torch.Tensor, code: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Units whose update would change the state, and (sparse) each cue's weakest active unit."""
    if code == "bipolar":
        want = ((h > 0) & (state != 1)) | ((h < 0) & (state != -1)) | ((h == 0) & (state == 0))
        return want, torch.empty(0, device=h.device)
    weakest = torch.where(state > 0, h, torch.inf).argmin(1)
    gain = h - weights[weakest] - h.gather(1, weakest[:, None])
    return (state == 0) & (gain > 0), weakest
