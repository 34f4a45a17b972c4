"""`kaizen bench scale`: pgvector HNSW at scale on synthetic clustered vectors, in a throw-away embedded database.

Reports insert rows/s (binary COPY, as ingestion at scale would), HNSW build time, recall@10 against an exact
scan (numpy, on the very same vectors) and p50/p95 query latency for several hnsw.ef_search values.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from eval.metrics import percentile
from store.kb_versions import HNSW_EF_CONSTRUCTION, HNSW_M

EF_SEARCH = (40, 80, 160, 320, 640)


def clustered_vectors(n: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, size=n)
    points = centers[labels] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def run(n: int, dim: int = 384, queries: int = 200, seed: int = 7, m: int = HNSW_M,
        ef_construction: int = HNSW_EF_CONSTRUCTION) -> dict:
    from pgvector.psycopg import register_vector

    from store.database import Store
    from store.settings import StoreSettings

    rng = np.random.default_rng(seed)
    clusters = max(10, n // 1000)
    data = clustered_vectors(n, dim, clusters, rng)
    probe = clustered_vectors(queries, dim, clusters, np.random.default_rng(seed))  # same centres, new noise
    home = Path(tempfile.mkdtemp(prefix="kaizen-scale-"))
    settings = StoreSettings(home=home, database_url=None)
    store = Store(settings, migrate=False, ephemeral=True)
    try:
        with store.engine.connect() as conn:
            raw = conn.connection.driver_connection
            raw.autocommit = True
            raw.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(raw)
            raw.execute(f"CREATE TABLE scale_bench (id integer PRIMARY KEY, embedding vector({dim}) NOT NULL)")
            started = time.perf_counter()
            with raw.cursor().copy("COPY scale_bench (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "vector"])
                for i in range(n):
                    copy.write_row((i, data[i]))
            insert_seconds = time.perf_counter() - started
            raw.execute("SET maintenance_work_mem = '2GB'")
            raw.execute("SET max_parallel_maintenance_workers = 1")
            started = time.perf_counter()
            raw.execute("CREATE INDEX ON scale_bench USING hnsw (embedding vector_cosine_ops) "
                        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})")
            build_seconds = time.perf_counter() - started
            raw.execute("ANALYZE scale_bench")

            exact = np.argsort(-(probe @ data.T), axis=1)[:, :10]
            by_ef = _by_ef_search(raw, "SELECT id FROM scale_bench ORDER BY embedding <=> %s LIMIT 10", probe,
                                  lambda qi, found: len(set(found) & set(exact[qi].tolist())) / 10)
            plan = raw.execute("EXPLAIN SELECT id FROM scale_bench ORDER BY embedding <=> %s LIMIT 10",
                               (probe[0],)).fetchall()
    finally:
        store.close()  # stops the ephemeral server and deletes its data
        shutil.rmtree(home, ignore_errors=True)
    best = _chosen_ef_search(by_ef)
    return {
        "benchmark": "scale",
        "n": n,
        "dim": dim,
        "clusters": clusters,
        "queries": queries,
        "insert_rows_per_second": round(n / insert_seconds, 1),
        "hnsw_build_seconds": round(build_seconds, 2),
        "hnsw": {"m": m, "ef_construction": ef_construction},
        "by_ef_search": by_ef,
        "chosen_ef_search": int(best),
        "recall@10": by_ef[best]["recall@10"],
        "latency_ms_p50": by_ef[best]["latency_ms_p50"],
        "latency_ms_p95": by_ef[best]["latency_ms_p95"],
        "uses_index": any("scale_bench_embedding_idx" in str(row[0]) for row in plan),
    }


def _by_ef_search(raw, sql: str, queries: np.ndarray, recall, ef_values=EF_SEARCH) -> dict:
    """recall@10 and latency of `sql` (a top-10 query by the vector %s) per hnsw.ef_search; `recall(i, ids)` scores
    query i's result against the exact neighbours."""
    out = {}
    for ef in ef_values:
        raw.execute(f"SET hnsw.ef_search = {int(ef)}")
        latencies, recalls = [], []
        for qi in range(len(queries)):
            t0 = time.perf_counter()
            found = [r[0] for r in raw.execute(sql, (queries[qi],)).fetchall()]
            latencies.append((time.perf_counter() - t0) * 1000)
            recalls.append(recall(qi, found))
        out[str(ef)] = {"recall@10": round(float(np.mean(recalls)), 4),
                        "latency_ms_p50": round(percentile(latencies, 0.5), 3),
                        "latency_ms_p95": round(percentile(latencies, 0.95), 3)}
    return out


def _chosen_ef_search(by_ef: dict) -> str:
    """The smallest ef_search that reaches recall@10 0.95, else the largest measured."""
    return next((ef for ef, m in by_ef.items() if m["recall@10"] >= 0.95), list(by_ef)[-1])


def _hnsw_recall(raw, version, ids: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> dict:
    """recall@10 of the version's HNSW index against an exact scan of the same vectors, and latency, per ef."""
    dim = vectors.shape[1]
    # Recombined chunks repeat (the same run of sentences drawn twice has the same vector), so a result counts
    # when it is as near as the exact 10th neighbour: ties are not misses.
    sims = queries @ vectors.T
    tenth = -np.partition(-sims, 9, axis=1)[:, 9]
    row_of = {int(i): r for r, i in enumerate(ids)}
    sql = (f"SELECT id FROM chunks WHERE kb_version = {int(version.id)} "
           f"ORDER BY embedding::vector({dim}) <=> %s LIMIT 10")
    return _by_ef_search(raw, sql, queries,
                         lambda qi, found: sum(sims[qi, row_of[i]] >= tenth[qi] - 1e-5 for i in found) / 10)


def _recall_among_real(store, embedder, questions: list[dict]) -> dict:
    """recall@1/5/10 of the gold passage among the corpus's own passages: the hybrid query as it runs (the same
    candidate pools), its whole fused list, distractors struck out afterwards. Whether candidate generation
    still finds the gold passage with a million chunks competing, apart from the distractors that repeat text
    which outranked it already on the small corpus."""
    from .retrieval import evaluate_modes
    from .scale_corpus import URI_PREFIX

    scores = evaluate_modes(store, embedder, questions, modes=("hybrid",), k=store.settings.candidates,
                            keep=lambda hit: not hit.source_uri.startswith(URI_PREFIX))["hybrid"]
    return {key: value for key, value in scores.items() if not key.startswith("latency")}


def _filtered(store, embedder, version, questions: list[dict], prefixes: dict[str, str], k: int = 5) -> dict:
    """Kaizen's filtered search (source prefix) for each prefix: how many results come back and how fast; and
    what a plain HNSW scan with the same filter would return on this pgvector (no iterative scan before 0.8)."""
    from store.search import Filters, search

    out = {}
    for name, prefix in prefixes.items():
        with store.session() as s:
            share = s.execute(sa.text(
                "SELECT count(*)::float8 / greatest((SELECT count(*) FROM chunks WHERE kb_version = :v), 1) "
                "FROM chunks c JOIN documents d ON d.id = c.document_id "
                "WHERE c.kb_version = :v AND starts_with(d.source_uri, :p)"), {"v": version.id, "p": prefix}).scalar()
        latencies, returned, plain_returned = [], [], []
        for q in questions:
            t0 = time.perf_counter()
            vec = np.asarray(embedder.embed_queries([q["question"]])[0], np.float32)
            with store.session() as s:
                hits = search(s, embedder, q["question"], k=k, filters=Filters(source_prefix=prefix),
                              settings=store.settings, version=version, query_vector=vec)
            latencies.append((time.perf_counter() - t0) * 1000)
            returned.append(len(hits))
            with store.session() as s:
                s.execute(sa.text("SET LOCAL hnsw.ef_search = 40"))
                plain_returned.append(len(s.execute(sa.text(
                    f"SELECT c.id FROM chunks c WHERE c.kb_version = :v AND c.document_id IN "
                    f"(SELECT id FROM documents WHERE starts_with(source_uri, :p)) "
                    f"ORDER BY c.embedding::vector({int(version.embedding_dim)}) <=> CAST(:q AS vector) LIMIT :k"),
                    {"v": version.id, "p": prefix, "q": vec, "k": k}).all()))
        out[name] = {"share_of_chunks": round(share, 5), "queries": len(questions),
                     "results_k": k, "min_results": min(returned), "mean_results": round(float(np.mean(returned)), 2),
                     "latency_ms_p50": round(percentile(latencies, 0.5), 2),
                     "latency_ms_p95": round(percentile(latencies, 0.95), 2),
                     "plain_hnsw_mean_results": round(float(np.mean(plain_returned)), 2)}
    return out


def _latency(figures: dict) -> dict:
    return {key: value for key, value in figures.items() if key.startswith("latency_")}


def _count_chunks(session, version, distractors: bool) -> int:
    from .scale_corpus import URI_PREFIX

    return session.execute(sa.text(
        "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.document_id "
        f"WHERE c.kb_version = :v AND {'' if distractors else 'NOT'} starts_with(d.source_uri, :p)"),
        {"v": version.id, "p": URI_PREFIX}).scalar()


def run_corpus(n: int, sets: list[tuple[str, str]], per_set: int = 100, seed: int = 7,
               home: str | None = None) -> dict:
    """The whole hybrid query at `n` chunks: each (corpus, questions) pair is ingested the normal way, `per_set`
    answerable questions of each are searched (recall@5 and latency) before and after `n` recombined distractor
    chunks are added (eval/bench/scale_corpus.py); then HNSW recall against exact and filtered searches. With a
    `home` the database is kept, and a later run on it reuses its distractors (to compare query changes without
    building a million chunks again; the small-corpus figures then come from the first run)."""
    from pgvector.psycopg import register_vector

    from store.kb_versions import index_name, require_active

    from .corpus import bench_store, ingest_corpus, load_average
    from .retrieval import evaluate_modes, load_questions
    from .scale_corpus import URI_PREFIX, collect_material, write_distractors

    rng = np.random.default_rng(seed)
    report: dict = {"benchmark": "scale", "n": n, "sets": [], "load_average_start": load_average()}
    with bench_store(home, "kaizen-scale-") as (store, embedder, _):
        chosen: list[list[dict]] = []
        for corpus, questions_path in sets:
            ingest_corpus(store, embedder, corpus)
            questions = load_questions(questions_path)
            picks = sorted(rng.choice(len(questions), size=min(per_set, len(questions)), replace=False).tolist())
            chosen.append([questions[i] for i in picks])
        with store.session() as s:
            version = require_active(s)
            small_chunks = _count_chunks(s, version, distractors=False)
            prefixes = {}
            for (corpus, _), questions in zip(sets, chosen):
                uri = s.execute(sa.text("SELECT source_uri FROM documents WHERE source_id = :i LIMIT 1"),
                                {"i": questions[0]["gold_passage_ids"][0]}).scalar()
                prefixes[Path(corpus).parent.name or corpus] = uri.split("#")[0]
        with store.session() as s:
            present = _count_chunks(s, version, distractors=True)
        gold = {g for qs in chosen for q in qs for g in q["gold_passage_ids"]}
        with store.session() as s:
            material = collect_material(s, version, gold)
        if present:  # a kept --home from an earlier run: its distractors are reused, the small corpus not measured
            if present != n:
                raise RuntimeError(f"{home} already holds {present} distractor chunks, not {n}")
            before = [None for _ in chosen]
            written = {"per_language": None, "timings": None, "reused": True}
        else:
            before = [evaluate_modes(store, embedder, qs, modes=("hybrid",))["hybrid"] for qs in chosen]
            written = write_distractors(store, version, material, n, seed)
        after = [evaluate_modes(store, embedder, qs) | {"hybrid_among_real_passages": _recall_among_real(
            store, embedder, qs)} for qs in chosen]
        # The hybrid pass above is the first to read its candidates' rows since the chunks were written (what a
        # server pays before its working set is in memory); vector and text alone ran after it, on rows it had read.
        # The same questions once more give the hybrid query's latency on a warm cache beside them.
        again = [_latency(evaluate_modes(store, embedder, qs, modes=("hybrid",))["hybrid"]) for qs in chosen]
        all_questions = [q for qs in chosen for q in qs]
        query_vectors = embedder.embed_queries([q["question"] for q in all_questions]).astype(np.float32)
        with store.engine.connect() as conn:
            raw = conn.connection.driver_connection
            raw.autocommit = True
            register_vector(raw)
            ids, rows = [], []
            with raw.cursor(binary=True) as cur:
                cur.execute("SELECT id, embedding FROM chunks WHERE kb_version = %s", (version.id,))
                for chunk_id, vector in cur:
                    ids.append(chunk_id)
                    rows.append(vector.to_numpy())
            ids = np.asarray(ids)
            vectors = np.vstack(rows).astype(np.float32)
            del rows
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            by_ef = _hnsw_recall(raw, version, ids, vectors, query_vectors)
            size = raw.execute("SELECT pg_size_pretty(pg_total_relation_size('chunks')), "
                               "pg_size_pretty(pg_relation_size(%s)), pg_size_pretty(pg_relation_size('chunks_tsv')), "
                               "current_setting('shared_buffers')",
                               (index_name(version.id),)).fetchone()
        few = [q for qs in chosen for q in qs[:20]]
        filters = _filtered(store, embedder, version, few,
                            prefixes | {f"distractors {p}": f"{URI_PREFIX}{p}" for lang in sorted(material)
                                       for p in (f"{lang}/0", f"{lang}/00")})
        best = _chosen_ef_search(by_ef)
        for (corpus, questions_path), qs, b, a, w in zip(sets, chosen, before, after, again):
            report["sets"].append({"corpus": corpus, "questions": questions_path, "evaluated": len(qs),
                                   f"small_corpus_{small_chunks}_chunks": b, f"with_{n}_more": a,
                                   "hybrid_warm_cache": w})
        report |= {
            "pgvector": store.capabilities.pgvector_version,
            "material_sentences": {lang: m.sentences for lang, m in material.items()},
            "chunks_total": int(len(ids)),
            "distractors": written["per_language"],
            "distractors_reused": bool(present),
            "timings": written["timings"],
            "sizes": {"chunks_table": size[0], "hnsw_index": size[1], "gin_index": size[2]},
            "shared_buffers": size[3],  # the latencies depend on it (docs/scaling.md)
            "vector_by_ef_search": by_ef,
            "chosen_ef_search": int(best),
            "vector_recall@10": by_ef[best]["recall@10"],
            "vector_latency_ms_p95": by_ef[best]["latency_ms_p95"],
            "filtered": filters,
            "load_average_end": load_average(),
        }
    return report
