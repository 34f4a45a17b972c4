"""Shared pieces of the repair tests: a tiny knowledge base with its probes, and feedback rows."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

TINY = [
    {"id": "d-owl", "title": "Owls", "text": "Owls hunt at night. An owl can turn its head 270 degrees because its "
     "neck has fourteen vertebrae."},
    {"id": "d-tea", "title": "Green tea", "text": "Green tea is made from unoxidised leaves of Camellia sinensis. "
     "It originated in China."},
    {"id": "d-bridge", "title": "Golden Gate Bridge", "text": "The Golden Gate Bridge opened in 1937. It spans the "
     "strait between San Francisco Bay and the Pacific Ocean."},
    {"id": "d-moon", "title": "Moon", "text": "The Moon orbits the Earth every 27.3 days and is about 384,400 "
     "kilometres away."},
]
QUESTIONS = [
    {"id": "q-owl", "question": "How far can an owl turn its head?", "gold_passage_ids": ["d-owl"], "reference": "270"},
    {"id": "q-tea", "question": "What is green tea made from?", "gold_passage_ids": ["d-tea"], "reference": "leaves"},
    {"id": "q-bridge", "question": "When did the Golden Gate Bridge open?", "gold_passage_ids": ["d-bridge"],
     "reference": "1937"},
    {"id": "q-moon", "question": "How far away is the Moon?", "gold_passage_ids": ["d-moon"],
     "reference": "384,400 km"},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def clapnq_slice(tmp_path, questions: int, distractors: int):
    """A small ClapNQ in `tmp_path`: the first `questions` answerable dev questions with gold passages, their gold
    passages and `distractors` other passages. Returns (corpus path, questions path)."""
    from tests.support.common import SHARED_DATA

    clapnq = SHARED_DATA / "clapnq"
    rows = [json.loads(line) for line in (clapnq / "questions.dev.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("answerable", True) and r.get("gold_passage_ids")][:questions]
    gold = {g for r in rows for g in r["gold_passage_ids"]}
    corpus = [json.loads(line) for line in (clapnq / "corpus.jsonl").read_text().splitlines()]
    picked = [d for d in corpus if d["id"] in gold] + [d for d in corpus if d["id"] not in gold][:distractors]
    return _jsonl(tmp_path / "corpus.jsonl", picked), _jsonl(tmp_path / "questions.jsonl", rows)


def jsquad_slice(tmp_path, questions: int, distractors: int):
    """A small JSQuAD in `tmp_path`: the first `questions` answerable dev questions, their gold paragraphs and
    `distractors` other paragraphs of the same articles (the look-alikes that make Japanese retrieval hard).
    Returns (corpus path, questions path)."""
    from tests.support.common import SHARED_DATA

    jsquad = SHARED_DATA / "jsquad"
    rows = [json.loads(line) for line in (jsquad / "questions.dev.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r.get("answerable", True) and r.get("gold_passage_ids")][:questions]
    gold = {g for r in rows for g in r["gold_passage_ids"]}
    corpus = [json.loads(line) for line in (jsquad / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    titles = {d["title"] for d in corpus if d["id"] in gold}
    picked = [d for d in corpus if d["id"] in gold]
    picked += [d for d in corpus if d["id"] not in gold and d["title"] in titles][:distractors]
    return _jsonl(tmp_path / "corpus.jsonl", picked), _jsonl(tmp_path / "questions.jsonl", rows)


def reset_eval(store):
    with store.session() as s:
        s.execute(sa.text("TRUNCATE probes, quality_alerts, interactions RESTART IDENTITY CASCADE"))


@pytest.fixture
def tiny_kb(clean_store, embedder, tmp_path):
    from eval.probes.sets import import_probes
    from store.ingest import ingest

    reset_eval(clean_store)
    assert ingest(clean_store, embedder, [str(_jsonl(tmp_path / "corpus.jsonl", TINY))]).ok
    import_probes(clean_store, _jsonl(tmp_path / "q.jsonl", QUESTIONS), probe_set="tiny", heldout_share=0.5)
    return clean_store


def active_id(store):
    with store.session() as s:
        return s.execute(sa.text("SELECT id FROM kb_versions WHERE status = 'active'")).scalar_one()


def bad_feedback(store, question, correction):
    with store.session() as s:
        iid = s.execute(sa.text("INSERT INTO interactions (thread_id, question, answer, model) VALUES "
                                "('t', :q, 'wrong', 'test') RETURNING id"), {"q": question}).scalar_one()
        s.execute(sa.text("INSERT INTO feedback (interaction_id, rating, correction) VALUES (:i, -1, :c)"),
                  {"i": iid, "c": correction})


class ScriptedLLM:
    """Returns fixed raw replies, validated exactly as the real model's are (agent.llm.parse_json_reply)."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.prompts = []

    def json_chat(self, messages, schema, *, validate=None, max_tokens=64, kind="json"):
        from agent.llm import parse_json_reply

        self.prompts.append(messages)
        return parse_json_reply(self.replies.pop(0), validate)
