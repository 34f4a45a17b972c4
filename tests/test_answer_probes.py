"""Answered-probe runs on the real database: the real agent answers held-out probes and the real judge grades
them; an abstention is a miss (0 where ragas gives 0); only metrics the calibration trusts are used by default;
a crash leaves a failed run, not a half-done one. Stand-in agents are used only to force an abstention or a
crash."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from eval.probes.answers import run_answer_probes, trusted_answer_metrics
from tests.support.agent import FakeLLM, build_kb, clean_agent_tables

PROBES = [  # title, question, reference, accepted answers, split
    ("lighthouse", "How tall is the Kestrel Point lighthouse?", "The lighthouse is 42 metres tall.", ["42 metres"],
     "heldout"),
    ("mascot", "What animal is the Kaizen mascot?", "The mascot is a red panda named Miso.", ["red panda"],
     "heldout"),
    ("garden", "When does the Maple Street community garden open?", "It opens at 7 am.", ["7 am"], "train"),
]


@pytest.fixture(scope="module")
def kb(store, embedder, tmp_path_factory):
    build_kb(store, embedder, tmp_path_factory.mktemp("answer-kb"))
    with store.session() as s:
        for n, (title, question, reference, answers, split) in enumerate(PROBES):
            doc = s.execute(sa.text("SELECT id FROM documents WHERE lower(title) LIKE :t"),
                            {"t": f"%{title}%"}).scalar_one()
            s.execute(sa.text(
                "INSERT INTO probes (probe_set, external_id, question, reference, answers, gold_document_ids, split, "
                "origin) VALUES ('answer-test', :x, :q, :r, CAST(:a AS jsonb), ARRAY[:d]::bigint[], :split, "
                "'imported')"), {"x": f"a{n}", "q": question, "r": reference, "a": str(answers).replace("'", '"'),
                                 "d": doc, "split": split})
    yield store
    with store.session() as s:
        s.execute(sa.text("DELETE FROM eval_runs WHERE kind = 'answer'"))
        s.execute(sa.text("DELETE FROM probes WHERE probe_set = 'answer-test'"))
        s.execute(sa.text("DELETE FROM judge_calibration WHERE judge_model IN ('fake-judge', 'none')"))
    clean_agent_tables(store)


def run_row(store, run_id: int):
    with store.session() as s:
        return s.execute(sa.text("SELECT kind, status, items, judge_model, error, summary FROM eval_runs "
                                 "WHERE id = :i"), {"i": run_id}).one()


class StandIn:
    """An agent that always gives the same turn (or raises), for the cases the real model cannot be steered to."""

    def __init__(self, embedder, turn=None, error: Exception | None = None):
        self.embedder, self.turn, self.error, self.questions = embedder, turn, error, []

    def ask(self, question):
        self.questions.append(question)
        if self.error:
            raise self.error
        return self.turn


@pytest.mark.slow
def test_the_real_agent_answers_held_out_probes_and_the_answers_are_graded(kb, embedder):
    from agent.graph import Agent
    from agent.model_files import chat_model_path
    from agent.settings import AgentSettings

    agent = Agent(kb, embedder=embedder, persist=False)
    run = run_answer_probes(kb, agent, split="heldout", llm_metrics=("answer_relevancy",))
    assert run["items"] == 2  # the train probe is not asked
    kind, status, items, judge_model, error, summary = run_row(kb, run["run_id"])
    assert (kind, status, items, error) == ("answer", "done", 2, None)
    assert judge_model == chat_model_path(AgentSettings().chat_model).name
    with kb.session() as s:
        rows = s.execute(sa.text(
            "SELECT p.question, e.metric, e.value, e.reason, e.kb_version FROM eval_scores e "
            "JOIN probes p ON p.id = e.probe_id WHERE e.run_id = :r"), {"r": run["run_id"]}).all()
        interactions = s.execute(sa.text("SELECT count(*) FROM interactions")).scalar_one()
    assert interactions >= 2  # the answers are real, recorded interactions
    by_question: dict[str, dict] = {}
    for question, metric, value, reason, version in rows:
        assert version == run["kb_version"]
        assert (value is not None and 0.0 <= value <= 1.0) or reason, (metric, value, reason)
        by_question.setdefault(question, {})[metric] = value
    for metrics in by_question.values():
        assert {"answer_relevancy", "semantic_similarity", "token_f1", "chrf"} <= set(metrics)
    assert by_question[PROBES[0][1]]["token_f1"] > 0  # the lighthouse answer shares words with its reference
    assert summary["answers"] == 2 and summary["metrics"]["token_f1"]["n"] == 2
    assert summary["llm_metrics"] == ["answer_relevancy"]


@pytest.mark.slow
def test_an_abstention_on_a_probe_is_a_miss(kb, embedder):
    from eval.judging.judge import LlamaJudge

    turn = SimpleNamespace(answer="The knowledge base does not say.", passages=[], abstained=True,
                           interaction_id=None)
    agent = StandIn(embedder, turn)
    judge = LlamaJudge(FakeLLM("unused", json_reply="{}"))  # an empty answer never reaches the judge
    run = run_answer_probes(kb, agent, split="heldout", judge=judge, llm_metrics=("answer_relevancy",))
    metrics = run["summary"]["metrics"]
    assert run["summary"]["abstained_share"] == 1.0 and len(agent.questions) == 2
    assert metrics["answer_relevancy"] == {"mean": 0.0, "n": 2, "null": 0}
    assert metrics["token_f1"]["mean"] == 0.0
    assert metrics["semantic_similarity"]["n"] == 0 and metrics["semantic_similarity"]["null"] == 2


def test_a_crash_leaves_a_failed_run_and_no_scores(kb, embedder):
    agent = StandIn(embedder, error=RuntimeError("the model file vanished"))
    with pytest.raises(RuntimeError):
        run_answer_probes(kb, agent, split="heldout", llm_metrics=())
    with kb.session() as s:
        run_id, status, error = s.execute(sa.text(
            "SELECT id, status, error FROM eval_runs WHERE kind = 'answer' ORDER BY id DESC LIMIT 1")).one()
        scores = s.execute(sa.text("SELECT count(*) FROM eval_scores WHERE run_id = :r"), {"r": run_id}).scalar_one()
    assert status == "failed" and "vanished" in error and scores == 0


def test_by_default_only_the_metrics_the_calibration_trusts_are_used(kb, embedder):
    from eval.judging.calibration import MetricCalibration, store_calibration
    from eval.judging.judge import LlamaJudge

    assert trusted_answer_metrics(kb, "fake-judge")[0] == ()  # no calibration: nothing is trusted
    store_calibration(kb, [
        MetricCalibration("answer_relevancy", "fake-judge", 0.9, 8, 16, 16, 0.75, True, 1.0),
        MetricCalibration("faithfulness", "fake-judge", 0.55, 8, 16, 16, 0.75, False, 1.0),
    ], "test")
    assert trusted_answer_metrics(kb, "fake-judge")[0] == ("answer_relevancy",)
    with pytest.raises(ValueError, match="not an LLM metric"):
        run_answer_probes(kb, StandIn(embedder), llm_metrics=("token_f1",))
    turn = SimpleNamespace(answer="The lighthouse is 42 metres tall [1].", abstained=False, interaction_id=None,
                           passages=[{"text": "The Kestrel Point lighthouse is 42 metres tall."}])
    fake = FakeLLM("unused", json_reply='{"question": "How tall is the lighthouse?", "noncommittal": 0}')
    fake.name = "fake-judge"
    run = run_answer_probes(kb, StandIn(embedder, turn), split="heldout", limit=1, judge=LlamaJudge(fake))
    assert run["llm_metrics"] == ["answer_relevancy"]
    assert "faithfulness" not in run["summary"]["metrics"]
    assert run["summary"]["metrics"]["answer_relevancy"]["n"] == 1
