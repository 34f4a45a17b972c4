"""`kaizen bench improve` in reduced form: a JSQuAD slice whose user set a poor fusion weight and turned the
sentence vectors off; the loop, unattended, must close most of the gap to a clean default ingest on evaluation
questions it never saw, and promote nothing that lowers a held-out metric beyond the tolerance."""

from __future__ import annotations

import pytest

from tests.support.common import SHARED_DATA
from tests.support.repair import jsquad_slice, reset_eval

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (SHARED_DATA / "jsquad").exists(), reason="../shared/data/jsquad is not there")]


def test_the_loop_finds_its_way_from_a_misconfigured_start(clean_store, embedder, tmp_path, monkeypatch):
    from eval.bench.improve import run_on_store, start_settings

    reset_eval(clean_store)
    corpus, questions = jsquad_slice(tmp_path, questions=120, distractors=60)
    start = {"cjk_fusion_alpha": "1.0", "sentence_weight": "0"}
    monkeypatch.setattr(clean_store, "settings", clean_store.settings.model_copy(update=start_settings(start)))
    monkeypatch.setenv("KAIZEN_TUNE_MIN_PROBES", "10")
    result = run_on_store(clean_store, embedder, [str(corpus)], [str(questions)], workdir=tmp_path, start=start,
                          budget_seconds=900)
    assert result["split"]["eval"] >= 20 and result["split"]["traffic"] >= 40, result["split"]
    before, after, default = (result[k]["eval"] for k in ("before", "after", "default"))
    assert default["mrr@10"] > before["mrr@10"] + 0.02, (before, default)  # the start is really worse
    assert result["gap_closed"]["eval"]["mrr@10"] >= 0.9, result["actions"]
    kept = [a for a in result["actions"] if a["decision"] == "promoted"]
    assert any(a["kind"] == "tune_search" for a in kept), result["actions"]
    assert result["final_parameters"]["cjk_fusion_alpha"] < 1.0
    for a in kept:
        assert all(a["heldout_after"][m] >= a["heldout_before"][m] - 0.02 for m in ("recall@1", "recall@5",
                                                                                     "recall@10", "mrr@10"))
