"""Probe generation: validation of model replies, the real default model on two chunks, and the refresh of probes
when a document changes (a stand-in generator, in addition to the real one)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.support.worker import write_jsonl

PASSAGE = "The Golden Gate Bridge opened in 1937 in San Francisco. It was the longest suspension bridge then."
JA_PASSAGE = "ゴールデン・ゲート・ブリッジは1937年に開通した。サンフランシスコにある吊り橋である。"
DOCS = [
    {"id": "g-bridge", "title": "Golden Gate Bridge", "text": PASSAGE},
    {"id": "g-tea", "title": "Green tea", "text": "Green tea is made from unoxidised leaves of Camellia sinensis. "
     "It is popular in Japan and China."},
]


@pytest.mark.parametrize("reply, reason", [
    ({"question": "", "answer": "1937"}, "empty"),
    ({"question": "When did it open?", "answer": " "}, "empty"),
    ({"question": "Bridge?", "answer": "1937"}, "too short"),
    ({"question": "The Golden Gate Bridge opened in 1937 in San Francisco.", "answer": "1937"}, "copies"),
    ({"question": "It was the longest suspension bridge then", "answer": "yes"}, "copies"),
    ({"question": "When did the Golden Gate Bridge open?", "answer": PASSAGE}, "whole passage"),
    ({"question": "ゴールデン・ゲート・ブリッジはいつ開通しましたか？", "answer": "1937年"}, "script"),
    (["not", "an", "object"], "object"),
])
def test_bad_replies_are_rejected_with_a_reason(reply, reason):
    from eval.probes.generation import ProbeRejected, validate_probe

    with pytest.raises(ProbeRejected, match=reason):
        validate_probe(reply, PASSAGE)


def test_good_replies_pass_in_either_script():
    from eval.probes.generation import validate_probe

    assert validate_probe({"question": " When did the Golden Gate Bridge open? ", "answer": "In 1937"}, PASSAGE) == \
        {"question": "When did the Golden Gate Bridge open?", "answer": "In 1937"}
    assert validate_probe({"question": "ゴールデン・ゲート・ブリッジはいつ開通しましたか？", "answer": "1937年"},
                          JA_PASSAGE)["answer"] == "1937年"


@pytest.fixture
def two_docs(clean_store, embedder, tmp_path):
    from store.ingest import ingest

    assert ingest(clean_store, embedder, [str(write_jsonl(tmp_path / "docs.jsonl", DOCS))]).ok
    return clean_store


def _probes(store, status="active"):
    with store.session() as s:
        return s.execute(sa.text(
            "SELECT p.id, p.question, p.reference, p.gold_chunk_ids, p.gold_document_ids, p.split, p.external_id, "
            "p.origin, p.language, c.text AS chunk_text, p.source_document_id FROM probes p "
            "LEFT JOIN chunks c ON c.id = p.gold_chunk_ids[1] WHERE p.status = :st ORDER BY p.id"),
            {"st": status}).all()


@pytest.mark.slow
def test_the_default_model_writes_validated_probes_from_two_chunks(two_docs):
    from eval.probes.generation import generate_probes, validate_probe
    from eval.probes.sets import split_for

    report = generate_probes(two_docs, per_document=1)
    assert report.added + report.rejected == 2, report
    assert len(report.failures) == report.rejected and all(f["reason"] for f in report.failures)
    probes = _probes(two_docs)
    assert len(probes) == report.added
    for p in probes:
        assert validate_probe({"question": p.question, "answer": p.reference}, p.chunk_text)
        assert p.origin == "generated" and p.language == "latin" and p.gold_document_ids == [p.source_document_id]
        assert p.split == split_for("generated", p.external_id)
    with two_docs.session() as s:
        run = s.execute(sa.text("SELECT status, items, summary FROM eval_runs WHERE kind = 'probe_generation'")).one()
    assert run.status == "done" and run.items == report.added and run.summary["rejected"] == report.rejected


def test_changed_documents_get_their_probes_retired_and_rewritten(two_docs, embedder, tmp_path):
    from eval.probes.generation import generate_probes
    from store.ingest import ingest

    replies = iter([
        ({"question": "When did the Golden Gate Bridge open?", "answer": "1937"}, "{...}", None),
        ({"question": "What is green tea made from?", "answer": "unoxidised leaves"}, "{...}", None),
        ({"question": "When did the bridge close for repairs?", "answer": "in 2030"}, "{...}", None),
    ])
    first = generate_probes(two_docs, per_document=1, ask=lambda passage: next(replies))
    assert (first.added, first.retired, first.skipped) == (2, 0, 0)
    again = generate_probes(two_docs, per_document=1, ask=lambda passage: pytest.fail("nothing changed"))
    assert (again.added, again.skipped) == (0, 2)

    changed = [{**DOCS[0], "text": PASSAGE + " It closed for repairs in 2030."}, DOCS[1]]
    assert ingest(two_docs, embedder, [str(write_jsonl(tmp_path / "docs.jsonl", changed))]).updated == 1
    third = generate_probes(two_docs, per_document=1, ask=lambda passage: next(replies))
    assert (third.added, third.retired, third.skipped) == (1, 1, 1)
    retired, active = _probes(two_docs, "retired"), _probes(two_docs)
    assert [p.question for p in retired] == ["When did the Golden Gate Bridge open?"]
    assert sorted(p.question for p in active) == ["What is green tea made from?",
                                                 "When did the bridge close for repairs?"]


def test_unusable_replies_are_recorded_never_raised(two_docs):
    from eval.probes.generation import generate_probes

    replies = iter([(None, '{"question": "When', "reply cut off at the token limit"),
                    ({"question": "Green tea is made from unoxidised leaves of Camellia sinensis.", "answer": "x"},
                     "{...}", None)])
    report = generate_probes(two_docs, per_document=1, ask=lambda passage: next(replies))
    assert (report.added, report.rejected) == (0, 2)
    assert set(report.rejections) == {"model reply unusable", "question copies the passage"}
    assert report.failures[0]["raw"] == '{"question": "When' and _probes(two_docs) == []
