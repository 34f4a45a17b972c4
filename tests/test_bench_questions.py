"""Question selection of `kaizen bench answer`: both kinds interleaved, tuned-on questions skippable."""

import json

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
