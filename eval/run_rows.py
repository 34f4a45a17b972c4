"""The life of one `eval_runs` row: written `running` when the work starts (so a long run is visible), then
`failed` with the error, or `done` with its item count and summary. `finish_run` takes the caller's session so
that the scores of a run and its `done` mark are one transaction."""

from __future__ import annotations

import json

import sqlalchemy as sa


def start_run(store, kind: str, kb_version: int | None, summary: dict, judge_model: str | None = None) -> int:
    with store.session() as s:
        return s.execute(sa.text(
            "INSERT INTO eval_runs (kind, kb_version, judge_model, status, summary) "
            "VALUES (:kind, :v, :judge, 'running', CAST(:summary AS jsonb)) RETURNING id"),
            {"kind": kind, "v": kb_version, "judge": judge_model, "summary": json.dumps(summary)}).scalar_one()


def fail_run(store, run_id: int, exc: BaseException) -> None:
    with store.session() as s:
        s.execute(sa.text("UPDATE eval_runs SET status = 'failed', error = :e, finished_at = now() WHERE id = :id"),
                  {"e": f"{type(exc).__name__}: {exc}"[:2000], "id": run_id})


def finish_run(session, run_id: int, items: int, summary: dict) -> None:
    session.execute(sa.text(
        "UPDATE eval_runs SET status = 'done', items = :n, summary = CAST(:summary AS jsonb), finished_at = now() "
        "WHERE id = :id"), {"n": items, "summary": json.dumps(summary, ensure_ascii=False), "id": run_id})


__all__ = ["start_run", "fail_run", "finish_run"]
