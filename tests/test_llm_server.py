"""The model behind a server (KAIZEN_LLM_URL): llama-cpp-python's own OpenAI-compatible server on 127.0.0.1 with the
installed GGUF models, against the same model loaded in this process. A stand-in server (an httpx transport)
plays only the servers that lack a feature or refuse, which the real one cannot be made to be."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import sqlalchemy as sa

from tests.support.agent import build_kb, clean_agent_tables
from tests.support.model_server import ModelServer
from tests.support.serve import free_port

pytestmark = pytest.mark.slow

MASCOT = "What is the name of Kaizen's mascot?"
YES_NO = [{"role": "system", "content": "Reply with yes or no."},
          {"role": "user", "content": "Context: The Kestrel Point lighthouse is 31 metres tall.\n\n"
                                      "Does the context say how tall the lighthouse is?"}]


def server_settings(url: str, **kwargs):
    from agent.llm import LLMSettings

    return LLMSettings(model_path=None, threads=2, ctx=4096, max_tokens=128, url=url, **kwargs)


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    from agent.model_files import chat_model_path

    server = ModelServer(chat_model_path("smollm2"), tmp_path_factory.mktemp("small-server") / "server.log")
    yield server.wait_ready()
    server.stop()


@pytest.fixture(scope="module")
def remote(small_server):
    from agent.llm_server import ServerLLM

    return ServerLLM(server_settings(small_server.url))


@pytest.fixture(scope="module")
def local():
    from agent.llm import LLMSettings, get_llm
    from agent.settings import AgentSettings

    return get_llm(LLMSettings.from_settings(AgentSettings(chat_model="smollm2")))


def test_on_start_it_finds_what_the_server_supports(remote):
    from agent.model_files import chat_model_path

    features = remote.features
    assert features.logprobs and features.json_format == "json_object"  # llama-cpp-python's form of the schema
    assert features.tokenizer is not None and features.tokenizer[0] == "/extras/tokenize"
    assert remote.name == chat_model_path("smollm2").name  # so the per-model defaults apply as in-process
    # llama-cpp-python's server does not say its context window: that alone is reported missing
    assert len(remote.features.missing) == 1 and "context window" in remote.features.missing[0], remote.features
    assert "\n" not in remote.notice and remote.url in remote.notice


def test_tokens_are_counted_and_cut_as_the_in_process_model_does(remote, local):
    text = "Kaizen answers questions from its own knowledge base. 日本語の文も同じように数えます。"
    assert remote.count_tokens(text) == local.count_tokens(text) > 10
    cut = remote.truncate(text, 6)
    assert text.startswith(cut) and 0 < local.count_tokens(cut) <= 6
    assert remote.truncate(text, 1000) == text


def test_p_yes_over_the_server_is_the_in_process_reading(remote, local):
    over_http, in_process = remote.yes_probability(YES_NO), local.yes_probability(YES_NO)
    assert over_http.ok and in_process.ok, (over_http, in_process)
    assert abs(over_http.p_yes - in_process.p_yes) < 0.05, (over_http.p_yes, in_process.p_yes)
    assert over_http.usage.prompt_tokens > 20 and over_http.usage.kind == "yes_no"


def test_json_replies_are_constrained_by_the_server_and_validated(remote):
    from agent import prompts

    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["blue", "green"]}},
              "required": ["colour"]}
    result = remote.json_chat([{"role": "user", "content": "What colour is the sky? Reply in JSON."}], schema,
                              validate=lambda v: v["colour"], max_tokens=24, kind="probe")
    assert result.ok and result.value in ("blue", "green"), result
    assert result.usage.prompt_tokens > 0 and remote.calls[-1] is result.usage
    wrong = remote.json_chat(YES_NO, prompts.YES_NO_SCHEMA, validate=lambda v: int(v), max_tokens=8)
    assert not wrong.ok and wrong.error.startswith("unexpected JSON")  # recorded, not raised


def test_a_reply_streams_and_a_cancelled_one_stops_the_server(remote):
    cancel = threading.Event()
    pieces = []
    stream = remote.stream_chat([{"role": "user", "content": "Count from one to two hundred in words."}],
                                max_tokens=400, cancel=cancel)
    for piece in stream:
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    assert len(pieces) == 3 and stream.usage.stopped and stream.usage.finish_reason == "stopped"
    assert stream.text == "".join(pieces)
    text, usage = remote.chat([{"role": "user", "content": "Say hello."}], max_tokens=8)  # the server goes on
    assert text and usage.completion_tokens > 0 and usage.ttft_ms is not None


def test_a_server_that_is_not_there_is_one_line_naming_the_setting():
    from agent.graph import Agent
    from agent.llm_server import ServerError
    from agent.settings import AgentSettings

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerError) as caught:
        Agent(settings=AgentSettings(llm_url=url))
    message = str(caught.value)
    assert message.startswith(f"KAIZEN_LLM_URL={url}: no model server answers there") and "\n" not in message


# -- a server that lacks features, or refuses ----------------------------------------------------------------------
def bare_server(answer: str, *, status: int = 200, seen: list | None = None) -> httpx.Client:
    """An OpenAI-compatible server with nothing but /v1/models and /v1/chat/completions: no tokenizer, no
    logprobs, response_format refused; a streamed reply is `answer` as server-sent events, any other "yes"."""

    def handle(request: httpx.Request) -> httpx.Response:
        if status != 200:
            return httpx.Response(status, json={"error": {"message": "invalid api key"}})
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "bare-model"}]})
        if request.url.path != "/v1/chat/completions":
            return httpx.Response(404, json={"detail": "Not Found"})
        body = json.loads(request.content)
        if seen is not None:
            seen.append(body)
        if "response_format" in body:
            return httpx.Response(400, json={"error": {"message": "response_format is not supported"}})
        if not body.get("stream"):  # the yes/no grades and checks
            return httpx.Response(200, json={"choices": [{"message": {"content": '"yes"'}, "finish_reason": "stop"}],
                                             "usage": {"prompt_tokens": 40, "completion_tokens": 2}})
        events = [{"choices": [{"delta": {"content": word + " "}, "finish_reason": None}]} for word in answer.split()]
        events.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})

    return httpx.Client(base_url="http://bare.test", transport=httpx.MockTransport(handle))


def test_what_a_server_lacks_is_reported_and_worked_around(caplog):
    from agent.llm_server import ServerLLM

    seen: list = []
    with caplog.at_level("WARNING", logger="agent.llm_server"):
        llm = ServerLLM(server_settings("http://bare.test"), http=bare_server("Hello there [1].", seen=seen))
    assert llm.features.json_format is None and not llm.features.logprobs and llm.features.tokenizer is None
    assert [r.getMessage() for r in caplog.records] == [llm.notice]
    for what in ("tokenizer", "JSON-schema", "logprobs", "context window"):
        assert what in llm.notice, llm.notice
    assert not llm.has_logprobs and llm.yes_probability(YES_NO).error == "the model server gives no logprobs"
    assert llm.count_tokens("four words in here") == 5  # estimated from characters
    seen.clear()
    reply = llm.json_chat(YES_NO, {"type": "string", "enum": ["yes", "no"]}, validate=lambda v: v == "yes")
    assert reply.ok and reply.value is True and "response_format" not in seen[-1]  # validated, not constrained
    stream = llm.stream_chat([{"role": "user", "content": "Hi"}]).run()
    assert stream.text.strip() == "Hello there [1]." and stream.usage.completion_tokens == 3
    assert seen[-1]["cache_prompt"] is True and seen[-1]["model"] == "bare-model"


def test_a_refused_key_says_which_setting_to_set():
    from agent.llm_server import ServerError, ServerLLM

    with pytest.raises(ServerError, match="refused the key .* set KAIZEN_LLM_API_KEY"):
        ServerLLM(server_settings("http://bare.test"), http=bare_server("", status=401))


def test_the_grade_reads_a_constrained_reply_where_the_server_has_no_logprobs(store, embedder, tmp_path):
    """The graph on a server without logprobs: the context grade falls back to the yes/no reply and says why."""
    from agent.graph import Agent
    from agent.llm_server import ServerLLM
    from agent.settings import AgentSettings

    build_kb(store, embedder, tmp_path / "kb")
    llm = ServerLLM(server_settings("http://bare.test"), http=bare_server("Kaizen's mascot is Miso [1]."))
    agent = Agent(store, llm=llm, embedder=embedder, settings=AgentSettings(grade_min_yes=0.5), persist=False)
    try:
        result = agent.ask(MASCOT)
    finally:
        agent.close()
    grade = next(g for g in result.grades if g["grader"] == "llm_context_grade")
    assert grade["detail"]["reading"] == "reply" and "no logprobs" in grade["detail"]["threshold_source"]
    assert grade["verdict"] == "answers" and "Miso" in result.answer and result.citations
    clean_agent_tables(store)


# -- the whole graph through the default model's server ---------------------------------------------------------
def test_the_default_model_answers_through_its_server_with_citations(store, embedder, tmp_path):
    from agent.graph import Agent
    from agent.model_files import DEFAULT_MODEL, chat_model_path
    from agent.settings import AgentSettings

    build_kb(store, embedder, tmp_path / "kb")
    model = chat_model_path(DEFAULT_MODEL)
    server = ModelServer(model, tmp_path / "server.log").wait_ready(timeout=300)
    try:
        agent = Agent(store, embedder=embedder, settings=AgentSettings(llm_url=server.url + "/v1"))
        try:
            result = agent.ask(MASCOT)
        finally:
            agent.close()
    finally:
        server.stop()
    assert not result.abstained and "Miso" in result.answer, result.answer
    assert result.citations and any("mascot.md" in c["source_uri"] for c in result.citations)
    grade = next(g for g in result.grades if g["grader"] == "llm_context_grade")
    assert grade["detail"]["reading"] == "probability" and grade["score"] > grade["detail"]["threshold"]
    with store.session() as s:
        row = s.execute(sa.text("SELECT model, llm_calls, prompt_tokens, completion_tokens FROM interactions "
                                "WHERE id = :i"), {"i": result.interaction_id}).one()
    assert row.model == model.name and row.llm_calls >= 2 and row.prompt_tokens > 100 and row.completion_tokens > 3
    clean_agent_tables(store)


def test_kaizen_serve_over_a_model_server_answers_several_questions_at_once(store, embedder, small_server,
                                                                            tmp_path):
    """`kaizen serve` with KAIZEN_LLM_URL: questions are answered concurrently (the model server schedules the
    model), each recorded once, and the status route says how many run at once."""
    from openai import OpenAI

    from tests.support.serve import ServeProcess
    from tests.support.worker import reset_queue

    build_kb(store, embedder, tmp_path / "kb")
    reset_queue(store)
    process = ServeProcess(tmp_path / "serve.log", KAIZEN_LLM_URL=small_server.url, KAIZEN_SERVE_CONCURRENCY="3",
                           KAIZEN_SERVE_QUEUE_SIZE="0", KAIZEN_MAX_REGENERATIONS="0", KAIZEN_LLM_MAX_TOKENS="96")
    try:
        process.wait_healthy()
        api = OpenAI(base_url=f"{process.url}/v1", api_key="unused", max_retries=0, timeout=300)
        questions = [MASCOT, "How tall is the Kestrel Point lighthouse?",
                     "When does the Maple Street community garden open?"]
        answers: dict[str, object] = {}
        busiest = {"answering": 0}
        done = threading.Event()

        def ask(question: str) -> None:
            try:
                answers[question] = api.chat.completions.create(
                    model="kaizen", messages=[{"role": "user", "content": question}])
            except Exception as exc:  # reported below
                answers[question] = exc

        def watch() -> None:
            while not done.is_set():
                serve = httpx.get(f"{process.url}/v1/kaizen/status", timeout=30).json()["serve"]
                busiest["answering"] = max(busiest["answering"], serve["answering"])
                busiest["concurrency"] = serve["concurrency"]
                done.wait(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        done.set()
        watcher.join(60)
    finally:
        code = process.stop()
    output = process.output()
    assert code in (0, 143) and "Traceback" not in output, output
    assert all(not isinstance(a, Exception) for a in answers.values()), answers
    ids = {answers[q].model_extra["kaizen"]["interaction_id"] for q in questions}
    assert len(ids) == 3 and busiest["concurrency"] == 3
    assert busiest["answering"] >= 2, busiest  # not one after another
    with store.session() as s:
        models = s.execute(sa.text("SELECT DISTINCT model FROM interactions WHERE id = ANY(:ids)"),
                           {"ids": list(ids)}).scalars().all()
    from agent.model_files import chat_model_path

    assert models == [chat_model_path("smollm2").name]
    clean_agent_tables(store)


def test_bench_serve_in_reduced_form_answers_and_grades_everything_once(kaizen_env, tmp_path, monkeypatch):
    """`kaizen bench serve` on a few documents and the small model: both backends answer every request, each
    answer is graded once, no job is lost, and the figures are there."""
    from eval.bench.serve import run
    from tests.support.worker import CORPUS, QUESTIONS, write_jsonl

    for name, value in {"KAIZEN_CHAT_MODEL": "smollm2", "KAIZEN_LLM_MAX_TOKENS": "64",
                        "KAIZEN_MAX_REGENERATIONS": "0"}.items():
        monkeypatch.setenv(name, value)
    result = run(str(write_jsonl(tmp_path / "corpus.jsonl", CORPUS)),
                 str(write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)), requests=3, clients=2, workers=1,
                 home=str(tmp_path / "home"), drain_seconds=300, compare_ask=1)
    assert result["ok"], result
    for name in ("server", "in-process"):
        backend = result["backends"][name]
        assert backend["answered"] == 3 and backend["errors"] == 0, backend
        assert backend["requests_per_minute"] > 0 and backend["latency_ms"]["p50"] > 0
        assert backend["ttft_ms"]["p50"] is not None and backend["queue_drained"]
        against = backend["serve_against_ask"]  # one question through kaizen serve, then through kaizen ask
        assert against["compared"] == 1 and against["serve_to_ask"] > 0, against
        assert against["rows"][0]["ask_command_ms"] > against["rows"][0]["ask_ms"] > 0
    assert result["server_vs_in_process"] > 0
    answers = result["interactions"]
    # 3 + 3, a warm-up per backend, and per backend the compared question twice (serve, ask)
    assert answers["recorded"] == 12 and answers["graded"] == 12
    assert answers["duplicate_grades"] == 0 and result["jobs"]["lost"] == 0 and result["jobs"]["run_twice"] == 0
