"""Gold-id retrieval metrics of probes on a KB version (no LLM, deterministic): recall@1/5/10 and MRR@10 at the
document level, per probe and in summary. The worker's probe runs and the repair guard both use this; the guard
passes a candidate version that is not active yet."""

from __future__ import annotations

from dataclasses import dataclass

from eval.metrics import K_VALUES, score_ranking

from .sets import Probe

CHUNKS_PER_QUERY = 30  # chunks asked for, so that 10 distinct documents remain after de-duplication

METRICS = tuple(f"recall@{k}" for k in K_VALUES) + ("mrr@10",)


@dataclass
class ProbeScore:
    probe_id: int
    scores: dict[str, float]
    ranked_document_ids: list[int]
    ranked_chunk_ids: list[int]


def score_probes(store, embedder, probes: list[Probe], version_id: int | None = None,
                 mode: str = "hybrid", *, version=None,
                 query_vectors=None) -> tuple[list[ProbeScore], dict[str, float]]:
    """Search each probe's question on `version_id` (default: the active version), or on `version` itself (a
    KBVersion, such as one with other search parameters), and score the ranking of distinct documents against its
    gold documents. `query_vectors`: the probes' question vectors, when the caller embedded them already.
    Returns (per probe, mean per metric)."""
    from store.kb_versions import get_version, require_active
    from store.search import distinct_documents, search

    results: list[ProbeScore] = []
    vectors = query_vectors if query_vectors is not None else [None] * len(probes)
    with store.session() as s:
        if version is None:
            version = get_version(s, version_id) if version_id is not None else require_active(s)
        for probe, vector in zip(probes, vectors):
            if not probe.gold_document_ids:
                continue
            hits = search(s, embedder, probe.question, k=CHUNKS_PER_QUERY, mode=mode, settings=store.settings,
                          version=version, query_vector=vector)
            docs = distinct_documents(hits)
            ranked = [str(h.document_id) for h in docs]
            scores = score_ranking(ranked, {str(d) for d in probe.gold_document_ids})
            results.append(ProbeScore(probe.id, scores, [h.document_id for h in docs[:10]],
                                      [h.chunk_id for h in hits[:10]]))
    n = len(results)
    summary = {m: (sum(r.scores[m] for r in results) / n if n else float("nan")) for m in METRICS}
    summary["probes"] = n
    return results, summary
