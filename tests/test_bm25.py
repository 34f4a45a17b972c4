"""The full-text side of search: Okapi BM25 in SQL, checked against the formula computed by hand, and the bounds
that keep it fast on a million chunks (statistics kept by triggers as chunks are written, candidates from the
rarest terms) against the real database."""

from __future__ import annotations

import json
import math

import pytest
import sqlalchemy as sa

import store.search as search_module
from store.ingest import ingest
from store.kb_versions import require_active
from store.lexical import lexical_text
from store.search import BM25_B, BM25_K1, search

COMMON = "The quarterly report covers the harbour."


@pytest.fixture
def reports(tmp_path):
    """Twelve passages that share common words, a few with rarer ones."""
    rows = [{"id": f"r{i}", "title": f"Report {i}", "text": f"{COMMON} Item {i} is about shipping."} for i in range(9)]
    rows += [
        {"id": "zinc", "title": "Zinc", "text": f"{COMMON} Zinc prices rose sharply in the harbour market."},
        {"id": "copper", "title": "Copper", "text": f"{COMMON} Copper and zinc cargo waited at the quay."},
        {"id": "tin", "title": "Tin", "text": "Tin ore arrived by rail, not by sea."},
    ]
    path = tmp_path / "reports.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return path


def _bm25_by_hand(session, query: str) -> dict[str, float]:
    version = require_active(session)
    terms = set(session.execute(sa.text(
        "SELECT u.lexeme FROM unnest(to_tsvector(CAST(:c AS regconfig), :q)) u"),
        {"c": version.text_search_config, "q": lexical_text(query, version.lexical_scheme)}).scalars())
    rows = session.execute(sa.text(
        "SELECT d.source_id, c.lexical_length, u.lexeme, cardinality(u.positions) FROM chunks c "
        "JOIN documents d ON d.id = c.document_id CROSS JOIN LATERAL unnest(c.tsv) u "
        "WHERE c.kb_version = :v"), {"v": version.id}).all()
    lengths = {source: length for source, length, _, _ in rows}
    n, avgdl = len(lengths), sum(lengths.values()) / len(lengths)
    df = {t: sum(1 for _, _, lexeme, _ in rows if lexeme == t) for t in terms}
    scores: dict[str, float] = {}
    for source, length, lexeme, tf in rows:
        if lexeme in terms:
            idf = math.log(1 + (n - df[lexeme] + 0.5) / (df[lexeme] + 0.5))
            scores[source] = scores.get(source, 0.0) + idf * tf * (BM25_K1 + 1) / (
                tf + BM25_K1 * (1 - BM25_B + BM25_B * length / avgdl))
    return scores


def test_text_scores_are_okapi_bm25_of_the_query_terms(clean_store, embedder, reports):
    ingest(clean_store, embedder, [str(reports)])
    query = "zinc prices in the harbour"
    with clean_store.session() as s:
        hits = search(s, embedder, query, k=12, mode="text")
        expected = _bm25_by_hand(s, query)
    # "harbour" is in more than half the chunks: it scores them but does not select them, so the chunks with no
    # other query term are not candidates
    assert {h.source_id for h in hits} == {"zinc", "copper"}
    for h in hits:
        assert h.text_score == pytest.approx(expected[h.source_id], rel=1e-6)
    assert hits[0].source_id == "zinc"


def test_candidates_come_from_the_rarest_terms_within_the_postings_bound(clean_store, embedder, reports,
                                                                         monkeypatch):
    ingest(clean_store, embedder, [str(reports)])
    with clean_store.session() as s:
        unbounded = search(s, embedder, "zinc copper tin", k=12, mode="text")
    monkeypatch.setattr(search_module, "CANDIDATE_POSTINGS", 2)
    with clean_store.session() as s:
        bounded = search(s, embedder, "zinc copper tin", k=12, mode="text")
    assert {h.source_id for h in unbounded} == {"zinc", "copper", "tin"}
    # copper (1 chunk) and tin (1 chunk) fill the bound of 2; zinc (2 chunks) would pass it and selects nothing,
    # but still scores the chunks that are candidates
    assert {h.source_id for h in bounded} == {"copper", "tin"}
    by_id = {h.source_id: h.text_score for h in unbounded}
    assert all(h.text_score == pytest.approx(by_id[h.source_id]) for h in bounded)
    monkeypatch.setattr(search_module, "CANDIDATE_POSTINGS", 0)
    with clean_store.session() as s:
        rarest_only = search(s, embedder, "zinc copper", k=12, mode="text")
    assert [h.source_id for h in rarest_only] == ["copper"]  # the rarest term always selects


@pytest.fixture
def overlapping(tmp_path):
    """alpha in x and y; bravo in y and two more; charlie five times in x and in two others."""
    texts = {"x": "alpha charlie charlie charlie charlie charlie", "y": "alpha bravo", "z": "bravo charlie",
             "w": "bravo delta", "v": "charlie echo"}
    texts.update({f"f{i}": f"filler text number {i}, about nothing much at all" for i in range(11)})
    path = tmp_path / "overlapping.jsonl"
    path.write_text("\n".join(json.dumps({"id": k, "title": "Note", "text": t}) for k, t in texts.items()),
                    encoding="utf-8")
    return path


def test_a_rarest_term_past_the_bound_takes_the_chunks_that_also_hold_the_next(clean_store, embedder, overlapping,
                                                                              monkeypatch):
    from store.settings import StoreSettings

    ingest(clean_store, embedder, [str(overlapping)])
    query = "alpha bravo charlie"
    with clean_store.session() as s:
        by_hand = _bm25_by_hand(s, query)
        unbounded = search(s, embedder, query, k=1, mode="text")
    assert by_hand["x"] > by_hand["y"] and unbounded[0].source_id == "x"  # x's five charlies outweigh y's bravo
    # alpha (2 chunks) is past a bound of 1: the candidates are the chunks with alpha and bravo, the next rarest
    monkeypatch.setattr(search_module, "CANDIDATE_POSTINGS", 1)
    one = StoreSettings.defaults(candidates=1)
    with clean_store.session() as s:
        both = search(s, embedder, query, k=1, mode="text", settings=one)
        assert [h.source_id for h in both] == ["y"]
        assert both[0].text_score == pytest.approx(by_hand["y"], rel=1e-6)
        # too few of those for the candidates wanted: the rarest term's other chunks join them
        two = StoreSettings.defaults(candidates=2)
        refilled = search(s, embedder, query, k=2, mode="text", settings=two)
        assert [h.source_id for h in refilled] == ["x", "y"]
        # no chunk holds both: the rarest term's chunks, as without the bound
        assert {h.source_id for h in search(s, embedder, "alpha filler", k=5, mode="text", settings=one)} == {"x", "y"}


def _stats_by_count(session) -> dict:
    return {row[0]: (row[1], row[2]) for row in session.execute(sa.text(
        "SELECT kb_version, count(*), sum(lexical_length) FROM chunks GROUP BY kb_version"))}


def _stats_kept(session) -> dict:
    return {row[0]: (row[1], row[2]) for row in session.execute(sa.text(
        "SELECT kb_version, chunks, lexical_length FROM kb_version_stats"))}


def _df_by_count(session) -> dict:
    return {(v, t): n for v, t, n in session.execute(sa.text(
        "SELECT c.kb_version, u.lexeme, count(*) FROM chunks c CROSS JOIN LATERAL unnest(c.tsv) u "
        "GROUP BY 1, 2"))}


def _df_kept(session) -> dict:
    return {(v, t): n for v, t, n in session.execute(sa.text("SELECT kb_version, term, df FROM kb_term_stats"))}


def _consistent(session) -> bool:
    return _stats_kept(session) == _stats_by_count(session) and _df_kept(session) == _df_by_count(session)


def test_the_bm25_statistics_follow_every_write_and_a_rollback(clean_store, embedder, reports, tmp_path):
    from store.reindex import reindex

    ingest(clean_store, embedder, [str(reports)])
    with clean_store.session() as s:
        assert _consistent(s) and len(_stats_kept(s)) == 1 and _df_kept(s)
    # a changed document: its chunks deleted and written again; a removed one: deleted
    rows = [json.loads(line) for line in reports.read_text(encoding="utf-8").splitlines()]
    rows[0]["text"] += " A much longer passage now, with many more words about the harbour and its cranes."
    reports.write_text("\n".join(json.dumps(r) for r in rows[:-1]), encoding="utf-8")
    ingest(clean_store, embedder, [str(reports)])
    with clean_store.session() as s:
        assert _consistent(s)
    # an UPDATE that changes a length, and one that changes none
    with clean_store.session() as s:
        s.execute(sa.text("UPDATE chunks SET lexical_length = lexical_length + 5 WHERE ordinal = 0"))
        s.execute(sa.text("UPDATE chunks SET origin = 'user'"))
        s.execute(sa.text("UPDATE chunks SET tsv = to_tsvector('simple', 'zinc only') WHERE ordinal = 0"))
    with clean_store.session() as s:
        assert _consistent(s)
    before = None
    with pytest.raises(RuntimeError):
        with clean_store.session() as s:
            before = (_stats_kept(s), _df_kept(s))
            s.execute(sa.text("DELETE FROM chunks"))
            raise RuntimeError("crash mid-transaction")
    with clean_store.session() as s:
        assert (_stats_kept(s), _df_kept(s)) == before and _consistent(s)
    reindex(clean_store, embedder)  # a second version, built beside the first
    with clean_store.session() as s:
        assert _consistent(s) and len(_stats_kept(s)) == 2
        s.execute(sa.text("DELETE FROM documents WHERE source_id = 'r1'"))  # cascades to its chunks in both
    with clean_store.session() as s:
        assert _consistent(s)
        s.execute(sa.text("TRUNCATE chunks CASCADE"))
    with clean_store.session() as s:
        assert _stats_kept(s) == {} and _df_kept(s) == {}


def test_a_chunk_one_side_missed_is_fused_with_its_score_on_the_other(clean_store, embedder, reports):
    from store.settings import StoreSettings

    ingest(clean_store, embedder, [str(reports)])
    query = "harbour market prices"
    two = StoreSettings.defaults(candidates=2)
    with clean_store.session() as s:
        vector = {h.source_id: h.score for h in search(s, embedder, query, k=12, mode="vector")}
        text_hi = max(h.score for h in search(s, embedder, query, k=2, mode="text", settings=two))
        bm25 = _bm25_by_hand(s, query)
        hits = search(s, embedder, query, k=2, settings=two)
    # each side's two best are its candidates, and normalise the scores
    lo, hi = sorted(vector.values(), reverse=True)[1], max(vector.values())
    alpha = two.vector_alpha
    for h in hits:
        expected = (alpha * min(max((vector[h.source_id] - lo) / (hi - lo), 0), 1)
                    + (1 - alpha) * min(bm25.get(h.source_id, 0.0) / text_hi, 1))
        assert h.score == pytest.approx(expected, rel=1e-6)
    # the case that matters: a chunk only the vector side returned still gets its BM25 ("harbour" is in most
    # chunks, so it selects none, but it scores them)
    assert any(h.text_rank is None and bm25.get(h.source_id, 0) > 0 for h in hits)
