"""Convergence statistics across calls, with warnings when the dynamics misbehave."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from engram.ca3.single import RISE_TOLERANCE


@dataclass
class ConvergenceStats:
    """Running totals over every completion a memory has made since the last ``reset``.

    ``iteration_histogram[t]`` counts completions that stopped after t updates (sync) or
    sweeps (async); a step "rose" when its energy exceeded the previous step's.
    """

    max_iterations: int
    completions: int = 0
    converged: int = 0
    cycles: int = 0
    energy_steps: int = 0
    energy_rises: int = 0
    units_changed: int = 0
    iteration_histogram: np.ndarray = field(init=False)
    _warned_rate: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.iteration_histogram = np.zeros(self.max_iterations + 1, dtype=np.int64)

    @property
    def convergence_rate(self) -> float:
        return self.converged / self.completions if self.completions else float("nan")

    @property
    def energy_decrease_rate(self) -> float:
        """Share of steps (after the first of each completion) whose energy did not rise."""
        if not self.energy_steps:
            return float("nan")
        return 1.0 - self.energy_rises / self.energy_steps

    @property
    def mean_change_per_step(self) -> float:
        """Mean number of units that changed per update step."""
        steps = int((self.iteration_histogram * np.arange(self.max_iterations + 1)).sum())
        return self.units_changed / steps if steps else float("nan")

    def record_one(
        self,
        iterations: int,
        converged: bool,
        cycled: bool,
        rises: int,
        units_changed: int,
        stacklevel: int = 4,
    ) -> None:
        """Add one synchronous completion (the compiled single-cue path counts its own rises)."""
        self.completions += 1
        self.converged += converged
        self.cycles += cycled
        self.units_changed += units_changed
        self.iteration_histogram[iterations] += 1
        self.energy_steps += iterations - 1
        self.energy_rises += rises
        self._check_rate(stacklevel)

    def record_many(
        self,
        iterations: np.ndarray,
        converged: np.ndarray,
        cycled: np.ndarray,
        rises: np.ndarray,
        units_changed: int,
        stacklevel: int = 5,
    ) -> None:
        """Add a synchronous batch whose energy rises the compiled kernel already counted.

        ``stacklevel`` points warnings at the user's call (as in ``warnings.warn``)."""
        self.completions += iterations.size
        self.converged += int(np.count_nonzero(converged))
        self.cycles += int(np.count_nonzero(cycled))
        self.units_changed += int(units_changed)
        np.add.at(self.iteration_histogram, iterations, 1)
        self.energy_steps += int(iterations.sum() - iterations.size)
        self.energy_rises += int(rises.sum())
        self._check_rate(stacklevel)

    def record(
        self,
        iterations: np.ndarray,
        converged: np.ndarray,
        cycled: np.ndarray,
        energy: np.ndarray,
        units_changed: int,
        update: str,
        stacklevel: int = 4,
    ) -> None:
        """Add a batch of outcomes; ``energy`` is (B, T) with NaN after each cue's last step."""
        iterations = np.atleast_1d(iterations)
        self.completions += iterations.size
        self.converged += int(np.count_nonzero(converged))
        self.cycles += int(np.count_nonzero(cycled))
        self.units_changed += int(units_changed)
        np.add.at(self.iteration_histogram, iterations, 1)
        energy = np.atleast_2d(energy)
        if energy.shape[1] > 1:
            before, after = energy[:, :-1], energy[:, 1:]
            valid = ~np.isnan(after)
            rises = int(np.count_nonzero(after[valid] - before[valid]
                                         > RISE_TOLERANCE * np.abs(before[valid]) + 1e-6))
            self.energy_steps += int(np.count_nonzero(valid))
            self.energy_rises += rises
            if rises and update == "async":
                warnings.warn(
                    f"energy rose on {rises} asynchronous step(s): impossible with symmetric "
                    "weights and a zero diagonal, so the weights or the kernel are wrong",
                    RuntimeWarning,
                    stacklevel=stacklevel - 1,
                )
        self._check_rate(stacklevel)

    def _check_rate(self, stacklevel: int) -> None:
        if self.completions >= 50 and not self._warned_rate and self.convergence_rate < 0.9:
            self._warned_rate = True
            warnings.warn(
                f"convergence rate {self.convergence_rate:.1%} is below 90% over "
                f"{self.completions} completions: the memory may be over capacity or the "
                "cues too weak for the theta deadline",
                RuntimeWarning,
                stacklevel=stacklevel,
            )

    def reset(self) -> None:
        self.__init__(self.max_iterations)

    def as_dict(self) -> dict[str, object]:
        return {
            "completions": self.completions,
            "convergence_rate": self.convergence_rate,
            "cycles": self.cycles,
            "energy_steps": self.energy_steps,
            "energy_rises": self.energy_rises,
            "energy_decrease_rate": self.energy_decrease_rate,
            "mean_change_per_step": self.mean_change_per_step,
            "iteration_histogram": self.iteration_histogram.tolist(),
        }
