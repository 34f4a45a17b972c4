"""The sample knowledge base `make chat` loads: Kaizen's own README.md and docs/ through `kaizen ingest --sample`,
and the question set about them (eval/bench/docs-questions.jsonl)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from cli.main import main
from store.ingest import ingest
from tests.support.common import REPO

QUESTIONS = REPO / "eval" / "bench" / "docs-questions.jsonl"
SAMPLE = ["README.md", "docs"]  # what the Makefile's `chat` target passes


@pytest.fixture
def kaizen(clean_store, embedder, monkeypatch, capsys):
    """`kaizen ARGS...` in this process, on the test store and embedder; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr("cli.store_commands.open_store", lambda: clean_store)
    monkeypatch.setattr("cli.store_commands.embedder", lambda settings=None: embedder)

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _ingest_json(kaizen, *args: str) -> dict:
    code, out, err = kaizen("ingest", "--sample", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _documents(store) -> dict[str, tuple[str | None, str]]:
    with store.session() as s:
        rows = s.execute(sa.text("SELECT source_uri, source_id, status FROM documents")).all()
    return {uri: (source_id, status) for uri, source_id, status in rows}


def _checkout(root: Path, pages: dict[str, str]) -> Path:
    for name, text in pages.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


PAGES = {"README.md": "# Front\n\nThe front page of a small project.",
         "docs/a.md": "# Owls\n\nOwls hunt at night.", "docs/b.md": "# Bats\n\nBats hunt insects at dusk."}


def test_sample_is_named_inside_the_checkout_and_kept_whole(kaizen, clean_store, tmp_path, monkeypatch):
    clone = _checkout(tmp_path / "clone", PAGES)
    monkeypatch.chdir(clone)
    assert _ingest_json(kaizen, *SAMPLE)["added"] == 3
    assert _documents(clean_store) == {"kaizen://sample/README.md": ("README.md", "active"),
                                       "kaizen://sample/docs/a.md": ("docs/a.md", "active"),
                                       "kaizen://sample/docs/b.md": ("docs/b.md", "active")}
    # another clone of the same pages refreshes the same documents instead of adding copies
    other = _checkout(tmp_path / "other-clone", PAGES)
    monkeypatch.chdir(other)
    report = _ingest_json(kaizen, *SAMPLE)
    assert (report["added"], report["updated"], report["unchanged"]) == (0, 0, 3)
    # a page gone from the sample leaves it; a /bad correction does not count as a document of one's own
    with clean_store.session() as s:
        s.execute(sa.text("INSERT INTO documents (source_uri, source_path, title, content_hash, body) VALUES "
                          "('kaizen://feedback/1', 'kaizen://feedback/1', 'User correction', 'x', 'Bats sleep.')"))
    (other / "docs" / "b.md").unlink()
    report = _ingest_json(kaizen, *SAMPLE)
    assert (report["unchanged"], report["missing"]) == (2, 1)
    documents = _documents(clean_store)
    assert documents["kaizen://sample/docs/b.md"][1] == "missing"
    assert documents["kaizen://feedback/1"][1] == "active"


def test_sample_leaves_a_knowledge_base_with_own_documents_alone(kaizen, clean_store, tmp_path, monkeypatch):
    clone = _checkout(tmp_path / "clone", PAGES)
    monkeypatch.chdir(clone)
    assert _ingest_json(kaizen, *SAMPLE)["added"] == 3
    # the person's own folder: a plain ingest of it does not touch the sample documents
    notes = _checkout(tmp_path / "notes", {"moths.md": "# Moths\n\nMoths fly towards light."})
    code, _, err = kaizen("ingest", str(notes))
    assert code == 0, err
    before = _documents(clean_store)
    assert [status for _, status in before.values()] == ["active"] * 4
    (clone / "docs" / "a.md").write_text("# Owls\n\nOwls hunt at night and sleep by day.", encoding="utf-8")
    code, out, err = kaizen("ingest", "--sample", *SAMPLE)
    assert code == 0 and out == ""
    assert err.strip() == ("the knowledge base holds 1 document of your own, so the sample (README.md docs) was "
                           "left out")
    assert _documents(clean_store) == before
    assert json.loads(kaizen("ingest", "--sample", *SAMPLE, "--json")[1]) == {"sample": "skipped",
                                                                              "own_documents": 1}


def test_sample_replaces_the_older_sample_pages(kaizen, clean_store, embedder, tmp_path, monkeypatch):
    # the pages `make chat` loaded before (store/sample_kb) are the older sample, not the person's documents
    old = _checkout(tmp_path / "old-clone", {"store/sample_kb/what-is-kaizen.md": "# Kaizen\n\nIt fuses with RRF."})
    assert ingest(clean_store, embedder, [str(old / "store" / "sample_kb")]).added == 1
    monkeypatch.chdir(_checkout(tmp_path / "clone", PAGES))
    report = _ingest_json(kaizen, *SAMPLE)
    assert (report["added"], report["missing"]) == (3, 1)
    old_uri = (old / "store" / "sample_kb" / "what-is-kaizen.md").as_uri()
    assert _documents(clean_store)[old_uri][1] == "missing"


def test_sample_paths_must_be_inside_the_current_directory(kaizen, tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    code, _, err = kaizen("ingest", "--sample", str(tmp_path))
    assert code == 2 and "outside" in err


@pytest.mark.slow
def test_kaizen_docs_as_the_sample_and_the_questions_about_them(kaizen, clean_store, embedder, tmp_path,
                                                                monkeypatch):
    """The real docs: loaded into an empty store, incremental, and every answerable question's gold document among
    the documents of the top five chunks hybrid search returns (what the agent reads; no LLM)."""
    from store.search import search

    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / "README.md", clone / "README.md")
    shutil.copytree(REPO / "docs", clone / "docs")
    monkeypatch.chdir(clone)
    first = _ingest_json(kaizen, *SAMPLE)
    pages = 1 + len(list((REPO / "docs").glob("*.md")))
    assert (first["added"], first["failed"]) == (pages, 0)
    again = _ingest_json(kaizen, *SAMPLE)
    assert (again["added"], again["updated"], again["unchanged"], again["missing"]) == (0, 0, pages, 0)
    page = clone / "docs" / "development.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nOne more line.\n", encoding="utf-8")
    changed = _ingest_json(kaizen, *SAMPLE)
    assert (changed["added"], changed["updated"], changed["unchanged"]) == (0, 1, pages - 1)

    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    answerable = [q for q in questions if q["answerable"]]
    assert len(questions) >= 12 and len(answerable) >= 8 and len({q["id"] for q in questions}) == len(questions)
    assert all(q["reference"] and q["gold_passage_ids"] for q in answerable)
    documents = {source_id for source_id, status in _documents(clean_store).values() if status == "active"}
    assert {g for q in questions for g in q["gold_passage_ids"]} <= documents
    missed = []
    for q in answerable:
        with clean_store.session() as s:
            hits = search(s, embedder, q["question"], k=5, mode="hybrid", settings=clean_store.settings)
        found = [h.source_id for h in hits]
        if not set(found) & set(q["gold_passage_ids"]):
            missed.append(f"{q['id']} {q['question']!r}: {found}")
    assert not missed, "gold document not in the top five chunks:\n" + "\n".join(missed)
