"""What the eviction experiment compares: its conditions, the recall task and model they share,
and the seeds that keep pilot, main run, test and validation sets apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engram.data.recall_tasks import RecallTaskConfig
from engram.errors import ConfigError
from engram.streaming import StreamingConfig

# Trained conditions and the model settings that make them; "projection_frozen" is not
# trained: it is the window+sinks model with rank-1 projection writes switched on at test.
CONDITIONS: dict[str, dict[str, Any]] = {
    "window": {"n_sink": 0, "memory": "none"},
    "window_sinks": {"memory": "none"},
    "matrix": {"memory": "matrix"},
    "matrix_ones": {"memory": "matrix_ones"},
    "matrix_delta": {"memory": "matrix_delta"},
    "association": {"memory": "association"},
    "knn": {"memory": "knn"},
    "knn_unbounded": {"memory": "knn_unbounded"},
    "projection_trained": {"memory": "projection", "projection_trainable": True},
    "full": {"window": None, "n_sink": 0, "memory": "none"},
}
MEMORIES = (
    "matrix",
    "matrix_ones",
    "matrix_delta",
    "association",
    "knn",
    "knn_unbounded",
    "projection_trained",
    "projection_frozen",
)
BASELINE = "window_sinks"
TEST_SEED, VALIDATION_SEED, MAIN_SEED0 = 10_000, 20_000, 100


@dataclass(frozen=True)
class Config:
    """Everything that fixes the experiment; the defaults are the run reported in
    docs/eviction/README.md (reduced to fit a shared 2-core CPU; see there)."""

    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    conv_kernel: int = 3
    window: int = 4
    n_sink: int = 1
    n_pairs: int = 2
    n_filler: int = 12
    key_vocab: int = 16
    value_vocab: int = 16
    filler_vocab: int = 8
    steps: int = 400
    batch_size: int = 32
    lrs: tuple[float, ...] = (3e-3, 1e-2)
    # Learning rates fixed in advance (e.g. by an earlier run's sweep): the pilot then runs no
    # sweep, only its seeds, which buys main-run seeds or steps when the budget is tight.
    lr_by_condition: dict[str, float] | None = None
    test_size: int = 512
    conditions: tuple[str, ...] = tuple(c for c in CONDITIONS if c != "projection_trained")
    projection_rates: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    pilot_seeds: int = 2
    min_seeds: int = 3
    max_seeds: int = 4
    smallest_effect: float = 1.5
    power: float = 0.8
    alpha: float = 0.05
    variant_conditions: tuple[str, ...] = ("window_sinks", "matrix", "full")
    variant_seeds: int = 1
    variants: tuple[str, ...] = ("in_window", "far", "pairs_1", "pairs_4", "rehearsal", "overwrite")
    lm_steps: int = 200
    lm_length: int = 64
    lm_conditions: tuple[str, ...] = (
        "window_sinks",
        "matrix",
        "matrix_delta",
        "knn",
        "full",
    )
    cost_batch: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown or BASELINE not in self.conditions:
            raise ConfigError(
                f"conditions: expected names from {tuple(CONDITIONS)} including "
                f"{BASELINE!r}, got {self.conditions}"
            )
        if not self.lrs:
            raise ConfigError("lrs: expected at least one learning rate, got none")
        if self.lr_by_condition is not None:
            missing = [c for c in self.conditions if c not in self.lr_by_condition]
            if missing:
                raise ConfigError(
                    f"lr_by_condition: expected a learning rate for every condition, "
                    f"missing {missing}"
                )
        if self.pilot_seeds < 2:
            raise ConfigError(
                f"pilot_seeds: expected ≥ 2 (a variance is needed), got {self.pilot_seeds}"
            )
        if not 2 <= self.min_seeds <= self.max_seeds:
            raise ConfigError(
                f"min_seeds/max_seeds: expected 2 ≤ min ≤ max, got "
                f"{self.min_seeds}, {self.max_seeds}"
            )

    def task(self, variant: str = "base") -> RecallTaskConfig:
        base = {
            "n_pairs": self.n_pairs,
            "n_filler": self.n_filler,
            "key_vocab": self.key_vocab,
            "value_vocab": self.value_vocab,
            "filler_vocab": self.filler_vocab,
        }
        change = {
            "base": {},
            "in_window": {"n_filler": 0},
            "far": {"n_filler": 2 * self.n_filler},
            "pairs_1": {"n_pairs": 1},
            "pairs_4": {"n_pairs": 4},
            "rehearsal": {"rehearsal": True},
            "overwrite": {"n_overwrite": max(1, self.n_pairs // 2)},
        }
        if variant not in change:
            raise ConfigError(f"variant: expected one of {tuple(change)}, got {variant!r}")
        return RecallTaskConfig(**{**base, **change[variant]})

    def model(self, condition: str, vocab_size: int) -> StreamingConfig:
        settings = {"window": self.window, "n_sink": self.n_sink, **CONDITIONS[condition]}
        return StreamingConfig(
            vocab_size=vocab_size,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            conv_kernel=self.conv_kernel,
            **settings,
        )

    def receptive_field(self) -> int:
        """How far back a window-only model can see through its stacked layers."""
        return self.n_layers * (self.window - 1 + self.conv_kernel - 1)


# Seconds-long: two conditions, two seeds, a few steps, no perplexity stage (no data needed).
QUICK = Config(
    steps=3,
    batch_size=4,
    lrs=(1e-2,),
    test_size=16,
    conditions=("window_sinks", "matrix"),
    projection_rates=(1e-2,),
    pilot_seeds=2,
    min_seeds=2,
    max_seeds=2,
    variant_conditions=("window_sinks",),
    variants=("in_window",),
    lm_conditions=(),
    cost_batch=2,
)
