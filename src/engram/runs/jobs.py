"""The resumable job runner: one job = one function, one config and one seed; one cache format.

A finished job's result is written atomically to ``<folder>/jobs/<key>.json`` (``key`` = a
content hash of the function, the config and the seed), so a rerun in the same folder — an
interrupted run resumed — does only the jobs not yet there. Jobs run in this process, in a
local process pool, or as Ray tasks on a cluster (the ``engram[ray]`` extra). Results are
JSON data; a fresh result is returned exactly as its cached copy would read back.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engram.io import atomic_write_text, jsonable, to_json
from engram.runs.folder import progress

CACHE_FORMAT = 1
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Job:
    """``function(config, seed)``, named by import path so a worker process or a Ray task can
    find it; ``config`` is a frozen dataclass (or JSON data) and the result JSON data."""

    function: str  # "package.module:function"
    config: Any
    seed: int

    def __post_init__(self) -> None:
        module, sep, name = self.function.partition(":")
        if not sep or not module or not name or "<" in name:
            raise ValueError(f"function: expected 'package.module:function', got {self.function!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {self.seed!r}")

    @classmethod
    def of(cls, function: Callable[[Any, int], Any], config: Any, seed: int) -> Job:
        """A job for a module-level ``function`` (a lambda or nested function cannot be found)."""
        name = f"{function.__module__}:{function.__qualname__}"
        if "<" in function.__qualname__:
            raise ValueError(f"function: expected a module-level function, got {name}")
        return cls(name, config, seed)

    def describe(self) -> dict[str, Any]:
        """What the key hashes: the function, the config's type and values, and the seed."""
        kind = type(self.config)
        return {
            "function": self.function,
            "config_type": f"{kind.__module__}.{kind.__qualname__}",
            "config": jsonable(self.config),
            "seed": self.seed,
        }

    @property
    def key(self) -> str:
        canonical = json.dumps(self.describe(), sort_keys=True, allow_nan=False,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Runner:
    """Where jobs run: ``local`` (``workers`` processes; 1 = in this process) or ``ray``
    (``address`` of a cluster, or a local Ray started on demand)."""

    backend: str = "local"
    workers: int = 1
    address: str | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 1:
            raise ValueError(f"workers: expected a positive integer, got {self.workers!r}")


_RUNNER: contextvars.ContextVar[Runner | None] = contextvars.ContextVar("engram_runner", default=None)


def current_runner() -> Runner:
    """The runner ``run_jobs`` uses when given none (set by ``engram run --workers/--backend``;
    by default jobs run one after another in this process)."""
    return _RUNNER.get() or Runner()


@contextlib.contextmanager
def using(runner: Runner) -> Iterator[Runner]:
    """Run the jobs of everything inside the block with ``runner``."""
    token = _RUNNER.set(runner)
    try:
        yield runner
    finally:
        _RUNNER.reset(token)


def _resolve(function: str) -> Callable[[Any, int], Any]:
    module, _, name = function.partition(":")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def execute(job: Job, folder: str | None = None) -> str:
    """Run one job — unless another runner on the same ``folder`` has finished it meanwhile —
    and return its result as the strict JSON text the cache stores."""
    if folder is not None:
        path = cache_path(folder, job)
        if path.exists():
            return to_json(_read_cached(path, job))
    return to_json(_resolve(job.function)(job.config, job.seed))


def _worker_init() -> None:
    """One thread per worker: the pool's processes share the cores instead of oversubscribing."""
    os.environ.setdefault("ENGRAM_QUIET", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.set_num_threads(1)


def cache_path(folder: str | os.PathLike[str], job: Job) -> Path:
    return Path(folder) / "jobs" / f"{job.key}.json"


def _read_cached(path: Path, job: Job) -> Any:
    record = json.loads(path.read_text(encoding="utf-8"))
    if record.get("format") != CACHE_FORMAT or record.get("job") != jsonable(job.describe()):
        raise ValueError(f"{path}: the cached job is not this job (format or config differ); "
                         "remove the file to run it again")
    return record["result"]


def _write_cached(path: Path, job: Job, result_text: str) -> Any:
    result = json.loads(result_text)
    record = {"format": CACHE_FORMAT, "job": job.describe(), "result": result}
    atomic_write_text(path, to_json(record))
    return result


def run_jobs(
    jobs: Sequence[Job],
    folder: str | os.PathLike[str] | None,
    runner: Runner | None = None,
    description: str = "jobs",
) -> list[Any]:
    """Results of ``jobs`` in order, running only those not cached in ``folder/jobs``.

    With ``folder`` None nothing is cached. Each result is written as soon as it arrives, so
    an interruption loses only the jobs still running.
    """
    runner = runner or current_runner()
    jobs = list(jobs)
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("jobs: the same job (function, config and seed) appears twice")
    results: dict[str, Any] = {}
    if folder is not None:
        for job in jobs:
            path = cache_path(folder, job)
            if path.exists():
                results[job.key] = _read_cached(path, job)
    todo = [job for job in jobs if job.key not in results]
    where = None if folder is None else str(folder)

    def keep(job: Job, text: str) -> None:
        if folder is None:
            results[job.key] = json.loads(text)
        else:
            results[job.key] = _write_cached(cache_path(folder, job), job, text)

    if runner.backend == "ray" and todo:
        _run_on_ray(todo, runner, keep, description)
    elif runner.workers > 1 and len(todo) > 1:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(runner.workers, len(todo)), mp_context=context,
                                 initializer=_worker_init) as pool:
            futures = {pool.submit(execute, job, where): job for job in todo}
            for future in progress(as_completed(futures), description, total=len(futures)):
                keep(futures[future], future.result())
    else:
        for job in progress(todo, description):
            keep(job, execute(job, where))
    return [results[key] for key in keys]


def _run_on_ray(todo: list[Job], runner: Runner, keep: Callable[[Job, str], None],
                description: str) -> None:
    try:
        import ray
    except ImportError:
        from engram.errors import ConfigError

        raise ConfigError("backend: 'ray' needs Ray installed (pip install 'engram[ray]')") from None
    if not ray.is_initialized():
        ray.init(address=runner.address, ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(num_cpus=1)(_ray_task)
    pending = {task.remote(job): job for job in todo}  # a cluster's workers need not share the folder
    bar = progress(range(len(pending)), description)
    remaining = list(pending)
    while remaining:
        done, remaining = ray.wait(remaining, num_returns=1)
        for ref in done:
            keep(pending[ref], ray.get(ref))
        bar.update(len(done))
    bar.close()


def _ray_task(job: Job) -> str:
    _worker_init()
    return execute(job)
