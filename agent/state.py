"""The graph's typed state, its settings (declared in agent.settings), and the run-scoped context the nodes use.

State holds only plain data and two dataclasses, `Hit` and `Grade` (it is checkpointed to Postgres per thread;
agent.threads lets the checkpointer rebuild `CHECKPOINTED_TYPES`): the conversation `history` persists
across turns; everything else is reset by `turn_input` at the start of each turn. Loop counters (`rewrites`,
`regenerations`) and their caps live in the state; `recursion_limit` backs them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, TypedDict

from store.search import SearchHit

from .settings import AgentSettings


@dataclass
class Hit(SearchHit):
    """A search hit as the graph keeps it: the store's hit, where it ranked in which retrieval of the turn, and
    whether grading found it relevant."""

    rank: int = 0
    attempt: int = 0  # 0 for the first retrieval, 1 after the first rewrite, ...
    query: str = ""  # the search query that found it
    relevant: bool = False
    # The vector score it is graded by, when that is not its own `vector_score`: hits a rewritten query found are
    # graded against the (standalone) question, and None means the question could not be scored against it.
    question_score: float | None = None
    rescored: bool = False  # question_score applies

    @property
    def grade_score(self) -> float | None:
        return self.question_score if self.rescored else self.vector_score


@dataclass
class Grade:
    """One grader's verdict in a turn, as recorded in the `grades` table (`detail` becomes its jsonb column)."""

    grader: str
    verdict: str
    score: float | None = None
    detail: dict = field(default_factory=dict)
    parse_error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


CHECKPOINTED_TYPES: tuple[type, ...] = (Hit, Grade)


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
    widen: int  # how many times the search read on past chunks the model said do not answer
    max_rewrites: int
    regenerations: int
    max_regenerations: int
    # what the model reads of the relevant hits (agent.passages.choose), made once for the grade and the answer
    selection: dict | None
    passages: list[PassageDict]  # what the answer prompt's context holds, numbered [1]..[n]
    trimmed: int
    answer: str
    abstained: bool
    stopped: bool
    verified: bool | None
    retry: bool
    warning: str | None
    citations: list[dict]
    grades: list[Grade]
    gap_reason: str | None
    timings: dict[str, float]
    usage: dict[str, Any]
    interaction_id: int | None
    notices: list[str]


# How the grade decides, per chat model (a lower-case piece of the GGUF file name): "probability" reads P(yes) /
# (P(yes) + P(no)) for the reply's first word and needs the threshold, chosen on ClapNQ dev questions 0-29 and
# confirmed on 30-49 (docs/benchmarks.md, "Answering"); "reply" is the greedy JSON-constrained "yes"/"no" reply.
# A model not listed keeps the reply: a probability threshold is only worth having where it was measured to rank.
GRADE_READING_BY_MODEL: tuple[tuple[str, str, float | None], ...] = (
    # leans "yes" (P 0.43-0.92 on dev contexts) but ranks the contexts that answer higher. Read on the best
    # sentences of the relevant chunks (KAIZEN_CONTEXT_TOKENS=256, agent/passages.py): on ClapNQ dev questions
    # 30-85 (56 + 56, first retrieval, the model's own abstentions counted) P(yes) ranks with AUC 0.82, and 0.70
    # answers 89% / abstains on 68%, 0.71 86% / 70%, 0.73 79% / 75%; tuned on one half, the other half's
    # figures moved by 10-25 points, so the threshold is a balance, not a law (docs/benchmarks.md, "Answering").
    # On whole chunks it was 0.73 (whole chunks at 0.71: 86% / 62%).
    ("qwen2.5-coder-1.5b", "probability", 0.71),
    # its P(yes) does not rank (AUC 0.51) and as a first word it says "No" even to an obvious answer
    ("smollm2-135m", "reply", None),
)
GRADE_READING_FALLBACK: tuple[str, float | None] = ("reply", None)


class GradeReading(NamedTuple):
    reading: str  # "probability" or "reply"
    threshold: float | None  # on P(yes), for "probability"
    source: str  # where they came from: "default", "default for <model>", "KAIZEN_GRADE_MIN_YES"


def grade_reading(settings: AgentSettings, model_name: str) -> GradeReading:
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
    return GradeReading(reading, threshold, source)


@dataclass
class Context:
    """Run-scoped resources (not checkpointed): the store, the embedder, the model, settings, a stop flag; and for
    answers that are measurements, not conversations (the repair guard's), a KB version to read instead of the
    active one and whether the turn is recorded."""

    store: Any
    embedder: Any
    llm: Any
    settings: AgentSettings = field(default_factory=AgentSettings.defaults)
    cancel: threading.Event = field(default_factory=threading.Event)
    kb_version: int | None = None
    record: bool = True


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
        widen=0,
        max_rewrites=settings.max_rewrites,
        regenerations=0,
        max_regenerations=settings.max_regenerations,
        selection=None,
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
