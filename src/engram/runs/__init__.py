"""The experiment toolkit: configs, the registry, the job runner, the comparison battery, claims
and reports, and run folders (seeds, environment, tables, figures).

An experiment is a module with a frozen ``Config``, a ``QUICK`` config and
``run(cfg, folder) -> Result``, listed in its part's ``experiments/__init__.py``.
"""

from engram.runs.compare import COLUMNS, Comparison, against, compare
from engram.runs.config import (
    ConfigFile,
    coerce,
    from_mapping,
    merge,
    override,
    parse_overrides,
    read_config_file,
    to_mapping,
)
from engram.runs.folder import RunFolder, environment, markdown_table, progress, seed_everything
from engram.runs.jobs import Job, Runner, current_runner, run_jobs, using
from engram.runs.launch import quick_config, resolve, resume, run_in, saved, start
from engram.runs.registry import PARTS, Experiment, experiment, names
from engram.runs.report import (
    FinishedRun,
    claims_markdown,
    front_page_table,
    read_result,
    render_report,
    write_front_page,
    write_result,
)
from engram.runs.result import Claim, Result

__all__ = [
    "COLUMNS",
    "PARTS",
    "Claim",
    "Comparison",
    "ConfigFile",
    "Experiment",
    "FinishedRun",
    "Job",
    "Result",
    "RunFolder",
    "Runner",
    "against",
    "claims_markdown",
    "coerce",
    "compare",
    "current_runner",
    "environment",
    "experiment",
    "from_mapping",
    "front_page_table",
    "markdown_table",
    "merge",
    "names",
    "override",
    "parse_overrides",
    "progress",
    "quick_config",
    "read_config_file",
    "read_result",
    "render_report",
    "resolve",
    "resume",
    "run_in",
    "run_jobs",
    "saved",
    "seed_everything",
    "start",
    "to_mapping",
    "using",
    "write_front_page",
    "write_result",
]
