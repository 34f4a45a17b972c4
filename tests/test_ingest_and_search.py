"""Ingestion and hybrid search against the real database and the real embedding model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa

from store.ingest import ingest
from store.kb_versions import EmbeddingModelMismatch
from store.reindex import reindex
from store.search import Filters, SearchError, search

DOCS = {
    "tea.md": "# Green tea\n\nGreen tea is made from Camellia sinensis leaves that are steamed or pan-fired "
    "to stop oxidation. Matcha is powdered green tea from Japan.",
    "rust.md": "# Rust\n\nRust is a systems programming language focused on memory safety without a garbage "
    "collector, using ownership and borrowing checked at compile time.",
    "tsuyu.txt": "梅雨（つゆ）は、北海道と小笠原諸島を除く日本で5月から7月にかけて見られる雨の多い期間である。"
    "雨季の一種である。",
}


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "kb"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_ingest_is_incremental(clean_store, embedder, corpus):
    first = ingest(clean_store, embedder, [str(corpus)])
    assert (first.added, first.updated, first.unchanged, first.failed) == (3, 0, 0, 0)
    again = ingest(clean_store, embedder, [str(corpus)])
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3)

    (corpus / "rust.md").write_text("# Rust\n\nRust has no garbage collector; the borrow checker frees memory.")
    (corpus / "tsuyu.txt").unlink()
    third = ingest(clean_store, embedder, [str(corpus)])
    assert (third.added, third.updated, third.unchanged, third.missing) == (0, 1, 1, 1)
    with clean_store.session() as s:
        statuses = dict(s.execute(sa.text("SELECT title, status FROM documents")).all())
        kinds = s.execute(sa.text("SELECT kind FROM kb_changes ORDER BY id")).scalars().all()
        active = s.execute(sa.text("SELECT count(*) FROM active_chunks")).scalar_one()
    assert statuses == {"Green tea": "active", "Rust": "active", "tsuyu": "missing"}
    assert kinds.count("document_added") == 3 and "document_updated" in kinds and "document_missing" in kinds
    assert active == 2


def test_a_failing_file_does_not_stop_the_others(clean_store, embedder, corpus):
    (corpus / "broken.txt").write_bytes(b"\xff\xfe\x00\x00binary")
    (corpus / "bad.jsonl").write_text('{"id": "x", "text": "fine line"}\nnot json\n', encoding="utf-8")
    report = ingest(clean_store, embedder, [str(corpus)])
    assert report.added == 4 and report.failed == 2 and not report.ok
    assert {e.source.split("/")[-1] for e in report.errors} == {"broken.txt", "bad.jsonl:2"}


def test_hybrid_search_english_and_japanese(clean_store, embedder, corpus):
    ingest(clean_store, embedder, [str(corpus)])
    with clean_store.session() as s:
        en = search(s, embedder, "Which language checks ownership at compile time?", k=3)
        ja = search(s, embedder, "日本で梅雨がないのは北海道とどこか", k=3)
        ja_text = search(s, embedder, "梅雨", k=3, mode="text")
        vec = search(s, embedder, "powdered tea", k=1, mode="vector")
    assert en[0].title == "Rust" and en[0].vector_rank == 1 and en[0].text_rank == 1
    assert ja[0].title == "tsuyu"
    assert ja_text and ja_text[0].title == "tsuyu" and ja_text[0].text_score > 0
    assert vec[0].title == "Green tea" and vec[0].text_rank is None


def test_search_filters(clean_store, embedder, corpus):
    ingest(clean_store, embedder, [str(corpus)])
    with clean_store.session() as s:
        tea_id = s.execute(sa.text("SELECT id FROM documents WHERE title = 'Green tea'")).scalar_one()
        only_tea = search(s, embedder, "memory safety", k=5, filters=Filters(document_ids=(tea_id,)))
        by_prefix = search(s, embedder, "memory safety", k=5,
                           filters=Filters(source_prefix=(corpus / "rust").resolve().as_uri()))
    assert {h.document_id for h in only_tea} == {tea_id}
    assert [h.title for h in by_prefix] == ["Rust"]


def test_a_filtered_search_reads_the_pgvector_version_the_store_found_on_start(clean_store, embedder, corpus):
    ingest(clean_store, embedder, [str(corpus)])
    asked = []

    def record(conn, cursor, statement, *args):
        if "pg_extension" in statement:
            asked.append(statement)

    sa.event.listen(clean_store.engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            with clean_store.session() as s:
                search(s, embedder, "memory safety", k=2, filters=Filters(source_prefix=corpus.resolve().as_uri()))
    finally:
        sa.event.remove(clean_store.engine, "before_cursor_execute", record)
    assert asked == []  # Store.capabilities already knows


@pytest.mark.parametrize("query", [
    "'; DROP TABLE chunks; --",
    "a & b | !c <-> (d",
    "\\x00 %s %(name)s $1 :param",
    "x" * 10000,
    "ワ" * 10000,
])
@pytest.mark.slow
def test_hostile_queries_are_just_text(clean_store, embedder, corpus, query):
    ingest(clean_store, embedder, [str(corpus)])
    with clean_store.session() as s:
        hits = search(s, embedder, query, k=3)
        assert s.execute(sa.text("SELECT count(*) FROM chunks")).scalar_one() == 3
    assert len(hits) <= 3


def test_empty_query_is_refused(clean_store, embedder):
    with clean_store.session() as s, pytest.raises(SearchError, match="empty"):
        search(s, embedder, "   ")


def test_other_embedding_model_is_refused_naming_reindex(clean_store, embedder, corpus):
    ingest(clean_store, embedder, [str(corpus)])
    with clean_store.session() as s:
        s.execute(sa.text("UPDATE kb_versions SET embedding_model = 'some-other-model'"))
    with pytest.raises(EmbeddingModelMismatch, match="kaizen reindex"):
        ingest(clean_store, embedder, [str(corpus)])
    with clean_store.session() as s, pytest.raises(EmbeddingModelMismatch, match="kaizen reindex"):
        search(s, embedder, "tea")


def test_reindex_switches_versions_atomically(clean_store, embedder, corpus):
    ingest(clean_store, embedder, [str(corpus)])
    report = reindex(clean_store, embedder, reason="test")
    assert (report.previous_version, report.new_version, report.documents, report.chunks) == (1, 2, 3, 3)
    with clean_store.session() as s:
        statuses = dict(s.execute(sa.text("SELECT id, status FROM kb_versions")).all())
        hits = search(s, embedder, "matcha", k=1)
        index = s.execute(
            sa.text("SELECT count(*) FROM pg_indexes WHERE indexname = 'chunks_embedding_v2'")
        ).scalar_one()
    assert statuses == {1: "retired", 2: "active"}
    assert hits[0].title == "Green tea" and index == 1


def test_abandoned_build_is_rolled_back_and_active_untouched(clean_store, embedder, corpus):
    """A reindex that fails half-way rolls its version back at once; one whose process died (a `building` or a
    finished but not yet active `candidate` version left behind) is rolled back by the next one. The active
    version keeps answering throughout."""
    from store.candidate import CandidateBuilder
    from store.kb_versions import require_active

    ingest(clean_store, embedder, [str(corpus)])

    class Exploding:
        name, dim = embedder.name, embedder.dim

        def embed_passages(self, texts):
            raise RuntimeError("killed half-way")

        def count_tokens(self, text):
            return embedder.count_tokens(text)

    with pytest.raises(RuntimeError, match="half-way"):
        reindex(clean_store, Exploding(), reason="crash")
    with clean_store.session() as s:
        assert dict(s.execute(sa.text("SELECT id, status FROM kb_versions")).all()) == {1: "active", 2: "rolled_back"}
        assert s.execute(sa.text("SELECT count(*) FROM chunks WHERE kb_version = 2")).scalar_one() == 0
        assert search(s, embedder, "matcha", k=1)[0].title == "Green tea"
        base = require_active(s)
    # processes that died: one while writing chunks, one after finishing but before the switch
    CandidateBuilder(clean_store, embedder, base, reason="died while building")
    died = CandidateBuilder(clean_store, embedder, base, reason="died before the switch")
    died.copy_unchanged()
    died.finish()
    report = reindex(clean_store, embedder)
    with clean_store.session() as s:
        statuses = dict(s.execute(sa.text("SELECT id, status FROM kb_versions")).all())
        left = s.execute(sa.text("SELECT count(*) FROM chunks WHERE kb_version IN (3, 4)")).scalar_one()
    assert statuses == {1: "retired", 2: "rolled_back", 3: "rolled_back", 4: "rolled_back", 5: "active"}
    assert report.new_version == 5 and left == 0


def test_jsonl_corpus_keeps_source_ids(clean_store, embedder, tmp_path):
    f = tmp_path / "corpus.jsonl"
    rows = [{"id": "p-1", "title": "Alpha", "text": "The alpha particle is a helium nucleus."},
            {"id": "p-2", "title": "Beta", "text": "Beta decay emits an electron or positron."}]
    f.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    assert ingest(clean_store, embedder, [str(f)]).added == 2
    with clean_store.session() as s:
        hits = search(s, embedder, "helium nucleus", k=2)
    assert hits[0].source_id == "p-1" and hits[0].source_uri.endswith("#p-1")


@pytest.mark.parametrize("fusion", ["convex", "rrf"])
def test_both_fusions_rank_the_answer_first(clean_store, embedder, corpus, fusion):
    ingest(clean_store, embedder, [str(corpus)])
    settings = clean_store.settings.model_copy(update={"fusion": fusion})
    with clean_store.session() as s:
        en = search(s, embedder, "Which language checks ownership at compile time?", k=3, settings=settings)
        ja = search(s, embedder, "日本で梅雨がないのは北海道とどこか", k=3, settings=settings)
    assert en[0].title == "Rust" and ja[0].title == "tsuyu"
    assert en[0].score > en[1].score
    if fusion == "convex":
        assert 0.0 <= en[-1].score <= en[0].score <= 1.0


@pytest.mark.parametrize("name,value", [("KAIZEN_FUSION", "borda"), ("KAIZEN_FUSION_ALPHA", "1.5"),
                                        ("KAIZEN_CJK_FUSION_ALPHA", "-0.1")])
def test_bad_fusion_settings_are_named(monkeypatch, name, value):
    from store.settings import ConfigError, StoreSettings

    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        StoreSettings()


def _reindex_tsvectors_with(store, scheme: str) -> None:
    """Make the active version look like one indexed with `scheme` (as a KB built by an older Kaizen is)."""
    from store.lexical import lexical_text

    with store.session() as s:
        rows = s.execute(sa.text("SELECT id, search_text FROM active_chunks a JOIN chunks c USING (id)")).all()
        for chunk_id, search_text in rows:
            s.execute(sa.text("UPDATE chunks c SET tsv = t.tsv, lexical_length = coalesce((SELECT sum(cardinality("
                              "u.positions)) FROM unnest(t.tsv) u), 0) "
                              "FROM (SELECT to_tsvector('english', :lex) AS tsv) t "
                              "WHERE c.id = :id"), {"id": chunk_id, "lex": lexical_text(search_text, scheme)})
        s.execute(sa.text("UPDATE kb_versions SET lexical_scheme = :scheme WHERE status = 'active'"),
                  {"scheme": scheme})


def test_japanese_words_rank_a_whole_word_above_a_substring(clean_store, embedder, corpus):
    # 東京都 (Tokyo Metropolis) contains the bigram 京都 (Kyoto) three times; only the word terms know that the
    # Kyoto passage is the one about 京都 and its temples.
    (corpus / "tokyo.txt").write_text("東京都の人口は東京都が調べた。東京都庁は新宿にある。", encoding="utf-8")
    (corpus / "kyoto.txt").write_text("京都には古い寺が多い。", encoding="utf-8")
    ingest(clean_store, embedder, [str(corpus)])
    with clean_store.session() as s:
        scheme = s.execute(sa.text("SELECT lexical_scheme FROM kb_versions WHERE status = 'active'")).scalar_one()
        words = search(s, embedder, "京都の寺", k=2, mode="text")
    assert scheme == "cjk-bigram-words"
    assert words[0].title == "kyoto"

    # A KB indexed with bigrams alone (before this scheme) keeps working: its queries are prepared with its own
    # scheme, where the substring wins; `kaizen reindex` upgrades it to the current scheme.
    _reindex_tsvectors_with(clean_store, "cjk-bigram")
    with clean_store.session() as s:
        bigrams = search(s, embedder, "京都の寺", k=2, mode="text")
        tsuyu = search(s, embedder, "日本で梅雨がないのは北海道とどこか", k=1, mode="text")
    assert bigrams[0].title == "tokyo" and tsuyu[0].title == "tsuyu"
    reindex(clean_store, embedder, reason="lexical scheme upgrade")
    with clean_store.session() as s:
        scheme = s.execute(sa.text("SELECT lexical_scheme FROM kb_versions WHERE status = 'active'")).scalar_one()
        again = search(s, embedder, "京都の寺", k=2, mode="text")
    assert scheme == "cjk-bigram-words" and again[0].title == "kyoto"


def _parse_vector(text: str) -> np.ndarray:
    return np.array(json.loads(text), dtype=np.float64)


def test_vector_score_is_chunk_and_best_sentence_and_older_chunks_keep_their_own(clean_store, embedder, corpus):
    """The vector side scores (1 - w) * cosine(chunk) + w * max cosine(sentence); a chunk without sentence
    vectors (a KB version built before them) is scored by its chunk vector alone."""
    ingest(clean_store, embedder, [str(corpus)])
    query = "Which language checks ownership and borrowing at compile time?"
    q = embedder.embed_queries([query])[0].astype(np.float64)
    weight = clean_store.settings.sentence_weight
    assert 0 < weight < 1
    with clean_store.session() as s:
        rows = s.execute(sa.text("SELECT id, embedding::text, sentence_embeddings::text[] FROM chunks")).all()
    assert all(len(r[2]) >= 1 for r in rows)
    expected = {}
    for chunk_id, chunk_vec, sentence_vecs in rows:
        chunk_cos = float(q @ _parse_vector(chunk_vec))
        best = max(float(q @ _parse_vector(v)) for v in sentence_vecs)
        expected[chunk_id] = ((1 - weight) * chunk_cos + weight * best, chunk_cos)
    with clean_store.session() as s:
        hits = search(s, embedder, query, k=5, mode="vector", settings=clean_store.settings)
    assert hits[0].title == "Rust"
    for hit in hits:
        assert hit.vector_score == pytest.approx(expected[hit.chunk_id][0], abs=2e-5)
    with clean_store.session() as s:
        s.execute(sa.text("UPDATE chunks SET sentence_embeddings = NULL"))
    with clean_store.session() as s:
        hits = search(s, embedder, query, k=5, mode="vector", settings=clean_store.settings)
    assert hits[0].title == "Rust"
    for hit in hits:
        assert hit.vector_score == pytest.approx(expected[hit.chunk_id][1], abs=2e-5)


def test_a_whole_version_is_indexed_with_the_build_memory_setting(clean_store, embedder, corpus, monkeypatch):
    """pgvector builds the HNSW graph in maintenance_work_mem (64 MB by default, far too little for a million
    chunks); the build of a whole version gets KAIZEN_INDEX_BUILD_MB for its own transaction only."""
    import store.candidate as candidate_module
    from store.kb_versions import create_vector_index

    ingest(clean_store, embedder, [str(corpus)])
    with clean_store.session() as s:
        default = s.execute(sa.text("SHOW maintenance_work_mem")).scalar_one()
        version = s.execute(sa.text("SELECT id, embedding_dim FROM kb_versions WHERE status = 'active'")).one()
        s.execute(sa.text(f"DROP INDEX chunks_embedding_v{version.id}"))
        create_vector_index(s, version.id, version.embedding_dim, build_mb=77)
        assert s.execute(sa.text("SHOW maintenance_work_mem")).scalar_one() == "77MB"
    with clean_store.session() as s:
        assert s.execute(sa.text("SHOW maintenance_work_mem")).scalar_one() == default
        assert s.execute(sa.text("SELECT count(*) FROM pg_indexes WHERE indexname = :n"),
                         {"n": f"chunks_embedding_v{version.id}"}).scalar_one() == 1

    seen = []
    real = candidate_module.create_vector_index
    monkeypatch.setattr(candidate_module, "create_vector_index",
                        lambda s, v, dim, build_mb=None: (seen.append(build_mb), real(s, v, dim, build_mb))[1])
    monkeypatch.setattr(clean_store, "settings", clean_store.settings.model_copy(update={"index_build_mb": 321}))
    reindex(clean_store, embedder, reason="build memory")
    assert seen == [321]
