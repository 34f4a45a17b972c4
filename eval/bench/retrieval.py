"""`kaizen bench retrieval`: recall@1/5/10 and MRR per search mode, query latency, ingestion vs raw embedding speed.

Runs in a fresh embedded database (a temporary KAIZEN_HOME, or --home DIR to keep and reuse it: a second run
then skips unchanged documents, so ingestion figures are only meaningful on a fresh home).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import sqlalchemy as sa

from eval.metrics import K_VALUES, percentile, score_ranking
from eval.probes.retrieval import CHUNKS_PER_QUERY


def load_questions(path: str, limit: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("answerable", True) and r.get("gold_passage_ids")]
    return rows[:limit] if limit else rows


def evaluate_modes(store, embedder, questions: list[dict], modes=("hybrid", "vector", "text"),
                   k: int = CHUNKS_PER_QUERY, keep=None) -> dict:
    """Document-level recall@1/5/10, MRR@10 and latency per search mode; `keep(hit)`, when given, strikes the
    hits it rejects out of each ranking before it is scored."""
    from store.search import distinct_documents, search

    results = {}
    for mode in modes:
        totals = {f"recall@{k}": 0.0 for k in K_VALUES} | {"mrr@10": 0.0}
        latencies = []
        for q in questions:
            started = time.perf_counter()
            with store.session() as s:
                hits = search(s, embedder, q["question"], k=k, mode=mode, settings=store.settings)
            latencies.append((time.perf_counter() - started) * 1000)
            ranked = [h.source_id for h in distinct_documents(hits) if keep is None or keep(h)]
            for key, value in score_ranking(ranked, set(q["gold_passage_ids"])).items():
                totals[key] += value
        n = max(1, len(questions))
        results[mode] = {key: round(value / n, 4) for key, value in totals.items()} | {
            "latency_ms_p50": round(percentile(latencies, 0.5), 2),
            "latency_ms_p95": round(percentile(latencies, 0.95), 2),
        }
    return results


def run(corpus: str, questions_path: str, limit: int | None = None, home: str | None = None) -> dict:
    from store.indexing import sentence_texts
    from store.lexical import CURRENT_SCHEME
    from store.search import BM25_B, BM25_K1, CJK_BM25_B, CJK_BM25_K1

    from .corpus import bench_store, ingest_corpus

    with bench_store(home, "kaizen-bench-") as (store, embedder, _):
        settings = store.settings
        report = ingest_corpus(store, embedder, corpus)
        with store.session() as s:
            rows = s.execute(sa.text(
                "SELECT a.title, c.search_text FROM active_chunks a JOIN chunks c USING (id)")).all()
        # The raw model on exactly what ingestion embedded: every chunk's sentences (store.indexing.sentence_texts).
        texts = [text for row in rows for text in sentence_texts(row.title, row.search_text)]
        started = time.perf_counter()
        embedder.embed_passages(texts)
        raw_seconds = time.perf_counter() - started
        questions = load_questions(questions_path, limit)
        modes = evaluate_modes(store, embedder, questions)
        ingest_rate = report.chunks / report.seconds if report.seconds and report.chunks else None
        raw_rate = len(rows) / raw_seconds if raw_seconds else None
        return {
            "benchmark": "retrieval",
            "corpus": str(corpus),
            "questions": str(questions_path),
            "answerable_questions": len(questions),
            "documents": report.added + report.updated + report.unchanged,
            "chunks": len(rows),
            "embedded_sentences": len(texts),
            "embedding_model": embedder.name,
            "settings": {"fusion": settings.fusion, "vector_alpha": settings.vector_alpha,
                         "cjk_vector_alpha": settings.cjk_vector_alpha, "rrf_k": settings.rrf_k,
                         "vector_weight": settings.vector_weight,
                         "text_weight": settings.text_weight, "cjk_text_weight": settings.cjk_text_weight,
                         "candidates": settings.candidates, "sentence_weight": settings.sentence_weight,
                         "lexical_scheme": CURRENT_SCHEME,
                         "bm25": {"k1": BM25_K1, "b": BM25_B, "cjk_k1": CJK_BM25_K1, "cjk_b": CJK_BM25_B},
                         "chunk_tokens": settings.chunk_tokens, "chunk_overlap": settings.chunk_overlap},
            "ingest": {
                "seconds": round(report.seconds, 2),
                "chunks_per_second": round(ingest_rate, 2) if ingest_rate else None,
                "raw_embedding_chunks_per_second": round(raw_rate, 2) if raw_rate else None,
                "ratio_to_raw_embedding": round(ingest_rate / raw_rate, 3) if ingest_rate and raw_rate else None,
                "fresh": report.unchanged == 0,
            },
            "modes": modes,
        }
