"""The guard weighs answers (eval/repair/guard.py): the agent answers held-out probes on the base and on the
candidate version, leaves no interaction behind, and a change whose answers score lower is not promoted however
its retrieval metrics look. One run with the real small model, one with a scripted agent for the refusal."""

from __future__ import annotations

import types

import pytest
import sqlalchemy as sa

from tests.support.repair import active_id, bad_feedback, tiny_kb  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow


def _correction(store):
    from eval.repair.actions import AddCorrection

    bad_feedback(store, "Who designed the Golden Gate Bridge?", "Joseph Strauss was its chief engineer.")
    with store.session() as s:
        fid = s.execute(sa.text("SELECT max(id) FROM feedback")).scalar_one()
    return AddCorrection(target=f"feedback:{fid}", reason="test", feedback_id=fid,
                         question="Who designed the Golden Gate Bridge?",
                         correction="Joseph Strauss was its chief engineer.")


def _interactions(store) -> int:
    with store.session() as s:
        return s.execute(sa.text("SELECT count(*) FROM interactions")).scalar_one()


def test_the_real_model_answers_held_out_probes_on_both_versions_and_records_nothing(tiny_kb, embedder):  # noqa: F811
    from eval.repair.planner import run_actions
    from eval.settings import EvalSettings

    action = _correction(tiny_kb)
    recorded = _interactions(tiny_kb)
    [result] = run_actions(tiny_kb, embedder, [action], settings=EvalSettings.defaults(guard_answers=2))
    before, after = result.metrics_before["answers"], result.metrics_after["answers"]
    assert before["answers"] == after["answers"] >= 1
    for side in (before, after):
        assert all(0.0 <= side[m] <= 1.0 for m in ("token_f1", "string_presence", "semantic_similarity"))
    assert _interactions(tiny_kb) == recorded  # measurements, not traffic to learn from or to grade
    assert result.decision == "promoted" and "held-out answers score token F1" in result.reason, result.reason


class _ScriptedAgent:
    """Answers every probe with its reference on `good_version` and with nothing useful on any other."""

    def __init__(self, store, good_version: int):
        with store.session() as s:
            self.references = dict(s.execute(sa.text("SELECT question, reference FROM probes")).all())
        self.good_version = good_version
        self.versions = []

    def ask(self, question, *, kb_version, record):
        assert record is False
        self.versions.append(kb_version)
        answer = self.references[question] if kb_version == self.good_version else "I am not sure."
        return types.SimpleNamespace(answer=answer, abstained=False)


def test_a_change_whose_answers_are_worse_is_not_promoted(tiny_kb, embedder, monkeypatch):  # noqa: F811
    import eval.repair.planner as planner
    from eval.repair.guard import AnswerScorer
    from eval.settings import EvalSettings

    base = active_id(tiny_kb)
    agent = _ScriptedAgent(tiny_kb, good_version=base)
    monkeypatch.setattr(planner, "_answer_scorer",
                        lambda store, embedder, ctx: AnswerScorer(store, embedder, lambda: agent, 4))
    [result] = planner.run_actions(tiny_kb, embedder, [_correction(tiny_kb)],
                                   settings=EvalSettings.defaults(guard_answers=4))
    assert result.decision == "rolled_back" and "held-out answers regress" in result.reason, result.reason
    assert result.metrics_before["answers"]["string_presence"] == 1.0
    assert result.metrics_after["answers"]["string_presence"] == 0.0
    assert set(agent.versions) == {base, result.candidate_version}
    assert active_id(tiny_kb) == base
