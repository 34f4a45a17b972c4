"""The degradation-recovery loop in reduced form (a slice of ClapNQ, a few probes): degrade the KB, raise the
alert, let the planner run unattended, and require most of the lost held-out recall back with no promoted change
regressing beyond the tolerance. Also one run of the real default model (SmolLM2) through an enrichment."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.support.common import SHARED_DATA
from tests.support.repair import QUESTIONS, TINY, _jsonl, clapnq_slice, reset_eval

CLAPNQ = SHARED_DATA / "clapnq"


@pytest.mark.slow
@pytest.mark.skipif(not CLAPNQ.exists(), reason="../shared/data/clapnq is not there")
def test_reduced_recovery_gets_the_lost_recall_back(clean_store, embedder, tmp_path):
    from eval.bench.recovery import run_on_store

    reset_eval(clean_store)
    corpus, questions = clapnq_slice(tmp_path, questions=40, distractors=30)
    # A small corpus has few look-alike passages, so it is damaged harder than the benchmark's 24 tokens / 20%.
    result = run_on_store(clean_store, embedder, str(corpus), str(questions), None, heldout_share=0.5,
                          fragment_tokens=12, noise_share=0.4,
                          llm=lambda: pytest.fail("structural repairs need no model"), workdir=tmp_path,
                          answer_probes=2, calibration_pairs=4)
    h = result["heldout"]
    # On the clean KB nothing is repaired; learning the train probes and tuning on them may be tried, and the
    # guard decides it.
    clean = result["clean_kb"]
    assert {a["kind"] for a in clean["actions"]} <= {"learn_from_traffic", "tune_search", "tune_chunking"}, clean
    if any(a["decision"] == "promoted" for a in clean["actions"]):
        assert clean["heldout_after"]["mrr@10"] >= clean["heldout_before"]["mrr@10"], clean
    assert h["degraded"]["recall@5"] < h["baseline"]["recall@5"] or h["degraded"]["mrr@10"] < h["baseline"]["mrr@10"]
    assert result["repair"]["actions_kept"] >= 1
    lost = h["baseline"]["mrr@10"] - h["degraded"]["mrr@10"]
    assert h["recovered"]["mrr@10"] >= h["degraded"]["mrr@10"] + 0.9 * lost - 1e-9, result
    if result["recovered_share_recall@5"] is not None:
        assert result["recovered_share_recall@5"] >= 0.9, result
    assert result["max_promoted_heldout_drop"] <= result["tolerance"]
    ragas = result["ragas"]  # the agent answered held-out probes at each phase; graded by trusted metrics only
    assert {c["metric"] for c in ragas["calibration"]} >= {"answer_relevancy", "semantic_similarity", "token_f1"}
    trusted = {c["metric"] for c in ragas["calibration"] if c["trusted"]}
    assert set(ragas["trusted_metrics"]) <= trusted | {"string_presence"}
    for phase in ("baseline", "degraded", "recovered"):
        assert ragas[phase]["answers"] == 2 and 0.0 <= ragas[phase]["abstained_share"] <= 1.0
        assert set(ragas[phase]["metrics"]) >= set(ragas["trusted_metrics"]) - {"string_presence"}
    assert set(ragas["recovered_share"]) == set(ragas["trusted_metrics"])


@pytest.mark.slow
def test_the_real_model_enriches_without_touching_the_shown_text(clean_store, embedder, tmp_path):
    from eval.probes.sets import import_probes
    from eval.repair.actions import Enrich
    from eval.repair.planner import run_actions
    from store.ingest import ingest

    reset_eval(clean_store)
    assert ingest(clean_store, embedder, [str(_jsonl(tmp_path / "corpus.jsonl", TINY))]).ok
    import_probes(clean_store, _jsonl(tmp_path / "q.jsonl", QUESTIONS), probe_set="tiny", heldout_share=0.5)
    with clean_store.session() as s:
        original = dict(s.execute(sa.text("SELECT id, text FROM active_chunks ORDER BY id LIMIT 2")).all())
    [result] = run_actions(clean_store, embedder, [Enrich(target="2 chunks", reason="test",
                                                          chunk_ids=list(original))])
    assert result.decision in ("promoted", "rolled_back", "skipped"), result.reason
    with clean_store.session() as s:
        rejected = s.execute(sa.text("SELECT count(*) FROM kb_changes WHERE kind = 'repair_output_rejected'")
                             ).scalar_one()
        enriched = s.execute(sa.text("SELECT c.text, c.search_text, c.derived_from FROM active_chunks a "
                                     "JOIN chunks c USING (id) WHERE c.origin = 'enrichment'")).all()
    if result.decision == "skipped":
        assert rejected == 2  # every output was rejected, and each one recorded
    else:
        assert len(result.build["outputs"]) + result.build["rejected"] == 2
    for row in enriched:  # promoted: the indexed text grew, the shown and cited text is the original
        assert row.text == original[row.derived_from] and row.text in row.search_text
        assert len(row.search_text) > len(row.text)


def test_recovered_share_needs_a_loss_and_a_value_in_every_phase():
    from eval.bench.recovery import recovered_share

    assert recovered_share(1.0, 0.5, 0.95) == 0.9
    assert recovered_share(0.47, 0.74, 0.47) is None  # the damage raised it: nothing lost to recover
    assert recovered_share(0.8, None, 0.8) is None  # every score of a phase NULL: not a 0
