"""`kaizen bench scale --corpus` in reduced form: two real slices (English and Japanese), recombined distractor chunks
written beside them, and the whole hybrid query measured before and after, cold and warm."""

from __future__ import annotations

import pytest

from tests.support.common import SHARED_DATA
from tests.support.repair import clapnq_slice, jsquad_slice

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (SHARED_DATA / "jsquad").exists(), reason="../shared/data is not there")]


def test_distractors_are_added_and_the_hybrid_query_is_measured_cold_and_warm(tmp_path):
    from eval.bench.scale import run_corpus

    (tmp_path / "en").mkdir()
    (tmp_path / "ja").mkdir()
    sets = [tuple(map(str, clapnq_slice(tmp_path / "en", questions=12, distractors=20))),
            tuple(map(str, jsquad_slice(tmp_path / "ja", questions=12, distractors=20)))]
    report = run_corpus(3000, sets, per_set=10, home=str(tmp_path / "home"))

    assert sum(report["distractors"].values()) == 3000 and set(report["distractors"]) == {"en", "ja"}
    real = report["chunks_total"] - 3000
    assert real > 20
    for entry in report["sets"]:
        small = entry[f"small_corpus_{real}_chunks"]
        big = entry["with_3000_more"]
        assert entry["evaluated"] == 10
        assert small["recall@5"] >= 0.8, entry  # real retrieval on the slice itself
        assert 0 < big["hybrid"]["recall@5"] <= 1 and big["hybrid"]["recall@5"] >= small["recall@5"] - 0.3, entry
        warm = entry["hybrid_warm_cache"]
        assert set(warm) == {"latency_ms_p50", "latency_ms_p95"}
        assert 0 < warm["latency_ms_p50"] <= warm["latency_ms_p95"]
    assert report["vector_recall@10"] >= 0.9  # HNSW against exact at the chosen ef_search
    assert report["shared_buffers"].endswith(("kB", "MB", "GB"))  # the page cache the latencies were taken with

    # a kept home is reused: the distractors are not written again
    again = run_corpus(3000, sets, per_set=10, home=str(tmp_path / "home"))
    assert again["distractors_reused"] and again["chunks_total"] == report["chunks_total"]
