"""The graph's typed state, its settings, and the run-scoped context the nodes use.

State holds only plain data (it is checkpointed to Postgres per thread): the conversation `history` persists
across turns; everything else is reset by `turn_input` at the start of each turn. Loop counters (`rewrites`,
`regenerations`) and their caps live in the state; `recursion_limit` backs them.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TypedDict

from store.config import ConfigError, env_flag, env_float, env_int


class Hit(TypedDict, total=False):
    chunk_id: int
    document_id: int
    source_uri: str
    source_id: str | None
    title: str
    ordinal: int
    text: str
    score: float
    vector_rank: int | None
    text_rank: int | None
    vector_score: float | None
    text_score: float | None
    rank: int
    attempt: int
    query: str
    relevant: bool


class PassageDict(TypedDict, total=False):
    number: int
    chunk_id: int
    document_id: int
    source_uri: str
    title: str
    text: str
    trimmed: bool


class Turn(TypedDict, total=False):
    question: str
    standalone_query: str
    answer: str
    abstained: bool
    interaction_id: int | None


class AgentState(TypedDict, total=False):
    # -- the conversation (persists across turns of a thread)
    history: list[Turn]
    # -- this turn
    thread_id: str
    question: str  # as typed (recorded in full)
    prompt_question: str  # the question as sent to the model (cut to a token budget)
    started_at: float  # epoch seconds
    standalone_query: str
    query: str  # the next search query (the standalone query, then each rewrite)
    queries: list[str]  # every search query tried, in order
    hits: list[Hit]  # the latest retrieval, graded
    all_hits: list[Hit]  # every retrieval of the turn (recorded)
    kb_version: int | None
    context_answers: bool | None  # the model's yes/no: does the graded context contain the answer?
    rewrites: int
    max_rewrites: int
    regenerations: int
    max_regenerations: int
    passages: list[PassageDict]  # what the answer prompt's context holds, numbered [1]..[n]
    trimmed: int
    answer: str
    abstained: bool
    stopped: bool
    verified: bool | None
    retry: bool
    warning: str | None
    citations: list[dict]
    grades: list[dict]
    gap_reason: str | None
    timings: dict[str, float]
    usage: dict[str, Any]
    interaction_id: int | None
    notices: list[str]


@dataclass(frozen=True)
class AgentSettings:
    top_k: int = 4  # chunks retrieved per search
    max_rewrites: int = 1  # query rewrites when nothing relevant came back
    max_regenerations: int = 1  # stricter answers when the check fails
    relevance_min: float = 0.82  # e5 cosine (query vs passage) for a chunk to count as relevant
    grounded_min: float = 0.5  # share of the answer's words found in the cited passages
    llm_grade: bool = True  # the model's yes/no "does the context answer it?", on the answer prompt's own prefix
    llm_check: bool = True  # the model's own yes/no check, on the KV-cached answer conversation
    # P(yes) / (P(yes) + P(no)) the grade needs for "the context answers"; None: the chat model's default below.
    grade_min_yes: float | None = None
    history_turns: int = 3  # earlier turns shown to the follow-up rewriter
    question_max_tokens: int = 768  # longer questions are cut for the prompt (recorded in full)

    @classmethod
    def from_env(cls) -> "AgentSettings":
        return cls(
            top_k=env_int("KAIZEN_TOP_K", cls.top_k, minimum=1),
            max_rewrites=env_int("KAIZEN_MAX_REWRITES", cls.max_rewrites, minimum=0),
            max_regenerations=env_int("KAIZEN_MAX_REGENERATIONS", cls.max_regenerations, minimum=0),
            relevance_min=env_float("KAIZEN_RELEVANCE_MIN", cls.relevance_min),
            grounded_min=env_float("KAIZEN_GROUNDED_MIN", cls.grounded_min),
            llm_grade=env_flag("KAIZEN_LLM_GRADE", cls.llm_grade),
            llm_check=env_flag("KAIZEN_LLM_CHECK", cls.llm_check),
            grade_min_yes=_optional_probability("KAIZEN_GRADE_MIN_YES"),
            history_turns=env_int("KAIZEN_HISTORY_TURNS", cls.history_turns, minimum=0),
            question_max_tokens=env_int("KAIZEN_QUESTION_MAX_TOKENS", cls.question_max_tokens, minimum=32),
        )

    def recursion_limit(self) -> int:
        """Steps one turn can take at most, with a margin; the caps in the state end every loop before this."""
        return 4 + 3 * (self.max_rewrites + 1) + 2 * (self.max_regenerations + 1) + 4


# The grade's threshold on P(yes) per chat model: a lower-case piece of the GGUF file name, and the value chosen on
# ClapNQ dev questions (tuned on one part, confirmed on another: README, "Answering"). A model not listed gets 0.5,
# i.e. the more likely of yes and no, which is what a greedy yes/no reply would say.
GRADE_MIN_YES_BY_MODEL: tuple[tuple[str, float], ...] = (
    ("qwen2.5-coder-1.5b", 0.7),  # leans "yes" (0.43-0.92 here), but ranks answering contexts higher (AUC 0.92)
    ("smollm2-135m", 0.15),  # leans "no" (0.10-0.30); no ranking (AUC 0.51): 0.15 keeps its former balance
)
GRADE_MIN_YES_FALLBACK = 0.5


def grade_min_yes(settings: AgentSettings, model_name: str) -> tuple[float, str]:
    """The grade's threshold and where it came from (recorded with every grade)."""
    if settings.grade_min_yes is not None:
        return settings.grade_min_yes, "KAIZEN_GRADE_MIN_YES"
    name = model_name.lower()
    for piece, value in GRADE_MIN_YES_BY_MODEL:
        if piece in name:
            return value, f"default for {piece}"
    return GRADE_MIN_YES_FALLBACK, "default"


def _optional_probability(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    value = env_float(name, 0.5)
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name}={value} must be between 0 and 1")
    return value


@dataclass
class Context:
    """Run-scoped resources (not checkpointed): the store, the embedder, the model, settings, a stop flag."""

    store: Any
    embedder: Any
    llm: Any
    settings: AgentSettings = field(default_factory=AgentSettings)
    cancel: threading.Event = field(default_factory=threading.Event)


def turn_input(question: str, settings: AgentSettings) -> AgentState:
    """The update that starts a turn: the question, and every per-turn field back to its initial value."""
    return AgentState(
        question=question,
        prompt_question=question,
        started_at=time.time(),
        standalone_query=question,
        query=question,
        queries=[],
        hits=[],
        all_hits=[],
        kb_version=None,
        context_answers=None,
        rewrites=0,
        max_rewrites=settings.max_rewrites,
        regenerations=0,
        max_regenerations=settings.max_regenerations,
        passages=[],
        trimmed=0,
        answer="",
        abstained=False,
        stopped=False,
        verified=None,
        retry=False,
        warning=None,
        citations=[],
        grades=[],
        gap_reason=None,
        timings={},
        usage={"llm_calls": 0, "prompt_tokens": 0, "prompt_processed": 0, "completion_tokens": 0},
        interaction_id=None,
        notices=[],
    )
