"""Hybrid retrieval in one SQL query: HNSW vector and BM25 full-text candidates fused by a convex combination of their
normalised scores (or, with KAIZEN_FUSION=rrf, by reciprocal rank fusion).

PostgreSQL's ts_rank has no inverse document frequency, and IDF is most of what makes keyword search work, so the
full-text side is a real Okapi BM25 computed in SQL: the GIN index finds the candidate chunks, document frequencies,
the version's chunk count and their average length are kept by triggers as chunks are written (kb_term_stats and
kb_version_stats, migrations 0011-0012), and term frequencies come from the stored tsvector's positions. A filtered
search scores with the whole version's statistics, as Lucene does. Japanese and other CJK text is searched through
character bigrams, and Japanese also through its content words (store.lexical); a query is prepared with the lexical
scheme of the KB version it searches, so a KB indexed before a scheme change still matches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from . import search_params
from .embeddings import Embedder
from .errors import KaizenError
from .kb_versions import KBVersion, check_embedding_model, require_active
from .lexical import cjk_ratio, lexical_text

CJK_QUERY_SHARE = 0.3  # a query this much CJK counts as a CJK query for the fusion weights

MODES = ("hybrid", "vector", "text")
MAX_QUERY_CHARS = 4000
BM25_K1 = 1.2
BM25_B = 0.75
# CJK queries: overlapping bigrams repeat every character of a repeated word (and the document title, which
# every chunk carries, adds to the topic word's count), so term frequency saturates sooner and length matters
# less. Chosen on alternate halves of JSQuAD dev (each half's top settings included k1 0.4, b 0.3): hybrid
# recall@1 0.919 -> 0.929 with the word terms, and 0.925 with bigrams alone.
CJK_BM25_K1 = 0.4
CJK_BM25_B = 0.3
# The vector side re-scores this many times :candidates chunks, found by their chunk vector, with their best
# sentence: on JSQuAD dev a pool of 4x ranks like scoring every chunk, 2x loses ~0.1 point of recall@5.
VECTOR_POOL_FACTOR = 4
# Terms in more than this share of chunks do not select candidates (they still score the candidates).
COMMON_TERM_SHARE = 0.5
# Candidates come from the rarest query terms: terms join, rarest first, while the chunks they select add up to no
# more than this (the rarest always selects). On thousands of chunks nearly every selective term fits; at a
# million, the common ones would make most of the table a candidate. Every term still scores the candidates.
# Scoring a candidate (its tsvector read and filtered) is most of the query's work at a million chunks: 2,000
# rather than 5,000 left hybrid recall unchanged on every ClapNQ and JSQuAD dev question at 1,909 chunks and lost
# one ClapNQ question of 100 at a million, where it cut the warm p50 / p95 from 191 / 276 to 124 / 175 ms
# (JSQuAD) and from 104 / 166 to 88 / 147 ms (ClapNQ; docs/scaling.md, measured in one run).
CANDIDATE_POSTINGS = 2000


class SearchError(KaizenError, ValueError):
    pass


@dataclass
class SearchHit:
    chunk_id: int
    document_id: int
    source_uri: str
    source_id: str | None
    title: str
    ordinal: int
    text: str
    score: float
    vector_rank: int | None
    text_rank: int | None
    vector_score: float | None
    text_score: float | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Filters:
    source_prefix: str | None = None
    document_ids: tuple[int, ...] | None = None

    def sql(self) -> str:
        parts = []
        if self.source_prefix:
            parts.append(
                "AND c.document_id IN (SELECT id FROM documents WHERE starts_with(source_uri, :source_prefix))")
        if self.document_ids:
            parts.append("AND c.document_id = ANY(:document_ids)")
        return " ".join(parts)

    def params(self) -> dict:
        return {"source_prefix": self.source_prefix, "document_ids": list(self.document_ids or [])}

    @property
    def active(self) -> bool:
        return bool(self.source_prefix or self.document_ids)


def _vector_cte(version: KBVersion, filters: Filters, exact: bool) -> str:
    """The vector side: a pool of chunks nearest by their own vector (HNSW), each re-scored with its best
    sentence (cosine of the query with every sentence vector of the chunk), the best :candidates kept. Chunks
    without sentence vectors (KB versions built before them) keep their chunk cosine."""
    dim = int(version.embedding_dim)
    distance = f"(c.embedding::vector({dim}) <=> {_query_vector(dim)})"
    # With a filter, an approximate index scan followed by the filter can return too few rows: before pgvector
    # 0.8 (no iterative scan) filtered searches rank exactly, "+ 0" keeping the planner off the HNSW index.
    order = f"{distance} + 0" if exact else distance
    return f"""
    vector_pool AS (
        SELECT c.id, 1 - {distance} AS chunk_score, c.sentence_embeddings
        FROM chunks c
        WHERE c.kb_version = {int(version.id)} {filters.sql()}
        ORDER BY {order} LIMIT :vector_pool
    ),
    vector_hits AS (
        SELECT id, row_number() OVER (ORDER BY score DESC, id) AS rank, score
        FROM (SELECT p.id, {_vector_score("p.chunk_score")} AS score
              FROM vector_pool p {_best_sentence("p", dim)}
              ORDER BY score DESC, p.id LIMIT :candidates) v
    )"""


def _query_vector(dim: int) -> str:
    return f"CAST(:qvec AS vector({dim}))"


def _vector_score(chunk_score: str) -> str:
    """A chunk's vector score: its own cosine blended with its best sentence's (`best`, from _best_sentence)."""
    return f"coalesce((1 - :sentence_weight) * ({chunk_score}) + :sentence_weight * best.score, {chunk_score})"


def _best_sentence(alias: str, dim: int) -> str:
    return (f"LEFT JOIN LATERAL (SELECT max(1 - (e::vector({dim}) <=> {_query_vector(dim)})) AS score "
            f"FROM unnest({alias}.sentence_embeddings) e) best ON true")


# BM25 of one query term `u` (a lexeme of chunk `c`, with `ts` its term_stats row); summed over the query's terms
_BM25_TERM = """ts.idf * cardinality(u.positions) * (:k1 + 1)
                       / (cardinality(u.positions) + :k1 * (1 - :b + :b * c.lexical_length / corpus.avgdl))"""
# the query's lexemes of chunk `c`'s tsvector (weight A marks them, ts_filter keeps them): a chunk has a hundred-odd
# lexemes, a query a handful, and unnesting them all is most of the cost
_QUERY_LEXEMES = """CROSS JOIN corpus CROSS JOIN candidate_query cq
            CROSS JOIN LATERAL unnest(ts_filter(setweight(setweight(c.tsv, 'D'), 'A', cq.terms), '{a}')) u
            JOIN term_stats ts ON ts.term = u.lexeme"""


def _scored(where: str, v: int, filters: Filters) -> str:
    """BM25 of the chunks matching `where` (an extra condition), best :candidates first."""
    return f"""
            SELECT c.id, sum({_BM25_TERM}) AS score
            FROM chunks c
            {_QUERY_LEXEMES}
            WHERE c.kb_version = {v} {filters.sql()} AND {where}
            GROUP BY c.id
            ORDER BY score DESC, c.id
            LIMIT :candidates"""


def _text_ctes(version: KBVersion, filters: Filters) -> str:
    v = int(version.id)
    both = _scored("(SELECT q_both FROM candidate_query) IS NOT NULL AND c.tsv @@ CAST(cq.q_both AS tsquery)",
                   v, filters)
    any_ = _scored("((SELECT q_both FROM candidate_query) IS NULL OR (SELECT count(*) FROM text_both) < :candidates)"
                   " AND c.tsv @@ CAST(cq.q AS tsquery)", v, filters)
    return f"""
    query_terms AS (
        SELECT DISTINCT u.lexeme AS term
        FROM unnest(to_tsvector(CAST(:config AS regconfig), :qlex)) u
    ),
    corpus AS (
        SELECT coalesce(max(st.chunks), 0)::float8 AS n,
               greatest(coalesce(max(st.lexical_length)::float8 / nullif(max(st.chunks), 0), 1), 1) AS avgdl
        FROM kb_version_stats st WHERE st.kb_version = {v}
    ),
    term_stats AS (
        SELECT t.term, ks.df::float8 AS df,
               ln(1 + (corpus.n - ks.df + 0.5) / (ks.df + 0.5)) AS idf,
               ks.df <= corpus.n * {COMMON_TERM_SHARE} AS selective,
               row_number() OVER (ORDER BY ks.df, t.term) AS nth
        FROM query_terms t CROSS JOIN corpus
        JOIN kb_term_stats ks ON ks.kb_version = {v} AND ks.term = t.term
    ),
    selecting AS (
        SELECT term FROM (
            SELECT term, selective, nth, sum(df) OVER (ORDER BY nth) AS running FROM term_stats) r
        WHERE nth = 1 OR (running <= {CANDIDATE_POSTINGS}
                          AND (selective OR NOT EXISTS (SELECT 1 FROM term_stats WHERE selective)))
    ),
    candidate_query AS (
        SELECT (SELECT string_agg(quote_literal(term), ' | ') FROM selecting) AS q,
               -- the rarest term alone is in more chunks than the bound: its chunks that also hold the next
               -- rarest are the candidates, and the rest only when those are too few
               CASE WHEN (SELECT df FROM term_stats WHERE nth = 1) > {CANDIDATE_POSTINGS}
                    THEN (SELECT string_agg(quote_literal(term), ' & ') FROM term_stats
                          WHERE nth <= 2 HAVING count(*) = 2)
               END AS q_both,
               (SELECT array_agg(term) FROM term_stats) AS terms
    ),
    text_both AS ({both}
    ),
    text_any AS ({any_}
    ),
    text_hits AS (
        SELECT id, row_number() OVER (ORDER BY score DESC, id) AS rank, score
        FROM (SELECT id, max(score) AS score FROM (SELECT * FROM text_both UNION ALL SELECT * FROM text_any) a
              GROUP BY id ORDER BY score DESC, id LIMIT :candidates) scored
    )"""


def build_query(version: KBVersion, mode: str, filters: Filters, exact_vectors: bool, fusion: str = "convex") -> str:
    ctes = []
    if mode in ("hybrid", "vector"):
        ctes.append(_vector_cte(version, filters, exact_vectors))
    if mode in ("hybrid", "text"):
        ctes.append(_text_ctes(version, filters))
    if mode == "hybrid" and fusion == "rrf":
        fused = """
    fused AS (
        SELECT coalesce(v.id, t.id) AS id,
               coalesce(:vector_weight / (:rrf_k + v.rank), 0) + coalesce(:text_weight / (:rrf_k + t.rank), 0) AS score,
               v.rank AS vector_rank, t.rank AS text_rank, v.score AS vector_score, t.score AS text_score
        FROM vector_hits v FULL OUTER JOIN text_hits t ON t.id = v.id
    )"""
    elif mode == "hybrid":
        # Convex combination of the two scores, each normalised over its own side's candidates: cosine min-max,
        # BM25 by its maximum, both clamped to [0, 1]. A chunk only one side found gets the other side's score
        # computed for it (its cosine, its BM25), not a zero: at a million chunks the approximate vector index
        # misses passages that full text finds, and the other way round.
        dim = int(version.embedding_dim)
        fused = f"""
    vector_range AS (SELECT min(score) AS lo, max(score) AS hi FROM vector_hits),
    text_range AS (SELECT max(score) AS hi FROM text_hits),
    vector_fill AS (
        SELECT t.id, {_vector_score(f"1 - (c.embedding::vector({dim}) <=> {_query_vector(dim)})")} AS score
        FROM text_hits t JOIN chunks c ON c.id = t.id {_best_sentence("c", dim)}
        WHERE NOT EXISTS (SELECT 1 FROM vector_hits v WHERE v.id = t.id)
    ),
    text_fill AS (
        SELECT v.id, sum({_BM25_TERM}) AS score
        FROM vector_hits v JOIN chunks c ON c.id = v.id
        {_QUERY_LEXEMES}
        WHERE NOT EXISTS (SELECT 1 FROM text_hits t WHERE t.id = v.id)
        GROUP BY v.id
    ),
    fused AS (
        SELECT coalesce(v.id, t.id) AS id,
               :alpha * least(greatest(coalesce((coalesce(v.score, vf.score) - vr.lo) / nullif(vr.hi - vr.lo, 0),
                                                CASE WHEN v.id IS NULL THEN 0 ELSE 1 END), 0), 1)
               + (1 - :alpha) * least(coalesce(coalesce(t.score, tf.score) / nullif(tr.hi, 0), 0), 1) AS score,
               v.rank AS vector_rank, t.rank AS text_rank, v.score AS vector_score, t.score AS text_score
        FROM vector_hits v FULL OUTER JOIN text_hits t ON t.id = v.id
        LEFT JOIN vector_fill vf ON vf.id = t.id
        LEFT JOIN text_fill tf ON tf.id = v.id
        CROSS JOIN vector_range vr CROSS JOIN text_range tr
    )"""
    elif mode == "vector":
        fused = """
    fused AS (SELECT id, score, rank AS vector_rank, NULL::bigint AS text_rank, score AS vector_score,
                     NULL::float8 AS text_score FROM vector_hits)"""
    else:
        fused = """
    fused AS (SELECT id, score, NULL::bigint AS vector_rank, rank AS text_rank, NULL::float8 AS vector_score,
                     score AS text_score FROM text_hits)"""
    ctes.append(fused)
    return (
        "WITH " + ",".join(ctes) + """
    SELECT f.id, c.document_id, d.source_uri, d.source_id, d.title, c.ordinal, c.text, f.score,
           f.vector_rank, f.text_rank, f.vector_score, f.text_score
    FROM fused f JOIN chunks c ON c.id = f.id JOIN documents d ON d.id = c.document_id
    ORDER BY f.score DESC, f.id
    LIMIT :k"""
    )


def search(
    session: Session,
    embedder: Embedder,
    query: str,
    *,
    k: int = 5,
    mode: str = "hybrid",
    filters: Filters | None = None,
    settings=None,
    version: KBVersion | None = None,
    query_vector=None,
) -> list[SearchHit]:
    """Rank chunks of the active (or given) KB version for `query`."""
    if mode not in MODES:
        raise SearchError(f"unknown search mode {mode!r}: choose one of {', '.join(MODES)}")
    if not isinstance(query, str) or not query.strip():
        raise SearchError("the query is empty")
    if k < 1 or k > 200:
        raise SearchError("k must be between 1 and 200")
    query = query.replace("\x00", " ")
    if len(query) > MAX_QUERY_CHARS:
        query = query[:MAX_QUERY_CHARS]  # the embedder reads 512 tokens at most anyway
    from .settings import StoreSettings

    settings = settings or StoreSettings.defaults()  # the caller passes its settings; None: the declared defaults
    filters = filters or Filters()
    version = version or require_active(session)
    check_embedding_model(version, embedder.name, embedder.dim)
    settings = search_params.apply(settings, version)  # the version's tuned values and a person's pins
    candidates = max(settings.candidates, k)
    pool = candidates * VECTOR_POOL_FACTOR
    cjk = cjk_ratio(query) >= CJK_QUERY_SHARE
    params = {
        "k": k,
        "candidates": candidates,
        "vector_pool": pool,
        "sentence_weight": settings.sentence_weight,
        "config": version.text_search_config,
        "qlex": lexical_text(query, version.lexical_scheme),
        "k1": CJK_BM25_K1 if cjk else BM25_K1,
        "b": CJK_BM25_B if cjk else BM25_B,
        "rrf_k": settings.rrf_k,
        "vector_weight": settings.vector_weight,
        "text_weight": settings.cjk_text_weight if cjk else settings.text_weight,
        "alpha": settings.cjk_vector_alpha if cjk else settings.vector_alpha,
        **filters.params(),
    }
    if mode != "text":
        vec = query_vector if query_vector is not None else embedder.embed_queries([query])[0]
        params["qvec"] = np.asarray(vec, dtype=np.float32)  # a `vector`, through pgvector's adapter
        session.execute(sa.text(f"SET LOCAL hnsw.ef_search = {int(max(40, min(1000, pool)))}"))
    exact = filters.active and mode != "text" and not iterative_scans(session)
    if filters.active and not exact and mode != "text":
        # pgvector >= 0.8 goes on scanning the index until enough rows pass the filter (the pool is re-scored
        # and re-ordered by the query anyway, so relaxed order loses nothing)
        session.execute(sa.text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    sql = build_query(version, mode, filters, exact_vectors=exact, fusion=settings.fusion)
    rows = session.execute(sa.text(sql), params).all()
    return [SearchHit(*row) for row in rows]


def iterative_scans(session: Session) -> bool:
    """Whether the server's pgvector has iterative index scans (0.8+), so that a filtered search can use HNSW
    and still get its rows; the embedded server's 0.6 has not, and ranks filtered searches exactly. A Store's
    session carries the answer the Store found on start (`Store.capabilities`); any other session asks."""
    from .database import ITERATIVE_SCAN_VERSION, version_tuple

    capabilities = session.info.get("capabilities")
    if capabilities is not None:
        return capabilities.iterative_index_scans
    text = session.execute(sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
    return version_tuple(text or "0") >= ITERATIVE_SCAN_VERSION


def distinct_documents(hits: Sequence[SearchHit]) -> list[SearchHit]:
    """Best hit per document, in rank order (for document-level metrics and citations)."""
    seen, out = set(), []
    for hit in hits:
        if hit.document_id not in seen:
            seen.add(hit.document_id)
            out.append(hit)
    return out
