"""Continual-learning experiments: sleep consolidation against the published baselines."""

EXPERIMENTS = {
    "continual": "engram.replay.experiments.continual",
    "vandeven": "engram.replay.experiments.vandeven",
}
