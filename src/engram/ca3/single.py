"""Compiled single-cue completion on the CPU (numba): dynamics and CA1 measures in one call.

One cue is too small for a BLAS call or a torch launch to pay; a compiled loop that keeps the
field h = W·s up to date by adding the rows of the units that changed costs a few
microseconds. k-WTA is a one-pass partial selection with a k-element heap, ties broken toward the lower
index exactly as the reference does, so the two agree on the states.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Above this share of changed units a full W·s product is cheaper than row updates.
_DENSE_SHARE = 0.125
# A later energy above the previous by more than this relative amount counts as a rise.
RISE_TOLERANCE = 1e-5


@njit(cache=True)
def cue_violation(cue: np.ndarray, bipolar: bool) -> int:
    """Index of the first value outside the code (NaN included), −1 if none, −2 if no unit is known."""
    known = 0
    for i in range(cue.size):
        v = cue[i]
        if v == 1.0 or (bipolar and v == -1.0):
            known += 1
        elif v != 0.0:
            return i
    return -1 if known else -2


@njit(cache=True, parallel=True)
def check_rows(values: np.ndarray, bipolar: bool) -> tuple[np.ndarray, np.ndarray]:
    """For each row of a batch, over all cores: the index of its first value outside the code
    (NaN included; −1 if none) and its number of known (non-zero) units."""
    rows, n = values.shape
    bad = np.full(rows, -1, dtype=np.int64)
    known = np.zeros(rows, dtype=np.int64)
    for r in prange(rows):
        for i in range(n):
            v = values[r, i]
            if v == 1 or (bipolar and v == -1):
                known[r] += 1
            elif v != 0:
                bad[r] = i
                break
    return bad, known


@njit(cache=True)
def _worse(h: np.ndarray, a: int, b: int) -> bool:
    """Unit a ranks below unit b: lower field, or equal field and higher index."""
    return h[a] < h[b] or (h[a] == h[b] and a > b)


@njit(cache=True)
def _sift_down(h: np.ndarray, heap: np.ndarray, root: int, size: int) -> None:
    while True:
        child = 2 * root + 1
        if child >= size:
            return
        if child + 1 < size and _worse(h, heap[child + 1], heap[child]):
            child += 1
        if not _worse(h, heap[child], heap[root]):
            return
        heap[root], heap[child] = heap[child], heap[root]
        root = child


@njit(cache=True)
def _top_k(h: np.ndarray, k: int, heap: np.ndarray) -> None:
    """Write the indices of the k largest entries of h into ``heap`` (a min-heap, in no
    particular order); ties are won by the lower index. One pass, O(n log k) at worst and
    about n comparisons when, as here, few entries beat the running k-th largest."""
    for i in range(k):
        heap[i] = i
    for root in range(k // 2 - 1, -1, -1):
        _sift_down(h, heap, root, k)
    for i in range(k, h.size):
        if h[i] > h[heap[0]]:
            heap[0] = i
            _sift_down(h, heap, 0, k)


@njit(cache=True)
def _sum_rows(rows: np.ndarray, coefficients: np.ndarray, out: np.ndarray) -> None:
    """out = Σ_i c_i · rows[i] (= Wᵀc = Wc for symmetric W), skipping zero coefficients.

    Accumulated in float64, where a sum of up to millions of float32 weights times ±1 is
    exact unless the weights' magnitudes span more than about 2^20, so the result does not
    depend on the order of summation: a batch that computes these fields with one
    matrix product (also in float64) breaks exact ties (h = 0) the same way. A plain compiled
    loop, not BLAS: these kernels run inside numba's parallel threads, and an OpenBLAS call
    there starts threads of its own (nested, oversubscribed, ~18× slower).
    """
    total = np.zeros(out.size, dtype=np.float64)
    for i in range(rows.shape[0]):
        if coefficients[i] != 0.0:
            _add_scaled(total, coefficients[i], rows[i])
    out[:] = total


@njit(cache=True)
def _add_scaled(out: np.ndarray, c: float, row: np.ndarray) -> None:
    """out += c · row, in place (an explicit loop: no temporary array)."""
    for j in range(out.size):
        out[j] += c * row[j]


@njit(cache=True)
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """a · b without BLAS (see ``_sum_rows``)."""
    total = 0.0
    for i in range(a.size):
        total += a[i] * b[i]
    return total


@njit(cache=True)
def _is_top_k(h: np.ndarray, mask: np.ndarray, members: np.ndarray, k: int) -> bool:
    """Whether the k units in ``members`` strictly out-rank every other unit: the common
    confirming step of a completion, checked in one pass instead of a selection."""
    weakest = np.inf
    for j in range(k):
        weakest = min(weakest, h[members[j]])
    for i in range(h.size):  # noqa: SIM110 — a compiled loop, not a generator
        if not mask[i] and h[i] >= weakest:
            return False
    return True


@njit(cache=True)
def _rises(energy: np.ndarray, steps: int) -> int:
    count = 0
    for t in range(1, steps):
        if energy[t] - energy[t - 1] > RISE_TOLERANCE * abs(energy[t - 1]) + 1e-6:
            count += 1
    return count


@njit(cache=True)
def _verdict(cue: np.ndarray, state: np.ndarray, overlaps: np.ndarray, energy: np.ndarray, steps: int):
    """(energy rises, nearest pattern, its overlap, novelty): the share of the cue's known
    (non-zero) units that the final state contradicts."""
    known = 0
    contradicted = 0
    for i in range(cue.size):
        if cue[i] != 0.0:
            known += 1
            if state[i] != cue[i]:
                contradicted += 1
    nearest = int(np.argmax(overlaps))
    return _rises(energy, steps), nearest, overlaps[nearest], contradicted / known


@njit(cache=True)
def complete_sparse(
    weights: np.ndarray,
    patterns_t: np.ndarray,
    pattern_sizes: np.ndarray,
    cue: np.ndarray,
    k: int,
    max_iterations: int,
    state: np.ndarray,
    energy: np.ndarray,
):
    """Synchronous k-WTA dynamics and gate measures for one {0,1} cue.

    Writes the final state (int8) and the energy trace; returns (iterations, converged,
    cycled, units changed, energy rises, nearest, overlap, novelty).
    """
    n = weights.shape[0]
    h = np.zeros(n, dtype=np.float32)
    # masks and index lists of the current and the previous state; every step touches only
    # O(k) entries of them, never all n units
    current = np.zeros(n, dtype=np.bool_)
    previous = np.zeros(n, dtype=np.bool_)
    current_list = np.empty(n, dtype=np.int64)
    previous_list = np.empty(n, dtype=np.int64)
    size = 0
    for i in range(n):
        if cue[i] != 0.0:
            current[i] = True
            current_list[size] = i
            size += 1
            h += weights[i]
    previous_size = 0
    has_previous = False
    winners = np.empty(k, dtype=np.int64)
    changed = 0
    iterations = max_iterations
    converged = False
    cycled = False
    for t in range(max_iterations):
        if size == k and _is_top_k(h, current, current_list, k):
            winners[:] = current_list[:k]  # a fixed point: no selection needed
            kept = k
        else:
            _top_k(h, k, winners)
            kept = 0
            for j in range(k):
                if current[winners[j]]:
                    kept += 1
        if size == k and kept == k:
            e = 0.0
            for j in range(k):
                e += h[winners[j]]
            energy[t] = -0.5 * e
            iterations, converged = t + 1, True
            break
        cyc = has_previous and previous_size == k
        if cyc:
            for j in range(k):
                if not previous[winners[j]]:
                    cyc = False
                    break
        # the previous buffers now receive the new state; then the two swap roles
        for j in range(previous_size):
            previous[previous_list[j]] = False
        for j in range(k):
            previous[winners[j]] = True
            previous_list[j] = winners[j]
        added, removed = k - kept, size - kept
        changed += added + removed
        if added + removed < k:
            for j in range(k):
                if not current[winners[j]]:
                    h += weights[winners[j]]
            for j in range(size):
                if not previous[current_list[j]]:
                    h -= weights[current_list[j]]
        else:
            h[:] = 0.0
            for j in range(k):
                h += weights[winners[j]]
        current, previous = previous, current
        current_list, previous_list = previous_list, current_list
        previous_size, size = size, k
        has_previous = True
        e = 0.0
        for j in range(k):
            e += h[winners[j]]
        energy[t] = -0.5 * e
        if cyc:
            iterations, cycled = t + 1, True
            break
    # the final state is the last winner set in every exit (fixed point, cycle, deadline)
    state[:] = 0
    overlaps = np.zeros(patterns_t.shape[1], dtype=np.float32)
    for j in range(k):
        state[winners[j]] = 1
        overlaps += patterns_t[winners[j]]
    overlaps /= pattern_sizes
    rises, nearest, overlap, novelty = _verdict(cue, state, overlaps, energy, iterations)
    return iterations, converged, cycled, changed, rises, nearest, overlap, novelty


@njit(cache=True)
def complete_bipolar(
    weights: np.ndarray,
    patterns_t: np.ndarray,
    cue: np.ndarray,
    max_iterations: int,
    state: np.ndarray,
    energy: np.ndarray,
    field: np.ndarray,
    energy_scale: float,
):
    """Synchronous sign dynamics and gate measures for one ±1 cue (0 = unknown unit).

    ``field`` is W·cue in float64 when the caller has it (a batch computes all of them in one
    matrix product), or empty. Ties (h = 0) keep the unit, and set an unknown unit to +1. The
    field is kept in float64, where it is exact for integer weights (Hebbian counts), so a
    tie is a true zero, not a rounding; ``energy_scale`` turns −½ s·h into W's units
    (1/N for counts). Same outputs as ``complete_sparse``.
    """
    n = weights.shape[0]
    s = cue.astype(np.float32)
    h = np.empty(n, dtype=np.float64)
    if field.size == 0:
        _sum_rows(weights, s, h)
    else:
        h[:] = field
    new = np.empty(n, dtype=np.float32)
    previous = np.empty(n, dtype=np.float32)
    has_previous = False
    changed = 0
    iterations = max_iterations
    converged = False
    cycled = False
    for t in range(max_iterations):
        n_changes = 0
        for i in range(n):
            v = 1.0 if h[i] > 0 else (-1.0 if h[i] < 0 else (1.0 if s[i] == 0 else s[i]))
            new[i] = v
            if v != s[i]:
                n_changes += 1
        if n_changes == 0:
            energy[t] = -0.5 * energy_scale * _dot(s, h)
            iterations, converged = t + 1, True
            break
        cyc = has_previous
        if cyc:
            for i in range(n):
                if new[i] != previous[i]:
                    cyc = False
                    break
        changed += n_changes
        if n_changes < _DENSE_SHARE * n:
            for i in range(n):
                if new[i] != s[i]:
                    _add_scaled(h, new[i] - s[i], weights[i])
        else:
            _sum_rows(weights, new, h)
        previous[:] = s
        has_previous = True
        s[:] = new
        energy[t] = -0.5 * energy_scale * _dot(s, h)
        if cyc:
            iterations, cycled = t + 1, True
            break
    for i in range(n):
        state[i] = np.int8(s[i])
    overlaps = np.empty(patterns_t.shape[1], dtype=np.float32)
    _sum_rows(patterns_t, s, overlaps)
    overlaps /= n
    rises, nearest, overlap, novelty = _verdict(cue, state, overlaps, energy, iterations)
    return iterations, converged, cycled, changed, rises, nearest, overlap, novelty


@njit(cache=True, parallel=True)
def complete_sparse_many(
    weights, patterns_t, pattern_sizes, cues, k, max_iterations,
    states, energy, iterations, converged, cycled, changed, rises, nearest, overlap, novelty,
):
    """``complete_sparse`` for a batch, cues spread over the CPU cores; each cue stops at its
    own fixed point, so converged cues cost nothing further."""
    for b in prange(cues.shape[0]):
        out = complete_sparse(
            weights, patterns_t, pattern_sizes, cues[b], k, max_iterations, states[b], energy[b]
        )
        iterations[b], converged[b], cycled[b], changed[b], rises[b] = out[:5]
        nearest[b], overlap[b], novelty[b] = out[5:]


@njit(cache=True, parallel=True)
def complete_bipolar_many(
    weights, patterns_t, cues, fields, max_iterations, energy_scale,
    states, energy, iterations, converged, cycled, changed, rises, nearest, overlap, novelty,
):
    """``complete_bipolar`` for a batch, cues spread over the CPU cores; ``fields`` holds
    W·cue for every cue (float64), computed by the caller as one matrix product."""
    for b in prange(cues.shape[0]):
        out = complete_bipolar(
            weights, patterns_t, cues[b], max_iterations, states[b], energy[b], fields[b],
            energy_scale,
        )
        iterations[b], converged[b], cycled[b], changed[b], rises[b] = out[:5]
        nearest[b], overlap[b], novelty[b] = out[5:]
