"""Question selection of `kaizen bench answer`: both kinds interleaved, tuned-on questions skippable; and the naive
baseline beside Kaizen in the same run."""

import json
import os
from pathlib import Path

import pytest

from eval.bench.answer import load_questions


def _write(tmp_path, rows):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_half_and_half_interleaved_after_skipping(tmp_path):
    rows = [{"id": f"a{i}", "question": "q", "answerable": True} for i in range(5)]
    rows += [{"id": f"u{i}", "question": "q", "answerable": False} for i in range(5)]
    path = _write(tmp_path, rows)
    assert [r["id"] for r in load_questions(path, 4)] == ["a0", "u0", "a1", "u1"]
    assert [r["id"] for r in load_questions(path, 4, skip=2)] == ["a2", "u2", "a3", "u3"]
    assert [r["id"] for r in load_questions(path, 100, skip=4)] == ["a4", "u4"]
    assert [r["id"] for r in load_questions(path, None, skip=4)] == ["a4", "u4"]


def test_answerable_only_sets_skip_too(tmp_path):
    path = _write(tmp_path, [{"id": f"a{i}", "question": "q"} for i in range(5)])
    assert [r["id"] for r in load_questions(path, 2, skip=1)] == ["a1", "a2"]


def test_an_article_becomes_one_document_in_corpus_order(tmp_path):
    from eval.bench.corpus import article_file

    corpus = tmp_path / "corpus.jsonl"
    rows = [{"id": "p0", "title": "梅雨", "text": "梅雨は雨季である。"}, {"id": "p1", "title": "他", "text": "別。"},
            {"id": "p2", "title": "梅雨", "text": "梅雨入りは五月。"}]
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    path = article_file(corpus, "梅雨", tmp_path / "out")
    assert path.name == "梅雨.txt"
    assert path.read_text(encoding="utf-8") == "梅雨は雨季である。\n\n梅雨入りは五月。\n"
    with pytest.raises(ValueError, match="no article"):
        article_file(corpus, "なし", tmp_path / "out")


@pytest.mark.parametrize("question, row, right", [
    ({"question": "Who built it?", "answers": ["Ada"]}, {"abstained": False, "answer": "Ada built it [1].",
                                                         "string_presence": 1.0, "citations": [7]}, True),
    ({"question": "Who built it?", "answers": ["Ada"]}, {"abstained": False, "answer": "Ada built it.",
                                                         "string_presence": 1.0, "citations": []}, False),
    ({"question": "Who?", "answers": ["Ada"], "required": ["Ada", "Bo"]},
     {"abstained": False, "answer": "Ada [1].", "string_presence": 1.0, "citations": [7]}, False),
    ({"question": "誰が建てたか。", "answerable": False},
     {"abstained": True, "answer": "ナレッジベースには記載がありません。"}, True),
    ({"question": "誰が建てたか。", "answerable": False},
     {"abstained": True, "answer": "The knowledge base does not say."}, False),
])
def test_handled_right_wants_the_reference_and_a_citation_or_an_abstention_in_the_question_s_language(
        question, row, right):
    from eval.bench.answer import handled_right

    assert handled_right(row, question) is right


SMALL_MODEL = Path(__file__).resolve().parents[1] / ".venv/share/kaizen/models/SmolLM2-135M-Instruct.Q4_1.gguf"

CORPUS = [
    {"id": "tiny-0", "title": "Miso the red panda",
     "text": "Miso is a red panda who lives in the Lisbon zoo. Miso was born in 2015 and eats bamboo and apples."},
    {"id": "tiny-1", "title": "The Harbour lighthouse",
     "text": "The Harbour lighthouse is 42 metres tall. It was built in 1890 from granite and is painted white."},
    {"id": "tiny-2", "title": "Sourdough bread",
     "text": "Sourdough bread is leavened by wild yeast and lactic acid bacteria kept alive in a starter."},
]
QUESTIONS = [
    {"id": "q-answerable", "question": "How tall is the Harbour lighthouse?", "answerable": True,
     "reference": "The Harbour lighthouse is 42 metres tall.", "gold_passage_ids": ["tiny-1"]},
    {"id": "q-unanswerable", "question": "Who was the first keeper of the Harbour lighthouse?", "answerable": False,
     "reference": "", "gold_passage_ids": ["tiny-1"]},
]


@pytest.mark.slow
def test_naive_baseline_beside_kaizen_in_the_same_run(tmp_path, monkeypatch):
    from agent.llm import LLM
    from eval.bench.answer import run

    if not SMALL_MODEL.is_file():
        pytest.skip(f"{SMALL_MODEL} is not installed (make install)")
    monkeypatch.setenv("KAIZEN_CHAT_MODEL", str(SMALL_MODEL))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in CORPUS), encoding="utf-8")
    questions = _write(tmp_path, QUESTIONS)
    kinds: list[str] = []
    record = LLM.record

    def counting_record(self, usage):
        kinds.append(usage.kind)
        return record(self, usage)

    monkeypatch.setattr(LLM, "record", counting_record)
    result = run(str(corpus), questions, limit=2, baseline="naive")

    assert result["model"] == SMALL_MODEL.name and result["documents"] == 3
    assert kinds.count("naive") == 2  # exactly one naive call per question, and nothing else is "naive"
    baseline = result["baseline"]
    assert set(baseline) >= {"naive", "kaizen", "kaizen_to_naive", "kaizen_minus_naive"}
    assert set(baseline["kaizen_to_naive"]) == {"ttft_ms_median", "total_ms_median"}
    for side in (baseline["naive"], baseline["kaizen"]):
        for kind in ("answerable", "unanswerable"):
            assert side[kind]["n"] == 1
            answered, abstained = side[kind]["answered"], side[kind]["abstained"]
            assert answered["count"] + abstained["count"] == 1
            assert answered["share"] + abstained["share"] == pytest.approx(1.0)
            for share in (answered, abstained):
                low, high = share["ci95"]
                assert 0.0 <= low <= share["share"] <= high <= 1.0
        quality = side["answer_quality_answerable"]
        assert set(quality) == {"token_f1", "token_f1_answered", "string_presence", "scored", "answered"}
        assert quality["scored"] == 1 and 0.0 <= quality["token_f1"] <= 1.0
        assert quality["string_presence"] in (0.0, 1.0)
        for key in ("ttft_ms", "total_ms"):
            assert set(side[key]) == {"median", "p90", "measured_on"}
    naive = baseline["naive"]
    assert naive["total_ms"]["measured_on"] == 2 and naive["total_ms"]["median"] > 0
    assert naive["llm_calls"] == {"total": 2, "per_question_max": 1}
    assert baseline["kaizen"]["answerable"]["abstained"]["share"] == result["summary"]["abstention_rate"]["answerable"]
    rows = result["per_question"]
    assert [r["id"] for r in rows] == ["q-answerable", "q-unanswerable"]
    for row in rows:
        n = row["naive"]
        assert n["llm_calls"] == 1 and n["error"] is None
        assert len(n["chunks"]) == 3  # vector top-4 of a 3-chunk corpus: all of it
        assert n["abstained"] in (True, False) and "string_presence" in row and "string_presence" in n
        assert n["ttft_ms"] is None or n["ttft_ms"] <= n["total_ms"]
        assert n["search_ms"] <= n["total_ms"]
    assert rows[0]["naive"]["gold_retrieved"]
    cold = result["cold_start"]  # a new process's first question: the prefix evaluated, then loaded from its file
    assert cold["evaluated"]["prefix_tokens_evaluated"] > 100 and cold["loaded"]["prefix_tokens_evaluated"] == 0
    assert cold["same_answer"] and cold["loaded"]["ttft_ms"] > 0


def worker_children() -> list[int]:
    """`kaizen worker` processes started by this test process (not the machine's other workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and "cli.main worker" in command:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_the_same_questions_beside_a_grading_worker(tmp_path, monkeypatch):
    from eval.bench.answer import run

    monkeypatch.setenv("KAIZEN_CHAT_MODEL", "smollm2")
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in CORPUS), encoding="utf-8")
    result = run(str(corpus), _write(tmp_path, QUESTIONS), limit=2, with_worker=True)
    beside = result["beside_worker"]
    assert beside["questions"] == 2 and beside["jobs_queued"] == 2
    assert set(beside["ratio_beside_to_alone"]) == {"ttft_ms", "total_ms"}
    assert all(r["total_ms"] > 0 for r in beside["per_question"])
    assert worker_children() == [], "the benchmark's worker is still running"
