"""The knowledge-store commands as a person runs them, in a child process against the test database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from tests.support.common import REPO, run_cli


@pytest.mark.slow
def test_status_and_schema(clean_store):
    result = run_cli("status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["database"]["pgvector_version"] and data["active_kb_version"] is None
    assert data["database"]["shared_buffers"].endswith(("kB", "MB", "GB"))
    text = run_cli("status")
    assert f"shared_buffers {data['database']['shared_buffers']})" in text.stdout, text.stdout


@pytest.mark.slow
def test_ingest_search_sql_round_trip(clean_store, tmp_path):
    (tmp_path / "a.md").write_text("# Owls\n\nOwls hunt at night and can rotate their heads 270 degrees.")
    result = run_cli("ingest", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 1
    hits = json.loads(run_cli("search", "how far can an owl turn its head", "-k", "1", "--json").stdout)
    assert hits[0]["title"] == "Owls" and "270" in hits[0]["text"]
    rows = json.loads(run_cli("sql", "SELECT title, status FROM documents", "--json").stdout)
    assert rows == [{"title": "Owls", "status": "active"}]
    assert json.loads(run_cli("status", "--json").stdout)["active_chunks_without_sentence_vectors"] == 0
    # a chunk indexed before sentence vectors is counted, and the plain status names the fix
    assert run_cli("sql", "UPDATE chunks SET sentence_embeddings = NULL", "--write").returncode == 0
    assert json.loads(run_cli("status", "--json").stdout)["active_chunks_without_sentence_vectors"] == 1
    assert "kaizen reindex" in run_cli("status").stdout


@pytest.mark.slow
def test_ingest_reports_failures_with_nonzero_exit(clean_store, tmp_path):
    (tmp_path / "ok.txt").write_text("fine")
    (tmp_path / "empty.txt").write_text("")
    result = run_cli("ingest", str(tmp_path), str(tmp_path / "missing.md"))
    assert result.returncode == 1
    assert "empty.txt: file is empty" in result.stderr and "no such file or directory" in result.stderr
    assert "Traceback" not in result.stderr
    assert "added 1" in result.stdout


@pytest.mark.slow
def test_sql_is_read_only_without_write(clean_store):
    result = run_cli("sql", "DELETE FROM documents")
    assert result.returncode == 2 and "--write" in result.stderr and "Traceback" not in result.stderr
    smuggled = run_cli("sql", "COMMIT; DELETE FROM documents")
    assert smuggled.returncode == 2 and "one statement" in smuggled.stderr
    written = run_cli("sql", "--write", "INSERT INTO ingest_runs (paths) VALUES ('{x}')")
    assert written.returncode == 0, written.stderr
    with clean_store.session() as s:
        assert s.execute(sa.text("SELECT count(*) FROM ingest_runs")).scalar_one() == 1


@pytest.mark.slow
def test_sql_prompt_works_in_a_pipe(clean_store):
    result = run_cli("sql", input="SELECT 40 + 2 AS answer;\n")
    assert result.returncode == 0, result.stderr
    assert "42" in result.stdout


@pytest.mark.slow
def test_unreachable_database_is_one_line(tmp_path):
    result = run_cli("status", env={"KAIZEN_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/kaizen"})
    assert result.returncode == 2
    assert result.stderr.startswith("kaizen: cannot reach the database") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_database_from_a_newer_kaizen_is_a_clear_error(store):
    with store.session() as s:
        head = s.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        s.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    try:
        result = run_cli("status")
    finally:
        with store.session() as s:
            s.execute(sa.text("UPDATE alembic_version SET version_num = :h"), {"h": head})
    assert result.returncode == 2, result.stderr
    assert "schema revision 9999" in result.stderr and "newer Kaizen" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_killed_ingest_leaves_previous_state_intact(clean_store, tmp_path):
    """SIGKILL in the middle of an ingest: every document is either wholly old or wholly new."""
    corpus = tmp_path / "corpus.jsonl"

    def write(version: str) -> None:
        lines = [json.dumps({"id": f"d{i}", "title": f"Doc {i}",
                             "text": f"{version} document {i}. " + " ".join(f"w{i}x{j}" for j in range(300))})
                 for i in range(40)]
        corpus.write_text("\n".join(lines), encoding="utf-8")

    write("old")
    assert run_cli("ingest", str(corpus)).returncode == 0
    with clean_store.session() as s:
        before = s.execute(sa.text("SELECT count(*) FROM active_chunks")).scalar_one()
    write("new")
    child = subprocess.Popen([sys.executable, "-m", "cli.main", "ingest", str(corpus)], cwd=REPO, env=dict(os.environ),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once some, but not all, documents have been replaced
        with clean_store.session() as s:
            replaced = s.execute(sa.text("SELECT count(*) FROM documents WHERE body LIKE 'new%'")).scalar_one()
        if replaced >= 1:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with clean_store.session() as s:
        docs = s.execute(sa.text(
            "SELECT d.body, array_agg(c.text ORDER BY c.ordinal) FROM documents d "
            "JOIN active_chunks c ON c.document_id = d.id GROUP BY d.id, d.body")).all()
        assert len(docs) == 40  # no document lost its chunks
        for body, texts in docs:
            version = body.split()[0]
            assert all(t.startswith(version) or version not in t for t in texts[:1])
            assert texts[0].startswith(version)
    assert replaced < 40, "the ingest finished before it could be killed; make the corpus larger"
    # and the next run completes the job
    assert run_cli("ingest", str(corpus)).returncode == 0
    with clean_store.session() as s:
        assert s.execute(sa.text("SELECT count(*) FROM documents WHERE body LIKE 'new%'")).scalar_one() == 40
        assert s.execute(sa.text("SELECT count(*) FROM active_chunks")).scalar_one() == before
