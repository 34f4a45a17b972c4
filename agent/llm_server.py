"""The model behind an OpenAI-compatible server (KAIZEN_LLM_URL): llama.cpp's server (llama-cpp-python's
`python -m llama_cpp.server`, or `llama-server`) or vLLM. `ServerLLM` has the interface of agent.llm.LLM, so the
graph, the judge and the repair actions use one code path whichever answers:

- `stream_chat`: `POST /v1/chat/completions` with `stream: true` (server-sent events); a `threading.Event` stops it
  by closing the connection, which the servers take as a cancelled request.
- `json_chat`: the reply constrained by the server (`response_format` with the JSON schema, in the OpenAI form
  `json_schema` or llama.cpp's `json_object` + `schema`), then parsed and validated like the in-process one.
- `yes_probability`: one generated token with `logprobs` and `top_logprobs`; P(yes) / (P(yes) + P(no)) over the
  spellings of yes and no among the top tokens.
- Every request asks for `cache_prompt` (llama-server's prompt-prefix reuse; llama-cpp-python's server reuses its
  KV cache prefix by itself, vLLM by its prefix caching).
- Token counts: the server's tokenizer (`/extras/tokenize`, `/tokenize`), for the budgets of what the model
  reads; the recorded counts are those the server reports.

On start (`ServerLLM(settings)`) the server is asked what it supports; `missing` lists what it lacks and `notice`
says it in one line (the CLI prints it). A server that does not answer is one LLMError naming KAIZEN_LLM_URL.
Requests run concurrently: the server schedules them (there is no lock, unlike the in-process model).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from .llm import (
    ChatStream,
    ContextOverflow,
    JSONResult,
    LLMError,
    LLMSettings,
    Streaming,
    Usage,
    YesNoResult,
    _yield,
    parse_json_reply,
)

log = logging.getLogger(__name__)

TOP_LOGPROBS = 20  # tokens whose log-probability the grade reads (yes and no are among them when they matter)
PROBE_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
                "additionalProperties": False}
# (tokenize path, the text's key in its body, detokenize path, the text's key in its reply): llama-cpp-python's
# server, llama-server, vLLM.
_TOKENIZERS = (
    ("/extras/tokenize", "input", "/extras/detokenize", "text"),
    ("/tokenize", "content", "/detokenize", "content"),
    ("/tokenize", "prompt", "/detokenize", "prompt"),
)


class ServerError(LLMError):
    """The model server refused a request or went away; the message is one line naming KAIZEN_LLM_URL."""


@dataclass
class Features:
    """What the server does, found out on start."""

    model: str = ""
    n_ctx: int | None = None  # the server's context window, when it says
    json_format: str | None = None  # "json_schema", "json_object" or None (no constrained replies)
    logprobs: bool = False
    tokenizer: tuple[str, str, str, str] | None = None
    missing: list[str] = field(default_factory=list)


def _root(url: str) -> str:
    url = url.rstrip("/")
    return url[:-3] if url.endswith("/v1") else url


class ServerLLM(Streaming):
    """A model served over HTTP, with the interface of agent.llm.LLM."""

    def __init__(self, settings: LLMSettings, *, setting: str = "KAIZEN_LLM_URL", http=None):
        import httpx

        if not settings.url:
            raise LLMError(f"{setting} is not set")
        self.settings = settings
        self.setting = setting
        self.url = _root(settings.url)
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self.http = http or httpx.Client(base_url=self.url, headers=headers,
                                         timeout=httpx.Timeout(settings.timeout, connect=10.0))
        self.calls: list[Usage] = []
        self._calls_lock = threading.Lock()
        self.features = self._probe()
        self.name = self.features.model.replace("\\", "/").rsplit("/", 1)[-1] or self.url
        if self.notice:
            log.warning(self.notice)

    # -- talking to the server ----------------------------------------------------------------------------------
    def _where(self) -> str:
        return f"{self.setting}={self.url}"

    def _post(self, path: str, body: dict) -> dict:
        import httpx

        try:
            response = self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise ServerError(f"{self._where()}: the model server did not answer ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
        if response.status_code >= 400:
            raise self._refusal(response)
        try:
            return response.json()
        except ValueError:
            raise ServerError(f"{self._where()}: {path} did not reply with JSON") from None

    def _refusal(self, response) -> ServerError:
        try:
            detail = response.json()
            detail = detail.get("error", detail) if isinstance(detail, dict) else detail
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        except ValueError:
            detail = response.text
        text = " ".join(str(detail).split())[:300]
        kind = ContextOverflowFromServer if _is_overflow(text) else ServerError
        return kind(f"{self._where()}: the model server refused the request (HTTP {response.status_code}: {text})")

    def _probe(self) -> Features:
        import httpx

        features = Features()
        try:
            response = self.http.get("/v1/models")
        except httpx.HTTPError as exc:
            raise ServerError(f"{self._where()}: no model server answers there ({type(exc).__name__}: "
                              f"{str(exc)[:200]}); start one (docs/serve.md) or unset {self.setting}") from None
        if response.status_code in (401, 403):
            raise ServerError(f"{self._where()}: the model server refused the key (HTTP {response.status_code}): "
                              "set KAIZEN_LLM_API_KEY")
        if response.status_code >= 400:
            raise self._refusal(response)
        try:
            models = response.json().get("data") or []
            features.model = str(models[0]["id"])
            features.n_ctx = models[0].get("max_model_len")  # vLLM says it here
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise ServerError(f"{self._where()}: /v1/models lists no model: is it an OpenAI-compatible "
                              "server?") from None
        if features.n_ctx is None:
            features.n_ctx = self._props_n_ctx()
        features.tokenizer = self._find_tokenizer()
        features.json_format = self._find_json_format(features.model)
        features.logprobs = self._has_logprobs(features.model)
        if features.tokenizer is None:
            features.missing.append("a tokenizer endpoint (token budgets are estimated from characters)")
        if features.json_format is None:
            features.missing.append("JSON-schema replies (replies are validated but not constrained)")
        if not features.logprobs:
            features.missing.append("logprobs (the context grade reads a constrained yes/no reply instead)")
        if features.n_ctx is None:
            features.missing.append(f"its context window (KAIZEN_LLM_CTX={self.settings.ctx} is assumed)")
        return features

    def _props_n_ctx(self) -> int | None:
        try:
            response = self.http.get("/props")  # llama-server
            if response.status_code < 400:
                data = response.json()
                value = (data.get("default_generation_settings") or {}).get("n_ctx") or data.get("n_ctx")
                return int(value) if value else None
        except Exception:
            pass
        return None

    def _find_tokenizer(self) -> tuple[str, str, str, str] | None:
        for tokenize, key, detokenize, text_key in _TOKENIZERS:
            try:
                response = self.http.post(tokenize, json={key: "Kaizen"})
                if response.status_code < 400 and isinstance(response.json().get("tokens"), list):
                    return tokenize, key, detokenize, text_key
            except Exception:
                continue
        return None

    def _find_json_format(self, model: str) -> str | None:
        for kind in ("json_schema", "json_object"):
            body = {"model": model, "messages": [{"role": "user", "content": 'Reply {"ok": true} as JSON.'}],
                    "max_tokens": 12, "temperature": 0.0, "response_format": self._response_format(kind, PROBE_SCHEMA)}
            try:
                reply = self._post("/v1/chat/completions", body)
                value = json.loads(reply["choices"][0]["message"]["content"] or "")
            except (ServerError, ValueError, KeyError, IndexError, TypeError):
                continue
            if isinstance(value, dict) and isinstance(value.get("ok"), bool):
                return kind
        return None

    def _has_logprobs(self, model: str) -> bool:
        body = {"model": model, "messages": [{"role": "user", "content": "Answer yes or no: is water wet?"}],
                "max_tokens": 1, "temperature": 0.0, "logprobs": True, "top_logprobs": 5}
        try:
            return bool(_top_logprobs(self._post("/v1/chat/completions", body)))
        except ServerError:
            return False

    @staticmethod
    def _response_format(kind: str, schema: dict) -> dict:
        if kind == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
        return {"type": "json_object", "schema": schema}

    @property
    def notice(self) -> str | None:
        """One line for the person starting Kaizen when the server lacks something the in-process model has."""
        if not self.features.missing:
            return None
        return f"the model server at {self.url} lacks " + "; ".join(self.features.missing)

    @property
    def has_logprobs(self) -> bool:
        return self.features.logprobs

    def body(self, messages: Sequence[dict], max_tokens: int, **extra) -> dict:
        s = self.settings
        return {"model": self.features.model, "messages": list(messages), "max_tokens": max_tokens,
                "temperature": s.temperature, "repeat_penalty": s.repeat_penalty, "seed": 1234,
                "cache_prompt": True, **extra}

    def record(self, usage: Usage) -> None:
        with self._calls_lock:
            self.calls.append(usage)
            if len(self.calls) > 1000:
                del self.calls[:500]

    # -- tokens --------------------------------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return int(self.features.n_ctx or self.settings.ctx)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 (one ServerLLM per server and process)
    def _tokens(self, text: str) -> tuple[int, ...]:
        path, key, _, _ = self.features.tokenizer
        return tuple(self._post(path, {key: text})["tokens"])

    def tokenize(self, text: str) -> list[int]:
        if self.features.tokenizer is None:
            raise LLMError(f"{self._where()}: the model server has no tokenizer endpoint")
        return list(self._tokens(text))

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        if self.features.tokenizer is None:
            return estimated_tokens(text)
        return len(self._tokens(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` that is at most `max_tokens` tokens (by the server's tokenizer)."""
        if self.count_tokens(text) <= max_tokens:
            return text
        if self.features.tokenizer is None:
            return text[: max(0, max_tokens) * 3]
        _, _, path, text_key = self.features.tokenizer
        tokens = list(self._tokens(text))[: max(0, max_tokens)]
        return str(self._post(path, {"tokens": tokens}).get(text_key, ""))

    def count_prompt(self, messages: Sequence[dict]) -> int:
        """The prompt's tokens: each message's text plus a few for its role markers (the server applies its chat
        template; what it really read is recorded from its reply)."""
        return sum(self.count_tokens(str(m.get("content") or "")) + 5 for m in messages) + 3

    def warm(self, messages: Sequence[dict]) -> int:
        """Have the server read `messages` into its prompt cache now (one generated token)."""
        _yield()
        reply = self._post("/v1/chat/completions", self.body(messages, 1))
        usage = reply.get("usage") or {}
        return int(usage.get("prompt_tokens") or 0)

    def reset(self) -> None:
        """The server's cache is its own: nothing to forget here."""

    # -- calls -----------------------------------------------------------------------------------------------------
    def json_chat(self, messages: list[dict], schema: dict, *, validate: Callable[[Any], Any] | None = None,
                  max_tokens: int = 64, kind: str = "json") -> JSONResult:
        """A reply constrained to `schema` by the server, parsed and validated; never raises for bad output or a
        refused request (both are recorded failures)."""
        usage = Usage(kind=kind)
        extra = {}
        if self.features.json_format is not None:
            extra["response_format"] = self._response_format(self.features.json_format, schema)
        _yield()
        started = time.perf_counter()
        try:
            reply = self._post("/v1/chat/completions", self.body(messages, max_tokens, **extra))
            choice = reply["choices"][0]
            raw = choice["message"].get("content") or ""
            usage.finish_reason = choice.get("finish_reason")
        except (ServerError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return JSONResult(ok=False, error=f"model server: {exc}", usage=usage)
        finally:
            usage.total_ms = (time.perf_counter() - started) * 1000
            self.record(usage)
        _count(usage, reply)
        return parse_json_reply(raw, validate, usage)

    def yes_probability(self, messages: list[dict], *, kind: str = "yes_no") -> YesNoResult:
        """P(yes) / (P(yes) + P(no)) for the reply's first token, from the server's top log-probabilities."""
        usage = Usage(kind=kind, finish_reason="scored")
        if not self.features.logprobs:
            return YesNoResult(ok=False, error="the model server gives no logprobs", usage=usage)
        _yield()
        started = time.perf_counter()
        try:
            reply = self._post("/v1/chat/completions", self.body(messages, 1, logprobs=True,
                                                                 top_logprobs=TOP_LOGPROBS, temperature=0.0))
        except ServerError as exc:
            return YesNoResult(ok=False, error=f"model server: {exc}", usage=usage)
        finally:
            usage.total_ms = usage.ttft_ms = (time.perf_counter() - started) * 1000
            self.record(usage)
        _count(usage, reply)
        usage.completion_tokens = 0
        top = _top_logprobs(reply)
        p_yes = sum(math.exp(lp) for token, lp in top if token.strip().lower() == "yes")
        p_no = sum(math.exp(lp) for token, lp in top if token.strip().lower() == "no")
        if not p_yes + p_no > 0.0:
            return YesNoResult(ok=False, error="no probability on yes or no", usage=usage)
        return YesNoResult(ok=True, p_yes=p_yes / (p_yes + p_no), mass=min(1.0, p_yes + p_no), usage=usage)


class ContextOverflowFromServer(ServerError, ContextOverflow):
    """The server said the prompt does not fit its context window."""


def _is_overflow(text: str) -> bool:
    text = text.lower()
    return "context" in text and any(w in text for w in ("exceed", "too long", "overflow", "maximum", "larger"))


def estimated_tokens(text: str) -> int:
    """Without the server's tokenizer: about 4 characters a token for Latin text, 1 for CJK."""
    wide = sum(1 for ch in text if ord(ch) > 0x2E80)
    return max(1, wide + (len(text) - wide + 3) // 4)


def _top_logprobs(reply: dict) -> list[tuple[str, float]]:
    """[(token, logprob)] of the first generated token's top alternatives (empty when the server sent none)."""
    try:
        first = reply["choices"][0]["logprobs"]["content"][0]
    except (KeyError, IndexError, TypeError):
        return []
    top = first.get("top_logprobs") or []
    pairs = [(str(t.get("token", "")), float(t["logprob"])) for t in top if t.get("logprob") is not None]
    return [(t, lp) for t, lp in pairs if math.isfinite(lp)]


def _count(usage: Usage, reply: dict) -> None:
    counts = reply.get("usage") or {}
    usage.prompt_tokens = int(counts.get("prompt_tokens") or 0)
    usage.completion_tokens = int(counts.get("completion_tokens") or 0)
    timings = reply.get("timings") or {}  # llama-server: what it evaluated after its cache
    processed = timings.get("prompt_n")
    usage.prompt_processed = int(processed) if processed is not None else usage.prompt_tokens


class ServerChatStream(ChatStream):
    """agent.llm.ChatStream over the server: iterate for text pieces; afterwards `.text` and `.usage` hold the
    whole reply and its counts."""

    def __iter__(self) -> Iterator[str]:
        import httpx

        llm, usage = self._llm, self.usage
        body = llm.body(self._messages, self._max_tokens, stream=True, stream_options={"include_usage": True},
                        **({"stop": self._stop} if self._stop else {}))
        _yield()
        pieces: list[str] = []
        started = time.perf_counter()
        try:
            with llm.http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise llm._refusal(response)
                # leaving the block early (a stop) closes the connection: the server stops generating
                yield from self.read(self._events(response), started, pieces)
        except httpx.HTTPError as exc:
            raise ServerError(f"{llm._where()}: the model server went away mid-answer ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
        finally:
            self.text = "".join(pieces)
            usage.total_ms = (time.perf_counter() - started) * 1000
            if not usage.completion_tokens:
                usage.completion_tokens = len(pieces)  # servers that report no usage stream one token per event
            if not usage.prompt_tokens:
                usage.prompt_tokens = usage.prompt_processed = llm.count_prompt(self._messages)
            llm.record(usage)

    def _events(self, response) -> Iterator[dict]:
        """The server-sent events' JSON, up to `[DONE]`; the usage event's counts go into `usage`."""
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if isinstance(event, dict):
                if event.get("usage"):
                    _count(self.usage, event)
                yield event


ServerLLM.stream_class = ServerChatStream

__all__ = ["ServerLLM", "ServerError", "Features", "estimated_tokens"]
