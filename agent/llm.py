"""The llama.cpp runtime: one loaded model per process, shared by every node of the graph (and by the judge).

- Settings: KAIZEN_CHAT_MODEL and KAIZEN_LLM_* (declared in agent.settings.AgentSettings);
  `LLMSettings.from_settings` resolves them into what the runtime loads.
- Prompts are rendered with the GGUF's own chat template (the one `create_chat_completion` uses), so any GGUF
  given by path works, and token counts are exact.
- `stream_chat` yields text pieces and, when done, reports prompt tokens (all, and those actually processed after
  llama.cpp's KV-cache prefix reuse), generated tokens and time to first token. A `threading.Event` stops it.
- `json_chat` constrains the reply with a JSON schema (llama.cpp grammar), validates it, and returns a typed
  result, or a recorded failure: it never raises for a malformed reply.
- `yes_probability` reads the model's next-token distribution where a yes/no reply would start and returns
  P(yes) / (P(yes) + P(no)): one forward pass, no sampling, and a score a threshold can act on.
- The model is used behind a lock: a process has one KV cache, and llama.cpp is not re-entrant.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from store.errors import KaizenError

from .model_files import ModelFileError, chat_model_path
from .settings import AgentSettings

log = logging.getLogger(__name__)


class LLMError(KaizenError, RuntimeError):
    """The model cannot be used as configured; the message is one line for a person and names the setting."""


class ContextOverflow(LLMError):
    pass


@dataclass(frozen=True)
class LLMSettings:
    """What one loaded model is: the resolved .gguf file and its runtime parameters (the settings behind them are
    declared, with their defaults and bounds, in agent.settings.AgentSettings)."""

    model_path: Path | None  # None with a model server
    threads: int
    ctx: int
    max_tokens: int
    temperature: float = 0.0
    repeat_penalty: float = 1.1
    url: str | None = None  # an OpenAI-compatible model server instead of the file (agent.llm_server)
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 300.0
    state_dir: Path | None = None  # where the shared prompt prefix's KV cache is saved (agent.prefix_state)

    @classmethod
    def from_settings(cls, settings: AgentSettings, model_path: Path | None = None) -> "LLMSettings":
        """The chat model of `settings` (or `model_path`, e.g. the judge's) with its runtime parameters, or the
        model server of KAIZEN_LLM_URL; raises ModelFileError naming KAIZEN_CHAT_MODEL when the file is missing or
        not a GGUF."""
        url = settings.llm_url if model_path is None else None
        if model_path is None and url is None:
            model_path = chat_model_path(settings.chat_model)
        return cls(
            model_path=model_path,
            url=url,
            api_key=settings.llm_api_key,
            timeout=settings.llm_timeout,
            threads=settings.llm_threads,
            ctx=settings.llm_ctx,
            max_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
            repeat_penalty=settings.llm_repeat_penalty,
            state_dir=settings.model_cache / "prefix-states",
        )


@dataclass
class Usage:
    """One LLM call. prompt_tokens is the whole prompt; prompt_processed what llama.cpp had to evaluate after
    reusing the KV cache's common prefix."""

    kind: str = ""
    prompt_tokens: int = 0
    prompt_processed: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    total_ms: float = 0.0
    finish_reason: str | None = None
    stopped: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class YesNoResult:
    """A yes/no read from the next-token distribution: `p_yes` = P(yes) / (P(yes) + P(no)) for the reply's first
    word; `mass` is how much of the whole distribution yes and no hold (a low mass means the model wanted to say
    something else). `error` (and ok=False) when llama.cpp refused the prompt."""

    ok: bool
    p_yes: float | None = None
    mass: float | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass
class JSONResult:
    """A constrained reply: `value` when it parsed and validated, else `error` (and the raw text) for the record."""

    ok: bool
    value: Any = None
    raw: str = ""
    error: str | None = None
    usage: Usage = field(default_factory=Usage)


# -- yielding the CPU -----------------------------------------------------------------------------------------------
PREFILL_PIECE = 32  # prompt tokens evaluated between two calls of the yield hook (a second or two on one thread)
_yield_hook: Callable[[], None] | None = None


def yield_to(hook: Callable[[], None] | None) -> None:
    """Install a hook (or None) that every model of this process calls before each piece of its work: before a
    prompt, between small pieces of the prompt, and before each generated token. It may block: the worker's
    blocks while a person is being answered (agent.turns.PersonFirst), which pauses its model, KV cache intact."""
    global _yield_hook
    _yield_hook = hook


def _yield() -> None:
    if _yield_hook is not None:
        _yield_hook()


def _yield_per_token():
    """A llama.cpp logits processor that calls the yield hook before each sampled token (None without a hook)."""
    if _yield_hook is None:
        return None
    from llama_cpp import LogitsProcessorList

    def processor(input_ids, scores):
        _yield()
        return scores

    return LogitsProcessorList([processor])


class ChatStream:
    """Iterate for text pieces; afterwards `.text` and `.usage` hold the whole reply and its counts."""

    def __init__(self, llm: "LLM", messages: list[dict], max_tokens: int, cancel: threading.Event | None, kind: str,
                 stop: list[str] | None = None):
        self._llm = llm
        self._stop = stop
        self._messages = messages
        self._max_tokens = max_tokens
        self._cancel = cancel
        self.text = ""
        self.usage = Usage(kind=kind)

    def __iter__(self) -> Iterator[str]:
        llm = self._llm
        with llm.lock:
            tokens = llm.prompt_tokens(self._messages)
            llm.check_fits(len(tokens), self._max_tokens)
            usage = self.usage
            usage.prompt_tokens = len(tokens)
            usage.prompt_processed = len(tokens) - llm.cached_prefix(tokens)
            started = time.perf_counter()
            pieces = []
            llm.prefill(tokens)
            stream = llm.model.create_chat_completion(
                messages=self._messages,
                max_tokens=self._max_tokens,
                stream=True,
                stop=self._stop,
                logits_processor=_yield_per_token(),
                **llm.sampling(),
            )
            try:
                yield from self.read(stream, started, pieces)
            finally:
                stream.close()
                self.text = "".join(pieces)
                usage.total_ms = (time.perf_counter() - started) * 1000
                usage.completion_tokens = llm.generated_since(len(tokens))
                llm.record(usage)

    def read(self, chunks: Iterable[dict], started: float, pieces: list[str]) -> Iterator[str]:
        """The text pieces of OpenAI-shaped stream chunks (llama-cpp-python's, or a model server's events), kept in
        `pieces`; notes the finish reason and the time to the first piece, and stops at the cancel event."""
        usage = self.usage
        for chunk in chunks:
            for choice in chunk.get("choices") or []:
                if choice.get("finish_reason"):
                    usage.finish_reason = choice["finish_reason"]
                piece = (choice.get("delta") or {}).get("content") or ""
                if piece:
                    if usage.ttft_ms is None:
                        usage.ttft_ms = (time.perf_counter() - started) * 1000
                    pieces.append(piece)
                    yield piece
            if self._cancel is not None and self._cancel.is_set():
                usage.stopped = True
                usage.finish_reason = "stopped"
                return

    def run(self, on_token: Callable[[str], None] | None = None) -> "ChatStream":
        for piece in self:
            if on_token is not None:
                on_token(piece)
        return self


class Streaming:
    """The streamed calls both backends share (this module's LLM and agent.llm_server.ServerLLM): `stream_class`
    is the ChatStream that talks to the model."""

    stream_class: type = ChatStream
    settings: LLMSettings

    def stream_chat(self, messages: list[dict], *, max_tokens: int | None = None,
                    cancel: threading.Event | None = None, kind: str = "generate",
                    stop: list[str] | None = None) -> ChatStream:
        return self.stream_class(self, messages, max_tokens or self.settings.max_tokens, cancel, kind, stop)

    def chat(self, messages: list[dict], *, max_tokens: int | None = None, kind: str = "chat") -> tuple[str, Usage]:
        stream = self.stream_chat(messages, max_tokens=max_tokens, kind=kind).run()
        return stream.text, stream.usage


class LLM(Streaming):
    """One llama.cpp model (a `llama_cpp.Llama`) with a lock, token counting and usage accounting."""

    def __init__(self, settings: LLMSettings):
        import llama_cpp

        self.settings = settings
        self.path = Path(settings.model_path)
        try:
            self.model = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=settings.ctx,
                n_threads=settings.threads,
                n_threads_batch=settings.threads,
                n_batch=512,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise LLMError(f"KAIZEN_CHAT_MODEL={self.path}: llama.cpp could not load it ({exc})") from None
        self.lock = threading.RLock()
        self.name = self.path.name
        self.calls: list[Usage] = []  # every call in this process, in order (nodes read the tail)
        self._word_token_cache: dict[str, frozenset[int]] = {}
        self._formatter = None
        handlers = getattr(self.model, "_chat_handlers", {})
        template = self.model.metadata.get("tokenizer.chat_template")
        self.notice = None
        if not template:  # loaded and usable, but it was not made to follow a conversation: say so once
            self.notice = (f"{self.path.name} has no chat template, so it is probably a base model, not a chat model: "
                           f"Kaizen prompts it in llama.cpp's llama-2 chat format and its answers may be poor "
                           f"(KAIZEN_CHAT_MODEL takes an instruct GGUF; `kaizen models` lists the named ones)")
            log.warning(self.notice)
        if template and "chat_template.default" in handlers:
            # Always the GGUF's own template, even where llama-cpp-python would guess a built-in format.
            self.model.chat_format = "chat_template.default"
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos = self.model.token_eos()
            bos = self.model.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self.model._model.token_get_text(eos) if eos != -1 else "",
                bos_token=self.model._model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )

    # -- tokens ----------------------------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.model.n_ctx()

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text)) if text else 0

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` that is at most `max_tokens` tokens (cut at a token boundary)."""
        tokens = self.tokenize(text)
        if len(tokens) <= max_tokens:
            return text
        return self.model.detokenize(tokens[: max(0, max_tokens)]).decode("utf-8", errors="ignore")

    def render(self, messages: Sequence[dict]) -> str:
        """The prompt text exactly as `create_chat_completion` builds it from the GGUF's chat template."""
        if self._formatter is not None:
            return self._formatter(messages=list(messages)).prompt
        # No template in the file: llama-cpp-python falls back to a built-in format (llama-2); use its formatter.
        from llama_cpp import llama_chat_format

        name = str(self.model.chat_format or "llama-2").replace("-", "").replace(".", "_")
        formatter = getattr(llama_chat_format, f"format_{name}", None)
        if formatter is None:
            return "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        return formatter(messages=list(messages)).prompt

    def prompt_tokens(self, messages: Sequence[dict]) -> list[int]:
        prompt = self.render(messages)
        added_special = self._formatter is not None
        return self.model.tokenize(prompt.encode("utf-8"), add_bos=not added_special, special=True)

    def count_prompt(self, messages: Sequence[dict]) -> int:
        return len(self.prompt_tokens(messages))

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading tokens of `tokens` llama.cpp already holds in its KV cache."""
        held = self.model._input_ids[: self.model.n_tokens]
        n = 0
        for a, b in zip(held, tokens):
            if a != b:
                break
            n += 1
        if n == len(tokens) and n > 0:
            n -= 1  # llama.cpp replays the last token to refresh the logits
        return n

    def prefill(self, tokens: Sequence[int]) -> None:
        """With a yield hook installed: evaluate the part of the prompt the KV cache lacks in small pieces,
        calling the hook between them, all but the last token (the call that follows replays it from the cache,
        as for any cached prefix). Without a hook, nothing: llama.cpp evaluates the prompt in its own batches."""
        if _yield_hook is None:
            return
        start = self.cached_prefix(tokens)
        self.model.n_tokens = start
        end = len(tokens) - 1
        for i in range(start, end, PREFILL_PIECE):
            _yield()
            self.model.eval(list(tokens[i:min(i + PREFILL_PIECE, end)]))

    def generated_since(self, prompt_len: int) -> int:
        # Every sampled token but the last one is evaluated into the context; the last (EOS or the one at the
        # length limit) is sampled but not evaluated.
        return max(0, self.model.n_tokens - prompt_len + 1)

    def check_fits(self, prompt_len: int, max_tokens: int) -> None:
        if prompt_len + max_tokens > self.n_ctx:
            raise ContextOverflow(
                f"the prompt ({prompt_len} tokens) plus the reply ({max_tokens}) do not fit the context window of "
                f"{self.n_ctx} tokens: raise KAIZEN_LLM_CTX or lower KAIZEN_LLM_MAX_TOKENS"
            )

    def warm(self, messages: Sequence[dict]) -> int:
        """Put `messages` into the KV cache now, so that the calls that start with them later only read what
        follows (the graph's shared prompt prefix: the REPL does this while a person types, `kaizen ask` before
        its question). From an empty cache they are loaded from the state a process saved before
        (agent.prefix_state), or evaluated and saved for the next one. Returns how many tokens were evaluated
        (0 when they were cached or loaded)."""
        from . import prefix_state

        tokens = self.prompt_tokens(messages)
        with self.lock:
            start = self.cached_prefix(tokens)
            if start >= len(tokens) - 1:
                return 0
            saved = None
            if start == 0 and self.settings.state_dir is not None:
                saved = prefix_state.state_path(self.settings.state_dir, self.path, self.n_ctx, tokens)
                if prefix_state.load(self.model, tokens, saved):
                    return 0
            self.model.n_tokens = start
            self.model.eval(list(tokens[start:]))
            if saved is not None:
                prefix_state.save(self.model, tokens, saved)
            return len(tokens) - start

    def reset(self) -> None:
        """Forget the KV cache (benchmarks use it to time a cold call)."""
        with self.lock:
            self.model.reset()
            self.model._ctx.kv_cache_clear() if hasattr(self.model._ctx, "kv_cache_clear") else None

    def sampling(self) -> dict:
        s = self.settings
        return {"temperature": s.temperature, "repeat_penalty": s.repeat_penalty, "seed": 1234}

    def record(self, usage: Usage) -> None:
        self.calls.append(usage)
        if len(self.calls) > 1000:
            del self.calls[:500]

    # -- calls -------------------------------------------------------------------------------------------------
    def json_chat(self, messages: list[dict], schema: dict, *, validate: Callable[[Any], Any] | None = None,
                  max_tokens: int = 64, kind: str = "json") -> JSONResult:
        """A reply constrained to `schema` (llama.cpp grammar), parsed and validated; never raises for bad output.

        llama.cpp's schema converter ignores integer minimum/maximum: bound numbers with `enum`."""
        usage = Usage(kind=kind)
        raw = ""
        try:
            with self.lock:
                tokens = self.prompt_tokens(messages)
                self.check_fits(len(tokens), max_tokens)
                usage.prompt_tokens = len(tokens)
                usage.prompt_processed = len(tokens) - self.cached_prefix(tokens)
                started = time.perf_counter()
                try:
                    self.prefill(tokens)
                    reply = self.model.create_chat_completion(
                        messages=messages,
                        max_tokens=max_tokens,
                        response_format={"type": "json_object", "schema": schema},
                        logits_processor=_yield_per_token(),
                        **self.sampling(),
                    )
                finally:
                    usage.total_ms = (time.perf_counter() - started) * 1000
                    usage.completion_tokens = self.generated_since(len(tokens))
                    self.record(usage)
            choice = reply["choices"][0]
            raw = choice["message"].get("content") or ""
            usage.finish_reason = choice.get("finish_reason")
            usage.completion_tokens = reply.get("usage", {}).get("completion_tokens", usage.completion_tokens)
        except ContextOverflow as exc:
            return JSONResult(ok=False, raw=raw, error=str(exc), usage=usage)
        except (ValueError, RuntimeError) as exc:  # llama.cpp refusing the request is a failed grade, not a crash
            return JSONResult(ok=False, raw=raw, error=f"llama.cpp: {exc}", usage=usage)
        return parse_json_reply(raw, validate, usage)

    def yes_probability(self, messages: list[dict], *, kind: str = "yes_no") -> YesNoResult:
        """P(yes) / (P(yes) + P(no)) for the first word of the reply to `messages` (each summed over yes/Yes/YES
        and no/No/NO), from one forward pass over the prompt: no token is sampled, so the reply is constrained
        to the two answers by construction.

        The prompt goes through the same KV cache as every other call: only the part after the longest cached
        prefix is evaluated, and what is evaluated stays cached for the next call (the answer reuses it)."""
        import numpy as np

        usage = Usage(kind=kind)
        try:
            with self.lock:
                tokens = self.prompt_tokens(messages)
                self.check_fits(len(tokens), 1)
                keep = self.cached_prefix(tokens)
                usage.prompt_tokens = len(tokens)
                usage.prompt_processed = len(tokens) - keep
                started = time.perf_counter()
                try:
                    model = self.model
                    self.prefill(tokens)
                    keep = self.cached_prefix(tokens)  # after prefill: all but the last token
                    model.n_tokens = keep
                    model.eval(tokens[keep:])
                    logits = np.ctypeslib.as_array(model._ctx.get_logits_ith(-1), shape=(model.n_vocab(),))
                    logits = logits.astype(np.float64)
                finally:
                    usage.total_ms = (time.perf_counter() - started) * 1000
                    usage.ttft_ms = usage.total_ms
                    usage.finish_reason = "scored"
                    self.record(usage)
        except ContextOverflow as exc:
            return YesNoResult(ok=False, error=str(exc), usage=usage)
        except (ValueError, RuntimeError) as exc:  # llama.cpp refusing the prompt is a failed grade, not a crash
            return YesNoResult(ok=False, error=f"llama.cpp: {exc}", usage=usage)
        probs = np.exp(logits - logits.max())
        total = float(probs.sum())
        p_yes = float(sum(probs[t] for t in self._word_tokens("yes")))
        p_no = float(sum(probs[t] for t in self._word_tokens("no")))
        if not np.isfinite(total) or not p_yes + p_no > 0.0:
            return YesNoResult(ok=False, error="no probability on yes or no", usage=usage)
        return YesNoResult(ok=True, p_yes=p_yes / (p_yes + p_no), mass=(p_yes + p_no) / total, usage=usage)

    def _word_tokens(self, word: str) -> frozenset[int]:
        """The first tokens of the word's spellings (word, Word, WORD) in this model's vocabulary (tokenized once
        per model)."""
        if word not in self._word_token_cache:
            spellings = (word, word.capitalize(), word.upper())
            self._word_token_cache[word] = frozenset(self.tokenize(w)[0] for w in spellings)
        return self._word_token_cache[word]


def parse_json_reply(raw: str, validate: Callable[[Any], Any] | None, usage: Usage | None = None) -> JSONResult:
    """Parse and validate a constrained reply. A malformed one becomes a failed result with the reason."""
    usage = usage or Usage()
    try:
        value = json.loads(raw)
    except (TypeError, ValueError) as exc:
        reason = "reply cut off at the token limit" if usage.finish_reason == "length" else "not valid JSON"
        return JSONResult(ok=False, raw=raw, error=f"{reason}: {exc}", usage=usage)
    if validate is not None:
        try:
            value = validate(value)
        except (TypeError, ValueError, KeyError) as exc:
            return JSONResult(ok=False, raw=raw, error=f"unexpected JSON: {exc}", usage=usage)
    return JSONResult(ok=True, value=value, raw=raw, usage=usage)


_cache: dict[tuple, LLM] = {}
_cache_lock = threading.Lock()


def get_llm(settings: LLMSettings | None = None):
    """The process's model for these settings (loaded once; every node and the judge share it): an `LLM`, or a
    `agent.llm_server.ServerLLM` when they name a server URL. Without settings: the chat model of AgentSettings()
    (read from the environment, as when a command starts)."""
    settings = settings or LLMSettings.from_settings(AgentSettings())
    if settings.url:
        key = ("url", settings.url, settings.api_key)
    else:
        key = (str(Path(settings.model_path).resolve()), settings.threads, settings.ctx)
    with _cache_lock:
        llm = _cache.get(key)
        if llm is None:
            if settings.url:
                from .llm_server import ServerLLM

                llm = ServerLLM(settings)
            else:
                llm = LLM(settings)
            _cache[key] = llm
        elif llm.settings != settings:
            llm.settings = settings  # max tokens / sampling changes need no reload
        return llm


__all__ = ["LLM", "Streaming", "LLMError", "LLMSettings", "ContextOverflow", "ModelFileError", "JSONResult",
           "YesNoResult", "Usage", "ChatStream", "get_llm", "parse_json_reply"]
