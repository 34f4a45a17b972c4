"""The local judge: ragas's instructor-style LLM interface on the process's llama.cpp model.

ragas's current metrics (`ragas.metrics.collections`) call `llm.agenerate(prompt, ResponseModel)` and expect a
validated pydantic object back. `LlamaJudge` answers that with one `create_chat_completion` constrained by the
response model's JSON schema, tightened so a small model cannot ramble or go out of range (llama.cpp ignores
integer minimum/maximum, so bounded integers become `enum`s; lists hold 1-8 items; strings are capped). The reply
is checked against the tightened schema and then by the pydantic model; anything else raises `JudgeReplyError`,
which the metric runner turns into a NULL score with the reason (never NaN, never a crash).

- Settings (eval.settings.EvalSettings): KAIZEN_JUDGE_MODEL (a .gguf path; default: the chat model, so one loaded
  model serves the agent and the judge), KAIZEN_JUDGE_MAX_TOKENS (longest judge reply), KAIZEN_JUDGE_CONTEXT_TOKENS
  (each retrieved context is cut to this many tokens).
- Every call goes through `LLM.json_chat`, i.e. behind the model's lock.
- `agenerate` yields to the event loop once before its (blocking) call, so when a metric is run over many rows at
  once the calls come out grouped by prompt step: every row's first step, then every row's second step. Steps
  share their instruction and examples, so llama.cpp reuses that prompt prefix from its KV cache.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")  # also when imported outside the CLI (worker, tests)

from pydantic import BaseModel  # noqa: E402
from ragas.llms import InstructorBaseRagasLLM  # noqa: E402

from eval.settings import EvalSettings  # noqa: E402
from store.errors import KaizenError

MAX_LIST_ITEMS = 8
MAX_STRING_CHARS = 300
MAX_REASON_CHARS = 160  # reasons are read by nobody but cost generation time: keep them short
DEFAULT_MAX_TOKENS = EvalSettings.model_fields["judge_max_tokens"].default
DEFAULT_CONTEXT_TOKENS = EvalSettings.model_fields["judge_context_tokens"].default

# Errors of the judge calls made on behalf of the current row (metrics such as ResponseGroundedness swallow
# exceptions and return NaN; the runner reads this to say why).
call_errors: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("kaizen_judge_errors", default=None)


class JudgeReplyError(KaizenError, ValueError):
    """The judge's reply was empty, cut off, not JSON, or outside the schema; the message says which."""


# -- schemas --------------------------------------------------------------------------------------------------
def _int_choices(description: str | None) -> list[int]:
    """Bounded integers as the ragas prompts describe them: "(0/1)", "(0, 1, or 2)", "(0, 2, or 4)"."""
    for group in re.findall(r"\(([^()]*)\)", description or ""):
        numbers = re.findall(r"\d+", group)
        if len(numbers) >= 2 and re.fullmatch(r"[\d\s,/or]+", group):
            return sorted({int(n) for n in numbers})
    return [0, 1]


def _inline(schema: dict, defs: dict) -> dict:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return _inline(copy.deepcopy(defs[name]), defs)
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _inline(schema["allOf"][0], defs)
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: _inline(v, defs) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _inline(out["items"], defs)
    return out


def _tighten(schema: dict, field: str = "") -> dict:
    schema = {k: v for k, v in schema.items() if k not in ("title", "default", "examples")}
    kind = schema.get("type")
    if kind == "object":
        schema["properties"] = {k: _tighten(v, k) for k, v in schema.get("properties", {}).items()}
        schema["required"] = list(schema["properties"])
        schema["additionalProperties"] = False
    elif kind == "array":
        schema["items"] = _tighten(schema.get("items", {}), field)
        schema["minItems"] = 1
        schema["maxItems"] = MAX_LIST_ITEMS
    elif kind == "string":
        limit = MAX_REASON_CHARS if "reason" in field.lower() else MAX_STRING_CHARS
        schema["minLength"] = 1
        schema["maxLength"] = min(schema.get("maxLength", limit), limit)
    elif kind == "integer":
        schema = {"type": "integer", "enum": _int_choices(schema.get("description")),
                  **({"description": schema["description"]} if "description" in schema else {})}
    return schema


def tight_schema(model: type[BaseModel]) -> dict:
    """The response model's JSON schema, self-contained and bounded for llama.cpp's grammar."""
    raw = model.model_json_schema()
    defs = raw.pop("$defs", {})
    return _tighten(_inline(raw, defs))


def check_schema(value: Any, schema: dict, path: str = "$") -> None:
    """Validate a parsed reply against the subset of JSON Schema `tight_schema` produces; raise ValueError."""
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            raise ValueError(f"{path}: expected an object")
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise ValueError(f"{path}: missing {', '.join(missing)}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                check_schema(value[key], sub, f"{path}.{key}")
    elif kind == "array":
        if not isinstance(value, list):
            raise ValueError(f"{path}: expected a list")
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            raise ValueError(f"{path}: {len(value)} items, expected {schema.get('minItems', 0)}-"
                             f"{schema.get('maxItems')}")
        for i, item in enumerate(value):
            check_schema(item, schema.get("items", {}), f"{path}[{i}]")
    elif kind == "string":
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string")
        if not value.strip():
            raise ValueError(f"{path}: empty string")
        if len(value) > schema.get("maxLength", len(value)):
            raise ValueError(f"{path}: longer than {schema['maxLength']} characters")
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected a whole number")
        if "enum" in schema and value not in schema["enum"]:
            raise ValueError(f"{path}: {value} is not one of {schema['enum']}")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: expected a number")
    elif kind == "boolean" and not isinstance(value, bool):
        raise ValueError(f"{path}: expected true or false")


# -- the judge ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class JudgeStats:
    calls: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    prompt_processed: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class LlamaJudge(InstructorBaseRagasLLM):
    """A ragas LLM backed by one `agent.llm.LLM` (shared, behind its lock)."""

    SYSTEM = ("You are a strict, careful evaluator. Follow the instructions exactly and reply only with the JSON "
              "object they ask for. Judge only from the text you are given.")

    def __init__(self, llm, max_tokens: int | None = None, context_tokens: int | None = None):
        self.llm = llm
        self.max_tokens = max_tokens or DEFAULT_MAX_TOKENS  # load_judge passes KAIZEN_JUDGE_MAX_TOKENS
        self.context_tokens = context_tokens or DEFAULT_CONTEXT_TOKENS  # and KAIZEN_JUDGE_CONTEXT_TOKENS
        self.stats = JudgeStats()
        self._schemas: dict[type, dict] = {}

    @property
    def name(self) -> str:
        return self.llm.name

    def schema_for(self, model: type[BaseModel]) -> dict:
        if model not in self._schemas:
            self._schemas[model] = tight_schema(model)
        return self._schemas[model]

    def messages(self, prompt: str) -> list[dict]:
        return [{"role": "system", "content": self.SYSTEM}, {"role": "user", "content": prompt}]

    def generate(self, prompt: str, response_model: type[BaseModel]):
        schema = self.schema_for(response_model)

        def validate(value):
            check_schema(value, schema)
            return response_model.model_validate(value)

        started = time.perf_counter()
        result = self.llm.json_chat(self.messages(prompt), schema, validate=validate, max_tokens=self.max_tokens,
                                    kind=f"judge:{response_model.__name__}")
        stats = self.stats
        stats.calls += 1
        stats.seconds += time.perf_counter() - started
        stats.prompt_tokens += result.usage.prompt_tokens
        stats.prompt_processed += result.usage.prompt_processed
        stats.completion_tokens += result.usage.completion_tokens
        if not result.ok and result.raw and "control character" in (result.error or ""):
            result = self._lenient(result, validate)  # a raw newline inside a JSON string is harmless
        if not result.ok:
            stats.failures += 1
            if not (result.raw or "").strip() and "cut off" not in (result.error or ""):
                reason = f"empty judge reply ({result.error})"
            else:
                reason = result.error or "invalid judge reply"
            reason = f"{response_model.__name__}: {reason}"
            errors = call_errors.get()
            if errors is not None:
                errors.append(reason)
            raise JudgeReplyError(reason)
        return result.value

    @staticmethod
    def _lenient(result, validate):
        import json

        try:
            value = validate(json.loads(result.raw, strict=False))
        except (TypeError, ValueError, KeyError):
            return result
        return dataclasses.replace(result, ok=True, value=value, error=None)

    async def agenerate(self, prompt: str, response_model: type[BaseModel]):
        await asyncio.sleep(0)  # let the other rows reach the same step first (prompt-prefix reuse)
        return self.generate(prompt, response_model)


def load_judge(model_path: str | Path | None = None, max_tokens: int | None = None, *,
               settings: EvalSettings | None = None, agent_settings=None) -> LlamaJudge:
    """The configured judge: `model_path`, else the server of KAIZEN_JUDGE_URL, else KAIZEN_JUDGE_MODEL, else the
    chat model (the same loaded instance, or the same model server, the agent uses in this process).
    `settings` / `agent_settings` default to EvalSettings() / AgentSettings() (the judge is a long-lived object,
    loaded once per process)."""
    from agent.llm import LLMSettings, get_llm
    from agent.model_files import chat_model_path, judge_model_path
    from agent.settings import AgentSettings

    settings = settings or EvalSettings()
    agent_settings = agent_settings or AgentSettings()
    llm_settings = LLMSettings.from_settings(agent_settings)
    if model_path is not None:
        llm_settings = dataclasses.replace(llm_settings, url=None,
                                           model_path=chat_model_path(model_path, "--judge-model"))
    elif settings.judge_url is not None:
        llm_settings = dataclasses.replace(llm_settings, url=settings.judge_url, model_path=None)
    elif settings.judge_model is not None or llm_settings.url is None:
        path = judge_model_path(settings.judge_model, agent_settings.chat_model)
        if llm_settings.url is not None or path.resolve() != chat_model_path(agent_settings.chat_model).resolve():
            llm_settings = dataclasses.replace(llm_settings, url=None, model_path=path)
    return LlamaJudge(get_llm(llm_settings), max_tokens=max_tokens or settings.judge_max_tokens,
                      context_tokens=settings.judge_context_tokens)


__all__ = ["LlamaJudge", "JudgeReplyError", "JudgeStats", "load_judge", "tight_schema", "check_schema",
           "call_errors"]
