"""A scripted session through the command line, as a person (or `make chat`'s worker) runs it: import probes, queue a
probe run, the worker scores it, `kaizen sql` shows the scores, answers get graded by the worker, a forced drop
raises one alert and queues the repair planner, and `kaizen eval report` shows it all and writes its chart."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.support.common import run_cli
from tests.support.worker import QUESTIONS, add_interactions, break_search, build_kb, write_jsonl

ENV = {"KAIZEN_INTERACTION_EVALUATOR": "tests.support.worker:evaluate", "KAIZEN_PROBE_EVERY_MINUTES": "0",
       "KAIZEN_IMPROVE_EVERY_MINUTES": "0", "KAIZEN_DRIFT_MIN_SAMPLES": "6", "KAIZEN_WORKER_NICE": "0"}


def kaizen(*args: str) -> str:
    result = run_cli(*args, env=ENV, timeout=300)
    assert result.returncode == 0, f"kaizen {' '.join(args)}: {result.stderr[-3000:]}"
    return result.stdout


def sql(statement: str, write: bool = False) -> list[dict]:
    return json.loads(kaizen("sql", statement, "--json", *(["--write"] if write else [])))


@pytest.fixture
def kb(clean_store, embedder, tmp_path):
    build_kb(clean_store, embedder, tmp_path, probe_set="unused")
    with clean_store.session() as s:
        s.execute(sa.text("DELETE FROM probes"))  # the session imports its own
    yield clean_store
    from eval.worker.jobs import close_deferrers

    close_deferrers()


@pytest.mark.slow
def test_scripted_session_from_probes_to_alert(kb, tmp_path):
    from eval.worker.jobs import enqueue_interaction

    questions = write_jsonl(tmp_path / "topics.jsonl", QUESTIONS)
    assert "12 added" in kaizen("eval", "import", str(questions), "--set", "topics")
    assert "queued probe run" in kaizen("eval", "run", "--queue")
    for interaction in add_interactions(kb, 3):  # what the REPL's hook does after each answer
        assert enqueue_interaction(kb, interaction)
    kaizen("worker", "--once")

    scores = sql("SELECT CASE WHEN probe_id IS NULL THEN 'answer' ELSE 'probe' END AS subject, metric, "
                 "count(*) AS n, avg(value) AS mean FROM eval_scores GROUP BY 1, 2 ORDER BY 1, 2")
    by_metric = {(r["subject"], r["metric"]): r for r in scores}
    assert by_metric[("probe", "recall@5")]["n"] == 12 and by_metric[("probe", "recall@5")]["mean"] == 1.0
    assert by_metric[("answer", "stand_in")]["n"] == 3
    assert sql("SELECT count(*) AS n FROM quality_alerts")[0]["n"] == 0

    sql(break_search(kb), write=True)  # the forced drop
    kaizen("eval", "run", "--queue")
    kaizen("worker", "--once")
    alerts = sql("SELECT id, metric, baseline, observed, status FROM quality_alerts")
    assert len(alerts) == 1 and alerts[0]["metric"] == "recall@5" and alerts[0]["observed"] < 0.8
    jobs = sql("SELECT task_name, status::text AS status, args FROM procrastinate_jobs "
               "WHERE task_name = 'plan_repair'")
    assert jobs == [{"task_name": "plan_repair", "status": "succeeded", "args": {"alert_id": alerts[0]["id"]}}]

    chart = tmp_path / "chart" / "quality.html"
    report = json.loads(kaizen("eval", "report", "--json", "--chart", str(chart)))
    assert report["chart"] == str(chart.resolve()) and "<svg" in chart.read_text(encoding="utf-8")
    assert [r["recall@5"] for r in report["runs"] if r["kind"] == "probe"][:2] == [pytest.approx(0.5), 1.0]
    assert [a["id"] for a in report["alerts"]] == [alerts[0]["id"]]
    table = kaizen("eval", "report", "--chart", str(chart))
    assert "quality alerts" in table and f"chart: {chart.resolve()}" in table.replace("\n", "")
