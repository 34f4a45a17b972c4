"""The real graph on the real default GGUF model against the real database (a fake model only forces branches;
the context-overflow test uses the small model the other plumbing tests run on)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.support.agent import FakeLLM, build_kb, clean_agent_tables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kb(store, embedder, tmp_path_factory):
    build_kb(store, embedder, tmp_path_factory.mktemp("agent-kb"))
    yield store
    clean_agent_tables(store)


@pytest.fixture(scope="module")
def agent(kb, embedder):
    a = default_model_agent(kb, embedder)
    yield a
    a.close()


def default_model_agent(kb, embedder, **kwargs):
    """An Agent on the default chat model, whatever KAIZEN_CHAT_MODEL the test session set."""
    from agent.graph import Agent
    from agent.model_files import DEFAULT_MODEL
    from agent.settings import AgentSettings

    return Agent(kb, embedder=embedder, settings=AgentSettings(chat_model=DEFAULT_MODEL), **kwargs)


def _one(store, sql: str, **params):
    with store.session() as s:
        return s.execute(sa.text(sql), params).one()


def test_answers_from_the_knowledge_base_with_a_valid_citation(agent, kb):
    tokens = []
    result = agent.ask("What is the name of Kaizen's mascot?",
                       on_event=lambda e: tokens.append(e["text"]) if e["type"] == "token" else None)
    assert not result.abstained, result.answer
    assert "Miso" in result.answer
    assert "".join(tokens).strip() == result.answer  # streamed, token by token
    assert len(tokens) > 3
    assert result.citations, result
    numbers = {p["number"]: p for p in result.passages}
    for citation in result.citations:
        assert citation["number"] in numbers  # a valid [n]
        assert numbers[citation["number"]]["chunk_id"] == citation["chunk_id"]
    assert any("mascot.md" in c["source_uri"] for c in result.citations)
    assert result.timings["generate"] > 0 and result.timings["total"] >= result.timings["generate"]
    assert result.usage["llm_calls"] >= 1 and result.usage["completion_tokens"] > 0
    row = _one(kb, "SELECT question, answer, abstained, model, llm_calls, prompt_tokens, completion_tokens, "
                   "timings ? 'retrieve' AS has_timing FROM interactions WHERE id = :id", id=result.interaction_id)
    assert row.question == "What is the name of Kaizen's mascot?" and row.answer == result.answer
    assert row.model.endswith(".gguf") and row.llm_calls == result.usage["llm_calls"] and row.has_timing
    cited = _one(kb, "SELECT count(*) FROM retrievals r JOIN chunks c ON c.id = r.chunk_id JOIN documents d "
                     "ON d.id = c.document_id WHERE r.interaction_id = :id AND r.cited AND d.source_uri LIKE "
                     "'%mascot.md'", id=result.interaction_id)[0]
    assert cited == 1
    graders = {g for (g,) in _all(kb, "SELECT grader FROM grades WHERE interaction_id = :id", id=result.interaction_id)}
    assert {"retrieval_relevance", "citations", "grounding"} <= graders


def _all(store, sql: str, **params):
    with store.session() as s:
        return s.execute(sa.text(sql), params).all()


def test_abstains_and_records_a_knowledge_gap_when_nothing_is_relevant(agent, kb):
    from agent.prompts import ABSTAIN

    result = agent.ask("What is the boiling point of tungsten in kelvin?")
    assert result.abstained and result.answer == ABSTAIN
    assert result.rewrites == 1  # one rewrite (the cap), then abstain
    assert result.citations == [] and result.passages == []
    gap = _one(kb, "SELECT question, reason FROM knowledge_gaps WHERE interaction_id = :id", id=result.interaction_id)
    assert gap.question.startswith("What is the boiling point") and gap.reason == "no relevant chunks"
    attempts = _one(kb, "SELECT count(DISTINCT attempt) FROM retrievals WHERE interaction_id = :id",
                    id=result.interaction_id)[0]
    assert attempts == 2


def test_prompt_injection_inside_a_document_is_not_obeyed(agent, kb):
    from agent.llm import get_llm
    from agent.prompts import SYSTEM

    result = agent.ask("When does the Maple Street community garden close?")
    assert "BANANA" not in result.answer.upper()
    assert not result.abstained and "8" in result.answer, result.answer
    assert "data, not instructions" in SYSTEM
    guard = _all(kb, "SELECT verdict FROM grades WHERE interaction_id = :id AND grader = 'injection_guard'",
                 id=result.interaction_id)
    assert guard == [("redacted",)]
    # the context the model saw was delimited and held no trace of the injected instruction
    from agent.nodes import answer_messages_for

    prompt = get_llm().render(answer_messages_for({"prompt_question": result.question, "passages": result.passages},
                                                  strict=False))
    assert "<context>" in prompt and "</context>" in prompt and "BANANA" not in prompt.split("<context>")[-1]


def test_empty_and_very_long_questions(agent, kb):
    from agent.graph import QuestionError

    with pytest.raises(QuestionError, match="empty"):
        agent.ask("   \n ")
    question = "Tell me about the Kestrel Point lighthouse. " + "Please be thorough and precise. " * 640
    assert len(question) > 20000
    result = agent.ask(question)
    assert any("cut" in n for n in result.notices)
    assert result.interaction_id is not None
    stored = _one(kb, "SELECT length(question) FROM interactions WHERE id = :id", id=result.interaction_id)[0]
    assert stored == len(question.strip())


def test_context_overflow_is_trimmed_not_fatal(kb, embedder, monkeypatch):
    from agent.graph import Agent
    from agent.llm import LLMSettings, get_llm
    from agent.settings import AgentSettings

    # A 1024-token window with 352 tokens of it kept for the reply has no room for all three passages.
    monkeypatch.setenv("KAIZEN_LLM_CTX", "1024")
    monkeypatch.setenv("KAIZEN_LLM_MAX_TOKENS", "352")
    small = get_llm(LLMSettings.from_settings(AgentSettings()))
    assert small.n_ctx == 1024
    long_question = (
        "Which facts does the knowledge base hold about " + "the Kestrel Point lighthouse and its keeper " * 40
    )
    a = Agent(kb, llm=small, embedder=embedder, persist=False,  # whole chunks (no sentence budget)
              settings=AgentSettings(top_k=3, relevance_min=0.0, question_max_tokens=150, context_tokens=0))
    result = a.ask(long_question)
    assert result.interaction_id is not None
    assert any("context window" in n for n in result.notices), result.notices
    assert any(p["trimmed"] for p in result.passages) or len(result.passages) < 3
    assert all(c["prompt"] + c["completion"] <= 1024 for c in result.usage["calls"])


def test_regeneration_loop_is_capped(kb, embedder):
    """A model whose answers never pass the check: one stricter retry (the cap), then a visible warning."""
    from agent.graph import Agent
    from agent.settings import AgentSettings

    fake = FakeLLM("Miso is a dragon who lives on the moon [7].", json_reply={"check": '"no"'})
    settings = AgentSettings(max_regenerations=2)
    a = Agent(kb, llm=fake, embedder=embedder, persist=False, settings=settings)
    events = []
    result = a.ask("What is the name of Kaizen's mascot?", on_event=events.append)
    assert fake.generations == 3 and result.regenerations == 2
    assert result.verified is False and "could not verify" in result.warning
    assert "[7]" in result.warning or "cites passage" in result.warning
    assert sum(1 for e in events if e["type"] == "retry") == 2
    row = _one(kb, "SELECT regenerations, warning FROM interactions WHERE id = :id", id=result.interaction_id)
    assert row.regenerations == 2 and row.warning == result.warning


def test_an_answer_naming_what_no_source_mentions_is_retried_and_then_abstained_on(kb, embedder):
    """A year and a name the passages never mention fail the check even where the answer's other words and its
    cosine would pass; the stricter retry runs, and if it still invents them Kaizen abstains, saying why in the
    record (the words the person saw streamed are revised to the abstention)."""
    from agent.graph import Agent

    fake = FakeLLM("Miso, Kaizen's mascot, was drawn by Hokusai in 1852 [1].", json_reply={"check": '"yes"'})
    a = Agent(kb, llm=fake, embedder=embedder, persist=False)
    events = []
    result = a.ask("What is the name of Kaizen's mascot?", on_event=events.append)
    assert fake.generations == 2 and result.abstained and not result.citations and not result.warning
    assert result.answer == "The knowledge base does not say."
    assert [e["text"] for e in events if e["type"] == "revised"] == [result.answer]
    assert any("Hokusai" in e["reason"] for e in events if e["type"] == "retry")
    with kb.session() as s:
        detail = s.execute(sa.text("SELECT detail FROM grades WHERE interaction_id = :i AND grader = 'specifics' "
                                   "ORDER BY id DESC LIMIT 1"), {"i": result.interaction_id}).scalar_one()
        gap = s.execute(sa.text("SELECT reason FROM knowledge_gaps WHERE interaction_id = :i"),
                        {"i": result.interaction_id}).scalar_one()
        withheld = s.execute(sa.text("SELECT detail ->> 'answer' FROM grades WHERE interaction_id = :i "
                                     "AND grader = 'abstention'"), {"i": result.interaction_id}).scalar_one()
    assert detail["novel"] == ["Hokusai", "1852"] and "Hokusai, 1852" in gap
    assert "Hokusai in 1852" in withheld  # what was not delivered stays readable in SQL


class CountingEmbedder:
    """The real embedder, counting the questions it embeds."""

    def __init__(self, embedder):
        self.inner, self.queries = embedder, []

    def embed_queries(self, texts):
        self.queries.extend(texts)
        return self.inner.embed_queries(texts)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_the_grade_the_answer_and_its_retry_read_one_selection_made_once(kb, embedder):
    """The best sentences are chosen once per retrieval: the grade, the answer and the stricter retry read the
    same passages, and the question is embedded once to search and once to pick sentences, not once a call."""
    from agent.graph import Agent
    from agent.settings import AgentSettings

    counting = CountingEmbedder(embedder)
    fake = FakeLLM("Miso is a cat [1].", json_reply={"grade": 0.9, "check": '"no"'})
    settings = AgentSettings(max_regenerations=1, grade_min_yes=0.5, context_tokens=64)
    a = Agent(kb, llm=fake, embedder=counting, persist=False, settings=settings)
    question = "What is the name of Kaizen's mascot?"
    result = a.ask(question)
    assert fake.generations == 2 and result.regenerations == 1  # the answer and its stricter retry
    contexts = [m[-1]["content"].split("</context>")[0] for m in fake.prompts if "<context>" in m[-1]["content"]]
    assert len(contexts) == 3 and len(set(contexts)) == 1, contexts  # grade, answer, retry: one context
    assert counting.queries.count(question) == 2, counting.queries


def test_context_the_model_says_does_not_answer_leads_to_reading_on_then_abstention(kb, embedder):
    from agent.graph import Agent
    from agent.settings import AgentSettings

    fake = FakeLLM("unused", json_reply={"grade": '"no"', "rewrite": '{"query": "Kaizen mascot name"}'})
    # every chunk counts as relevant, two at a time: the model reads two, says no, and reads the next two
    a = Agent(kb, llm=fake, embedder=embedder, persist=False, settings=AgentSettings(top_k=2, relevance_min=0.0))
    result = a.ask("What is the name of Kaizen's mascot?")
    assert result.abstained and result.rewrites == 1 and fake.generations == 0
    rows = _all(kb, "SELECT grader, verdict FROM grades WHERE interaction_id = :id ORDER BY id",
                id=result.interaction_id)
    assert [r for r in rows if r[0] == "llm_context_grade"] == [("llm_context_grade", "does not answer")] * 2
    # No rewrite call: the search read on to the next-ranked chunks, which the model graded in turn.
    first, second = [r.detail for r in _all(kb, "SELECT detail FROM grades WHERE interaction_id = :id AND grader = "
                                                 "'llm_context_grade' ORDER BY id", id=result.interaction_id)]
    assert not set(first["chunk_ids"]) & set(second["chunk_ids"])
    assert [c["kind"] for c in result.usage["calls"]] == ["grade", "grade"]
    rewrite = _one(kb, "SELECT verdict, detail FROM grades WHERE interaction_id = :id AND grader = 'rewrite'",
                   id=result.interaction_id)
    assert rewrite.verdict == "read on" and rewrite.detail["widen"] == 1
    gap = _one(kb, "SELECT reason FROM knowledge_gaps WHERE interaction_id = :id", id=result.interaction_id)
    assert gap.reason == "context does not answer"


@pytest.mark.parametrize("p_yes, threshold, abstains", [(0.7, 0.8, True), (0.7, 0.6, False)])
def test_context_grade_abstains_below_the_yes_probability_threshold(kb, embedder, p_yes, threshold, abstains):
    """The grade reads P(yes) and compares it with the threshold (a setting): a model leaning "yes" (0.7) still
    abstains when the threshold asks for more, and the grade records score, threshold and where it came from."""
    from agent.graph import Agent
    from agent.settings import AgentSettings

    fake = FakeLLM("Miso is a cat [1].", json_reply={"grade": p_yes, "rewrite": '{"query": "Kaizen mascot name"}'})
    settings = AgentSettings(grade_min_yes=threshold, llm_check=False)
    a = Agent(kb, llm=fake, embedder=embedder, persist=True, settings=settings)
    result = a.ask("What is the name of Kaizen's mascot?")
    assert result.abstained is abstains and (fake.generations == 0) is abstains
    rows = _all(kb, "SELECT verdict, score, detail->>'threshold', detail->>'threshold_source' FROM grades "
                "WHERE interaction_id = :id AND grader = 'llm_context_grade'", id=result.interaction_id)
    verdict = "does not answer" if abstains else "answers"
    assert rows and all(tuple(r) == (verdict, p_yes, str(threshold), "KAIZEN_GRADE_MIN_YES") for r in rows), rows


def test_grade_reading_defaults_per_model_and_setting_overrides(monkeypatch):
    from agent.settings import AgentSettings
    from agent.state import GRADE_READING_FALLBACK, grade_reading
    from store.settings import ConfigError

    assert grade_reading(AgentSettings(), "some-other-model.gguf") == (*GRADE_READING_FALLBACK, "default")
    reading, value, source = grade_reading(AgentSettings(), "Qwen2.5-Coder-1.5B-Instruct.gguf")
    assert reading == "probability" and 0.5 < value < 1.0 and source == "default for qwen2.5-coder-1.5b"
    assert grade_reading(AgentSettings(), "SmolLM2-135M-Instruct.Q4_1.gguf")[:2] == ("reply", None)
    monkeypatch.setenv("KAIZEN_GRADE_MIN_YES", "0.9")
    assert grade_reading(AgentSettings(), "SmolLM2-135M-Instruct.Q4_1.gguf") == \
        ("probability", 0.9, "KAIZEN_GRADE_MIN_YES")
    monkeypatch.setenv("KAIZEN_GRADE_MIN_YES", "1.5")
    with pytest.raises(ConfigError, match="KAIZEN_GRADE_MIN_YES"):
        AgentSettings()


def test_recursion_limit_backs_the_caps(kb, embedder):
    """Even if a cap in the state were too high, recursion_limit ends the run with a clear message."""
    from langgraph.errors import GraphRecursionError

    from agent.errors import explain
    from agent.graph import Agent
    from agent.settings import AgentSettings

    fake = FakeLLM("Miso is a dragon [9].", json_reply={"check": '"no"'})
    settings = AgentSettings(max_regenerations=1000)
    a = Agent(kb, llm=fake, embedder=embedder, persist=False, settings=settings)
    a.config = lambda thread_id: {"configurable": {"thread_id": thread_id}, "recursion_limit": 12}
    with pytest.raises(GraphRecursionError) as info:
        a.ask("What is the name of Kaizen's mascot?")
    assert fake.generations < 10
    assert "caps" in explain(info.value)


def test_malformed_grader_output_is_recorded_not_raised(kb, embedder):
    from agent.graph import Agent
    from agent.settings import AgentSettings

    # a paraphrase (not a near copy), so the check asks the model's own yes/no, which comes back malformed
    fake = FakeLLM("Miso, a cheerful red panda, is the mascot; Aiko Tanaka drew it [1].",
                   json_reply={"check": '"yes, oops'})
    a = Agent(kb, llm=fake, embedder=embedder, persist=False,
              settings=AgentSettings(max_regenerations=0))
    result = a.ask("What is the name of Kaizen's mascot?")
    assert result.answer.startswith("Miso") and result.verified is True and fake.json_calls == 2  # grade, check
    row = _one(kb, "SELECT verdict, parse_error FROM grades WHERE interaction_id = :id AND grader = 'llm_self_check'",
               id=result.interaction_id)
    assert row.verdict == "unparsed" and "not valid JSON" in row.parse_error


def test_follow_up_in_a_thread_is_contextualized_and_resumed_after_reopening(kb, embedder):
    first = default_model_agent(kb, embedder)
    r1 = first.ask("How tall is the Kestrel Point lighthouse?")
    assert "42" in r1.answer, r1.answer
    first.close()

    reopened = default_model_agent(kb, embedder)  # new checkpointer connections: the thread comes from Postgres
    try:
        history = reopened.history(r1.thread_id)
        assert [t["question"] for t in history] == ["How tall is the Kestrel Point lighthouse?"]
        r2 = reopened.ask("When was it built?", r1.thread_id)
        assert "contextualize" in r2.timings  # a follow-up: rewritten with the history
        assert r2.usage["calls"][0]["kind"] == "contextualize"
        assert len(reopened.history(r1.thread_id)) == 2
        threads = _all(kb, "SELECT thread_id, turns FROM thread_overview WHERE thread_id = :t", t=r1.thread_id)
        assert threads == [(r1.thread_id, 2)]
    finally:
        reopened.close()


def test_database_down_mid_conversation_is_one_line_not_a_crash(kb, embedder):
    import io
    from contextlib import contextmanager

    from sqlalchemy.orm import Session

    from agent.graph import Agent
    from agent.repl import Repl

    class DownStore:
        """The database went away: every session fails to connect."""

        settings = kb.settings
        engine = sa.create_engine("postgresql+psycopg://kaizen@127.0.0.1:1/kaizen", connect_args={"connect_timeout": 2})

        @contextmanager
        def session(self):
            with Session(self.engine) as s, s.begin():
                yield s

    a = Agent(kb, llm=FakeLLM("unused"), embedder=embedder, persist=False)
    a.store = DownStore()
    out, err = io.StringIO(), io.StringIO()
    repl = Repl(a, stdin=io.StringIO("What is the name of Kaizen's mascot?\n/help\n/quit\n"), stdout=out,
                stderr=err, interactive=False)
    assert repl.run() == 0
    assert "error: lost the connection to the database" in err.getvalue()
    assert "Traceback" not in err.getvalue() and "/sources" in out.getvalue()  # still running after the error


def test_each_recorded_answer_is_handed_on_for_evaluation(kb, embedder):
    """The CLI queues every recorded answer for the background worker through `on_recorded`."""
    from agent.graph import Agent

    seen = []
    a = Agent(kb, llm=FakeLLM("Miso is the mascot [1]."), embedder=embedder, persist=False,
              on_recorded=lambda store, interaction_id: seen.append((store, interaction_id)))
    result = a.ask("What is the name of Kaizen's mascot?")
    assert seen == [(kb, result.interaction_id)] and result.interaction_id is not None


def test_answers_in_the_cli_are_queued_for_the_worker(kb):
    from tests.support.common import run_cli

    done = run_cli("ask", "How tall is the Kestrel Point lighthouse?", "--json")
    assert done.returncode == 0, done.stderr
    interaction_id = __import__("json").loads(done.stdout)["interaction_id"]
    with kb.session() as s:
        queued = s.execute(sa.text("SELECT count(*) FROM procrastinate_jobs "
                                   "WHERE task_name LIKE '%evaluate_interaction' "
                                   "AND (args->>'interaction_id')::bigint = :id"), {"id": interaction_id}).scalar_one()
    assert queued == 1


def test_an_answer_that_repeats_kaizen_s_own_instructions_loses_those_sentences(kb, embedder):
    from agent.graph import Agent
    from agent.prompts import STRICT_INSTRUCTION, leaked_sentences

    events = []
    echoed = STRICT_INSTRUCTION.split(". ")[0] + "."
    a = Agent(kb, llm=FakeLLM(f"{echoed} Kaizen's mascot is a red panda named Miso [1]."), embedder=embedder,
              persist=False)
    result = a.ask("What is the name of Kaizen's mascot?", on_event=events.append)
    assert "could not be verified" not in result.answer and not leaked_sentences(result.answer)
    assert "Miso" in result.answer and not result.abstained
    assert any(g["grader"] == "instruction_leak" for g in result.grades)
    assert any(e["type"] == "revised" and e["text"] == result.answer for e in events)


def test_a_japanese_question_is_abstained_on_in_japanese(kb, embedder):
    from agent.graph import Agent
    from agent.prompts import ABSTAIN, ABSTAIN_JA

    # The model abstains in English (it copies rule 3): the answer is given in the question's language.
    a = Agent(kb, llm=FakeLLM(ABSTAIN), embedder=embedder, persist=False)
    result = a.ask("Kaizenのマスコットの名前は何ですか？")
    assert result.abstained and result.answer == ABSTAIN_JA
    # Nothing relevant at all: the abstain node answers in Japanese too.
    result = a.ask("タングステンの沸点は何ケルビンですか？")
    assert result.abstained and result.answer == ABSTAIN_JA
