"""Judge calibration: the AUC arithmetic, the labelled pairs, rows stored in judge_calibration, the latest
calibration deciding trust, and `kaizen eval calibrate` end to end with the real default model."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from eval.judging.calibration import (
    NO_JUDGE,
    Source,
    build_pairs,
    calibrate,
    items_for,
    roc_auc,
    swap_key_span,
    trusted_metrics,
)
from eval.judging.judge import LlamaJudge
from tests.support.agent import FakeLLM
from tests.support.common import run_cli

SOURCES = [
    Source("How tall is the Kestrel Point lighthouse?", "The Kestrel Point lighthouse is 42 metres tall.",
           "The Kestrel Point lighthouse was built in 1887 and is 42 metres tall.", ["42 metres"]),
    Source("Who drew the Kaizen mascot?", "The mascot was drawn by Aiko Tanaka in 2024.",
           "Kaizen's mascot is a red panda named Miso. Miso was drawn in 2024 by the designer Aiko Tanaka.",
           ["Aiko Tanaka"]),
    Source("When does the Maple Street garden open?", "The garden opens at 7 am.",
           "The Maple Street community garden opens at 7 am and closes at 8 pm.", ["7 am"]),
    Source("How long did Ruth Olsen live in the tower?", "Ruth Olsen lived in the tower for 31 years.",
           "The lighthouse keeper, Ruth Olsen, lived in the tower for 31 years.", ["31 years"]),
]


def test_roc_auc_known_values():
    assert roc_auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert roc_auc([0.1, 0.2], [0.9, 0.8]) == 0.0
    assert roc_auc([0.5, 0.5], [0.5]) == 0.5  # ties count one half
    # 0.9 and 0.8 beat all three; 0.4 beats 0.1, ties 0.4, loses to 0.5: (3 + 3 + 1.5) / 9
    assert roc_auc([0.9, 0.8, 0.4], [0.5, 0.4, 0.1]) == pytest.approx(7.5 / 9)
    assert roc_auc([], [0.3]) is None and roc_auc([0.3], []) is None


def test_labelled_pairs_have_the_negatives_each_metric_needs():
    swapped = swap_key_span(SOURCES[0], SOURCES[2])
    assert swapped == "The Kestrel Point lighthouse is 7 am tall."
    no_answers = Source("Who built it?", "It was built in 1887 by Jonas Berg.", "ctx")
    other = Source("When?", "It closed in 1954 under Mary Holt.", "ctx2")
    assert swap_key_span(no_answers, other) == "It was built in 1954 by Jonas Berg."

    pairs = build_pairs(SOURCES, 3)
    assert len(pairs) == 3
    for pair in pairs:
        assert set(pair.negatives) == {"other_answer", "other_context", "swapped_span"}
        pos = pair.positive
        assert pair.negatives["other_answer"]["response"] != pos["response"]
        assert pair.negatives["other_context"]["retrieved_contexts"] != pos["retrieved_contexts"]
        assert pair.negatives["other_context"]["response"] == pos["response"]
    relevancy = items_for("answer_relevancy", pairs)
    assert [i.label for i in relevancy] == [1, 0] * 3
    assert {i.kind for i in relevancy if i.label == 0} == {"other_answer"}  # relevancy ignores the context
    faithful = items_for("faithfulness", pairs)
    assert {i.kind for i in faithful if i.label == 0} == {"other_answer", "other_context", "swapped_span"}
    assert {i.kind for i in items_for("context_relevance", pairs) if i.label == 0} == {"other_context"}


def _calibration_rows(store, judge_model: str) -> list[tuple]:
    with store.session() as s:
        return s.execute(sa.text("SELECT metric, auc, pairs, threshold, trusted, detail FROM judge_calibration "
                                 "WHERE judge_model = :j ORDER BY id"), {"j": judge_model}).all()


@pytest.mark.slow
def test_calibration_rows_are_stored_and_the_latest_decides_trust(store, embedder, monkeypatch):
    with store.session() as s:
        s.execute(sa.text("DELETE FROM judge_calibration"))
    monkeypatch.setenv("KAIZEN_TRUST_AUC", "0.75")
    # A judge that always rates 2 ("fully grounded"): it cannot tell good from bad, AUC 0.5, never trusted.
    blind = LlamaJudge(FakeLLM("unused", json_reply='{"rating": 2}'))
    summary = calibrate(store, judge=blind, embedder=embedder, pairs=3, sources=SOURCES,
                        metrics=("response_groundedness",), source_label="test")
    by = {m["metric"]: m for m in summary["metrics"]}
    assert by["response_groundedness"]["auc"] == 0.5 and not by["response_groundedness"]["trusted"]
    assert by["response_groundedness"]["judge_model"] == "fake-llm"
    assert by["token_f1"]["judge_model"] == NO_JUDGE and by["token_f1"]["auc"] == 1.0  # positive = the reference
    rows = _calibration_rows(store, "fake-llm")
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [("response_groundedness", 0.5, 3, 0.75, False)]
    assert rows[0][5]["items"] == 6 and rows[0][5]["source"] == "test"
    assert {r[0] for r in _calibration_rows(store, NO_JUDGE)} >= {"chrf", "rouge_l", "token_f1", "semantic_similarity"}

    # A judge whose replies are garbage scores nothing: no AUC, not trusted, and the reasons are kept.
    broken = LlamaJudge(FakeLLM("unused", json_reply="{"))
    summary = calibrate(store, judge=broken, embedder=embedder, pairs=3, sources=SOURCES,
                        metrics=("response_groundedness",), source_label="test")
    groundedness = summary["metrics"][0]
    assert groundedness["auc"] is None and groundedness["scored"] == 0 and not groundedness["trusted"]
    assert groundedness["detail"]["null_reasons"]

    trust = trusted_metrics(store, "fake-llm")
    assert trust["response_groundedness"] is False and trust["token_f1"] is True
    with store.session() as s:  # a newer calibration replaces the older one
        s.execute(sa.text("INSERT INTO judge_calibration (judge_model, metric, auc, pairs, threshold, trusted) "
                          "VALUES ('fake-llm', 'response_groundedness', 0.9, 20, 0.75, true)"))
    assert trusted_metrics(store, "fake-llm")["response_groundedness"] is True
    assert trusted_metrics(store, "never-calibrated.gguf") == {k: v for k, v in trust.items()
                                                                if k != "response_groundedness"}


@pytest.mark.slow
def test_kaizen_eval_calibrate_with_the_real_model(store, tmp_path):
    from agent.model_files import chat_model_path
    from agent.settings import AgentSettings

    corpus = tmp_path / "corpus.jsonl"
    questions = tmp_path / "questions.jsonl"
    corpus.write_text("\n".join(json.dumps({"id": f"d{i}", "title": "t", "text": s.context})
                                for i, s in enumerate(SOURCES)) + "\n")
    questions.write_text("\n".join(json.dumps({"id": f"q{i}", "question": s.question, "reference": s.reference,
                                               "answers": s.answers, "gold_passage_ids": [f"d{i}"]})
                                   for i, s in enumerate(SOURCES)) + "\n")
    done = run_cli("eval", "calibrate", "--pairs", "3", "--metrics", "answer_relevancy", "--corpus", str(corpus),
                   "--questions", str(questions), "--json", env={"KAIZEN_LLM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    judge = chat_model_path(AgentSettings().chat_model).name
    assert summary["judge_model"] == judge and summary["pairs"] == 3
    relevancy = next(m for m in summary["metrics"] if m["metric"] == "answer_relevancy")
    assert relevancy["items"] == 6 and relevancy["judge_model"] == judge
    assert relevancy["auc"] is None or 0.0 <= relevancy["auc"] <= 1.0
    assert relevancy["trusted"] == (relevancy["auc"] is not None and relevancy["auc"] >= 0.75
                                    and relevancy["scored"] >= 0.75 * relevancy["items"])
    stored = _calibration_rows(store, judge)
    assert stored and stored[-1][0] == "answer_relevancy" and stored[-1][2] == 3
    assert trusted_metrics(store, judge)["answer_relevancy"] == relevancy["trusted"]
    shown = run_cli("eval", "trusted", "--json")
    assert shown.returncode == 0 and any(r["metric"] == "answer_relevancy" for r in json.loads(shown.stdout))
