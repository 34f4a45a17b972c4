"""`kaizen export qa --min-score X FILE.jsonl`: training pairs for fine-tuning, in chat format with their sources.

- Interactions whose every trusted LLM-judged score is at least X, not abstained, never rated /bad; their
  cited chunks are the sources. Without a trusted LLM metric (see judge calibration) no interaction qualifies.
- Probes with a reference answer whose gold document the active KB ranks with MRR@10 of at least X (gold-id
  metric, always trusted); the best chunk of the gold document is the source. Only train probes unless
  `include_heldout`: exporting held-out probes would leak the guard's test set into a fine-tuned model.
"""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from eval.judging.trust import trusted_llm_metrics

SYSTEM = "Answer the question from the numbered sources and cite them as [1], [2]."


def _pair(question: str, answer: str, sources: list[dict], **meta) -> dict:
    context = "\n\n".join(f"[{i}] {s['title']}\n{s['text']}" for i, s in enumerate(sources, start=1))
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": f"{question}\n\nSources:\n{context}"},
                         {"role": "assistant", "content": answer}],
            "sources": [{k: s[k] for k in ("chunk_id", "document_id", "source_uri", "title")} for s in sources],
            **meta}


def _interactions(store, min_score: float, trusted: set[str]) -> list[dict]:
    if not trusted:
        return []
    with store.session() as s:
        rows = s.execute(sa.text(
            """
            WITH latest AS (
                SELECT DISTINCT ON (interaction_id, metric) interaction_id, metric, value
                FROM eval_scores WHERE interaction_id IS NOT NULL AND metric = ANY(:m)
                ORDER BY interaction_id, metric, created_at DESC)
            SELECT i.id, i.question, i.answer, jsonb_object_agg(l.metric, l.value) AS scores
            FROM latest l JOIN interactions i ON i.id = l.interaction_id
            WHERE NOT i.abstained AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.interaction_id = i.id
                                                  AND f.rating = -1)
            GROUP BY i.id HAVING bool_and(l.value IS NOT NULL AND l.value >= :x) ORDER BY i.id
            """), {"m": sorted(trusted), "x": min_score}).all()
        out = []
        for row in rows:
            sources = [dict(r) for r in s.execute(sa.text(
                "SELECT c.id AS chunk_id, c.document_id, d.source_uri, d.title, c.text FROM retrievals r "
                "JOIN chunks c ON c.id = r.chunk_id JOIN documents d ON d.id = c.document_id "
                "WHERE r.interaction_id = :i AND r.cited ORDER BY r.attempt, r.rank"), {"i": row.id}).mappings()]
            if sources:
                out.append(_pair(row.question, row.answer, sources, origin="interaction", id=row.id,
                                 scores=row.scores))
    return out


def _probes(store, embedder, min_score: float, include_heldout: bool) -> list[dict]:
    from eval.probes.retrieval import score_probes
    from eval.probes.sets import load_probes

    probes = [p for p in load_probes(store, split=None if include_heldout else "train") if (p.reference or "").strip()]
    scored, _ = score_probes(store, embedder, probes)
    by_id = {p.id: p for p in probes}
    out = []
    with store.session() as s:
        for r in scored:
            if r.scores["mrr@10"] < min_score:
                continue
            probe = by_id[r.probe_id]
            gold = set(probe.gold_document_ids)
            sources = [dict(x) for x in s.execute(sa.text(
                "SELECT c.id AS chunk_id, c.document_id, d.source_uri, d.title, c.text FROM chunks c "
                "JOIN documents d ON d.id = c.document_id WHERE c.id = ANY(:ids)"), {"ids": r.ranked_chunk_ids}
            ).mappings() if x["document_id"] in gold][:1]
            if sources:
                out.append(_pair(probe.question, probe.reference, sources, origin="probe", id=probe.id,
                                 split=probe.split, scores={k: r.scores[k] for k in ("recall@5", "mrr@10")}))
    return out


def export_qa(store, embedder, path: str | Path, min_score: float, include_heldout: bool = False) -> dict:
    trusted = trusted_llm_metrics(store)
    pairs = _interactions(store, min_score, trusted) + _probes(store, embedder, min_score, include_heldout)
    Path(path).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    return {"path": str(path), "pairs": len(pairs),
            "interactions": sum(p["origin"] == "interaction" for p in pairs),
            "probes": sum(p["origin"] == "probe" for p in pairs),
            "trusted_llm_metrics": sorted(trusted)}
