"""Self-tuning: the retrieval parameters a KB version searches with are searched on the train probes, and the best
is proposed as a candidate version for the held-out guard to judge.

- Query-time parameters (store.search_params: fusion weight per language, sentence weight, candidates) need no
  re-embedding: a coordinate ascent over a small grid, each point scored on the train probes with their question
  vectors embedded once, then a `tune_search` candidate that shares its chunks with the active version and carries
  the new values in `kb_versions.search_params`.
- Chunking needs re-embedding: `tune_chunking` proposes the configured chunk size (when the version was built with
  another), twice and half the current one, each a full candidate version that must first beat the active version
  on the train probes (the planner's train gate) before the guard looks at the held-out ones.

A pinned parameter (`kaizen kb pin`) is never varied. Tuning runs before learning from traffic, and scores only
train probes whose question is not learned into the index (`tuning_probes`). Nothing is proposed without at least
`KAIZEN_TUNE_MIN_PROBES` such probes, and a grid result already judged on this version (promoted, rolled back, or
found no better) is not computed again until the train probes change. Every grid, with its scores, is in
`kb_changes`."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import ClassVar

import sqlalchemy as sa

from eval.judging.trust import GOLD_METRICS
from store import search_params as P
from store.kb_versions import record_change
from store.lexical import cjk_ratio
from store.search import CJK_QUERY_SHARE

from .actions import Action, Rebuild

# the values each parameter may take; the current value is always scored too
GRID = {
    "fusion_alpha": (0.2, 0.35, 0.5, 0.6, 0.7, 0.8, 0.9),
    "cjk_fusion_alpha": (0.15, 0.25, 0.35, 0.5, 0.65),
    "sentence_weight": (0.0, 0.4, 0.6, 0.8, 1.0),
    "search_candidates": (25, 50, 100),
}
ACTOR = "kaizen planner"


def objective(summary: dict) -> float:
    """One number to climb: the mean of the gold-id metrics the guard reads."""
    return sum(summary[m] for m in GOLD_METRICS) / len(GOLD_METRICS)


class TrainScorer:
    """Gold-id metrics of (a sample of) the train probes on a version with given parameters (eval.probes.retrieval
    .score_probes), their question vectors embedded once for every point of a grid."""

    def __init__(self, store, embedder, probes):
        self.store = store
        self.embedder = embedder
        self.probes = list(probes)
        self.vectors = list(embedder.embed_queries([p.question for p in self.probes])) if self.probes else []
        self.cjk = [cjk_ratio(p.question) >= CJK_QUERY_SHARE for p in self.probes]

    def score(self, version, params: dict | None = None, only=None) -> dict:
        """Mean metrics over the probes (`only(is_cjk)` picks some) searched on `version` with `params` (public
        names) over its tuned values; None for a metric when no probe is picked."""
        from eval.probes.retrieval import score_probes

        if params is not None:
            version = dataclasses.replace(version, search_params={**version.search_params, **params})
        picked = [i for i, cjk in enumerate(self.cjk) if only is None or only(cjk)]
        _, summary = score_probes(self.store, self.embedder, [self.probes[i] for i in picked], version=version,
                                  query_vectors=[self.vectors[i] for i in picked])
        n = summary["probes"]
        return {m: round(summary[m], 4) if n else None for m in GOLD_METRICS} | {"probes": n}


def even_sample(probes: list, n: int) -> list:
    """At most about `n` of `probes`, evenly spread."""
    return probes[:: max(1, -(-len(probes) // n))]


def _which(name: str):
    """The questions a parameter changes the ranking of, by whether they are CJK (the English weight leaves CJK
    questions alone)."""
    if name == "fusion_alpha":
        return lambda cjk: not cjk
    if name == "cjk_fusion_alpha":
        return lambda cjk: cjk
    return None


def probes_key(probes) -> str:
    return f"{len(probes)}:{max((p.id for p in probes), default=0)}"


def _checked(session, version_id: int, key: str) -> bool:
    """Whether the query-time grid was already run on this version with these train probes."""
    return session.execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM kb_changes WHERE (kind = 'tuning_checked' AND kb_version = :v "
        "AND after -> 'grid' ->> 'probes_key' = :k) OR (kind = 'repair:tune_search' "
        "AND (before ->> 'base_version')::int = :v AND after -> 'action' -> 'grid' ->> 'probes_key' = :k))"),
        {"v": version_id, "k": key}).scalar()


def grid_search(store, embedder, version, probes, *, min_gain: float, deadline: float | None = None) -> dict:
    """Coordinate ascent over GRID (pinned parameters left out) on `probes`. Returns the grid's record: the
    current and best values, their scores, every point tried."""
    started = time.perf_counter()
    scorer = TrainScorer(store, embedder, probes)
    current = {row["name"]: row["value"] for row in P.describe(store.settings, version)}
    pinned = set(version.pins or {})
    base_summary = scorer.score(version)
    best = dict(current)
    tried: list[dict] = []
    for name, values in GRID.items():
        if name in pinned:
            continue
        only = _which(name)
        if only is not None and not any(only(cjk) for cjk in scorer.cjk):
            continue
        here = scorer.score(version, {k: best[k] for k in GRID if k in best}, only)
        top_value, top = best[name], objective(here)
        for value in values:
            if value == best[name]:
                continue
            if deadline is not None and time.perf_counter() > deadline:
                break
            summary = scorer.score(version, {**{k: best[k] for k in GRID if k in best}, name: value}, only)
            tried.append({"name": name, "value": value, "objective": round(objective(summary), 4),
                          "probes": summary["probes"]})
            if objective(summary) > top + 1e-9:
                top_value, top = value, objective(summary)
        best[name] = top_value
    changed = {k: best[k] for k in best if best[k] != current.get(k) and k not in pinned}
    best_summary = scorer.score(version, changed) if changed else base_summary
    gain = objective(best_summary) - objective(base_summary)
    return {"probes_key": probes_key(probes), "probes": base_summary["probes"], "current": current,
            "proposed": changed if gain >= min_gain else {}, "best": changed, "pinned": sorted(pinned),
            "train_before": base_summary, "train_after": best_summary, "gain": round(gain, 4),
            "tried": tried, "seconds": round(time.perf_counter() - started, 1)}


@dataclass
class TuneSearch(Action):
    """New query-time parameters for the active version's chunks: a candidate that copies them (no embedding)
    and searches with `params`."""

    kind: ClassVar[str] = "tune_search"
    params: dict = field(default_factory=dict)  # public names -> values
    grid: dict = field(default_factory=dict)

    def search_params(self, base) -> dict:
        return {**base.search_params, **self.params}

    def build(self, builder, ctx):
        return {"copied": builder.copy_unchanged(), "search_params": builder.version.search_params,
                "train_before": self.grid.get("train_before"), "train_after": self.grid.get("train_after")}

    def as_dict(self) -> dict:
        data = super().as_dict()
        data["grid"] = {k: v for k, v in self.grid.items() if k != "tried"}
        data["grid"]["points"] = len(self.grid.get("tried", []))
        return data


@dataclass
class TuneChunking(Rebuild):
    """Every document re-chunked at another size (a full re-embedding), kept only if the train probes gain."""

    kind: ClassVar[str] = "tune_chunking"
    train_gate: ClassVar[bool] = True

    def signature(self) -> str:
        return f"{self.kind}:{self.chunk_tokens}"


def chunk_sizes(version, configured: int) -> list[int]:
    """The sizes worth trying from `version`: the configured one (if it was built with another), Kaizen's declared
    default, twice and half the current, within what the embedder reads."""
    from store.settings import StoreSettings

    current = version.chunk_tokens
    sizes = [configured, StoreSettings.defaults().chunk_tokens, min(510, current * 2), max(64, current // 2)]
    return [s for s in dict.fromkeys(sizes) if s != current]


def overlap_for(size: int) -> int:
    """The overlap a chunk size gets: the declared defaults' share (48 of 320 tokens)."""
    from store.settings import StoreSettings

    default = StoreSettings.defaults()
    return min(size - 1, round(size * default.chunk_overlap / default.chunk_tokens))


def _tried_sizes(session, version_id: int) -> set[int]:
    """Chunk sizes not worth another full re-embedding: tried by tune_chunking and not kept (from any version),
    and those of the versions this one descends from."""
    rows = session.execute(sa.text(
        "SELECT (after -> 'action' ->> 'chunk_tokens')::int FROM kb_changes WHERE kind = 'repair:tune_chunking' "
        "AND decision <> 'promoted' "
        "UNION SELECT chunk_tokens FROM kb_versions WHERE id IN (WITH RECURSIVE up(id) AS (SELECT parent_id FROM "
        "kb_versions WHERE id = :v UNION SELECT k.parent_id FROM kb_versions k JOIN up ON k.id = up.id) "
        "SELECT id FROM up)"), {"v": version_id}).scalars().all()
    return {r for r in rows if r is not None}


def tuning_probes(store, version) -> list:
    """The train probes tuning may score on: those whose question is not learned into `version`'s index (a learned
    question finds its chunk by its own words, so it would score every parameter alike and favour the version
    that learned it over a re-chunked one)."""
    from eval.probes.sets import load_probes
    from store.learned import learned_chunks, learned_lines, normalise

    with store.session() as s:
        learned = {normalise(line) for row in learned_chunks(s, version.id) for line in learned_lines(row.search_text)}
    return [p for p in load_probes(store, split="train") if normalise(p.question) not in learned]


def tuning(store, embedder, version, settings, *, deadline: float | None = None) -> list:
    """The diagnosis findings of self-tuning on `version` (see the module)."""
    from .diagnose import Finding

    probes = tuning_probes(store, version)
    if len(probes) < settings.tune_min_probes:
        if not probes:
            return []
        return [Finding("tuning", f"{len(probes)} train probe(s) not learned into the index: tuning waits for "
                        f"{settings.tune_min_probes}", len(probes))]
    sample = even_sample(probes, settings.tune_max_probes)
    findings = []
    key = probes_key(probes)
    with store.session() as s:
        checked = _checked(s, version.id, key)
        tried_sizes = _tried_sizes(s, version.id)
    if checked:
        findings.append(Finding("tuning", f"query-time parameters already tuned on KB version {version.id} with "
                                          f"these {len(probes)} train probes", 0))
    else:
        grid = grid_search(store, embedder, version, sample, min_gain=settings.repair_min_gain, deadline=deadline)
        if grid["proposed"]:
            summary = (f"on {grid['probes']} train probes, {_show(grid['proposed'])} scores {grid['gain']:+.3f} "
                       f"(mean of {', '.join(GOLD_METRICS)})")
            findings.append(Finding("tuning", summary, len(grid["proposed"]),
                                    TuneSearch(target=f"kb_version:{version.id}", reason=summary,
                                               params=grid["proposed"], grid=grid), {"grid": _short(grid)}))
        else:
            summary = (f"the current query-time parameters are the best the grid found on {grid['probes']} train "
                       f"probes ({len(grid['tried'])} points, best gain {grid['gain']:+.4f})")
            with store.session() as s:
                record_change(s, kind="tuning_checked", kb_version=version.id, target=f"kb_version:{version.id}",
                              before={"base_version": version.id}, after={"grid": grid}, decision="no_change",
                              actor=ACTOR)
            findings.append(Finding("tuning", summary, 0, None, {"grid": _short(grid)}))
    if "chunk_tokens" in (version.pins or {}):
        return findings
    for size in chunk_sizes(version, store.settings.chunk_tokens):
        if size in tried_sizes:
            continue
        overlap = overlap_for(size)
        reason = f"chunks of {size} tokens instead of {version.chunk_tokens}, if the train probes gain"
        findings.append(Finding("tuning", reason, 1, TuneChunking(target="all documents", reason=reason,
                                                                 chunk_tokens=size, chunk_overlap=overlap)))
    return findings


def _show(params: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(params.items()))


def _short(grid: dict) -> dict:
    return {k: grid[k] for k in ("probes", "current", "proposed", "gain", "seconds")}


__all__ = ["GRID", "TrainScorer", "TuneChunking", "TuneSearch", "chunk_sizes", "grid_search", "tuning"]
