"""`kaizen kb prune` against the real database: which retired versions go, what stays (their rows, their history,
the retrievals that named their chunks), the index drop, the dry run, and a revert that needs a pruned version."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.support.common import run_cli
from tests.support.repair import active_id, bad_feedback


def _versions(store) -> dict[int, tuple[str, int]]:
    with store.session() as s:
        rows = s.execute(sa.text("SELECT v.id, v.status, (SELECT count(*) FROM chunks c WHERE c.kb_version = v.id) "
                                 "FROM kb_versions v ORDER BY v.id")).all()
    return {r[0]: (r[1], r[2]) for r in rows}


def _indexes(store) -> set[str]:
    with store.session() as s:
        return set(s.execute(sa.text("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'chunks_embedding_v%'"))
                   .scalars())


@pytest.mark.slow
def test_prune_frees_old_retired_versions_and_keeps_what_a_revert_needs(tiny_kb, embedder):
    from store.prune import PruneError, prune_retired
    from store.reindex import reindex

    first = active_id(tiny_kb)
    for _ in range(3):
        reindex(tiny_kb, embedder)
    v = _versions(tiny_kb)
    assert [s for s, _ in v.values()] == ["retired", "retired", "retired", "active"]
    chunks_per_version = v[first][1]
    assert chunks_per_version > 0 and all(n == chunks_per_version for _, n in v.values())
    # An answer that retrieved a chunk of the first version: its row must outlive the chunk.
    with tiny_kb.session() as s:
        iid = s.execute(sa.text("INSERT INTO interactions (thread_id, question, answer, model) VALUES "
                                "('t', 'q', 'a', 'test') RETURNING id")).scalar_one()
        chunk = s.execute(sa.text("SELECT min(id) FROM chunks WHERE kb_version = :v"), {"v": first}).scalar_one()
        s.execute(sa.text("INSERT INTO retrievals (interaction_id, query, chunk_id, rank, score) "
                          "VALUES (:i, 'q', :c, 1, 0.9)"), {"i": iid, "c": chunk})

    dry = prune_retired(tiny_kb, keep=1, dry_run=True)
    assert [p.id for p in dry.pruned] == [first + 1, first] and dry.kept == [first + 2]
    assert _versions(tiny_kb) == v  # nothing changed

    status = json.loads(run_cli("status", "--json").stdout)
    assert status["retired_chunks"] == 3 * chunks_per_version

    cli = run_cli("kb", "prune", "--keep", "1", "--json")
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert sorted(p["id"] for p in report["pruned"]) == [first, first + 1]
    assert report["chunks"] == 2 * chunks_per_version and report["kept"] == [first + 2]
    after = _versions(tiny_kb)
    assert after[first] == ("pruned", 0) and after[first + 1] == ("pruned", 0)
    assert after[first + 2] == ("retired", chunks_per_version) and after[first + 3] == ("active", chunks_per_version)
    indexes = _indexes(tiny_kb)
    assert f"chunks_embedding_v{first}" not in indexes and f"chunks_embedding_v{first + 3}" in indexes
    with tiny_kb.session() as s:
        kept = s.execute(sa.text("SELECT chunk_id, score FROM retrievals WHERE interaction_id = :i"), {"i": iid}).one()
        pruned_changes = s.execute(sa.text("SELECT kb_version FROM kb_changes WHERE kind = 'version_pruned' "
                                           "ORDER BY kb_version")).scalars().all()
    assert kept.chunk_id is None and kept.score == pytest.approx(0.9)
    assert pruned_changes == [first, first + 1]

    # keep=0 still keeps the active version's parent (what a revert of the latest change re-activates).
    assert prune_retired(tiny_kb, keep=0).pruned == [] and _versions(tiny_kb)[first + 2][0] == "retired"
    hits = json.loads(run_cli("search", "How far can an owl turn its head?", "--json").stdout)
    assert hits and hits[0]["title"] == "Owls"
    with pytest.raises(PruneError, match="0 or more"):
        prune_retired(tiny_kb, keep=-1)
    bad = run_cli("kb", "prune", "--keep", "-1")
    assert bad.returncode == 2 and "0 or more" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_a_revert_to_a_pruned_version_is_refused_with_the_reason(tiny_kb, embedder):
    from eval.repair.planner import run_planner
    from store.prune import prune_retired
    from store.revert import RevertError, revert

    first = active_id(tiny_kb)
    bad_feedback(tiny_kb, "Who designed the Golden Gate Bridge?", "Joseph Strauss was its chief engineer.")
    [one] = run_planner(tiny_kb, embedder=embedder, max_rounds=1).results
    bad_feedback(tiny_kb, "How old is the Moon?", "About 4.5 billion years.")
    [two] = run_planner(tiny_kb, embedder=embedder, max_rounds=1).results
    assert one.decision == two.decision == "promoted"
    report = prune_retired(tiny_kb, keep=0)
    assert [p.id for p in report.pruned] == [first] and report.kept == [one.candidate_version]
    assert revert(tiny_kb, two.change_id)["active"] == one.candidate_version
    with pytest.raises(RevertError, match="was pruned"):
        revert(tiny_kb, one.change_id)
    assert active_id(tiny_kb) == one.candidate_version
