"""Writing metric scores to `eval_scores` (one row per metric and subject; NULL value + reason, never NaN).

A recorded answer has one grade per metric outside evaluation runs (migration 0009's unique index): grading it
again, as a retried or doubled worker job would, replaces that grade in place rather than adding a second one."""

from __future__ import annotations

import json
import math

import sqlalchemy as sa

from .ragas_metrics import Score

_INSERT = sa.text(
    """
    INSERT INTO eval_scores (run_id, interaction_id, probe_id, kb_version, metric, value, reason, judge_model, detail)
    VALUES (:run_id, :interaction_id, :probe_id, :kb_version, :metric, :value, :reason, :judge_model,
            CAST(:detail AS jsonb))
    ON CONFLICT (interaction_id, metric) WHERE interaction_id IS NOT NULL AND run_id IS NULL
    DO UPDATE SET kb_version = EXCLUDED.kb_version, value = EXCLUDED.value, reason = EXCLUDED.reason,
                  judge_model = EXCLUDED.judge_model, detail = EXCLUDED.detail, created_at = now()
    RETURNING id, created_at
    """
)


def score_row(score: Score, *, interaction_id: int | None = None, probe_id: int | None = None,
              run_id: int | None = None, kb_version: int | None = None, judge_model: str | None = None) -> dict:
    value = score.value
    reason = score.reason
    if value is not None and (not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value)):
        value, reason = None, reason or f"not a finite number: {value!r}"
    if value is None and not reason:
        reason = "not computed"
    return {"run_id": run_id, "interaction_id": interaction_id, "probe_id": probe_id, "kb_version": kb_version,
            "metric": score.metric, "value": None if value is None else float(value),
            "reason": reason[:2000] if reason else None, "judge_model": judge_model, "detail": score.detail}


def insert_scores(store, rows: list[dict]) -> list[dict]:
    """Insert rows made by `score_row` in one transaction; returns them with their ids."""
    if not rows:
        return []
    out = []
    with store.session() as s:
        for row in rows:
            params = {**row, "detail": json.dumps(row["detail"], ensure_ascii=False, default=str)}
            new_id, created = s.execute(_INSERT, params).one()
            out.append({**row, "id": new_id, "created_at": created})
    return out


__all__ = ["score_row", "insert_scores"]
