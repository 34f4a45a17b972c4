"""`kaizen serve`: Kaizen over HTTP (FastAPI), shaped like OpenAI's API so that the `openai` client and chat UIs
such as Open WebUI work with it unchanged (docs/serve.md).

- `POST /v1/chat/completions`: the last user message is the question; the earlier messages only pick the Kaizen
  thread (an `X-Kaizen-Thread` header or `metadata.thread_id` names one; else the thread Kaizen answered the
  conversation's last assistant message in; else a new one). JSON, or with `stream: true` server-sent events of
  `chat.completion.chunk`s carrying the agent's tokens as they come, ending with `data: [DONE]`. The reply text
  ends with a short "Sources:" footer; the top-level `kaizen` field (in the last chunk when streamed) has the
  thread, the interaction, the citations, whether it abstained and any warning.
- `GET /v1/models`: one model, `kaizen`.
- `POST /v1/kaizen/search` (the store's hybrid search, no model), `POST /v1/kaizen/feedback` (good or bad, with
  an optional correction: what the REPL's /good and /bad record), `GET /v1/kaizen/status` (the KB, the grading
  queue, this server's queue), `GET /health` (whether the database answers; no key needed).

Questions are answered in threads of their own (never on the event loop): one at a time with the in-process model,
KAIZEN_SERVE_CONCURRENCY at once with a model server (KAIZEN_LLM_URL). Further ones wait in a queue of
KAIZEN_SERVE_QUEUE_SIZE, and one more is refused with 429. A client that goes away stops its
answer the way Ctrl-C does in the REPL (the agent's cancel event), or takes it out of the queue. Answers are
recorded and queued for grading like the REPL's. Every error is one line in OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`: 4xx for a request Kaizen cannot take, 503 while the database
cannot be reached.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .settings import ServeSettings

log = logging.getLogger("kaizen.serve")

MODEL_ID = "kaizen"
MAX_BODY_BYTES = 4 * 1024 * 1024
# A question longer than this many bytes per token it may have is refused without tokenizing it.
BYTES_PER_TOKEN = 64
THREAD_HEADER = "X-Kaizen-Thread"
THREAD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
HEALTH_TIMEOUT = 10.0  # seconds /health waits for the database
DISCONNECT_POLL = 0.25  # seconds between two looks at whether the client of a waiting question is still there
SHUTDOWN_GRACE = 10  # seconds uvicorn lets open requests finish on SIGTERM before it cancels them


# -- errors ----------------------------------------------------------------------------------------------------------
def one_line(text: str, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class APIError(Exception):
    """A request answered with an error, in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = one_line(message)
        self.kind = kind
        self.code = code
        self.param = param
        self.headers = headers

    def body(self) -> dict:
        return {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}

    def response(self) -> Response:
        return JSON({"error": self.body()}, status_code=self.status, headers=self.headers)


def bad_request(message: str, *, param: str | None = None, code: str = "invalid_request") -> APIError:
    return APIError(400, message, param=param, code=code)


def database_down(exc: BaseException | None) -> bool:
    """Whether `exc` (or what it was raised from) says the database cannot be reached."""
    import psycopg
    import psycopg_pool
    import sqlalchemy as sa

    from store.database import StoreUnavailable

    for _ in range(6):
        if exc is None:
            return False
        if isinstance(exc, (StoreUnavailable, sa.exc.OperationalError, sa.exc.InterfaceError, psycopg.OperationalError,
                            psycopg.InterfaceError, psycopg_pool.PoolTimeout)):
            return True
        if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
            return True
        exc = exc.__cause__
    return False


def failure(exc: BaseException) -> APIError:
    """The error response for something that failed while serving a request."""
    if isinstance(exc, APIError):
        return exc
    from agent.errors import explain
    from agent.recorder import FeedbackError
    from store.errors import KaizenError
    from store.settings import ConfigError

    message = explain(exc)
    if database_down(exc):
        return APIError(503, f"the database is unavailable: {message or exc}", kind="server_error",
                        code="database_unavailable", headers={"Retry-After": "10"})
    if isinstance(exc, KaizenError):
        if isinstance(exc, FeedbackError) and str(exc).startswith("no interaction"):
            return APIError(404, str(exc), code="not_found", param="interaction_id")
        if isinstance(exc, ValueError) and not isinstance(exc, ConfigError):  # the question, the search, ...
            return bad_request(str(exc))
        return APIError(500, str(exc), kind="server_error", code="kaizen_error")
    if message is not None:
        return APIError(500, message, kind="server_error", code="database_error")
    log.error("kaizen serve: unexpected failure", exc_info=exc)
    return APIError(500, f"internal error ({type(exc).__name__}: {exc}); the server's log has the traceback",
                    kind="server_error", code="internal_error")


class JSON(JSONResponse):
    """JSON whatever the values (a date from the database becomes text)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, default=str).encode("utf-8")


async def read_json(request: Request) -> Any:
    """The request body as JSON, read up to MAX_BODY_BYTES."""
    size, pieces = 0, []
    async for piece in request.stream():
        size += len(piece)
        if size > MAX_BODY_BYTES:
            raise APIError(413, f"the request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB",
                           code="body_too_large")
        pieces.append(piece)
    raw = b"".join(pieces)
    if not raw.strip():
        raise bad_request("the request body is empty: send a JSON object", code="invalid_json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}", code="invalid_json") from None


def json_object(body: Any) -> dict:
    """The parsed body, which every route that takes one needs to be a JSON object."""
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return body


def _field(body: dict, name: str, kinds: tuple[type, ...], what: str, default: Any = None) -> Any:
    """body[name] when it is one of `kinds` (never a bool for a number), the default when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise bad_request(f"{name} must be {what}", param=name)
    return value


# -- chat completions ------------------------------------------------------------------------------------------------
@dataclass
class ChatRequest:
    question: str
    earlier: list[dict]  # the messages before the question, as {"role", "content"} with the content as text
    stream: bool = False
    include_usage: bool = False
    thread_id: str | None = None
    user: str | None = None


def content_text(content: Any, where: str) -> str:
    """A message's content as text: a string, or OpenAI's list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"{where}[{i}] is {kind!r}: Kaizen reads text parts only", param=f"{where}[{i}]")
            texts.append(part["text"])
        return "\n".join(texts)
    raise bad_request(f"{where} must be text or a list of text parts", param=where)


def valid_thread(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not THREAD_ID.fullmatch(value.strip()):
        raise bad_request(f"{where} must be a thread id: up to 128 letters, digits and . _ : @ -", param=where)
    return value.strip()


def parse_chat(body: Any, headers) -> ChatRequest:
    from agent.graph import QuestionError, clean_question

    body = json_object(body)
    messages = body.get("messages")
    if messages is None:
        raise bad_request("messages is missing: send the conversation as a list of {role, content} messages",
                          param="messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list of {role, content} objects", param="messages")
    texts = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f"{where} must be an object with a role and a content", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role must be one of {', '.join(ROLES)}", param=f"{where}.role")
        texts.append({"role": role, "content": content_text(message.get("content"), f"{where}.content")})
    asked = max((i for i, m in enumerate(texts) if m["role"] == "user"), default=None)
    if asked is None:
        raise bad_request("no user message: the last message with role user is the question", param="messages")
    try:
        question = clean_question(texts[asked]["content"])
    except QuestionError as exc:
        raise bad_request(str(exc), param=f"messages[{asked}].content") from None
    stream = _field(body, "stream", (bool,), "true or false", False)
    options = _field(body, "stream_options", (dict,), "an object", {})
    include_usage = options.get("include_usage") or False
    if not isinstance(include_usage, bool):
        raise bad_request("stream_options.include_usage must be true or false", param="stream_options")
    _field(body, "model", (str,), "a model id (GET /v1/models lists it)")
    if _field(body, "n", (int,), "a whole number", 1) != 1:
        raise bad_request("n must be 1: Kaizen gives one answer per question", param="n")
    metadata = _field(body, "metadata", (dict,), "an object", {})
    thread = valid_thread(headers.get(THREAD_HEADER), THREAD_HEADER) or \
        valid_thread(metadata.get("thread_id"), "metadata.thread_id")
    user = _field(body, "user", (str,), "text")
    return ChatRequest(question, texts[:asked], stream, include_usage, thread, user)


def check_length(agent, question: str) -> None:
    """A question longer than the agent reads (KAIZEN_QUESTION_MAX_TOKENS) is refused rather than cut."""
    limit = agent.settings.question_max_tokens
    size = len(question.encode("utf-8"))
    what = f"{len(question)} characters" if size > limit * BYTES_PER_TOKEN else None
    if what is None:
        tokens = agent.llm.count_tokens(question)
        what = f"{tokens} tokens" if tokens > limit else None
    if what is not None:
        raise bad_request(f"the question is too long ({what}): Kaizen reads at most {limit} tokens of a question "
                          "(KAIZEN_QUESTION_MAX_TOKENS)", param="messages", code="question_too_long")


def conversation_thread(store, chat: ChatRequest) -> str:
    """The Kaizen thread of a conversation: the one named, else the thread in which Kaizen gave the conversation's
    last assistant message, else one named after the earlier messages (so that the next question finds it), and a
    new thread for a conversation's first question."""
    from agent.graph import QuestionError, clean_question
    from agent.threads import new_thread_id, thread_of_reply

    if chat.thread_id:
        return chat.thread_id
    earlier = chat.earlier
    reply = max((i for i, m in enumerate(earlier) if m["role"] == "assistant" and m["content"].strip()),
                default=None)
    if reply is None:
        return new_thread_id()
    asked = next((m["content"] for m in reversed(earlier[:reply]) if m["role"] == "user"), None)
    try:
        found = thread_of_reply(store, clean_question(asked), earlier[reply]["content"].strip()) if asked else None
    except QuestionError:
        found = None
    if found:
        return found
    digest = hashlib.sha256(json.dumps([chat.user, earlier], ensure_ascii=False).encode("utf-8")).hexdigest()
    return f"c-{digest[:16]}"


def footer(result) -> str:
    """What follows the answer in the reply text: a warning, and the sources it cites."""
    lines = []
    if result.warning and not result.stopped:
        lines.append(f"⚠ {result.warning}")
    if result.citations and not result.abstained:
        lines.append("Sources:\n" + "\n".join(
            f"- [{c['number']}] {c.get('title') or '(untitled)'} · {c['source_uri']}"
            + (" (matched)" if c.get("inferred") else "") for c in result.citations))
    return "".join(f"\n\n{line}" for line in lines)


def kaizen_field(result) -> dict:
    return {
        "thread_id": result.thread_id,
        "interaction_id": result.interaction_id,
        "answer": result.answer,
        "citations": result.as_json()["citations"],
        "abstained": result.abstained,
        "warning": result.warning,
        "verified": result.verified,
        "stopped": result.stopped,
        "kb_version": result.kb_version,
        "notices": result.notices,
        "model": result.model,
    }


def usage_field(result) -> dict:
    prompt = int(result.usage.get("prompt_tokens", 0))
    completion = int(result.usage.get("completion_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion_body(result, ident: str, created: int) -> dict:
    return {
        "id": ident, "object": "chat.completion", "created": created, "model": MODEL_ID,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer + footer(result)},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": usage_field(result),
        "kaizen": kaizen_field(result),
    }


def chunk_body(ident: str, created: int, delta: dict | None, finish_reason: str | None = None, **extra) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID,
            "choices": choices, **extra}


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"


class Shaper:
    """The streamed answer as the agent records it: without leading or trailing whitespace (a trailing space is
    held back until more text follows it)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.started = False
        self.held = ""

    def feed(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            if not text:
                return ""
            self.started = True
        text = self.held + text
        body = text.rstrip()
        self.held = text[len(body):]
        return body

    def event_text(self, event: dict) -> str:
        """The text an agent event adds to the stream (agent.nodes lists the events)."""
        kind = event.get("type")
        if kind == "token":
            return self.feed(event.get("text") or "")
        if kind == "retry":  # the REPL's note: what was streamed is answered again, more strictly
            self.reset()
            return f"\n\n[not verified ({event.get('reason')}); answering again more strictly]\n\n"
        if kind == "revised":
            self.reset()
            return f"\n\n[revised] {event.get('text') or ''}"
        return ""


# -- the model's queue -----------------------------------------------------------------------------------------------
def default_store():
    from store.database import Store

    return Store()


def default_agent(store):
    """The Agent `kaizen chat` and `kaizen ask` make: recorded answers are queued for grading."""
    from agent.graph import Agent

    from .agent_commands import queue_evaluation

    return Agent(store, on_recorded=queue_evaluation)


class Backend:
    """The store and the agent (made on first need, made again after a failure: the database may come back), and
    the one thread the agent answers in, with the questions waiting for it."""

    def __init__(self, settings: ServeSettings, agent_factory: Callable[[Any], Any] | None,
                 store_factory: Callable[[], Any] | None, concurrency: int = 1):
        self.settings = settings
        self.concurrency = concurrency
        self._agent_factory = agent_factory or default_agent
        self._store_factory = store_factory or default_store
        self._owns_store = store_factory is None
        self._store = None
        self._agent = None
        self._store_lock = threading.Lock()
        self._agent_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kaizen-answer")
        self._lock = threading.Lock()
        self._admitted: set[threading.Event] = set()  # the cancel events of the questions answered or waiting
        self.answering = 0
        self.closing = False

    # -- what answers -----------------------------------------------------------------------------------------
    def store(self):
        with self._store_lock:
            if self._store is None:
                self._store = self._store_factory()
            return self._store

    def agent(self):
        with self._agent_lock:
            if self._agent is None:
                self._agent = self._agent_factory(self.store())
            return self._agent

    @property
    def ready_agent(self):
        return self._agent

    def ping(self) -> None:
        """Raises when the database does not answer."""
        import sqlalchemy as sa

        with self.store().engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def start(self) -> None:
        """Load the agent in the answering thread now, so that the first question does not wait for it."""
        self._executor.submit(self._prepare)

    def _prepare(self) -> None:
        try:
            agent = self.agent()
            if hasattr(agent, "warm_up"):
                agent.warm_up()
        except Exception as exc:  # each question tries again
            log.warning("not ready to answer yet: %s", failure(exc).message)

    def describe(self) -> dict:
        agent = self._agent
        with self._lock:
            admitted, answering = len(self._admitted), self.answering
        return {"model": getattr(getattr(agent, "llm", None), "name", None), "answering": answering,
                "waiting": max(0, admitted - answering), "queue_size": self.settings.serve_queue_size,
                "concurrency": self.concurrency}

    # -- the queue --------------------------------------------------------------------------------------------
    def admit(self) -> threading.Event:
        """A place for one more question (its cancel event), or 429 when the queue is full."""
        size = self.settings.serve_queue_size
        with self._lock:
            if self.closing:
                raise APIError(503, "Kaizen is shutting down", kind="server_error", code="shutting_down")
            if len(self._admitted) >= self.concurrency + size:
                at_once = "one question at a time" if self.concurrency == 1 else f"{self.concurrency} questions at once"
                raise APIError(429, f"the queue is full: Kaizen answers {at_once} and {size} "
                               f"may wait (KAIZEN_SERVE_QUEUE_SIZE={size}); try again shortly",
                               kind="rate_limit_error", code="queue_full", headers={"Retry-After": "5"})
            cancel = threading.Event()
            self._admitted.add(cancel)
        return cancel

    def submit(self, cancel: threading.Event, job: Callable[[], Any]) -> Future:
        def run():
            with self._lock:
                self.answering += 1
            try:
                return job()
            finally:
                with self._lock:
                    self.answering -= 1

        try:
            future = self._executor.submit(run)
        except RuntimeError:  # shut down
            self._release(cancel)
            raise APIError(503, "Kaizen is shutting down", kind="server_error", code="shutting_down") from None
        future.add_done_callback(lambda _: self._release(cancel))
        return future

    def _release(self, cancel: threading.Event) -> None:
        with self._lock:
            self._admitted.discard(cancel)

    def close(self) -> None:
        """Stop the answers in progress (recorded as stopped), drop the waiting ones, close the agent."""
        with self._lock:
            self.closing = True
            pending = list(self._admitted)
        for cancel in pending:
            cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._agent is not None:
            self._agent.close()
            self._agent = None
        if self._owns_store and self._store is not None:
            self._store.close()
            self._store = None


END = object()  # the last item of an answer's event queue


def _resolve(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _retrieve(future: asyncio.Future) -> None:
    """A done callback: an exception nobody awaits is not logged as 'never retrieved'."""
    if not future.cancelled():
        future.exception()


async def watch_disconnect(request: Request, cancel: threading.Event) -> None:
    """Returns (having set `cancel`) once the client has gone."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL)
    cancel.set()


async def in_thread(function: Callable[[], Any]) -> Any:
    """Run blocking store work off the event loop; a failure becomes its error response."""
    try:
        return await run_in_threadpool(function)
    except APIError:
        raise
    except Exception as exc:
        raise failure(exc) from None


# -- the app ---------------------------------------------------------------------------------------------------------
def create_app(agent_factory: Callable[[Any], Any] | None = None, settings: ServeSettings | None = None, *,
               store_factory: Callable[[], Any] | None = None) -> FastAPI:
    """The API. `agent_factory(store)` makes the Agent (by default as `kaizen chat` does, its answers queued for
    grading), `store_factory()` the Store (by default from the environment); both are called on first need, in
    a worker thread, and again after a failure."""
    from agent.settings import AgentSettings

    settings = settings or ServeSettings()
    backend = Backend(settings, agent_factory, store_factory, settings.concurrency(AgentSettings().llm_url))
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        backend.start()
        try:
            yield
        finally:
            await run_in_threadpool(backend.close)

    app = FastAPI(title="Kaizen", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, exc: APIError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return APIError(404, f"no route {request.method} {request.url.path}", code="not_found").response()
        if exc.status_code == 405:
            return APIError(405, f"{request.method} is not allowed on {request.url.path}",
                            code="method_not_allowed").response()
        return APIError(exc.status_code, str(exc.detail), code=None).response()

    @app.exception_handler(Exception)
    async def on_failure(request: Request, exc: Exception) -> Response:
        return failure(exc).response()

    def authorize(request: Request) -> None:
        key = settings.api_key
        if not key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        hint = "send the header Authorization: Bearer <KAIZEN_API_KEY>"
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(401, f"no API key: {hint}", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(token.strip().encode("utf-8"), key.encode("utf-8")):
            raise APIError(401, f"wrong API key: {hint}", code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})

    # -- /health, /v1/models ------------------------------------------------------------------------------------
    @app.get("/health")
    async def health() -> Response:
        try:
            await asyncio.wait_for(run_in_threadpool(backend.ping), HEALTH_TIMEOUT)
            database = {"reachable": True}
        except asyncio.TimeoutError:
            database = {"reachable": False, "error": f"the database did not answer within {HEALTH_TIMEOUT:g}s"}
        except Exception as exc:
            database = {"reachable": False, "error": failure(exc).message}
        agent = backend.ready_agent
        body = {"status": "ok" if database["reachable"] else "unavailable", "database": database,
                "model": {"loaded": agent is not None, "name": getattr(getattr(agent, "llm", None), "name", None)}}
        return JSON(body, status_code=200 if database["reachable"] else 503)

    def model_card() -> dict:
        return {"id": MODEL_ID, "object": "model", "created": created, "owned_by": "kaizen"}

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        authorize(request)
        return JSON({"object": "list", "data": [model_card()]})

    @app.get("/v1/models/{model_id}")
    async def model(request: Request, model_id: str) -> Response:
        authorize(request)
        if model_id != MODEL_ID:
            raise APIError(404, f"no model {model_id!r}: this server has one, {MODEL_ID}", code="model_not_found",
                           param="model")
        return JSON(model_card())

    # -- /v1/chat/completions -----------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        authorize(request)
        chat = parse_chat(await read_json(request), request.headers)
        if backend.ready_agent is not None:  # else the question is measured once the model is loaded
            await in_thread(lambda: check_length(backend.ready_agent, chat.question))
        cancel = backend.admit()
        loop = asyncio.get_running_loop()
        started: asyncio.Future = loop.create_future()
        events: asyncio.Queue = asyncio.Queue()

        def to_loop(callback, *args) -> None:
            try:
                loop.call_soon_threadsafe(callback, *args)
            except RuntimeError:  # the loop is closed: nobody listens any more
                pass

        def answer():
            if cancel.is_set():  # the client left while the question waited
                return None
            agent = backend.agent()
            backend.ping()  # a database that is away fails now, not after the checkpointer's pool gives up
            check_length(agent, chat.question)
            thread_id = conversation_thread(agent.store, chat)
            to_loop(_resolve, started, thread_id)
            on_event = (lambda event: to_loop(events.put_nowait, event)) if chat.stream else None
            try:
                return agent.ask(chat.question, thread_id, on_event=on_event, cancel=cancel)
            finally:
                to_loop(events.put_nowait, END)

        future = asyncio.wrap_future(backend.submit(cancel, answer))
        future.add_done_callback(_retrieve)
        watcher = asyncio.ensure_future(watch_disconnect(request, cancel))
        try:
            await asyncio.wait({started, future, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not started.done():
                if future.done() and not future.cancelled() and future.exception() is not None:
                    raise failure(future.exception())
                cancel.set()  # the client has gone: out of the queue
                future.cancel()
                return Response(status_code=499)
            thread_id = started.result()
            if not chat.stream:
                await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not future.done():  # gone mid-answer: the answer stops, recorded as stopped
                    cancel.set()
                    return Response(status_code=499)
                try:
                    result = future.result()
                except Exception as exc:
                    raise failure(exc) from None
                return JSON(completion_body(result, _completion_id(), int(time.time())),
                            headers={THREAD_HEADER: thread_id})
        finally:
            watcher.cancel()  # from here on the streaming response watches the connection itself
        # The background task stops the answer however the response ended, even when the client left before
        # the stream's first piece (the generator's own clean-up never runs then).
        return StreamingResponse(stream_answer(chat, future, events, cancel), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
                                          THREAD_HEADER: thread_id}, background=BackgroundTask(cancel.set))

    # -- Kaizen's own routes ------------------------------------------------------------------------------------
    @app.post("/v1/kaizen/search")
    async def kaizen_search(request: Request) -> Response:
        authorize(request)
        body = json_object(await read_json(request))
        from store.search import MODES, Filters

        query = _field(body, "query", (str,), "text", "")
        if not query.strip():
            raise bad_request("query is missing: send {\"query\": \"...\"}", param="query")
        k = _field(body, "k", (int,), "a whole number", 5)
        if not 1 <= k <= 100:
            raise bad_request("k must be between 1 and 100", param="k")
        mode = _field(body, "mode", (str,), " or ".join(MODES), "hybrid")
        if mode not in MODES:
            raise bad_request(f"mode must be {' or '.join(MODES)}", param="mode")
        source = _field(body, "source", (str,), "a source URI prefix")
        documents = _field(body, "documents", (list,), "a list of document ids")
        if documents is not None and not all(isinstance(d, int) and not isinstance(d, bool) for d in documents):
            raise bad_request("documents must be a list of document ids", param="documents")
        filters = Filters(source_prefix=source, document_ids=tuple(documents) if documents else None)

        def run():
            from store.embeddings import store_embedder
            from store.search import search

            store = backend.store()
            with store.session() as s:
                return search(s, store_embedder(store.settings), query, k=k, mode=mode, filters=filters,
                              settings=store.settings)

        hits = await in_thread(run)
        return JSON({"object": "list", "query": query, "mode": mode,
                     "data": [{"rank": rank, **hit.as_dict()} for rank, hit in enumerate(hits, start=1)]})

    @app.post("/v1/kaizen/feedback")
    async def kaizen_feedback(request: Request) -> Response:
        authorize(request)
        body = json_object(await read_json(request))
        interaction_id = _field(body, "interaction_id", (int,), "the id of an answer (the kaizen field gives it)")
        if interaction_id is None:
            raise bad_request("interaction_id is missing: the kaizen field of an answer gives it",
                              param="interaction_id")
        ratings = {"good": 1, "bad": -1, 1: 1, -1: -1}
        rating = body.get("rating")
        if isinstance(rating, bool) or rating not in ratings:
            raise bad_request("rating must be \"good\" or \"bad\"", param="rating")
        correction = _field(body, "correction", (str,), "text")

        def run():
            from agent.recorder import add_feedback

            return add_feedback(backend.store(), interaction_id, ratings[rating], (correction or "").strip() or None)

        feedback_id = await in_thread(run)
        return JSON({"object": "kaizen.feedback", "id": feedback_id, "interaction_id": interaction_id,
                     "rating": "good" if ratings[rating] == 1 else "bad",
                     "correction": (correction or "").strip() or None})

    @app.get("/v1/kaizen/status")
    async def kaizen_status(request: Request) -> Response:
        authorize(request)

        def run():
            import sqlalchemy as sa

            from store.status import status_data

            store = backend.store()
            data = status_data(store)
            with store.session() as s:
                jobs = s.execute(sa.text("SELECT task_name, status::text AS status, count(*) AS jobs "
                                         "FROM procrastinate_jobs GROUP BY 1, 2 ORDER BY 1, 2")).mappings().all()
            return data, [dict(j) for j in jobs]

        data, jobs = await in_thread(run)
        return JSON({"object": "kaizen.status", "kb": data, "grading_queue": jobs, "serve": backend.describe()})

    return app


def _completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


async def stream_answer(chat: ChatRequest, future: asyncio.Future, events: asyncio.Queue,
                        cancel: threading.Event):
    """The answer as server-sent events: a chunk per piece of text as the agent writes it, the sources footer, a
    last chunk with the kaizen field, `data: [DONE]`. A client that goes away stops the answer."""
    ident, created = _completion_id(), int(time.time())
    finished = False
    try:
        yield sse(chunk_body(ident, created, {"role": "assistant", "content": ""}))
        shaper = Shaper()
        while (event := await events.get()) is not END:
            text = shaper.event_text(event)
            if text:
                yield sse(chunk_body(ident, created, {"content": text}))
        try:
            result = await future
        except Exception as exc:  # the answer failed after the stream began: OpenAI's error event
            yield sse({"error": failure(exc).body()})
            yield "data: [DONE]\n\n"
            finished = True
            return
        tail = footer(result)
        if tail:
            yield sse(chunk_body(ident, created, {"content": tail}))
        extra = {"kaizen": kaizen_field(result)}
        if chat.include_usage:
            yield sse(chunk_body(ident, created, {}, "stop"))
            yield sse(chunk_body(ident, created, None, usage=usage_field(result), **extra))
        else:
            yield sse(chunk_body(ident, created, {}, "stop", **extra))
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:  # the client went away (or the server is stopping): stop generating
            cancel.set()
