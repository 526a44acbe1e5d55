"""Experiments: one module each, a ``Config`` dataclass plus ``run(cfg, run_folder)``."""
