"""Multi-query associative recall (MQAR), the recall task of Zoology (Arora et al. 2023).

A sequence opens with ``n_pairs`` key–value pairs ``k₁ v₁ k₂ v₂ …`` and then asks for every key
once, in a random order, at a random place among filler tokens: at the position of a query
key the model must predict the value bound to it. Settings follow Zoology's generator:

- the vocabulary splits in half: keys are drawn from ``[1, V/2)``, values from ``[V/2, V)``;
  token 0 is the blank, replaced by uniform random tokens when ``random_fillers`` (Zoology's
  ``random_non_queries``, its default);
- within a sequence the keys are distinct and so are the values;
- the query region after the ``2 · n_pairs`` context tokens has ``(T − 2·n_pairs) / 2`` even
  slots; the queries take ``n_pairs`` distinct slots drawn without replacement with
  probability ∝ ``g^(a − 1)`` for slot ``g = 1, 2, …`` (a power law: most queries come soon
  after the context, a few much later; ``a = 0.01`` as in Zoology, ``a = 1`` is uniform).

Draws use numpy's seeded ``Generator``; sampling without replacement is the Gumbel top-k
form of successive sampling, vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100


@dataclass(frozen=True)
class MQARTask:
    """The sizes of one MQAR task (Zoology's defaults: vocabulary 8,192, power law a = 0.01)."""

    n_pairs: int = 16
    length: int = 256
    vocab_size: int = 8192
    power_a: float = 0.01
    random_fillers: bool = True

    def __post_init__(self) -> None:
        for name in ("n_pairs", "length", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.length % 2:
            raise ValueError(f"length: expected an even sequence length, got {self.length}")
        if 4 * self.n_pairs > self.length:
            raise ValueError(
                f"n_pairs: expected at most length / 4 = {self.length // 4} pairs (context and "
                f"queries must fit), got {self.n_pairs}"
            )
        if self.vocab_size // 2 - 1 < self.n_pairs:
            raise ValueError(
                f"vocab_size: expected at least {2 * self.n_pairs + 2} tokens for "
                f"{self.n_pairs} distinct keys and values, got {self.vocab_size}"
            )
        if not (isinstance(self.power_a, (int, float)) and 0 < self.power_a <= 1):
            raise ValueError(f"power_a: expected a number in (0, 1], got {self.power_a!r}")

    @property
    def keys(self) -> range:
        """Key tokens: the lower half of the vocabulary without the blank 0."""
        return range(1, self.vocab_size // 2)

    @property
    def values(self) -> range:
        """Value tokens: the upper half of the vocabulary."""
        return range(self.vocab_size // 2, self.vocab_size)

    @property
    def slots(self) -> int:
        """Places a query can take: every other position after the context."""
        return (self.length - 2 * self.n_pairs) // 2

    def gap_probabilities(self) -> np.ndarray:
        """P(slot g) ∝ g^(a − 1), g = 1 … slots (the first slot follows the context at once)."""
        g = np.arange(1, self.slots + 1, dtype=np.float64)
        p = g ** (self.power_a - 1.0)
        return p / p.sum()

    @property
    def chance(self) -> float:
        """Accuracy of guessing among the bound values of a sequence."""
        return 1.0 / self.n_pairs


@dataclass(frozen=True)
class MQARBatch:
    """Tokens (B, T) and targets (B, T): the bound value at each query key, ``IGNORE`` elsewhere;
    ``distance`` (B, T) is how far back the queried key stands (0 where there is no query)."""

    tokens: torch.Tensor
    targets: torch.Tensor
    distance: torch.Tensor

    @property
    def queries(self) -> torch.Tensor:
        """Boolean (B, T): the positions that are scored."""
        return self.targets != IGNORE


def _distinct(rng: np.random.Generator, logp: np.ndarray, rows: int, k: int) -> np.ndarray:
    """``rows`` draws of ``k`` distinct indices with probabilities exp(logp), in draw order."""
    gumbel = rng.gumbel(size=(rows, logp.shape[-1])) + logp
    top = np.argpartition(-gumbel, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(gumbel, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def make_mqar(task: MQARTask, batch: int, seed: int | np.random.Generator) -> MQARBatch:
    """``batch`` MQAR sequences, a pure function of ``task`` and ``seed``."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected a positive integer, got {batch!r}")
    if isinstance(seed, np.random.Generator):
        rng = seed
    elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        rng = np.random.default_rng(int(seed))
    else:
        raise TypeError(f"seed: expected an int or a numpy Generator, got {type(seed).__name__}")
    n, T = task.n_pairs, task.length
    n_keys, n_values = len(task.keys), len(task.values)
    keys = task.keys.start + _distinct(rng, np.zeros(n_keys), batch, n)
    values = task.values.start + _distinct(rng, np.zeros(n_values), batch, n)
    slots = _distinct(rng, np.log(task.gap_probabilities()), batch, n)  # slot of key i's query
    tokens = np.zeros((batch, T), dtype=np.int64)
    tokens[:, 0 : 2 * n : 2] = keys
    tokens[:, 1 : 2 * n : 2] = values
    rows = np.arange(batch)[:, None]
    where = 2 * n + 2 * slots
    targets = np.full((batch, T), IGNORE, dtype=np.int64)
    distance = np.zeros((batch, T), dtype=np.int64)
    if task.random_fillers:
        fill = rng.integers(0, task.vocab_size, size=(batch, T))
        tokens[:, 2 * n :] = fill[:, 2 * n :]
    tokens[rows, where] = keys
    targets[rows, where] = values
    distance[rows, where] = where - 2 * np.arange(n)[None, :]
    return MQARBatch(torch.from_numpy(tokens), torch.from_numpy(targets), torch.from_numpy(distance))
