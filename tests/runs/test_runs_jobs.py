"""The job runner: one cache file per (function, config, seed), resumed runs skip finished
jobs, and the process pool and Ray give the same results as running in this process."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest
from toy_jobs import Square, count_lines, fail, square

from engram.runs import Job, Runner, run_jobs, using
from engram.runs.jobs import cache_path


def _jobs(log: str = "") -> list[Job]:
    return [Job.of(square, Square(float(x), log), seed) for x in (1, 2, 3) for seed in (0, 1)]


def test_results_come_back_in_job_order_as_their_cached_json_reads(tmp_path):
    results = run_jobs(_jobs(), tmp_path)
    assert [r["value"] for r in results] == [1, 2, 4, 5, 9, 10]
    assert results[0]["tuple"] == [1, 2]  # as JSON reads it back, fresh or cached alike
    record = json.loads(cache_path(tmp_path, _jobs()[0]).read_text())
    assert record["job"]["config"] == {"x": 1.0, "log": ""} and record["job"]["seed"] == 0
    assert record["result"] == results[0]


def test_a_resumed_run_does_only_the_jobs_not_yet_cached(tmp_path):
    log = str(tmp_path / "calls.log")
    jobs = _jobs(log)
    with pytest.raises(RuntimeError, match="job 3 failed"):
        run_jobs([Job.of(fail, j.config, j.seed) for j in jobs], tmp_path / "run")
    assert count_lines(log) == 4  # x = 1, 2 for both seeds, then the failure
    first = run_jobs([Job.of(fail, j.config, j.seed) for j in jobs[:4]], tmp_path / "run")
    assert count_lines(log) == 4  # all four came from the cache
    assert [r["value"] for r in first] == [1, 2, 4, 5]


def test_the_key_changes_with_function_config_and_seed():
    base = Job.of(square, Square(1.0), 0)
    assert base.key == Job.of(square, Square(1.0), 0).key
    assert len({base.key, Job.of(square, Square(2.0), 0).key, Job.of(square, Square(1.0), 1).key,
                Job.of(fail, Square(1.0), 0).key}) == 4


def test_a_cache_file_of_another_job_is_refused(tmp_path):
    job = Job.of(square, Square(1.0), 0)
    run_jobs([job], tmp_path)
    other = Job.of(square, Square(2.0), 0)
    cache_path(tmp_path, other).write_text(cache_path(tmp_path, job).read_text())
    with pytest.raises(ValueError, match="not this job"):
        run_jobs([other], tmp_path)


def test_bad_jobs_and_runners_are_refused_by_name():
    with pytest.raises(ValueError, match="function: expected a module-level"):
        Job.of(lambda cfg, seed: 0, Square(1.0), 0)
    with pytest.raises(ValueError, match="seed: expected a non-negative"):
        Job.of(square, Square(1.0), -1)
    with pytest.raises(ValueError, match="backend: expected one of local, ray"):
        Runner("slurm")
    with pytest.raises(ValueError, match="workers: expected a positive"):
        Runner(workers=0)
    with pytest.raises(ValueError, match="appears twice"):
        run_jobs([Job.of(square, Square(1.0), 0)] * 2, None)


def test_a_process_pool_gives_the_same_results_from_other_processes(tmp_path):
    with using(Runner(workers=2)):
        pooled = run_jobs(_jobs(), tmp_path / "pool")
    alone = run_jobs(_jobs(), None)
    assert [r["value"] for r in pooled] == [r["value"] for r in alone]
    assert {r["pid"] for r in pooled} - {os.getpid()}  # really ran elsewhere


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_tasks_give_the_same_results_and_the_same_cache(tmp_path, monkeypatch):
    import ray

    # Ray's workers inherit the environment: let them import this folder's toy_jobs
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run_jobs(_jobs(), tmp_path / "ray", Runner("ray"))
    finally:
        ray.shutdown()
    assert [r["value"] for r in on_ray] == [1, 2, 4, 5, 9, 10]
    assert {r["pid"] for r in on_ray} - {os.getpid()}
    again = run_jobs(_jobs(), tmp_path / "ray")  # the cache Ray filled, read locally
    assert again == on_ray


def test_a_job_another_runner_finished_meanwhile_is_read_not_rerun(tmp_path):
    from engram.runs.jobs import execute

    log = str(tmp_path / "calls.log")
    job = Job.of(square, Square(2.0, log), 1)
    (first,) = run_jobs([job], tmp_path / "shared")
    assert count_lines(log) == 1
    # a second runner that listed the job as to-do before the first one wrote it
    assert json.loads(execute(job, str(tmp_path / "shared"))) == first
    assert count_lines(log) == 1
