"""The HTTP API (``engram serve``): FastAPI over one store directory, one API key per space.

Keys are random 32-byte tokens shown once; only their SHA-256 is stored (in the space's
state), and they are compared in constant time. A missing key is 401, a key that is not the
space's own is 403, an unknown space 404, a malformed request 422 naming the field, an
oversized payload 413. ``/metrics`` serves Prometheus counters and latency histograms.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from engram.store.memory import MemoryStore, RecallResult
from engram.store.sqlite import SQLiteBackend, check_space_name

MAX_BATCH = 1024


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(path: str | os.PathLike[str], space: str, dim: int | None = None) -> str:
    """Create the space if needed and give it a new API key (the old one stops working)."""
    backend = SQLiteBackend(path, dim=dim)
    try:
        backend.ensure_space(check_space_name(space))
        key = "engram_" + secrets.token_urlsafe(32)
        backend.update_state(space, {"key_hash": hash_key(key)})
    finally:
        backend.close()
    return key


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class EpisodeIn(_Strict):
    embedding: list[float] = Field(min_length=1)
    payload: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(default=None, min_length=1, max_length=128)
    timestamp: float | None = None
    reward: float = 0.0
    salience: float = 0.0
    tags: list[str] = Field(default_factory=list)
    unfinished: bool = False


class BatchIn(_Strict):
    episodes: list[EpisodeIn] = Field(min_length=1, max_length=MAX_BATCH)


class RecallIn(_Strict):
    cue: list[float] = Field(min_length=1)
    k: int = Field(default=5, ge=1, le=100)
    known: list[bool] | None = None


class RecallBatchIn(_Strict):
    cues: list[list[float]] = Field(min_length=1, max_length=MAX_BATCH)
    k: int = Field(default=5, ge=1, le=100)
    known: list[list[bool]] | None = None


class SleepIn(_Strict):
    replay_budget: int = Field(default=512, ge=1)
    walks: int = Field(default=64, ge=0, le=10_000)
    seed: int = 0


def _answer(result: RecallResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "decided_by": result.decided_by,
        "confidence": result.confidence,
        "calibrated": result.calibrated,
        "episodes": [
            {"id": r.episode.id, "payload": r.episode.payload, "kind": r.episode.kind, "score": r.score,
             "strength": r.strength, "masked_cosine": r.masked_cosine, "timestamp": r.episode.timestamp}
            for r in result.episodes
        ],
        "trace": result.trace,
    }


def create_app(path: str | os.PathLike[str]) -> FastAPI:
    """The FastAPI application serving the store directory ``path`` (which must exist)."""
    root = SQLiteBackend(path)
    dim = root.dim
    stores: dict[str, MemoryStore] = {}
    opening = threading.Lock()
    registry = CollectorRegistry()
    requests = Counter("engram_requests_total", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("engram_request_seconds", "HTTP request latency", ["endpoint"], registry=registry,
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
    episodes_added = Counter("engram_episodes_added_total", "Episodes stored", registry=registry)
    recalls = Counter("engram_recalls_total", "Recall answers", ["status", "decided_by"], registry=registry)

    app = FastAPI(
        title="Engram memory engine", version="1",
        description="A persistent episodic memory that completes, refuses, forgets and consolidates.",
    )

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        latency.labels(endpoint).observe(time.perf_counter() - started)
        requests.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.exception_handler(ValueError)
    async def value_error(request: Request, error: ValueError) -> JSONResponse:
        status = 413 if "payload: expected at most" in str(error) else 422
        return JSONResponse({"detail": str(error)}, status_code=status)

    @app.exception_handler(TypeError)
    async def type_error(request: Request, error: TypeError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    def space_store(space: str, x_api_key: str | None = Header(default=None)) -> MemoryStore:
        if x_api_key is None:
            raise HTTPException(401, "missing X-API-Key header")
        with opening:
            store = stores.get(space)
            if store is None:
                if space not in root.spaces():
                    raise HTTPException(404, f"space: no memory space named {space!r}")
                store = stores[space] = MemoryStore(path, space=space)
        expected = store.backend.get_state(space).get("key_hash")
        if expected is None or not hmac.compare_digest(expected, hash_key(x_api_key)):
            raise HTTPException(403, f"the key is not valid for space {space!r}")
        return store

    # One dependency object shared by every route: checks the key, opens the space.
    authorised = Depends(space_store)

    def vector(values: list[float], name: str) -> np.ndarray:
        if len(values) != dim:
            raise ValueError(f"{name}: expected {dim} numbers, got {len(values)}")
        wide = np.asarray(values, dtype=np.float64)
        # a number float32 cannot hold would be stored as inf: refuse it instead
        if not np.all(np.abs(wide) <= np.finfo(np.float32).max):
            bad = int(np.argmax(~(np.abs(wide) <= np.finfo(np.float32).max)))
            raise ValueError(f"{name}: every number must be finite and within float32 range, "
                             f"got {values[bad]!r} at index {bad}")
        return wide.astype(np.float32)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/spaces/{space}/episodes", status_code=201)
    def add(body: EpisodeIn, store: MemoryStore = authorised) -> dict[str, str]:
        eid = store.add(vector(body.embedding, "embedding"), body.payload, id=body.id,
                        timestamp=body.timestamp, reward=body.reward, salience=body.salience,
                        tags=body.tags, unfinished=body.unfinished)
        episodes_added.inc()
        return {"id": eid}

    @app.post("/v1/spaces/{space}/episodes/batch", status_code=201)
    def add_batch(body: BatchIn, store: MemoryStore = authorised) -> dict[str, list[str]]:
        e = body.episodes
        embeddings = np.stack([vector(x.embedding, f"episodes[{i}].embedding") for i, x in enumerate(e)])
        ids = store.add_batch(
            embeddings, [x.payload for x in e],
            ids=[x.id for x in e] if all(x.id for x in e) else None,
            timestamps=[x.timestamp for x in e] if all(x.timestamp is not None for x in e) else None,
            rewards=[x.reward for x in e], saliences=[x.salience for x in e], tags=[x.tags for x in e],
            unfinished=[x.unfinished for x in e],
        )
        episodes_added.inc(len(ids))
        return {"ids": ids}

    @app.get("/v1/spaces/{space}/episodes/{eid}")
    def get(eid: str, embedding: bool = False, store: MemoryStore = authorised) -> dict[str, Any]:
        episode = store.get(eid)
        if episode is None:
            raise HTTPException(404, f"id: no episode {eid!r} in space {store.space!r}")
        out = {"id": episode.id, "payload": episode.payload, "timestamp": episode.timestamp,
               "kind": episode.kind, "reward": episode.reward, "salience": episode.salience,
               "tags": list(episode.tags), "unfinished": episode.unfinished, "recalls": episode.recalls}
        if embedding:
            out["embedding"] = episode.embedding.tolist()
        return out

    @app.delete("/v1/spaces/{space}/episodes/{eid}")
    def delete(eid: str, store: MemoryStore = authorised) -> dict[str, list[str]]:
        removed = store.delete([eid])
        if not removed:
            raise HTTPException(404, f"id: no episode {eid!r} in space {store.space!r}")
        return {"deleted": removed}

    @app.post("/v1/spaces/{space}/recall")
    def recall(body: RecallIn, store: MemoryStore = authorised) -> dict[str, Any]:
        known = None if body.known is None else np.asarray(body.known, dtype=bool)
        result = store.recall(vector(body.cue, "cue"), k=body.k, known=known)
        recalls.labels(result.status, result.decided_by).inc()
        return _answer(result)

    @app.post("/v1/spaces/{space}/recall/batch")
    def recall_batch(body: RecallBatchIn, store: MemoryStore = authorised) -> dict[str, Any]:
        cues = np.stack([vector(c, f"cues[{i}]") for i, c in enumerate(body.cues)])
        known = None if body.known is None else np.asarray(body.known, dtype=bool)
        results = store.recall_batch(cues, k=body.k, known=known)
        for r in results:
            recalls.labels(r.status, r.decided_by).inc()
        return {"results": [_answer(r) for r in results]}

    @app.post("/v1/spaces/{space}/sleep")
    def sleep(body: SleepIn, store: MemoryStore = authorised) -> dict[str, Any]:
        report = store.sleep(replay_budget=body.replay_budget, walks=body.walks, seed=body.seed)
        return report.__dict__

    @app.get("/v1/spaces/{space}/stats")
    def stats(store: MemoryStore = authorised) -> dict[str, Any]:
        return store.stats()

    return app
