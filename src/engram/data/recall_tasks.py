"""Multi-query associative recall with eviction: ``[sink] k₁ v₁ … k_N v_N | filler × F | queries``.

Keys, values and filler come from disjoint vocabularies, so nothing but the binding answers a
query. Each query is a key alone; the target at its position is the value last bound to it.
With ``n_filler ≥ window − 1`` every pair has left a ``window``-token attention window before the
first query (see :func:`min_query_distance`). Variants: ``rehearsal`` queries every key once
right after the pairs (inside the window when window ≥ 2N) and again after the filler;
``n_overwrite`` re-binds that many keys to new values after the pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SINK = 0
IGNORE = -100


@dataclass(frozen=True)
class RecallTaskConfig:
    """Sizes of one recall task; ``seq_len`` (optional) pads the filler to a fixed length."""

    n_pairs: int = 8
    n_filler: int = 16
    n_queries: int | None = None
    key_vocab: int = 64
    value_vocab: int = 64
    filler_vocab: int = 16
    rehearsal: bool = False
    n_overwrite: int = 0
    seq_len: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_pairs", "key_vocab", "value_vocab", "filler_vocab"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not isinstance(self.n_filler, int) or self.n_filler < 0:
            raise ValueError(f"n_filler: expected a non-negative integer, got {self.n_filler!r}")
        if self.n_pairs > self.key_vocab:
            raise ValueError(
                f"n_pairs: expected at most key_vocab={self.key_vocab}, got {self.n_pairs}"
            )
        if not 0 <= self.n_overwrite <= self.n_pairs:
            raise ValueError(
                f"n_overwrite: expected 0..n_pairs={self.n_pairs}, got {self.n_overwrite}"
            )
        if self.n_pairs + self.n_overwrite > self.value_vocab:
            raise ValueError(
                f"value_vocab: expected at least n_pairs + n_overwrite = "
                f"{self.n_pairs + self.n_overwrite} values, got {self.value_vocab}"
            )
        queries = self.queries
        if not 1 <= queries <= self.n_pairs:
            raise ValueError(f"n_queries: expected 1..n_pairs={self.n_pairs}, got {queries}")
        if self.seq_len is not None and self.seq_len < self.parts_length:
            raise ValueError(
                f"seq_len: expected at least {self.parts_length} (sink + {2 * self.n_pairs} pair "
                f"tokens + {2 * self.n_overwrite} overwrite + {self.rehearsal_length} rehearsal + "
                f"{self.n_filler} filler + {queries} queries), got {self.seq_len}"
            )

    @property
    def queries(self) -> int:
        return self.n_pairs if self.n_queries is None else self.n_queries

    @property
    def rehearsal_length(self) -> int:
        return self.n_pairs if self.rehearsal else 0

    @property
    def parts_length(self) -> int:
        return (
            1
            + 2 * self.n_pairs
            + 2 * self.n_overwrite
            + self.rehearsal_length
            + self.n_filler
            + self.queries
        )

    @property
    def length(self) -> int:
        return self.parts_length if self.seq_len is None else self.seq_len

    @property
    def filler_length(self) -> int:
        return self.n_filler + self.length - self.parts_length

    @property
    def vocab_size(self) -> int:
        return 1 + self.key_vocab + self.value_vocab + self.filler_vocab

    @property
    def chance(self) -> float:
        """Accuracy of a uniform guess over the value vocabulary."""
        return 1.0 / self.value_vocab


def min_query_distance(cfg: RecallTaskConfig) -> int:
    """Tokens from the last binding's value to the first final query: every binding is out of
    a window of W tokens at every final query when this is ≥ W."""
    return cfg.rehearsal_length + cfg.filler_length + 1


@dataclass
class RecallBatch:
    """tokens, targets (B, T) (targets −100 except at queries); masks (B, T) of the final
    queries, the in-window rehearsal queries, and the final queries of overwritten keys;
    ``stale_targets`` holds the value an overwritten key had first (−100 elsewhere), to count
    answers that return the old binding instead of the new one."""

    tokens: torch.Tensor
    targets: torch.Tensor
    final_queries: torch.Tensor
    rehearsal_queries: torch.Tensor
    overwritten_queries: torch.Tensor
    stale_targets: torch.Tensor


def make_batch(cfg: RecallTaskConfig, batch_size: int, generator: torch.Generator) -> RecallBatch:
    """A batch of fresh sequences drawn with ``generator`` (CPU tensors)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    B, N, n_over = batch_size, cfg.n_pairs, cfg.n_overwrite
    key_base, value_base = 1, 1 + cfg.key_vocab
    filler_base = value_base + cfg.value_vocab

    def sample_without_replacement(n_items: int, k: int) -> torch.Tensor:
        return torch.rand(B, n_items, generator=generator).argsort(-1)[:, :k]

    keys = key_base + sample_without_replacement(cfg.key_vocab, N)
    all_values = value_base + sample_without_replacement(cfg.value_vocab, N + n_over)
    values, new_values = all_values[:, :N], all_values[:, N:]
    rows = torch.arange(B)[:, None]

    pieces = [torch.full((B, 1), SINK), torch.stack([keys, values], -1).flatten(1)]
    current = values.clone()
    if n_over:
        which = sample_without_replacement(N, n_over)
        pieces.append(torch.stack([keys[rows, which], new_values], -1).flatten(1))
        current[rows, which] = new_values
    overwritten = torch.zeros(B, N, dtype=torch.bool)
    if n_over:
        overwritten[rows, which] = True
    start_rehearsal = sum(p.shape[1] for p in pieces)
    if cfg.rehearsal:
        pieces.append(keys)
    filler = filler_base + torch.randint(
        cfg.filler_vocab, (B, cfg.filler_length), generator=generator
    )
    pieces.append(filler)
    start_queries = sum(p.shape[1] for p in pieces)
    order = sample_without_replacement(N, cfg.queries)
    pieces.append(keys[rows, order])
    tokens = torch.cat(pieces, 1)

    targets = torch.full_like(tokens, IGNORE)
    final = torch.zeros_like(tokens, dtype=torch.bool)
    rehearsal = torch.zeros_like(final)
    over = torch.zeros_like(final)
    query_slice = slice(start_queries, start_queries + cfg.queries)
    targets[:, query_slice] = current[rows, order]
    final[:, query_slice] = True
    over[:, query_slice] = overwritten[rows, order]
    stale = torch.full_like(tokens, IGNORE)
    stale[:, query_slice] = torch.where(overwritten, values, IGNORE)[rows, order]
    if cfg.rehearsal:
        rehearsal_slice = slice(start_rehearsal, start_rehearsal + N)
        targets[:, rehearsal_slice] = current
        rehearsal[:, rehearsal_slice] = True
    return RecallBatch(tokens, targets, final, rehearsal, over, stale)
