"""``sleep()``: offline consolidation of a memory space, in resumable, idempotent phases.

  replay     prioritise the episodes added since the last sleep by reward, novelty (distance
             to everything else stored), salience and the unfinished flag; replay the top ones
             (a replay grows stability, more weakly than a recall);
  link       similarity links (top neighbours above a cosine), temporal links (episodes
             close in time) and entity links (episodes whose texts name the same rare thing)
             for the replayed episodes; recall's graph stage follows them;
  cluster    join replayed episodes to existing semantic prototypes or group them into new
             ones (greedy leader clustering); a prototype is a stored episode of kind
             ``"semantic"`` whose ``"source"`` links point at its members;
  walk       random walks over the link graph propose associations between the ends of a
             walk that are not yet linked (links of kind ``"proposed"``);
  calibrate  refit the CA1 gate on the store as it now is.

Progress is kept in the space's state after each phase, so a sleep killed part-way resumes
where it stopped; links are inserted with "insert if absent" and prototype ids are derived
from their sources, so repeating a phase adds nothing twice. A sleep with nothing new to
consolidate does nothing. The priority formula and the random walks are ``engram.replay``'s
(``weighted_priority``, ``random_walks``), the ones its trained learners replay by.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from engram.replay.graph import random_walks
from engram.replay.priority import weighted_priority
from engram.store.backend import Episode, Link

if TYPE_CHECKING:
    from engram.store.memory import MemoryStore

PHASES = ("replay", "link", "cluster", "walk", "calibrate")
_CHUNK = 256  # episodes per similarity block: 256 × n floats bounds memory at any store size


@dataclass(frozen=True)
class SleepConfig:
    """Settings of one sleep."""

    replay_budget: int = 512
    reward_weight: float = 1.0
    novelty_weight: float = 1.0
    salience_weight: float = 1.0
    unfinished_weight: float = 1.0
    similar_k: int = 5
    entity_max_episodes: int = 8
    similar_min: float = 0.8
    temporal_window: float = 3600.0
    cluster_threshold: float = 0.8
    min_cluster: int = 3
    walks: int = 64
    walk_length: int = 4
    recalibrate: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("replay_budget", "similar_k", "min_cluster", "walk_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if not isinstance(self.walks, int) or self.walks < 0:
            raise ValueError(f"walks: expected an integer ≥ 0, got {self.walks!r}")
        for name in ("similar_min", "cluster_threshold"):
            if not -1.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a cosine in [-1, 1], got {getattr(self, name)}")
        if not self.temporal_window >= 0:
            raise ValueError(f"temporal_window: expected seconds ≥ 0, got {self.temporal_window}")


@dataclass
class SleepReport:
    """What one ``sleep()`` did."""

    number: int
    resumed: bool
    recent: int
    replayed: int
    top_priorities: list[dict[str, Any]] = field(default_factory=list)
    links_added: dict[str, int] = field(default_factory=dict)
    prototypes_created: int = 0
    prototypes_updated: int = 0
    proposals: int = 0
    calibrated: bool = False
    seconds: float = 0.0


def priorities(rewards: np.ndarray, novelty: np.ndarray, salience: np.ndarray, unfinished: np.ndarray,
               config: SleepConfig) -> np.ndarray:
    """Replay priority: a weighted sum of |reward|, novelty, salience and the unfinished flag."""
    return weighted_priority(
        (np.abs(rewards), novelty, salience, unfinished),
        (config.reward_weight, config.novelty_weight, config.salience_weight,
         config.unfinished_weight),
    )


def recombination_walks(links: list[Link], starts: list[str], walks: int, length: int,
                        rng: np.random.Generator) -> list[tuple[str, str, float]]:
    """Random walks over the undirected link graph: (start, end, mean edge weight) for ends
    that are distinct and not already linked to each other."""
    neighbours: dict[str, list[tuple[str, float]]] = {}
    direct: set[tuple[str, str]] = set()
    for link in links:
        if link.kind == "proposed":
            continue
        neighbours.setdefault(link.src, []).append((link.dst, link.weight))
        neighbours.setdefault(link.dst, []).append((link.src, link.weight))
        direct.update({(link.src, link.dst), (link.dst, link.src)})
    starts = [s for s in starts if s in neighbours]
    if not starts or walks == 0:
        return []
    names = sorted(neighbours)
    number = {name: i for i, name in enumerate(names)}
    rows = [neighbours[name] for name in names]

    def links_of(node: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(rows[i]) for i in node.tolist())
        ends = torch.zeros((node.shape[0], width), dtype=torch.long)
        live = torch.zeros((node.shape[0], width), dtype=torch.bool)
        for r, i in enumerate(node.tolist()):
            ends[r, : len(rows[i])] = torch.tensor([number[end] for end, _ in rows[i]])
            live[r, : len(rows[i])] = True
        return ends, live

    generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    first = torch.tensor([number[s] for s in starts])
    start = first[torch.randint(len(starts), (walks,), generator=generator)]
    taken = random_walks(start, length + 1, links_of, generator)
    found: dict[tuple[str, str], float] = {}
    for path, steps in zip(taken.nodes.tolist(), taken.links.tolist(), strict=True):
        begin, end = names[path[0]], names[path[-1]]
        weights = [rows[node][link][1] for node, link in zip(path[:-1], steps, strict=True)]
        if end != begin and (begin, end) not in direct:
            pair = (min(begin, end), max(begin, end))
            found[pair] = max(found.get(pair, 0.0), float(np.mean(weights)))
    return [(a, b, w) for (a, b), w in sorted(found.items())]


def _prototype_id(sources: list[str]) -> str:
    digest = hashlib.sha1("\n".join(sorted(sources)).encode()).hexdigest()[:16]
    return f"semantic-{digest}"


def consolidate(store: MemoryStore, config: SleepConfig) -> SleepReport:
    """Run (or resume) one sleep over ``store``'s space."""
    started = time.perf_counter()
    backend, space = store.backend, store.space
    state = backend.get_state(space)
    progress = state.get("sleep")
    resumed = progress is not None
    if progress is None:
        cursor = int(state.get("consolidated_seq", -1))
        recent = backend.scan(space, after_seq=cursor, kind="episode")
        if not recent:
            return SleepReport(number=int(state.get("sleeps", 0)), resumed=False, recent=0, replayed=0,
                               seconds=time.perf_counter() - started)
        progress = {"number": int(state.get("sleeps", 0)) + 1, "phase": "replay", "from": cursor,
                    "to": recent[-1][0], "replayed": [], "report": {}}
        backend.update_state(space, {"sleep": progress})
    recent = [e for seq, e in backend.scan(space, after_seq=progress["from"], kind="episode")
              if seq <= progress["to"]]
    report = SleepReport(number=progress["number"], resumed=resumed, recent=len(recent), replayed=0)
    for key, value in progress["report"].items():
        setattr(report, key, value)
    store._index.sync(backend, space)
    rng = np.random.default_rng([config.seed, progress["number"]])

    # "done": a crash came after the last phase and before the sleep was closed; only close it.
    for phase in PHASES[PHASES.index(progress["phase"]):] if progress["phase"] in PHASES else ():
        if phase == "replay":
            progress["replayed"] = _replay(store, recent, config, report)
        elif phase == "link":
            _link(store, progress["replayed"], recent, config, report)
        elif phase == "cluster":
            _cluster(store, progress["replayed"], config, report)
        elif phase == "walk":
            links = backend.links(space)
            proposals = recombination_walks(
                links, progress["replayed"], config.walks, config.walk_length, rng
            )
            new = backend.add_links(space, [Link(a, b, "proposed", w) for a, b, w in proposals])
            report.proposals += new
            report.links_added["proposed"] = report.links_added.get("proposed", 0) + new
        elif phase == "calibrate" and config.recalibrate:
            store._index.sync(backend, space)
            # A text space keeps the gate fitted on labelled questions (or shipped for its
            # embedder): synthetic cues of stored vectors are not what its queries look like.
            text_space = store.embedder is not None or "embedder" in backend.get_state(space)
            if not text_space and store._index.live >= store.config.min_calibration:
                try:
                    store._calibrate_locked(256, config.seed + progress["number"])
                    report.calibrated = True
                except ValueError:
                    report.calibrated = False
        following = PHASES.index(phase) + 1
        progress["phase"] = PHASES[following] if following < len(PHASES) else "done"
        progress["report"] = {k: getattr(report, k) for k in (
            "replayed", "top_priorities", "links_added", "prototypes_created", "prototypes_updated",
            "proposals", "calibrated")}
        backend.update_state(space, {"sleep": progress})

    report.seconds = time.perf_counter() - started
    backend.update_state(space, {"sleep": None, "consolidated_seq": progress["to"],
                                 "sleeps": progress["number"], "last_sleep": progress["report"]})
    return report


def _unit_rows(store: MemoryStore, ids: list[str]) -> tuple[list[str], np.ndarray]:
    idx = store._index
    present = [i for i in ids if i in idx.row_of]
    return present, idx.unit[[idx.row_of[i] for i in present]] if present else np.zeros((0, store.dim))


def _replay(store: MemoryStore, recent: list[Episode], config: SleepConfig, report: SleepReport) -> list[str]:
    ids, unit = _unit_rows(store, [e.id for e in recent])
    by_id = {e.id: e for e in recent}
    idx = store._index
    novelty = np.ones(len(ids))
    everything = idx.view()
    for start in range(0, len(ids), _CHUNK):
        sims = unit[start : start + _CHUNK] @ everything.T
        own = [idx.row_of[i] for i in ids[start : start + _CHUNK]]
        sims[np.arange(len(own)), own] = -np.inf
        sims[:, ~idx.alive] = -np.inf
        best = sims.max(1) if sims.shape[1] > 1 else np.full(len(own), -1.0)
        novelty[start : start + _CHUNK] = np.clip(1.0 - np.where(np.isfinite(best), best, 0.0), 0.0, 2.0)
    eps = [by_id[i] for i in ids]
    score = priorities(np.array([e.reward for e in eps]), novelty, np.array([e.salience for e in eps]),
                       np.array([e.unfinished for e in eps], dtype=float), config)
    chosen = np.argsort(-score, kind="stable")[: config.replay_budget]
    now = time.time()
    updates = []
    for j in chosen:
        e = eps[j]
        row = idx.row_of[e.id]
        new = store.decay.after_recall(float(idx.stability[row]), now - float(idx.last_access[row]),
                                       growth=store.decay.replay_growth)
        idx.stability[row] = new
        updates.append((e.id, new))
    store.backend.mark_replayed(store.space, updates)
    report.replayed = len(chosen)
    report.top_priorities = [
        {"id": eps[j].id, "priority": round(float(score[j]), 4), "reward": eps[j].reward,
         "novelty": round(float(novelty[j]), 4), "salience": eps[j].salience,
         "unfinished": eps[j].unfinished}
        for j in chosen[:5]
    ]
    return [eps[j].id for j in chosen]


def _link(store: MemoryStore, replayed: list[str], recent: list[Episode], config: SleepConfig,
          report: SleepReport) -> None:
    idx = store._index
    ids, unit = _unit_rows(store, replayed)
    links: list[Link] = []
    for start in range(0, len(ids), _CHUNK):
        sims = unit[start : start + _CHUNK] @ idx.view().T
        sims[:, ~idx.alive] = -np.inf
        for i, eid in enumerate(ids[start : start + _CHUNK]):
            sims[i, idx.row_of[eid]] = -np.inf
            top = np.argpartition(-sims[i], min(config.similar_k, sims.shape[1] - 1))[: config.similar_k]
            links += [Link(eid, idx.ids[r], "similar", float(sims[i, r]))
                      for r in top if sims[i, r] >= config.similar_min and idx.kinds[r] == "episode"]
    # Stable: episodes with the same timestamp (turns of one session) keep insertion order.
    timeline = sorted(recent, key=lambda e: e.timestamp)
    for a, b in itertools.pairwise(timeline):
        gap = b.timestamp - a.timestamp
        if gap <= config.temporal_window:
            weight = float(np.exp(-gap / config.temporal_window)) if config.temporal_window else 1.0
            links.append(Link(a.id, b.id, "temporal", weight))
    links += _entity_links(store, ids, config.entity_max_episodes)
    for kind in ("similar", "temporal", "entity"):
        new = store.backend.add_links(store.space, [k for k in links if k.kind == kind])
        report.links_added[kind] = report.links_added.get(kind, 0) + new


def _entity_links(store: MemoryStore, ids: list[str], max_episodes: int) -> list[Link]:
    """Links between episodes whose texts name the same rare thing (a capitalised word other
    than a speaker's name, in at most ``max_episodes`` episodes): a cue that finds one mention
    of "Minnesota Wolves" then also brings the others, sessions apart."""
    if max_episodes < 2:
        return []
    idx = store._index
    mentions: dict[str, list[int]] = {}
    for row in np.flatnonzero(idx.alive):
        for name in idx.names_in(idx.texts[row]):
            mentions.setdefault(name, []).append(int(row))
    links = []
    for eid in ids:
        row = idx.row_of[eid]
        for name in idx.names_in(idx.texts[row]):
            rows = mentions[name]
            if len(rows) <= max_episodes:
                links += [Link(eid, idx.ids[r], "entity", 1.0) for r in rows if r != row]
    return links


def _cluster(store: MemoryStore, replayed: list[str], config: SleepConfig, report: SleepReport) -> None:
    backend, space, idx = store.backend, store.space, store._index
    ids, unit = _unit_rows(store, replayed)
    if not ids:
        return
    prototypes = [i for i, kind in zip(idx.ids, idx.kinds, strict=True)
                  if kind == "semantic" and i in idx.row_of]
    proto_ids, proto_unit = _unit_rows(store, prototypes)
    assigned: dict[str, list[str]] = {}
    leftover: list[int] = []
    for i, eid in enumerate(ids):
        if proto_ids:
            sims = proto_unit @ unit[i]
            best = int(sims.argmax())
            if sims[best] >= config.cluster_threshold:
                assigned.setdefault(proto_ids[best], []).append(eid)
                continue
        leftover.append(i)
    groups: list[list[str]] = []
    free = list(leftover)
    while free:
        leader = free[0]
        sims = unit[free] @ unit[leader]
        members = [free[j] for j in np.flatnonzero(sims >= config.cluster_threshold)]
        if len(members) >= config.min_cluster:
            groups.append([ids[m] for m in members])
        free = [f for f in free if f not in members] if len(members) >= config.min_cluster else free[1:]
    source_links: list[Link] = []
    for proto, members in assigned.items():
        known = {k.dst for k in backend.links(space, [proto], "source") if k.src == proto}
        sources = sorted(known | set(members))
        _write_prototype(store, proto, sources)
        source_links += [Link(proto, m, "source", 1.0) for m in members]
        report.prototypes_updated += 1
    for members in groups:
        proto = _prototype_id(members)
        _write_prototype(store, proto, members)
        source_links += [Link(proto, m, "source", 1.0) for m in members]
        report.prototypes_created += 1
    new = backend.add_links(space, source_links)
    report.links_added["source"] = report.links_added.get("source", 0) + new


def _write_prototype(store: MemoryStore, proto: str, sources: list[str]) -> None:
    """(Re)write a semantic prototype: the mean of its sources' unit embeddings."""
    present, unit = _unit_rows(store, sources)
    if not present:
        return
    members = store.backend.get(store.space, present, with_embeddings=False)
    tags = Counter(t for e in members.values() for t in e.tags).most_common(5)
    mean = unit.mean(0)
    now = time.time()
    episode = Episode(
        id=proto, embedding=(mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32),
        payload={"sources": len(present), "examples": present[:5], "tags": [t for t, _ in tags]},
        timestamp=max(e.timestamp for e in members.values()), kind="semantic",
        salience=float(np.mean([e.salience for e in members.values()])),
        reward=float(np.mean([e.reward for e in members.values()])),
        stability=store.decay.max_stability, last_access=now,
    )
    store.backend.upsert_semantic(store.space, episode)
    store._index.sync(store.backend, store.space)
    store._index.remove([proto])
    store._index.append(store.backend.index_rows(store.space, after_seq=store._index.max_seq))
