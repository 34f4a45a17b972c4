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

from eval.metrics import percentile

EF_SEARCH = (40, 80, 160)


def clustered_vectors(n: int, dim: int, clusters: int, rng: np.random.Generator) -> np.ndarray:
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, size=n)
    points = centers[labels] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def run(n: int, dim: int = 384, queries: int = 200, seed: int = 7) -> dict:
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
                        "WITH (m = 16, ef_construction = 64)")
            build_seconds = time.perf_counter() - started
            raw.execute("ANALYZE scale_bench")

            exact = np.argsort(-(probe @ data.T), axis=1)[:, :10]
            by_ef = {}
            for ef in EF_SEARCH:
                raw.execute(f"SET hnsw.ef_search = {ef}")
                latencies, recalls = [], []
                for qi in range(queries):
                    t0 = time.perf_counter()
                    rows = raw.execute("SELECT id FROM scale_bench ORDER BY embedding <=> %s LIMIT 10",
                                       (probe[qi],)).fetchall()
                    latencies.append((time.perf_counter() - t0) * 1000)
                    recalls.append(len({r[0] for r in rows} & set(exact[qi].tolist())) / 10)
                by_ef[str(ef)] = {
                    "recall@10": round(float(np.mean(recalls)), 4),
                    "latency_ms_p50": round(percentile(latencies, 0.5), 3),
                    "latency_ms_p95": round(percentile(latencies, 0.95), 3),
                }
            plan = raw.execute("EXPLAIN SELECT id FROM scale_bench ORDER BY embedding <=> %s LIMIT 10",
                               (probe[0],)).fetchall()
    finally:
        store.close()  # stops the ephemeral server and deletes its data
        shutil.rmtree(home, ignore_errors=True)
    best = next((ef for ef in map(str, EF_SEARCH) if by_ef[ef]["recall@10"] >= 0.95), str(EF_SEARCH[-1]))
    return {
        "benchmark": "scale",
        "n": n,
        "dim": dim,
        "clusters": clusters,
        "queries": queries,
        "insert_rows_per_second": round(n / insert_seconds, 1),
        "hnsw_build_seconds": round(build_seconds, 2),
        "hnsw": {"m": 16, "ef_construction": 64},
        "by_ef_search": by_ef,
        "chosen_ef_search": int(best),
        "recall@10": by_ef[best]["recall@10"],
        "latency_ms_p50": by_ef[best]["latency_ms_p50"],
        "latency_ms_p95": by_ef[best]["latency_ms_p95"],
        "uses_index": any("scale_bench_embedding_idx" in str(row[0]) for row in plan),
    }
