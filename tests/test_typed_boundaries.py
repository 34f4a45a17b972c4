"""The typed boundaries (issue 12): vectors through pgvector's own adapter, the session advisory lock, one error
base class, and the graph state's dataclasses through the checkpointer's serializer. Fast: no model is loaded."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import pkgutil

import numpy as np
import pytest
import sqlalchemy as sa

from tests.support.common import reset


class HashEmbedder:
    """A stand-in embedder: each text gets a fixed pseudo-random unit vector (the vectors' values are the point,
    not their meaning)."""

    name, dim = "hash-test", 8

    def _vectors(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vec = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = vec / np.linalg.norm(vec)
        return out

    embed_passages = embed_queries = _vectors

    def count_tokens(self, text):
        return len(text.split())


@pytest.fixture
def hashed_kb(clean_store, tmp_path):
    from store.ingest import ingest

    for name, body in {"owls": "# Owls\n\nOwls hunt at night. They turn their heads far.",
                       "tea": "# Tea\n\nMatcha is powdered green tea. It is whisked, not steeped.",
                       "rust": "# Rust\n\nRust checks borrowing at compile time."}.items():
        (tmp_path / f"{name}.md").write_text(body)
    embedder = HashEmbedder()
    assert ingest(clean_store, embedder, [str(tmp_path)]).ok
    yield clean_store, embedder
    reset(clean_store)  # the next test's KB version uses the real embedder


def test_vectors_round_trip_exactly_through_the_adapter(hashed_kb):
    """What the indexer computed is what the database holds, bit for bit (pgvector's binary format), and the
    search SQL's vector score is the one numpy computes from the stored vectors (store.indexing.ChunkVectors)."""
    from store.indexing import embed_chunks, load_chunk_vectors
    from store.search import search

    store, embedder = hashed_kb
    with store.session() as s:
        rows = s.execute(sa.text("SELECT c.id, d.title, c.search_text, c.embedding, c.sentence_embeddings "
                                 "FROM chunks c JOIN documents d ON d.id = c.document_id ORDER BY c.id")).all()
        stored = load_chunk_vectors(s, [r.id for r in rows])
    assert len(rows) == 3
    expected = embed_chunks(embedder, [r.title for r in rows], [r.search_text for r in rows])
    for row, want in zip(rows, expected):
        assert np.array_equal(row.embedding.to_numpy(), want.embedding)
        assert len(row.sentence_embeddings) == len(want.sentence_embeddings) >= 2
        assert np.array_equal(np.stack([v.to_numpy() for v in row.sentence_embeddings]), want.sentence_embeddings)
        np.testing.assert_allclose(stored[row.id].embedding, want.embedding, rtol=1e-6)
        np.testing.assert_allclose(stored[row.id].sentence_embeddings, want.sentence_embeddings, rtol=1e-6)

    query = embedder.embed_queries(["owls at night"])[0]
    weight = store.settings.sentence_weight
    with store.session() as s:
        hits = search(s, embedder, "owls at night", k=3, mode="vector", settings=store.settings)
    assert len(hits) == 3
    for hit in hits:
        assert hit.vector_score == pytest.approx(stored[hit.chunk_id].score(query, weight), abs=1e-6)
    assert [h.vector_score for h in hits] == sorted((h.vector_score for h in hits), reverse=True)


def test_an_empty_sentence_list_is_an_empty_vector_array(store):
    """As the literal `{}` was: an empty `vector[]`, not NULL (chunks indexed before sentence vectors are NULL)."""
    from store.indexing import ChunkVectors, vector_params

    params = vector_params(ChunkVectors(np.ones(3, np.float32), np.zeros((0, 3), np.float32)))
    with store.session() as s:
        row = s.execute(sa.text("SELECT CAST(:embedding AS vector(3))::text, "
                                "cardinality(CAST(:sentence_embeddings AS vector[]))"), params).one()
    assert tuple(row) == ("[1,1,1]", 0)


def test_kaizen_sql_still_prints_vectors_as_postgres_does(store):
    from store.sql_console import run_sql

    result = run_sql(store, "SELECT '[1,2.5]'::vector AS v, ARRAY['[1,2]'::vector, '[3,4]'] AS a")
    assert result.rows == [("[1,2.5]", '{"[1,2]","[3,4]"}')]


TEST_KEY = 7234999  # no purpose of store.locks uses it


def _try_elsewhere(store) -> bool:
    """Can another session take the lock right now? (It gives it back at once.)"""
    from store import locks

    with store.engine.connect() as other, locks.session_lock(other, TEST_KEY, wait=False) as held:
        return held


def test_session_lock_is_held_for_the_block_and_released_after_it(store):
    from store import locks

    assert TEST_KEY not in {v for k, v in vars(locks).items() if k.isupper()}
    with store.engine.connect() as conn:
        with locks.session_lock(conn, TEST_KEY) as held:
            assert held
            conn.execute(sa.text("SELECT 1"))
            conn.commit()  # the lock is the session's: it outlives the block's transactions
            assert not _try_elsewhere(store)
        assert _try_elsewhere(store)
        with pytest.raises(RuntimeError, match="boom"):
            with locks.session_lock(conn, TEST_KEY):
                raise RuntimeError("boom")
        assert _try_elsewhere(store)
        assert not conn.in_transaction()  # never left idle in a transaction


def test_session_lock_try_form_and_a_psycopg_connection(store):
    import psycopg
    from psycopg.rows import dict_row

    from store import locks
    from store.database import libpq_url

    # the checkpointer's kind of connection: autocommit, dict rows
    with psycopg.connect(libpq_url(store.url), autocommit=True, row_factory=dict_row) as raw:
        with locks.session_lock(raw, TEST_KEY, wait=False) as held:
            assert held
            with store.engine.connect() as conn, locks.session_lock(conn, TEST_KEY, wait=False) as second:
                assert not second  # the block runs, without the lock, to say so
            assert not _try_elsewhere(store)
        assert _try_elsewhere(store)


PACKAGES = ("store", "agent", "eval")


def _modules():
    for package in PACKAGES:
        root = importlib.import_module(package)
        yield root
        for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
            yield importlib.import_module(info.name)


def test_every_error_class_of_the_three_packages_is_a_kaizen_error():
    """The CLI and the REPL print a KaizenError's message as it is (agent.errors.explain): a new error class
    that does not derive from it would end in a traceback instead."""
    from store.errors import KaizenError

    found, strays = set(), []
    for module in _modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, BaseException):
                found.add(cls)
                if not issubclass(cls, KaizenError):
                    strays.append(f"{cls.__module__}.{cls.__qualname__}")
    assert not strays, f"not derived from store.errors.KaizenError: {strays}"
    names = {cls.__name__ for cls in found}
    assert {"ConfigError", "StoreUnavailable", "SearchError", "RevertError", "ModelFileError", "LLMError",
            "ProbeImportError"} <= names


def test_explain_prints_a_kaizen_errors_message_and_keeps_other_bases():
    from agent.errors import explain
    from store.search import SearchError

    error = SearchError("the query is empty")
    assert isinstance(error, ValueError) and explain(error) == "the query is empty"
    assert explain(KeyError("x")) is None  # a bug keeps its traceback


def test_the_state_dataclasses_survive_the_checkpointer_serializer(caplog):
    from agent.state import Grade, Hit
    from agent.threads import serializer

    hit = Hit(chunk_id=1, document_id=2, source_uri="file:///owls.md", source_id=None, title="Owls", ordinal=0,
              text="Owls hunt at night.", score=0.9, vector_rank=1, text_rank=None, vector_score=0.88,
              text_score=None, rank=1, attempt=1, query="owls", relevant=True, question_score=None, rescored=True)
    grade = Grade("llm_context_grade", "answers", 0.81, {"threshold": 0.73, "threshold_source": "default"})
    serde = serializer()
    with caplog.at_level(logging.WARNING):
        back = serde.loads_typed(serde.dumps_typed({"hits": [hit], "grades": [grade]}))
    assert back == {"hits": [hit], "grades": [grade]} and type(back["hits"][0]) is Hit
    assert not [r for r in caplog.records if "unregistered" in r.getMessage()]
    assert hit.grade_score is None and grade.as_dict()["detail"]["threshold"] == 0.73
