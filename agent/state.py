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
    # The vector score (0.2 x chunk + 0.8 x best-sentence cosine, as search ranks) for a chunk to count as relevant.
    # At 0.83 the top hit passes for 99.0% of ClapNQ dev's answerable questions and 86.6% of its unanswerable ones
    # (99.8% of JSQuAD's); the whole-passage cosine at 0.82, before sentence vectors, passed 99.5% / 92.1%.
    relevance_min: float = 0.83
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


# How the grade decides, per chat model (a lower-case piece of the GGUF file name): "probability" reads P(yes) /
# (P(yes) + P(no)) for the reply's first word and needs the threshold, chosen on ClapNQ dev questions 0-29 and
# confirmed on 30-49 (README, "How answering works"); "reply" is the greedy JSON-constrained "yes"/"no" reply.
# A model not listed keeps the reply: a probability threshold is only worth having where it was measured to rank.
GRADE_READING_BY_MODEL: tuple[tuple[str, str, float | None], ...] = (
    # leans "yes" (P 0.43-0.92 on dev contexts) but ranks the contexts that answer higher (AUC 0.89). 0.7 until
    # sentence vectors made the retrieved contexts more topical: on questions 30-79 (first retrieval) 0.7 then
    # passed 94% of answerable contexts but rejected only 46% of unanswerable ones (0.72: 86% / 54%, 0.74: 84% /
    # 60%). The whole graph on questions 80-114 answered 74% / abstained 71% at 0.75, and six of its nine missed
    # answers had P(yes) 0.70-0.75; 0.73 is the balance (README, "How answering works").
    ("qwen2.5-coder-1.5b", "probability", 0.73),
    # its P(yes) does not rank (AUC 0.51) and as a first word it says "No" even to an obvious answer
    ("smollm2-135m", "reply", None),
)
GRADE_READING_FALLBACK: tuple[str, float | None] = ("reply", None)


def grade_reading(settings: AgentSettings, model_name: str) -> tuple[str, float | None, str]:
    """How the grade decides ("probability" or "reply"), the threshold on P(yes), and where they came from (all
    recorded with the grade). KAIZEN_GRADE_MIN_YES sets the threshold and so asks for the probability."""
    name = model_name.lower()
    reading, threshold, source = *GRADE_READING_FALLBACK, "default"
    for piece, how, value in GRADE_READING_BY_MODEL:
        if piece in name:
            reading, threshold, source = how, value, f"default for {piece}"
            break
    if settings.grade_min_yes is not None:
        reading, threshold, source = "probability", settings.grade_min_yes, "KAIZEN_GRADE_MIN_YES"
    return reading, threshold, source


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
