"""Fuzzing the HTTP API from its own OpenAPI spec (schemathesis, every built-in check).

Valid and invalid requests are generated for every operation; each answer must be a documented
status with a body and media type that match the schema, never a 5xx; valid requests must be
accepted, invalid ones refused, and a request without the key must not get in. The space has
an embedder (the offline ``HashingEmbedder``), so episodes and cues given as text are fuzzed too.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from engram.store import HashingEmbedder, MemoryStore  # noqa: E402
from engram.store.server import create_app, issue_key  # noqa: E402

DIM = 16  # the smallest HashingEmbedder
EXAMPLES = 30  # per operation and mode: about 480 cases in all, 30-60 s (schema processing dominates)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "store"
    key = issue_key(path, "alice", dim=DIM)
    embedder = HashingEmbedder(DIM)
    with MemoryStore(path, space="alice", embedder=embedder) as store:
        store.add_batch(np.random.default_rng(0).standard_normal((20, DIM)), ids=[f"e{i}" for i in range(20)],
                        texts=[f"turn {i} of a talk about topic {i % 4}" for i in range(20)],
                        who=["Ada", "Bob"] * 10, sessions=[i // 5 for i in range(20)])
    return create_app(path, embedder=embedder), key, path


def _placeable(text: str) -> bool:
    """Whether the offline embedder gives ``text`` a direction: it hashes ASCII words and digits
    only, so a text without any has none to search for (a trained model has no such gap)."""
    return re.search(r"[a-z0-9]", text.lower()) is not None


def _has_text(body: object) -> bool:
    if not isinstance(body, dict):
        return False
    return "text" in body or "texts" in body or any("text" in e for e in body.get("episodes", []))


def _cue_rules_hold(body: dict) -> bool:
    """The rules of a recall that JSON Schema cannot state: a mask only with cue vectors, one
    mask and one text per cue, a known part of every cue that is not all zeros, and (a text cue
    alone) a text the embedder can place."""
    texts = body.get("texts", [body["text"]] if "text" in body else None)
    vectors = body.get("cues", [body["cue"]] if "cue" in body else None)
    if vectors is None:
        return body.get("known") is None and all(_placeable(t) for t in texts)
    if texts is not None and len(texts) != len(vectors):
        return False
    cues = np.asarray(vectors, dtype=np.float64)
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
    cases = with_text = 0
    for operation in operations:
        if not mode.is_positive and not (operation.body or operation.path_parameters or operation.query):
            continue  # /healthz and /metrics take nothing that could be invalid
        recall = operation.path.startswith("/v1/spaces/{space}/recall")
        batch = operation.path == "/v1/spaces/{space}/episodes/batch"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case):
            nonlocal cases, with_text
            if "space" in (case.path_parameters or {}):
                case.path_parameters["space"] = "alice"  # reach past the key check into validation
            if mode.is_positive and recall:  # noqa: B023 (each fuzz() runs inside its own iteration)
                assume(_cue_rules_hold(case.body))
            if mode.is_positive and batch:  # noqa: B023
                # a batch gives every episode an embedding or none, and text to all or none
                for field in ("embedding", "text"):
                    assume(len({field in e for e in case.body["episodes"]}) == 1)
            if mode.is_positive and isinstance(case.body, dict) and not recall:  # noqa: B023
                # text the store embeds itself (no embedding given) must be text the embedder can place
                episodes = case.body.get("episodes", [case.body])
                assume(all(_placeable(e["text"]) for e in episodes
                           if isinstance(e, dict) and "text" in e and "embedding" not in e))
            response = case.call_and_validate(headers={"X-API-Key": key})
            cases += 1
            if response.status_code < 300 and _has_text(case.body):
                with_text += 1

        fuzz()
    print(f"{mode.value}: {cases} cases, {with_text} accepted with text")
    assert cases >= len(operations) * 5
    if mode.is_positive:
        assert with_text >= 20, "text episodes and text cues must be among the accepted requests"


def test_store_is_consistent_after_fuzzing(served):
    _, _, path = served
    with MemoryStore(path, space="alice") as store:
        assert store.check() == []
