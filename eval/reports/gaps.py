"""`kaizen gaps`: questions the knowledge base had nothing relevant for, grouped and counted. They are reported
for a person to fill (add documents, `kaizen ingest`); no repair makes up an answer to them."""

from __future__ import annotations

import sqlalchemy as sa


def list_gaps(store, limit: int = 50) -> list[dict]:
    with store.session() as s:
        rows = s.execute(sa.text(
            "SELECT min(question) AS question, count(*) AS times, max(created_at) AS last_asked, "
            "array_agg(DISTINCT reason) AS reasons FROM knowledge_gaps GROUP BY lower(btrim(question)) "
            "ORDER BY count(*) DESC, max(created_at) DESC LIMIT :n"), {"n": limit}).mappings().all()
    return [dict(r) for r in rows]
