"""The RAGAS judge on the real database and the real default model: validated scores for a real answer of the
real agent, NULL + reason (never NaN, never an exception) for bad judge replies and answers with no context.
A fake model is used only to force malformed replies."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa

from eval.judging.judge import JudgeReplyError, LlamaJudge, check_schema, tight_schema
from eval.judging.ragas_metrics import INTERACTION_METRICS, METRICS, score_rows, validate_value
from tests.support.agent import FakeLLM, build_kb, clean_agent_tables

LIGHTHOUSE = ("The Kestrel Point lighthouse was built in 1887 and is 42 metres tall. Its lamp can be seen from 30 "
              "kilometres away.")


def scores_in_db(store, interaction_id: int) -> list[tuple]:
    with store.session() as s:
        return s.execute(sa.text("SELECT metric, value, reason, judge_model FROM eval_scores "
                                 "WHERE interaction_id = :i ORDER BY metric"), {"i": interaction_id}).all()


def record_interaction(store, question: str, answer: str, abstained: bool, chunk_text: str | None = None) -> int:
    """An interaction as the recorder writes it (used where the real agent cannot be steered to the case)."""
    with store.session() as s:
        iid = s.execute(sa.text(
            "INSERT INTO interactions (thread_id, question, answer, abstained, model) "
            "VALUES ('t-judge', :q, :a, :ab, 'test') RETURNING id"), {"q": question, "a": answer, "ab": abstained}
        ).scalar_one()
        if chunk_text is not None:
            chunk_id = s.execute(sa.text("SELECT id FROM chunks WHERE text LIKE :t LIMIT 1"),
                                 {"t": f"%{chunk_text}%"}).scalar_one()
            s.execute(sa.text("INSERT INTO retrievals (interaction_id, query, chunk_id, rank, score, in_context) "
                              "VALUES (:i, :q, :c, 1, 0.9, true)"), {"i": iid, "q": question, "c": chunk_id})
    return iid


@pytest.fixture(scope="module")
def kb(store, embedder, tmp_path_factory):
    build_kb(store, embedder, tmp_path_factory.mktemp("judge-kb"))
    yield store
    clean_agent_tables(store)


# -- schema ---------------------------------------------------------------------------------------------------
def test_judge_schemas_are_bounded_for_llama_cpp():
    from ragas.metrics.collections.answer_accuracy.util import AnswerAccuracyOutput
    from ragas.metrics.collections.faithfulness.util import NLIStatementOutput

    schema = tight_schema(NLIStatementOutput)
    items = schema["properties"]["statements"]
    assert (items["minItems"], items["maxItems"]) == (1, 8)
    verdict = items["items"]["properties"]["verdict"]
    assert verdict["enum"] == [0, 1] and "minimum" not in verdict
    assert items["items"]["properties"]["statement"]["maxLength"] <= 300
    assert items["items"]["additionalProperties"] is False
    assert "$ref" not in str(schema) and "$defs" not in schema
    assert tight_schema(AnswerAccuracyOutput)["properties"]["rating"]["enum"] == [0, 2, 4]

    check_schema({"statements": [{"statement": "s", "reason": "r", "verdict": 1}]}, schema)
    for bad in ({"statements": []}, {"statements": [{"statement": "s", "reason": "r", "verdict": 3}]},
                {"statements": [{"statement": "s", "reason": "r", "verdict": True}]},
                {"statements": [{"statement": "x" * 301, "reason": "r", "verdict": 1}]}, {"other": 1}, []):
        with pytest.raises(ValueError):
            check_schema(bad, schema)


def test_metric_values_are_range_checked_never_nan():
    spec = METRICS["context_recall"]
    assert validate_value(spec, 0.5) == (0.5, None)
    assert validate_value(spec, 1.0000000001) == (1.0, None)  # float noise is clamped
    for bad, words in ((4.5, "out of range"), (1e15, "out of range"), (float("nan"), "NaN"), (None, "no value"),
                       ("x", "not a number"), (-0.2, "out of range")):
        value, reason = validate_value(spec, bad)
        assert value is None and words in reason


# -- bad judge replies (a fake model forces them) -----------------------------------------------------------------
@pytest.mark.parametrize("reply, target, words", [
    ("", "faithfulness", "empty judge reply"),
    ('{"statements": ["The lighthouse', "faithfulness", "not valid JSON"),
    ('{"question": "How tall?", "noncommittal": 7}', "answer_relevancy", "7 is not one of [0, 1]"),
    ('{"reason": "fine", "verdict": 1.5}', "context_utilization", "expected a whole number"),
    ('{"rating": 9}', "response_groundedness", "9 is not one of [0, 1, 2]"),
    ('{"rating": 3}', "answer_accuracy", "3 is not one of [0, 2, 4]"),
    ("I think it is good.", "context_recall", "not valid JSON"),
])
def test_garbage_judge_replies_become_null_with_a_reason(reply, target, words, embedder):
    import re

    from eval.judging.ragas_embeddings import E5RagasEmbeddings

    judge = LlamaJudge(FakeLLM("unused", json_reply=reply))
    row = {"user_input": "How tall is the Kestrel Point lighthouse?", "response": "It is 42 metres tall.",
           "retrieved_contexts": [LIGHTHOUSE], "reference": "42 metres."}
    names = [*INTERACTION_METRICS, "context_recall", "factual_correctness", "answer_accuracy"]
    for name in names:
        [score] = score_rows(name, [row], judge, E5RagasEmbeddings(embedder))
        assert score.value is None, (name, score)
        assert re.search(r"empty judge reply|not valid JSON|unexpected JSON|NaN", score.reason), (name, score)
        if name == target:
            assert words in score.reason, (name, score.reason)
    assert judge.stats.failures == judge.stats.calls > 0
    from ragas.metrics.collections.faithfulness.util import StatementGeneratorOutput

    with pytest.raises(JudgeReplyError):
        judge.generate("x", StatementGeneratorOutput)


def test_garbage_judge_reply_is_stored_as_null_with_reason(kb):
    from eval.judging.interactions import evaluate_interaction

    iid = record_interaction(kb, "How tall is the Kestrel Point lighthouse?", "It is 42 metres tall [1].", False,
                             "42 metres tall")
    judge = LlamaJudge(FakeLLM("unused", json_reply='{"statements": [{"statement": "It is'))
    rows = evaluate_interaction(kb, iid, judge=judge, metrics=("faithfulness", "context_utilization"))
    assert [r["metric"] for r in rows] == ["faithfulness", "context_utilization"]
    stored = scores_in_db(kb, iid)
    assert len(stored) == 2
    for metric, value, reason, judge_model in stored:
        assert value is None and "not valid JSON" in reason and judge_model == "fake-llm"


def test_interaction_without_context_gets_null_rows_and_no_judge_call(kb):
    from eval.judging.interactions import evaluate_interaction

    fake = FakeLLM("unused", json_reply='{"rating": 2}')
    judge = LlamaJudge(fake)
    abstained = record_interaction(kb, "Who won the 1954 chess olympiad?", "The knowledge base does not say.", True)
    nothing = record_interaction(kb, "What colour is the garden gate?", "It is green.", False)
    for iid, words in ((abstained, "abstained"), (nothing, "no retrieved context")):
        rows = evaluate_interaction(kb, iid, judge=judge)
        assert [r["metric"] for r in rows] == list(INTERACTION_METRICS)
        assert all(r["value"] is None and words in r["reason"] for r in rows), rows
        assert len(scores_in_db(kb, iid)) == len(INTERACTION_METRICS)
    assert fake.json_calls == 0
    assert evaluate_interaction(kb, 10**9, judge=judge) == []


def test_probe_answer_gets_string_and_gold_id_metrics(kb):
    from eval.judging.interactions import evaluate_probe_answer

    with kb.session() as s:
        doc = s.execute(sa.text("SELECT id FROM documents WHERE title LIKE '%lighthouse%'")).scalar_one()
        other = s.execute(sa.text("SELECT id FROM documents WHERE id <> :d LIMIT 1"), {"d": doc}).scalar_one()
        probe = s.execute(sa.text(
            "INSERT INTO probes (probe_set, external_id, question, reference, answers, gold_document_ids, split, "
            "origin) VALUES ('judge-test', 'p1', 'How tall is the Kestrel Point lighthouse?', "
            "'The lighthouse is 42 metres tall.', '[\"42 metres\"]', ARRAY[:d]::bigint[], 'heldout', 'imported') "
            "RETURNING id"), {"d": doc}).scalar_one()
    rows = evaluate_probe_answer(kb, probe, "The lighthouse is 42 metres tall [1].", [LIGHTHOUSE],
                                 retrieved_document_ids=[other, doc], llm_metrics=())
    by = {r["metric"]: r for r in rows}
    assert by["chrf"]["value"] == pytest.approx(1.0) and by["token_f1"]["value"] == pytest.approx(1.0)
    assert by["rouge_l"]["value"] == pytest.approx(1.0)
    assert by["recall@1"]["value"] == 0.0 and by["recall@5"]["value"] == 1.0 and by["mrr@10"]["value"] == 0.5
    assert by["string_presence"]["value"] == 1.0
    assert by["semantic_similarity"]["value"] > 0.95
    assert all(r["probe_id"] == probe and r["judge_model"] is None for r in rows)
    rated = evaluate_probe_answer(kb, probe, "It is 42 metres tall.", [LIGHTHOUSE], llm_metrics=("answer_accuracy",),
                                  judge=LlamaJudge(FakeLLM("unused", json_reply='{"rating": 4}')))
    accuracy = next(r for r in rated if r["metric"] == "answer_accuracy")
    assert accuracy["value"] == 1.0 and accuracy["judge_model"] == "fake-llm"
    abstained = evaluate_probe_answer(kb, probe, "The knowledge base does not say.", [], abstained=True,
                                      llm_metrics=("answer_accuracy",), judge=LlamaJudge(FakeLLM("u", "{}")))
    ab = {r["metric"]: r for r in abstained}
    assert ab["token_f1"]["value"] == 0.0 and ab["answer_accuracy"]["value"] is None
    assert "abstained" in ab["answer_accuracy"]["reason"]
    wrong = evaluate_probe_answer(kb, probe, "Miso is a red panda.", [LIGHTHOUSE], llm_metrics=())
    wrong_by = {r["metric"]: r["value"] for r in wrong}
    assert wrong_by["token_f1"] < 0.3 and wrong_by["chrf"] < by["chrf"]["value"] and wrong_by["string_presence"] == 0


# -- the real model on a real answer ----------------------------------------------------------------------------
@pytest.mark.slow
def test_real_judge_scores_a_real_interaction(kb, embedder):
    from agent.graph import Agent
    from agent.model_files import chat_model_path
    from agent.settings import AgentSettings
    from eval.judging.interactions import evaluate_interaction
    from eval.judging.judge import load_judge

    # Two metrics with short judge replies keep the test short (SmolLM2 fills faithfulness's statement lists,
    # minutes on a busy machine); every metric's reply handling runs in the fake-model tests above.
    metrics = ("answer_relevancy", "context_utilization")
    agent = Agent(kb, embedder=embedder, persist=False)
    result = agent.ask("How tall is the Kestrel Point lighthouse?")
    assert result.interaction_id and not result.abstained, result
    judge = load_judge()
    assert judge.llm is agent.llm  # one model per process, shared by the agent and the judge
    rows = evaluate_interaction(kb, result.interaction_id, judge=judge, embedder=embedder, metrics=metrics)
    assert [r["metric"] for r in rows] == list(metrics)
    assert judge.stats.calls >= len(metrics)
    for row in rows:
        assert row["judge_model"] == chat_model_path(AgentSettings().chat_model).name
        if row["value"] is None:
            assert row["reason"], row
        else:
            assert 0.0 <= row["value"] <= 1.0 and not math.isnan(row["value"]), row
    assert any(r["value"] is not None for r in rows), rows
    assert len(scores_in_db(kb, result.interaction_id)) == len(rows)


def test_a_raw_newline_inside_a_judge_string_is_accepted():
    from ragas.metrics.collections.faithfulness.util import StatementGeneratorOutput

    judge = LlamaJudge(FakeLLM("unused", json_reply='{"statements": ["It is 42\nmetres tall."]}'))
    assert judge.generate("p", StatementGeneratorOutput).statements == ["It is 42\nmetres tall."]
    assert judge.stats.failures == 0


@pytest.mark.slow
def test_kaizen_eval_score_command(kb):
    import json

    from tests.support.common import run_cli

    iid = record_interaction(kb, "Who won the 1954 chess olympiad?", "The knowledge base does not say.", True)
    done = run_cli("eval", "score", str(iid), "--metrics", "faithfulness,answer_relevancy", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["metric"], r["value"]) for r in rows] == [("faithfulness", None), ("answer_relevancy", None)]
    assert all("abstained" in r["reason"] for r in rows)
    missing = run_cli("eval", "score", "999999999")
    assert missing.returncode == 1 and "no such interaction" in missing.stdout


def test_a_calibrated_judge_is_only_asked_for_the_metrics_it_is_trusted_with(kb):
    """The worker skips metrics the judge's calibration does not trust (they cost 10-25 s an answer)."""
    from eval.judging.interactions import evaluate_interaction

    iid = record_interaction(kb, "How tall is the Kestrel Point lighthouse?", "It is 42 metres tall [1].", False,
                             "42 metres tall")
    judge = LlamaJudge(FakeLLM("unused", json_reply='{"rating": 2}'))
    with kb.session() as s:
        s.execute(sa.text("DELETE FROM judge_calibration WHERE judge_model = 'fake-llm'"))
        s.execute(sa.text(
            "INSERT INTO judge_calibration (judge_model, metric, auc, pairs, threshold, trusted) VALUES "
            "('fake-llm', 'context_utilization', 0.9, 8, 0.75, true), "
            "('fake-llm', 'faithfulness', 0.5, 8, 0.75, false)"))
    try:
        rows = evaluate_interaction(kb, iid, judge=judge)
        assert [r["metric"] for r in rows] == ["context_utilization"]
        # an explicit choice still wins
        other = record_interaction(kb, "How tall is it?", "42 metres [1].", False, "42 metres tall")
        assert [r["metric"] for r in evaluate_interaction(kb, other, judge=judge, metrics=("faithfulness",))] == \
            ["faithfulness"]
    finally:
        with kb.session() as s:
            s.execute(sa.text("DELETE FROM judge_calibration WHERE judge_model = 'fake-llm'"))
