"""The CA3 lab: Hopfield experiments measured beside their theory, and the demo."""
