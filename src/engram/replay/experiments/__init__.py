"""Continual-learning experiments: sleep consolidation against the published baselines."""
