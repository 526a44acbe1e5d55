"""Fuzzing the HTTP API from its own OpenAPI spec (schemathesis, every built-in check).

Valid and invalid requests are generated for every operation; each answer must be a documented
status with a body and media type that match the schema, never a 5xx; valid requests must be
accepted, invalid ones refused, and a request without the key must not get in.
"""

from __future__ import annotations

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from engram.store import MemoryStore  # noqa: E402
from engram.store.server import create_app, issue_key  # noqa: E402

DIM = 4
EXAMPLES = 30  # per operation and mode: about 480 cases in all, 15-35 s


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "store"
    key = issue_key(path, "alice", dim=DIM)
    with MemoryStore(path, space="alice") as store:
        store.add_batch(np.random.default_rng(0).standard_normal((20, DIM)), ids=[f"e{i}" for i in range(20)])
    return create_app(path), key, path


def _cue_rules_hold(body: dict) -> bool:
    """The two rules of a recall that JSON Schema cannot state: one mask per cue, and a known
    part of every cue that is not all zeros."""
    cues = np.asarray(body["cues"] if "cues" in body else [body["cue"]], dtype=np.float64)
    known = body.get("known")
    if known is None:
        return True
    masks = np.asarray(known if "cues" in body else [known], dtype=bool)
    if len(masks) != len(cues):
        return False
    return bool((np.linalg.norm(np.where(masks, cues, 0.0), axis=1) >= 1e-12).all())


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_generated_request_gets_an_answer_the_schema_promises(served, mode):
    app, key, _ = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 10
    cases = 0
    for operation in operations:
        if not mode.is_positive and not (operation.body or operation.path_parameters or operation.query):
            continue  # /healthz and /metrics take nothing that could be invalid
        recall = operation.path.startswith("/v1/spaces/{space}/recall")

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            nonlocal cases
            if "space" in (case.path_parameters or {}):
                case.path_parameters["space"] = "alice"  # reach past the key check into validation
            if mode.is_positive and recall:  # noqa: B023 (each fuzz() runs inside its own iteration)
                assume(_cue_rules_hold(case.body))
            case.call_and_validate(headers={"X-API-Key": key})
            cases += 1

        fuzz()
    print(f"{mode.value}: {cases} cases")
    assert cases >= len(operations) * 5


def test_store_is_consistent_after_fuzzing(served):
    _, _, path = served
    with MemoryStore(path, space="alice") as store:
        assert store.check() == []
