"""Probe import (../shared/data format) and gold-id retrieval scoring against the real store."""

from __future__ import annotations

import json

import pytest

CORPUS = [
    {"id": "p-owl", "title": "Owls", "text": "Owls hunt at night. An owl can turn its head 270 degrees."},
    {"id": "p-tea", "title": "Green tea", "text": "Green tea is made from unoxidised leaves of Camellia sinensis."},
    {"id": "p-bridge", "title": "Golden Gate Bridge",
     "text": "The Golden Gate Bridge opened in 1937 in San Francisco."},
]
QUESTIONS = [
    {"id": "q1", "question": "How far can an owl turn its head?", "answerable": True, "reference": "270 degrees",
     "gold_passage_ids": ["p-owl"]},
    {"id": "q2", "question": "When did the Golden Gate Bridge open?", "answerable": True, "reference": "1937",
     "gold_passage_ids": ["p-bridge"]},
    {"id": "q3", "question": "What is green tea made from?", "answerable": True, "reference": "unoxidised leaves",
     "gold_passage_ids": ["p-tea"]},
    {"id": "q4", "question": "Who won the 1990 World Cup?", "answerable": False, "reference": "",
     "gold_passage_ids": []},
    {"id": "q5", "question": "What is in the missing passage?", "answerable": True, "reference": "x",
     "gold_passage_ids": ["p-gone"]},
]


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def probe_kb(clean_store, embedder, tmp_path):
    from store.ingest import ingest

    report = ingest(clean_store, embedder, [str(_write_jsonl(tmp_path / "corpus.jsonl", CORPUS))])
    assert report.ok
    return clean_store


def test_import_resolves_gold_documents_and_splits_stably(probe_kb, tmp_path):
    from eval.probes.sets import import_probes, load_probes, split_for

    path = _write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)
    first = import_probes(probe_kb, path, probe_set="tiny")
    assert first == {"probe_set": "tiny", "added": 5, "updated": 0, "unresolved_gold": 1, "total": 5}
    again = import_probes(probe_kb, path, probe_set="tiny")
    assert again["added"] == 0 and again["updated"] == 5  # re-import upserts, never duplicates
    probes = load_probes(probe_kb, probe_set="tiny")
    assert sorted(p.question for p in probes) == sorted(q["question"] for q in QUESTIONS[:3])
    assert all(p.split == split_for("tiny", ext) for p, ext in zip(probes, ["q1", "q2", "q3"]))
    shares = [split_for("s", str(i)) for i in range(2000)]
    assert 0.25 < shares.count("heldout") / len(shares) < 0.35


def test_import_rejects_a_broken_file_with_its_line(probe_kb, tmp_path):
    from eval.probes.sets import ProbeImportError, import_probes

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "ok?"}\n{not json\n', encoding="utf-8")
    with pytest.raises(ProbeImportError, match=r"bad.jsonl:2"):
        import_probes(probe_kb, bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ProbeImportError, match="no questions"):
        import_probes(probe_kb, empty)


def test_probe_scores_follow_the_knowledge_base(probe_kb, embedder, tmp_path):
    import sqlalchemy as sa

    from eval.probes.retrieval import score_probes
    from eval.probes.sets import import_probes, load_probes

    import_probes(probe_kb, _write_jsonl(tmp_path / "questions.jsonl", QUESTIONS), probe_set="tiny")
    probes = load_probes(probe_kb, probe_set="tiny")
    per_probe, summary = score_probes(probe_kb, embedder, probes)
    assert summary["probes"] == 3 and summary["recall@1"] == 1.0 and summary["mrr@10"] == 1.0
    # Break the owl chunk's text and vectors: its probe must now miss at rank 1.
    with probe_kb.session() as s:
        s.execute(sa.text("UPDATE chunks c SET search_text = 'lorem ipsum', "
                          "tsv = to_tsvector('simple', 'lorem ipsum'), embedding = tea.embedding, "
                          "sentence_embeddings = tea.sentence_embeddings FROM (SELECT c2.embedding, "
                          "c2.sentence_embeddings FROM chunks c2 JOIN documents d ON d.id = c2.document_id "
                          "WHERE d.source_id = 'p-tea') tea "
                          "WHERE c.document_id = (SELECT id FROM documents WHERE source_id = 'p-owl')"))
    _, broken = score_probes(probe_kb, embedder, probes)
    assert broken["recall@1"] < 1.0
