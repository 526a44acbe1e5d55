"""Slow, obviously correct attractor dynamics: the specification the fast kernels are tested
against (and the "plain dense numpy" baseline of the benchmarks).

Every step recomputes the full field W·s in float64; nothing is incremental or batched. Given
integer weights (``hebb.hebbian_counts``) every field is exact, so ties (h = 0) are true zeros
and follow the tie rule, not the rounding of W = C / N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engram import codes


@dataclass(frozen=True)
class ReferenceTrajectory:
    """Outcome of one reference completion."""

    state: np.ndarray
    iterations: int
    converged: bool
    cycled: bool
    energy: list[float]


def energy(weights: np.ndarray, state: np.ndarray) -> float:
    """Hopfield energy E = −½ sᵀWs."""
    s = state.astype(np.float64)
    return float(-0.5 * s @ weights.astype(np.float64) @ s)


def threshold(field: np.ndarray, state: np.ndarray, code: str, k: int) -> np.ndarray:
    """One synchronous update of every unit: sign (ties keep the unit, unknown ties → +1) or
    k-WTA (ties to the lower index)."""
    if code == "bipolar":
        keep = np.where(state == 0, 1.0, state)
        return np.where(field > 0, 1.0, np.where(field < 0, -1.0, keep)).astype(np.float32)
    return codes.kwta(field, k).astype(np.float32)


def complete_sync(
    weights: np.ndarray, cue: np.ndarray, code: str, k: int, max_iterations: int
) -> ReferenceTrajectory:
    """Synchronous dynamics until a fixed point, a 2-cycle, or the deadline."""
    weights = weights.astype(np.float64)  # every field exact for integer weights
    state = cue.astype(np.float32)
    previous = None
    energies: list[float] = []
    for t in range(1, max_iterations + 1):
        new = threshold(weights @ state, state, code, k)
        energies.append(energy(weights, new))
        if np.array_equal(new, state):
            return ReferenceTrajectory(new, t, True, False, energies)
        if previous is not None and np.array_equal(new, previous):
            return ReferenceTrajectory(new, t, False, True, energies)
        previous, state = state, new
    return ReferenceTrajectory(state, max_iterations, False, False, energies)


def complete_async(
    weights: np.ndarray,
    cue: np.ndarray,
    code: str,
    k: int,
    max_iterations: int,
    orders: np.ndarray,
) -> ReferenceTrajectory:
    """Asynchronous dynamics: sweeps visit units in ``orders[t]``, each unit updated in turn.

    Bipolar: a visited unit takes the sign of its field. Sparse: the state is first brought to
    exactly k active units by k-WTA of the cue's field; then a visited inactive unit i swaps in
    for the weakest active unit j whenever that lowers the energy (h_i − W_ij > h_j).
    """
    weights = weights.astype(np.float64)  # every field exact for integer weights
    state = cue.astype(np.float32)
    if code == "sparse" and state.sum() != k:
        state = threshold(weights @ state, state, code, k)
    energies: list[float] = []
    for t in range(1, max_iterations + 1):
        changed = stale = False
        field = weights @ state
        for i in orders[t - 1]:
            if stale:  # the full field of the current state, recomputed after every change
                field, stale = weights @ state, False
            if code == "bipolar":
                new_value = threshold(field[i : i + 1], state[i : i + 1], code, k)[0]
                if new_value != state[i]:
                    state[i] = new_value
                    changed = stale = True
            elif state[i] == 0:
                active = np.flatnonzero(state)
                j = active[np.argmin(field[active])]
                if field[i] - weights[i, j] > field[j]:
                    state[i], state[j] = 1.0, 0.0
                    changed = stale = True
        energies.append(energy(weights, state))
        if not changed:
            return ReferenceTrajectory(state, t, True, False, energies)
    return ReferenceTrajectory(state, max_iterations, False, False, energies)
