"""Shared by the worker, drift and report tests (no tests here): a small knowledge base with probes, a stand-in
interaction evaluator for worker processes (`KAIZEN_INTERACTION_EVALUATOR=tests.support.worker:evaluate`),
and helpers to wait on the queue."""

from __future__ import annotations

import json
import os
import time

import sqlalchemy as sa

TOPICS = [
    ("owl", "Owls", "Owls hunt at night. An owl can turn its head 270 degrees.", "How far can an owl turn its head?"),
    ("tea", "Green tea", "Green tea is made from unoxidised leaves of Camellia sinensis.",
     "What is green tea made from?"),
    ("bridge", "Golden Gate Bridge", "The Golden Gate Bridge opened in 1937 in San Francisco.",
     "When did the Golden Gate Bridge open?"),
    ("volcano", "Mount Etna", "Mount Etna is an active volcano on the east coast of Sicily.",
     "Where is Mount Etna?"),
    ("chess", "Chess", "In chess, the knight moves in an L shape: two squares one way, one square sideways.",
     "How does the knight move in chess?"),
    ("penguin", "Emperor penguins", "Emperor penguins breed during the Antarctic winter and the males keep the egg "
     "warm on their feet.", "Which penguin parent keeps the egg warm?"),
    ("coffee", "Espresso", "Espresso is brewed by forcing hot water through finely ground coffee at high pressure.",
     "How is espresso brewed?"),
    ("eiffel", "Eiffel Tower", "The Eiffel Tower in Paris was finished in 1889 for the World's Fair.",
     "When was the Eiffel Tower finished?"),
    ("bees", "Honeybees", "Honeybees tell each other where flowers are with a waggle dance.",
     "How do honeybees tell each other where flowers are?"),
    ("everest", "Mount Everest", "Mount Everest, 8,849 metres high, is the highest mountain above sea level.",
     "How high is Mount Everest?"),
    ("jupiter", "Jupiter", "Jupiter is the largest planet of the solar system and has a great red spot.",
     "Which is the largest planet of the solar system?"),
    ("python", "Python language", "The Python programming language was created by Guido van Rossum in 1991.",
     "Who created the Python programming language?"),
]
CORPUS = [{"id": f"p-{key}", "title": title, "text": text} for key, title, text, _ in TOPICS]
QUESTIONS = [{"id": f"q-{key}", "question": question, "answerable": True, "reference": text,
              "gold_passage_ids": [f"p-{key}"]} for key, _, text, question in TOPICS]
BROKEN = ("owl", "tea", "bridge", "volcano", "chess", "penguin")  # documents a forced drop removes from search


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def reset_queue(store) -> None:
    with store.session() as s:
        s.execute(sa.text("TRUNCATE procrastinate_jobs, procrastinate_workers, procrastinate_periodic_defers, "
                          "procrastinate_events RESTART IDENTITY CASCADE"))


def build_kb(store, embedder, tmp_path, probe_set: str = "topics") -> None:
    """The 12-topic knowledge base and its 12 probes, in a clean store with an empty queue."""
    from eval.probes.sets import import_probes
    from store.ingest import ingest

    reset_queue(store)
    assert ingest(store, embedder, [str(write_jsonl(tmp_path / "corpus.jsonl", CORPUS))]).ok
    result = import_probes(store, write_jsonl(tmp_path / "questions.jsonl", QUESTIONS), probe_set=probe_set)
    assert result["added"] == len(QUESTIONS) and result["unresolved_gold"] == 0


def break_search(store, keys=BROKEN) -> str:
    """A forced drop: the chunks of these documents vanish from the active version (SQL, as `kaizen sql` runs it)."""
    sources = ", ".join(f"'p-{k}'" for k in keys)
    return (f"DELETE FROM chunks WHERE document_id IN (SELECT id FROM documents WHERE source_id IN ({sources}))")


def add_interactions(store, n: int) -> list[int]:
    with store.session() as s:
        version = s.execute(sa.text("SELECT id FROM kb_versions WHERE status = 'active'")).scalar()
        return list(s.execute(sa.text(
            "INSERT INTO interactions (thread_id, question, answer, kb_version, model) "
            "SELECT 't-test', 'question ' || g, 'answer ' || g, :v, 'test' FROM generate_series(1, :n) g "
            "RETURNING id"), {"v": version, "n": n}).scalars())


def evaluate(store, interaction_id, *, judge=None, embedder=None, run_id=None) -> list[dict]:
    """A stand-in for eval.judging.interactions.evaluate_interaction: waits KAIZEN_TEST_EVAL_SLEEP seconds, then writes
    one score (with this process's pid) in one transaction."""
    time.sleep(float(os.environ.get("KAIZEN_TEST_EVAL_SLEEP", "0")))
    with store.session() as s:
        s.execute(sa.text(
            "INSERT INTO eval_scores (interaction_id, kb_version, metric, value, judge_model, detail) "
            "SELECT id, kb_version, 'stand_in', 1.0, 'test', CAST(:d AS jsonb) FROM interactions WHERE id = :i"),
            {"i": interaction_id, "d": json.dumps({"pid": os.getpid()})})
    return [{"metric": "stand_in", "value": 1.0}]


def job_states(store) -> list[tuple]:
    with store.session() as s:
        return s.execute(sa.text("SELECT id, task_name, status::text, attempts FROM procrastinate_jobs "
                                 "ORDER BY id")).all()


def wait_for(predicate, timeout: float, what: str, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
