"""`kaizen serve`, the OpenAI-compatible HTTP API: real `kaizen serve` processes on the small model and the test
database, driven by the official `openai` client (slow), and the app in this process with stand-in models for the
paths a real model cannot be made to take on demand (a full queue, a client leaving mid-answer)."""

from __future__ import annotations

import json
import threading
import time
import types

import httpx
import pytest
import sqlalchemy as sa

from tests.support.agent import FakeLLM, build_kb
from tests.support.serve import GatedLLM, Proxy, ServeProcess, SlowLLM, serving
from tests.support.worker import reset_queue, wait_for

KEY = "test-key-1234"
AUTH = {"Authorization": f"Bearer {KEY}"}
MASCOT = "What is the name of Kaizen's mascot?"
LIGHTHOUSE = "How tall is the Kestrel Point lighthouse?"
ANSWER = "Kaizen's mascot is a red panda named Miso [1]."


@pytest.fixture(scope="module")
def kb(store, embedder, tmp_path_factory):
    build_kb(store, embedder, tmp_path_factory.mktemp("serve-kb"))
    reset_queue(store)
    yield store


def scalar(store, sql: str, **params):
    with store.session() as s:
        return s.execute(sa.text(sql), params).scalar()


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


# -- the app in this process, with stand-in models --------------------------------------------------------------------
def make_app(embedder, llm, *, store=None, queue_size: int = 4, api_key: str | None = KEY, store_factory=None,
             recorded: list | None = None, **agent_settings):
    from agent.graph import Agent
    from agent.settings import AgentSettings
    from cli.server import create_app
    from cli.settings import ServeSettings

    def agent(s):
        return Agent(s, llm=llm, embedder=embedder, settings=AgentSettings(**agent_settings),
                     on_recorded=(lambda _s, i: recorded.append(i)) if recorded is not None else None)

    return create_app(agent, ServeSettings(api_key=api_key, serve_queue_size=queue_size),
                      store_factory=store_factory or (lambda: store))


def chat(question: str, **extra) -> dict:
    return {"model": "kaizen", "messages": [{"role": "user", "content": question}], **extra}


def test_every_route_but_health_needs_the_key(kb, embedder):
    from fastapi.testclient import TestClient

    with TestClient(make_app(embedder, FakeLLM(ANSWER), store=kb)) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health").json()["database"] == {"reachable": True}
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/v1/kaizen/status"),
                             ("POST", "/v1/kaizen/search"), ("POST", "/v1/kaizen/feedback")):
            missing = client.request(method, path, json={})
            assert "no API key" in assert_openai_error(missing, 401, "invalid_api_key")["message"]
            wrong = client.request(method, path, json={}, headers={"Authorization": "Bearer nope"})
            assert "wrong API key" in assert_openai_error(wrong, 401, "invalid_api_key")["message"]
        models = client.get("/v1/models", headers=AUTH)
        assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["kaizen"]
        assert_openai_error(client.get("/v1/nothing", headers=AUTH), 404, "not_found")
        assert_openai_error(client.get("/v1/models/gpt-4", headers=AUTH), 404, "model_not_found")
    with TestClient(make_app(embedder, FakeLLM(ANSWER), store=kb, api_key=None)) as client:  # no key set: open
        assert client.get("/v1/models").status_code == 200


@pytest.mark.parametrize("body, param, words", [
    (b"{not json", None, "not valid JSON"),
    (b"", None, "empty"),
    (b"[1, 2]", None, "JSON object"),
    (b'{"model": "kaizen"}', "messages", "messages is missing"),
    (b'{"messages": []}', "messages", "non-empty list"),
    (b'{"messages": "hello"}', "messages", "non-empty list"),
    (b'{"messages": ["hello"]}', "messages[0]", "must be an object"),
    (b'{"messages": [{"role": "wizard", "content": "hi"}]}', "messages[0].role", "role must be one of"),
    (b'{"messages": [{"role": "user", "content": 42}]}', "messages[0].content", "must be text"),
    (b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}',
     "messages[0].content[0]", "text parts only"),
    (b'{"messages": [{"role": "system", "content": "be brief"}]}', "messages", "no user message"),
    (b'{"messages": [{"role": "user", "content": "   "}]}', "messages[0].content", "question is empty"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream", "true or false"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 2}', "n", "n must be 1"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "metadata": {"thread_id": "no spaces please"}}',
     "metadata.thread_id", "thread id"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_request_is_one_line_in_openai_s_shape(kb, embedder, body, param, words):
    from fastapi.testclient import TestClient

    llm = FakeLLM(ANSWER)
    with TestClient(make_app(embedder, llm, store=kb)) as client:
        response = client.post("/v1/chat/completions", content=body,
                               headers={**AUTH, "Content-Type": "application/json"})
        error = assert_openai_error(response, 400)
    assert words in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"
    assert llm.generations == 0


def test_a_question_longer_than_the_agent_reads_is_refused(kb, embedder):
    from fastapi.testclient import TestClient

    llm = FakeLLM(ANSWER)  # counts a token per word
    app = make_app(embedder, llm, store=kb, question_max_tokens=40)
    with TestClient(app) as client:
        wait_for(lambda: app.state.backend.ready_agent is not None, 60, "the agent")
        words = client.post("/v1/chat/completions", headers=AUTH, json=chat("why " * 41))
        assert "41 tokens" in assert_openai_error(words, 400, "question_too_long")["message"]
        huge = client.post("/v1/chat/completions", headers=AUTH, json=chat("x" * 200_000))
        error = assert_openai_error(huge, 400, "question_too_long")
        assert "200000 characters" in error["message"] and "KAIZEN_QUESTION_MAX_TOKENS" in error["message"]
        body = client.post("/v1/chat/completions", headers=AUTH, content=b'{"messages": "' + b"x" * (5 << 20) + b'"}')
        assert_openai_error(body, 413, "body_too_large")
    assert llm.generations == 0


def test_an_answer_its_sources_its_thread_and_feedback(kb, embedder):
    from fastapi.testclient import TestClient

    recorded: list[int] = []
    with TestClient(make_app(embedder, FakeLLM(ANSWER), store=kb, recorded=recorded)) as client:
        first = client.post("/v1/chat/completions", headers=AUTH, json=chat(MASCOT))
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["object"] == "chat.completion" and body["model"] == "kaizen"
        content = body["choices"][0]["message"]["content"]
        meta = body["kaizen"]
        assert content.startswith(ANSWER) and "\n\nSources:\n- [1] " in content and "mascot.md" in content
        assert meta["citations"] and meta["citations"][0]["source_uri"].endswith("mascot.md")
        assert meta["abstained"] is False and meta["warning"] is None and meta["answer"] == ANSWER
        assert first.headers["X-Kaizen-Thread"] == meta["thread_id"]
        assert recorded == [meta["interaction_id"]]  # the answer went to on_recorded (the grading queue)
        assert scalar(kb, "SELECT thread_id FROM interactions WHERE id = :i", i=meta["interaction_id"]) == \
            meta["thread_id"]

        # the client sends the whole conversation again: the follow-up continues the thread
        conversation = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": MASCOT},
                        {"role": "assistant", "content": content}, {"role": "user", "content": "Who drew it?"}]
        follow = client.post("/v1/chat/completions", headers=AUTH, json={"messages": conversation}).json()
        assert follow["kaizen"]["thread_id"] == meta["thread_id"]
        assert scalar(kb, "SELECT count(*) FROM interactions WHERE thread_id = :t", t=meta["thread_id"]) == 2
        # another conversation with the same first question is another thread
        other = client.post("/v1/chat/completions", headers=AUTH, json=chat(MASCOT)).json()
        assert other["kaizen"]["thread_id"] != meta["thread_id"]
        # a conversation Kaizen did not answer gets a thread named after it, which its next turn finds again
        foreign = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! Ask me anything."},
                   {"role": "user", "content": MASCOT}]
        named = client.post("/v1/chat/completions", headers=AUTH, json={"messages": foreign}).json()
        again = client.post("/v1/chat/completions", headers=AUTH, json={"messages": foreign}).json()
        assert named["kaizen"]["thread_id"].startswith("c-") and again["kaizen"]["thread_id"] == \
            named["kaizen"]["thread_id"]
        nxt = foreign + [{"role": "assistant", "content": named["choices"][0]["message"]["content"]},
                         {"role": "user", "content": "Who drew it?"}]
        assert client.post("/v1/chat/completions", headers=AUTH, json={"messages": nxt}).json()["kaizen"][
            "thread_id"] == named["kaizen"]["thread_id"]
        # a named thread: the header first, then metadata.thread_id
        mine = client.post("/v1/chat/completions", headers={**AUTH, "X-Kaizen-Thread": "t-mine-1"},
                           json=chat(MASCOT, metadata={"thread_id": "t-other"})).json()
        assert mine["kaizen"]["thread_id"] == "t-mine-1"
        assert client.post("/v1/chat/completions", headers=AUTH, json=chat(MASCOT, metadata={
            "thread_id": "t-other"})).json()["kaizen"]["thread_id"] == "t-other"

        # feedback, recorded as the REPL's /good and /bad are
        good = client.post("/v1/kaizen/feedback", headers=AUTH,
                           json={"interaction_id": meta["interaction_id"], "rating": "good"})
        assert good.status_code == 200 and good.json()["rating"] == "good"
        bad = client.post("/v1/kaizen/feedback", headers=AUTH, json={
            "interaction_id": follow["kaizen"]["interaction_id"], "rating": "bad", "correction": "Aiko Tanaka"})
        assert bad.status_code == 200
        with kb.session() as s:
            rows = s.execute(sa.text("SELECT interaction_id, rating, correction FROM feedback WHERE id IN (:a, :b) "
                                     "ORDER BY id"), {"a": good.json()["id"], "b": bad.json()["id"]}).all()
        assert [tuple(r) for r in rows] == [(meta["interaction_id"], 1, None),
                                            (follow["kaizen"]["interaction_id"], -1, "Aiko Tanaka")]
        assert_openai_error(client.post("/v1/kaizen/feedback", headers=AUTH,
                                        json={"interaction_id": 999999, "rating": "good"}), 404, "not_found")
        assert_openai_error(client.post("/v1/kaizen/feedback", headers=AUTH,
                                        json={"interaction_id": meta["interaction_id"], "rating": "meh"}), 400)
        assert_openai_error(client.post("/v1/kaizen/feedback", headers=AUTH, json={"rating": "good"}), 400)

        # the store's search, and the status
        hits = client.post("/v1/kaizen/search", headers=AUTH, json={"query": "red panda mascot", "k": 2}).json()
        assert len(hits["data"]) == 2 and hits["data"][0]["source_uri"].endswith("mascot.md")
        assert hits["data"][0]["rank"] == 1
        assert_openai_error(client.post("/v1/kaizen/search", headers=AUTH, json={"k": 2}), 400)
        assert_openai_error(client.post("/v1/kaizen/search", headers=AUTH, json={"query": "x", "k": "two"}), 400)
        assert_openai_error(client.post("/v1/kaizen/search", headers=AUTH, json={"query": "x", "mode": "psychic"}),
                            400)
        status = client.get("/v1/kaizen/status", headers=AUTH).json()
        assert status["kb"]["documents"]["active"] == 3 and status["kb"]["active_kb_version"]["id"]
        assert status["serve"] == {"model": "fake-llm", "answering": 0, "waiting": 0, "queue_size": 4, "concurrency": 1}
        assert isinstance(status["grading_queue"], list)


def stream_events(response) -> list[dict]:
    lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines), lines
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_a_streamed_answer(kb, embedder):
    from fastapi.testclient import TestClient

    with TestClient(make_app(embedder, FakeLLM("  " + ANSWER + "  \n"), store=kb)) as client:
        with client.stream("POST", "/v1/chat/completions", headers=AUTH, json=chat(MASCOT, stream=True)) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            chunks = stream_events(r)
        plain = client.post("/v1/chat/completions", headers=AUTH, json=chat(MASCOT)).json()
        with client.stream("POST", "/v1/chat/completions", headers=AUTH,
                           json=chat(MASCOT, stream=True, stream_options={"include_usage": True})) as r:
            with_usage = stream_events(r)
    # with include_usage, OpenAI's last chunk has no choices and the usage: the kaizen field goes there
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"]["total_tokens"] > 0
    assert with_usage[-1]["kaizen"]["answer"] == ANSWER and with_usage[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    meta = last["kaizen"]
    assert meta["answer"] == ANSWER and meta["citations"]
    assert text == plain["choices"][0]["message"]["content"]  # the same reply, answer and footer
    assert all("kaizen" not in c for c in chunks[:-1])


def test_a_full_queue_refuses_with_a_message(kb, embedder):
    from fastapi.testclient import TestClient

    llm = GatedLLM(ANSWER)
    app = make_app(embedder, llm, store=kb, queue_size=1)
    backend = app.state.backend
    results: dict[str, httpx.Response] = {}
    with TestClient(app) as client:
        def ask(name: str) -> None:
            results[name] = client.post("/v1/chat/completions", headers=AUTH, json=chat(MASCOT))

        first = threading.Thread(target=ask, args=("first",))
        first.start()
        assert llm.answering.wait(60)
        second = threading.Thread(target=ask, args=("second",))
        second.start()
        wait_for(lambda: backend.describe()["waiting"] == 1, 30, "the second question to wait")
        assert backend.describe()["answering"] == 1
        full = client.post("/v1/chat/completions", headers=AUTH, json=chat(MASCOT))
        error = assert_openai_error(full, 429, "queue_full")
        assert "queue is full" in error["message"] and "KAIZEN_SERVE_QUEUE_SIZE=1" in error["message"]
        assert full.headers["Retry-After"]
        assert client.get("/health").status_code == 200  # the health check does not queue behind the model
        llm.gate.set()
        first.join(60)
        second.join(60)
    assert results["first"].status_code == 200 and results["second"].status_code == 200


def test_a_client_that_leaves_stops_its_answer(kb, embedder):
    """Mid-stream and mid-answer (a non-streamed request that times out): the model stops, and the stopped
    answer is recorded; a question that was still waiting is never answered."""
    llm = SlowLLM(pieces=400, delay=0.05)  # 20 s if nobody stopped it
    app = make_app(embedder, llm, store=kb, llm_grade=False)
    with serving(app) as url:
        headers = {**AUTH, "X-Kaizen-Thread": "t-leaves-stream"}
        with httpx.stream("POST", f"{url}/v1/chat/completions", headers=headers, json=chat(MASCOT, stream=True),
                          timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and '"content": "word' in line:
                    break
        sent = wait_for(lambda: scalar(kb, "SELECT warning FROM interactions WHERE thread_id = 't-leaves-stream'"),
                        15, "the stopped answer to be recorded")
        assert sent == "stopped before the answer was complete"
        assert llm.sent < 100

        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/chat/completions", headers={**AUTH, "X-Kaizen-Thread": "t-leaves-plain"},
                       json=chat(MASCOT), timeout=1.0)
        wait_for(lambda: scalar(kb, "SELECT warning FROM interactions WHERE thread_id = 't-leaves-plain'"), 15,
                 "the stopped answer to be recorded")
        assert time.monotonic() - started < 15 and llm.sent < 200


def test_without_the_database_it_says_so(embedder):
    from fastapi.testclient import TestClient

    from store.database import Store
    from store.settings import StoreSettings

    def unreachable():
        return Store(StoreSettings(database_url="postgresql://kaizen@127.0.0.1:9/kaizen"))

    with TestClient(make_app(embedder, FakeLLM(ANSWER), store_factory=unreachable)) as client:
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["database"]["reachable"] is False
        assert "cannot reach the database" in health.json()["database"]["error"]
        for method, path, body in (("POST", "/v1/chat/completions", chat(MASCOT)),
                                   ("POST", "/v1/kaizen/search", {"query": "mascot"}),
                                   ("GET", "/v1/kaizen/status", None),
                                   ("POST", "/v1/kaizen/feedback", {"interaction_id": 1, "rating": "good"})):
            response = client.request(method, path, headers=AUTH, json=body)
            error = assert_openai_error(response, 503, "database_unavailable")
            assert error["message"].startswith("the database is unavailable: cannot reach the database")


# -- real `kaizen serve` processes, the small model, the openai client ----------------------------------------------
SERVER_ENV = {"KAIZEN_API_KEY": KEY, "KAIZEN_CHAT_MODEL": "smollm2", "KAIZEN_MAX_REGENERATIONS": "0",
              "KAIZEN_LLM_CHECK": "off", "KAIZEN_LLM_MAX_TOKENS": "96"}


@pytest.fixture(scope="module")
def server(kb, tmp_path_factory):
    process = ServeProcess(tmp_path_factory.mktemp("serve") / "serve.log", **SERVER_ENV)
    try:
        process.wait_healthy()
        yield process
    finally:
        code = process.stop()
        output = process.output()
    assert "Traceback" not in output, output
    assert code in (0, 143), output


def client(server, **kwargs):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=kwargs.pop("api_key", KEY), max_retries=0, timeout=300,
                  **kwargs)


def expected_footer(meta: dict) -> str:
    from cli.server import footer

    return footer(types.SimpleNamespace(warning=meta["warning"], stopped=meta["stopped"],
                                        citations=meta["citations"], abstained=meta["abstained"]))


def jobs_for(store, interaction_id: int) -> int:
    return scalar(store, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'evaluate_interaction' "
                         "AND args->>'interaction_id' = :i", i=str(interaction_id))


@pytest.mark.slow
def test_the_openai_client_asks_and_the_answer_is_recorded_and_queued(server, kb):
    import openai

    api = client(server)
    assert [m.id for m in api.models.list().data] == ["kaizen"]
    completion = api.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": LIGHTHOUSE}])
    content = completion.choices[0].message.content
    meta = completion.model_extra["kaizen"]
    assert meta["answer"] and content == meta["answer"] + expected_footer(meta)
    assert meta["citations"], f"smollm2 gave no supported answer: {meta}"
    assert "Sources:" in content and all(c["source_uri"] in content for c in meta["citations"])
    assert any(c["source_uri"].endswith("lighthouse.md") for c in meta["citations"])
    with kb.session() as s:
        row = s.execute(sa.text("SELECT thread_id, question, answer FROM interactions WHERE id = :i"),
                        {"i": meta["interaction_id"]}).one()
    assert tuple(row) == (meta["thread_id"], LIGHTHOUSE, meta["answer"])
    assert jobs_for(kb, meta["interaction_id"]) == 1  # queued for the background judge, as the REPL's are

    feedback = httpx.post(f"{server.url}/v1/kaizen/feedback", headers=AUTH,
                          json={"interaction_id": meta["interaction_id"], "rating": "bad", "correction": "42 metres"})
    assert feedback.status_code == 200, feedback.text
    assert scalar(kb, "SELECT correction FROM feedback WHERE interaction_id = :i AND rating = -1",
                  i=meta["interaction_id"]) == "42 metres"

    with pytest.raises(openai.AuthenticationError):
        client(server, api_key="wrong").models.list()
    assert_openai_error(httpx.get(f"{server.url}/v1/models"), 401, "invalid_api_key")
    assert httpx.get(f"{server.url}/health").json()["database"] == {"reachable": True}
    with pytest.raises(openai.BadRequestError) as info:
        api.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "why " * 5000}])
    assert info.value.status_code == 400 and info.value.code == "question_too_long"
    assert "\n" not in info.value.body["message"]
    malformed = httpx.post(f"{server.url}/v1/chat/completions", headers={**AUTH, "Content-Type": "application/json"},
                           content=b'{"messages": [')
    assert "not valid JSON" in assert_openai_error(malformed, 400, "invalid_json")["message"]
    status = httpx.get(f"{server.url}/v1/kaizen/status", headers=AUTH).json()
    assert status["kb"]["documents"]["active"] == 3 and status["serve"]["model"]
    hits = httpx.post(f"{server.url}/v1/kaizen/search", headers=AUTH, json={"query": "lighthouse height"}).json()
    assert hits["data"][0]["source_uri"].endswith("lighthouse.md")


@pytest.mark.slow
def test_a_streamed_answer_and_a_follow_up(server, kb):
    api = client(server)
    stream = api.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": MASCOT}], stream=True)
    chunks = list(stream)
    assert len(chunks) > 3  # the answer came in pieces
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    meta = chunks[-1].model_extra["kaizen"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all("kaizen" not in (c.model_extra or {}) for c in chunks[:-1])
    assert text == meta["answer"] + expected_footer(meta)
    assert scalar(kb, "SELECT answer FROM interactions WHERE id = :i", i=meta["interaction_id"]) == meta["answer"]

    follow_up = api.chat.completions.create(model="kaizen", messages=[
        {"role": "user", "content": MASCOT}, {"role": "assistant", "content": text},
        {"role": "user", "content": "Who drew it?"}])
    assert follow_up.model_extra["kaizen"]["thread_id"] == meta["thread_id"]
    assert scalar(kb, "SELECT count(*) FROM interactions WHERE thread_id = :t", t=meta["thread_id"]) == 2

    named = api.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": "Who drew it?"}],
                                        extra_headers={"X-Kaizen-Thread": meta["thread_id"]})
    assert named.model_extra["kaizen"]["thread_id"] == meta["thread_id"]
    assert scalar(kb, "SELECT count(*) FROM interactions WHERE thread_id = :t", t=meta["thread_id"]) == 3


@pytest.mark.slow
def test_several_questions_at_once_are_all_answered(server):
    api = client(server)
    questions = [MASCOT, LIGHTHOUSE, "When does the Maple Street community garden open?"]
    answers: dict[str, object] = {}

    def ask(question: str) -> None:
        try:
            answers[question] = api.chat.completions.create(model="kaizen",
                                                            messages=[{"role": "user", "content": question}])
        except Exception as exc:  # reported below
            answers[question] = exc

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert all(not isinstance(a, Exception) for a in answers.values()), answers
    assert {answers[q].model_extra["kaizen"]["interaction_id"] for q in questions}.__len__() == 3


@pytest.mark.slow
def test_the_database_going_away_and_coming_back(kb, tmp_path):
    """A server whose database is behind a proxy: down when it starts, up, cut, restored. While it is away every
    request gets 503 with a message and /health says so; once it is back the server answers again. With a queue
    of one, questions beyond the one answered and the one waiting are refused."""
    import openai

    proxy = Proxy(kb.url)
    process = ServeProcess(tmp_path / "serve.log", KAIZEN_DATABASE_URL=proxy.url, KAIZEN_SERVE_QUEUE_SIZE="1",
                           **SERVER_ENV)
    api = client(process)
    try:
        process.wait_listening()
        down = process.health()
        assert down.status_code == 503 and down.json()["database"]["reachable"] is False
        assert "cannot reach the database" in down.json()["database"]["error"]
        with pytest.raises(openai.InternalServerError) as info:
            api.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": MASCOT}])
        assert info.value.status_code == 503 and info.value.body["message"].startswith("the database is unavailable")

        proxy.restore()
        process.wait_healthy()
        outcomes: list = []

        def ask() -> None:
            try:
                outcomes.append(api.chat.completions.create(model="kaizen",
                                                            messages=[{"role": "user", "content": LIGHTHOUSE}]))
            except openai.RateLimitError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
        answered = [o for o in outcomes if not isinstance(o, openai.RateLimitError)]
        assert len(outcomes) == 4 and len(answered) >= 2 and refused, outcomes
        assert all(r.status_code == 429 and "queue is full" in r.body["message"] for r in refused)

        proxy.cut()
        down = process.health()
        assert down.status_code == 503 and down.json()["database"]["reachable"] is False
        with pytest.raises(openai.InternalServerError) as info:
            api.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": MASCOT}])
        assert info.value.status_code == 503 and "database" in info.value.body["message"]
        search = httpx.post(f"{process.url}/v1/kaizen/search", headers=AUTH, json={"query": "mascot"}, timeout=60)
        assert_openai_error(search, 503, "database_unavailable")

        proxy.restore()
        process.wait_healthy()
        back = api.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": MASCOT}])
        assert back.model_extra["kaizen"]["interaction_id"]
    finally:
        code = process.stop()
        proxy.cut()
    output = process.output()
    assert "Traceback" not in output, output
    assert code in (0, 143), output
