"""Fuzzing the HTTP API from its own OpenAPI spec (schemathesis): no input makes it fail with 5xx."""

from __future__ import annotations

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from engram.store import MemoryStore  # noqa: E402
from engram.store.server import create_app, issue_key  # noqa: E402

DIM = 4


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "store"
    key = issue_key(path, "alice", dim=DIM)
    with MemoryStore(path, space="alice") as store:
        store.add_batch(np.random.default_rng(0).standard_normal((20, DIM)), ids=[f"e{i}" for i in range(20)])
    return create_app(path), key, path


def test_no_generated_request_gets_a_server_error(served):
    app, key, _ = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            if "space" in (case.path_parameters or {}):
                case.path_parameters["space"] = "alice"  # reach past the 404 into validation
            case.call_and_validate(headers={"X-API-Key": key}, checks=[not_a_server_error])

        fuzz()


def test_store_is_consistent_after_fuzzing(served):
    _, _, path = served
    with MemoryStore(path, space="alice") as store:
        assert store.check() == []
