"""The experiment toolkit: run folders, seeds, environment capture, tables and progress bars."""

from engram.runs.folder import RunFolder, environment, markdown_table, progress, seed_everything

__all__ = ["RunFolder", "environment", "markdown_table", "progress", "seed_everything"]
