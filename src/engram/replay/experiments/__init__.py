"""Continual-learning experiments: sleep consolidation against the published baselines."""

EXPERIMENTS = {
    "continual": "engram.replay.experiments.continual",
    "mammoth": "engram.replay.experiments.mammoth",
    "vandeven": "engram.replay.experiments.vandeven",
}
