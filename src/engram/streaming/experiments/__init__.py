"""Memory-after-eviction experiments: recall of tokens that left the window."""
