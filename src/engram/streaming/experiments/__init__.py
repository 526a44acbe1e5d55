"""The streaming part's experiments: recall after eviction (``engram run streaming.eviction``)
and its variants at a powered seed count (``engram run streaming.eviction_variants``)."""

EXPERIMENTS = {
    "eviction": "engram.streaming.experiments.eviction",
    "eviction_variants": "engram.streaming.experiments.variants",
    "mqar": "engram.streaming.experiments.mqar",
}
