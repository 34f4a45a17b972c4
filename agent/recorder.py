"""Everything an answer did, in SQL: the interaction, the retrieved chunks (with rank, scores, relevance, whether
they were in the context and cited), each grader verdict, knowledge gaps; and the feedback people give."""

from __future__ import annotations

import json
import math

import sqlalchemy as sa

from store.errors import KaizenError


def _num(value):
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def record_turn(store, state: dict, model: str) -> int:
    """Write one answered question in one transaction; return the interaction id."""
    usage = state.get("usage") or {}
    timings = dict(state.get("timings") or {})
    timings["llm"] = usage.get("llm_ms", 0.0)
    with store.session() as s:
        interaction_id = s.execute(
            sa.text(
                "INSERT INTO interactions (thread_id, question, standalone_query, answer, abstained, warning, "
                "kb_version, model, timings, prompt_tokens, prompt_tokens_processed, completion_tokens, llm_calls, "
                "llm_detail, notices, rewrites, regenerations) "
                "VALUES (:thread, :question, :standalone, :answer, :abstained, :warning, :kb, :model, "
                "CAST(:timings AS jsonb), :pt, :pp, :ct, :calls, CAST(:detail AS jsonb), :notices, :rewrites, "
                ":regens) RETURNING id"
            ),
            {
                "thread": state.get("thread_id") or "",
                "question": state["question"].replace("\x00", " "),
                "standalone": (state.get("standalone_query") or "").replace("\x00", " "),
                "answer": (state.get("answer") or "").replace("\x00", " "),
                "abstained": bool(state.get("abstained")),
                "warning": state.get("warning"),
                "kb": state.get("kb_version"),
                "model": model,
                "timings": json.dumps(timings),
                "pt": int(usage.get("prompt_tokens", 0)),
                "pp": int(usage.get("prompt_processed", 0)),
                "detail": json.dumps(usage.get("calls", [])),
                "notices": list(state.get("notices") or []),
                "ct": int(usage.get("completion_tokens", 0)),
                "calls": int(usage.get("llm_calls", 0)),
                "rewrites": int(state.get("rewrites", 0)),
                "regens": int(state.get("regenerations", 0)),
            },
        ).scalar_one()
        in_context = {p["chunk_id"] for p in state.get("passages") or []}
        cited = {c["chunk_id"] for c in state.get("citations") or []}
        last_attempt = max((h.attempt for h in state.get("all_hits") or []), default=0)
        rows = []
        for hit in state.get("all_hits") or []:  # agent.state.Hit
            final = hit.attempt == last_attempt
            rows.append({
                "iid": interaction_id, "attempt": hit.attempt, "query": hit.query[:4000],
                "chunk": hit.chunk_id, "rank": hit.rank, "score": _num(hit.score) or 0.0,
                "vrank": hit.vector_rank, "trank": hit.text_rank,
                "vscore": _num(hit.vector_score), "tscore": _num(hit.text_score),
                "relevant": bool(hit.relevant),
                "in_context": final and hit.chunk_id in in_context,
                "cited": final and hit.chunk_id in cited,
            })
        if rows:
            s.execute(
                sa.text(
                    "INSERT INTO retrievals (interaction_id, attempt, query, chunk_id, rank, score, vector_rank, "
                    "text_rank, vector_score, text_score, relevant, in_context, cited) VALUES (:iid, :attempt, "
                    ":query, (SELECT id FROM chunks WHERE id = :chunk), :rank, :score, :vrank, :trank, :vscore, "
                    ":tscore, :relevant, :in_context, :cited)"
                ),
                rows,
            )
        grades = [
            {"iid": interaction_id, "grader": g.grader, "verdict": g.verdict, "score": _num(g.score),
             "detail": json.dumps(g.detail or {}, ensure_ascii=False, default=str), "err": g.parse_error}
            for g in state.get("grades") or []  # agent.state.Grade
        ]
        if grades:
            s.execute(
                sa.text("INSERT INTO grades (interaction_id, grader, verdict, score, detail, parse_error) "
                        "VALUES (:iid, :grader, :verdict, :score, CAST(:detail AS jsonb), :err)"),
                grades,
            )
        if state.get("abstained"):
            s.execute(
                sa.text("INSERT INTO knowledge_gaps (interaction_id, question, reason) VALUES (:iid, :q, :reason)"),
                {"iid": interaction_id, "q": state["question"].replace("\x00", " "),
                 "reason": state.get("gap_reason") or "abstained"},
            )
    return int(interaction_id)


class FeedbackError(KaizenError, ValueError):
    pass


def add_feedback(store, interaction_id: int | None, rating: int, correction: str | None = None) -> int:
    if interaction_id is None:
        raise FeedbackError("there is no answer to rate yet: ask a question first")
    if rating not in (1, -1):
        raise FeedbackError("rating must be 1 (good) or -1 (bad)")
    with store.session() as s:
        exists = s.execute(sa.text("SELECT 1 FROM interactions WHERE id = :id"), {"id": interaction_id}).first()
        if not exists:
            raise FeedbackError(f"no interaction {interaction_id}")
        return int(s.execute(
            sa.text("INSERT INTO feedback (interaction_id, rating, correction) VALUES (:id, :rating, :c) RETURNING id"),
            {"id": interaction_id, "rating": rating, "c": (correction or None)},
        ).scalar_one())
