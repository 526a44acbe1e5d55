"""The Hopfield lab: each experiment measures attractor-memory claims beside their theory.

``engram run ca3.<name>`` runs one (``engram list`` shows them); the named configs of the runs
reported in docs/lab are under configs/ca3/.
"""

EXPERIMENTS: dict[str, str] = {
    "capacity": "engram.ca3.experiments.capacity",
    "noise": "engram.ca3.experiments.noise",
    "structure": "engram.ca3.experiments.structure",
    "dynamics": "engram.ca3.experiments.dynamics",
    "modularity": "engram.ca3.experiments.modularity",
    "journal": "engram.ca3.experiments.journal",
    "validation": "engram.ca3.experiments.validation",
    "baseline": "engram.ca3.experiments.baseline",
    "demo": "engram.ca3.experiments.demo",
}
