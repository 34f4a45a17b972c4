"""The agent's settings, declared once: the chat model and its llama.cpp runtime, and how a question is answered
(retrieval, grading, checking, follow-ups). Each is an environment variable `KAIZEN_<NAME>`; see store.settings for
how they are read (once, where a command or the `Agent` starts) and how a bad value is reported.

`agent.llm.LLMSettings.from_settings(settings)` turns the model fields into what the runtime loads (the resolved
.gguf path); `agent.state.grade_reading` gives KAIZEN_GRADE_MIN_YES its per-model default.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from store.settings import CORES, ConfigError, KaizenSettings, cpu_count, server_url

from .model_files import default_cache

DEFAULT_CTX = 4096
DEFAULT_MAX_TOKENS = 256
# The fields about the model and its runtime (LLMSettings.from_settings); the others are about answering.
MODEL_FIELDS = ("chat_model", "llm_url", "llm_api_key", "llm_timeout", "llm_threads", "llm_ctx", "llm_max_tokens",
                "llm_temperature", "llm_repeat_penalty")


class AgentSettings(KaizenSettings):
    """The chat model and how questions are answered."""

    # -- the model and its runtime (llama.cpp) -------------------------------------------------------------------
    chat_model: str | None = Field(None, json_schema_extra={
        "doc_default": "qwen2.5-1.5b (Qwen2.5-Coder-1.5B-Instruct, installed by `make install`)"},
        description="the chat model: a named model (qwen2.5-1.5b, smollm2; `kaizen models`) or a .gguf path")
    model_cache: Path = Field(default_factory=default_cache, json_schema_extra={
        "doc_default": "the per-user cache directory (~/.cache/kaizen)"},
        description="where downloaded model parts and assembled models are kept, shared by every checkout, with "
                    "each model's saved KV cache of the shared prompt prefix (prefix-states/)")
    llm_url: str | None = Field(None, description="an OpenAI-compatible model server (llama.cpp's server, vLLM) that "
                                "answers instead of the in-process model, e.g. http://127.0.0.1:8080 "
                                "(docs/serve.md); KAIZEN_CHAT_MODEL is then not loaded")
    llm_api_key: str | None = Field(None, repr=False, description="the model server's API key, sent as a bearer "
                                    "token")
    llm_timeout: float = Field(300.0, gt=0, description="seconds to wait for the model server's reply")
    llm_threads: int = Field(default_factory=cpu_count, ge=1, json_schema_extra=CORES,
                             description="threads llama.cpp uses")
    llm_ctx: int = Field(DEFAULT_CTX, ge=512, description="the model's context window in tokens")
    llm_max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=16, description="the longest answer in tokens (at most half "
                                                                       "of KAIZEN_LLM_CTX)")
    llm_temperature: float = Field(0.0, description="sampling temperature; 0 is greedy and reproducible")
    llm_repeat_penalty: float = Field(1.1, ge=1.0, description="llama.cpp's repeat penalty")

    # -- answering -----------------------------------------------------------------------------------------------
    top_k: int = Field(4, ge=1, description="chunks retrieved per search")
    max_rewrites: int = Field(1, ge=0, description="further searches per question: a rewritten query when nothing "
                              "relevant came back, the next-ranked chunks when the model said the relevant ones do "
                              "not answer")
    max_regenerations: int = Field(1, ge=0, description="stricter answers when the answer check fails")
    # The vector score (0.2 x chunk + 0.8 x best-sentence cosine, as search ranks) for a chunk to count as relevant.
    # At 0.83 the top hit passes for 99.0% of ClapNQ dev's answerable questions and 86.6% of its unanswerable ones
    # (99.8% of JSQuAD's); the whole-passage cosine at 0.82, before sentence vectors, passed 99.5% / 92.1%.
    relevance_min: float = Field(0.83, description="the vector score a retrieved chunk needs to count as relevant")
    context_tokens: int = Field(256, ge=0, description="tokens of passage text the model reads per question: the "
                                "best-matching sentences of the relevant chunks with their neighbours (0: whole "
                                "chunks)")
    grounded_min: float = Field(0.5, description="the share of the answer's words that must be found in the cited "
                                                 "passages")
    llm_grade: bool = Field(True, description="the model's yes/no \"does the context answer it?\", on the answer "
                                              "prompt's own prefix")
    llm_check: bool = Field(True, description="the model's own yes/no check of its answer, on the KV-cached answer "
                                              "conversation")
    grade_min_yes: float | None = Field(None, ge=0.0, le=1.0, json_schema_extra={
        "doc_default": "per chat model (0.71 for Qwen2.5-Coder-1.5B; SmolLM2 reads the greedy reply)"},
        description="P(yes) / (P(yes) + P(no)) the grade needs for \"the context answers\"; setting it makes every "
                    "model's grade read the probability")
    history_turns: int = Field(3, ge=0, description="earlier turns shown to the follow-up rewriter")
    question_max_tokens: int = Field(768, ge=32, description="longer questions are cut for the prompt (recorded in "
                                                             "full)")

    @field_validator("llm_url", mode="after")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return server_url(value, "KAIZEN_LLM_URL")

    @field_validator("model_cache", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @model_validator(mode="after")
    def _answer_fits(self) -> "AgentSettings":
        if self.llm_max_tokens > self.llm_ctx // 2:
            raise ConfigError(f"KAIZEN_LLM_MAX_TOKENS={self.llm_max_tokens} must be at most half of "
                              f"KAIZEN_LLM_CTX={self.llm_ctx}")
        return self

    def recursion_limit(self) -> int:
        """Steps one turn can take at most, with a margin; the caps in the state end every loop before this."""
        return 4 + 3 * (self.max_rewrites + 1) + 2 * (self.max_regenerations + 1) + 4


__all__ = ["AgentSettings", "DEFAULT_CTX", "DEFAULT_MAX_TOKENS", "MODEL_FIELDS"]
