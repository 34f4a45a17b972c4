"""`kaizen chat` driven through a pipe and `kaizen ask --json`, as a person or a script runs them: child processes
on the real model and the test database."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.support.agent import build_kb, clean_agent_tables
from tests.support.common import run_cli

pytestmark = pytest.mark.slow
# The answering tests run on the default chat model, whatever the session's KAIZEN_CHAT_MODEL.
DEFAULT_MODEL = {"KAIZEN_CHAT_MODEL": "qwen2.5-1.5b"}


@pytest.fixture(scope="module")
def kb(store, embedder, tmp_path_factory):
    build_kb(store, embedder, tmp_path_factory.mktemp("repl-kb"))
    yield store
    clean_agent_tables(store)


def test_chat_in_a_pipe(kb):
    script = "/help\nWhat is the name of Kaizen's mascot?\n/sources\n/good\n/history\n/bad it is Miso the red panda\n" \
             "/threads\n/nonsense\n/quit\n"
    result = run_cli("chat", input=script, env=DEFAULT_MODEL)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "/bad [correction]" in out  # /help
    assert "Miso" in out
    assert "Sources:" in out and "mascot.md" in out
    assert "feedback recorded" in out and "with your correction" in out
    assert "1. you: What is the name of Kaizen's mascot?" in out  # /history
    assert "unknown command /nonsense" in out
    assert "Traceback" not in result.stderr
    with kb.session() as s:
        ratings = s.execute(sa.text("SELECT rating, correction FROM feedback ORDER BY id")).all()
    assert ratings == [(1, None), (-1, "it is Miso the red panda")]


def test_ask_json_and_a_follow_up_resumed_in_a_new_process(kb):
    first = run_cli("ask", "How tall is the Kestrel Point lighthouse?", "--json", env=DEFAULT_MODEL)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert {"answer", "abstained", "citations", "interaction_id", "timings", "thread_id"} <= set(data)
    assert "42" in data["answer"] and data["abstained"] is False
    assert data["citations"] and {"chunk_id", "source_uri", "title"} <= set(data["citations"][0])
    assert data["timings"]["total"] > 0
    follow = run_cli("ask", "When was it built?", "--thread", data["thread_id"], "--json", env=DEFAULT_MODEL)
    assert follow.returncode == 0, follow.stderr
    second = json.loads(follow.stdout)
    assert second["thread_id"] == data["thread_id"] and "contextualize" in second["timings"]
    with kb.session() as s:
        turns = s.execute(sa.text("SELECT turns FROM thread_overview WHERE thread_id = :t"),
                          {"t": data["thread_id"]}).scalar_one()
    assert turns == 2


def test_ask_rejects_an_empty_question():
    result = run_cli("ask", "  ")
    assert result.returncode == 2 and "the question is empty" in result.stderr


def test_graph_prints_mermaid():
    result = run_cli("graph")
    assert result.returncode == 0
    for node in ("contextualize", "retrieve", "grade_documents", "rewrite_query", "abstain", "generate",
                 "check_answer", "record"):
        assert node in result.stdout
    assert result.stdout.lstrip().startswith("---") and "graph TD;" in result.stdout
