"""The LangGraph state machine and `Agent`, the one object the REPL, `kaizen ask` and the benchmark use.

    START ─(follow-up)→ contextualize → retrieve → grade_documents ─(relevant)→ generate → check_answer ─→ record
          └(first turn)──────────────↗      ↑             │(none relevant)           ↑          │(fails)
                                            └─ rewrite_query ←┘                      └──────────┘
                                               (still none) → abstain → record

`kaizen graph` prints the real thing as Mermaid.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from langgraph.graph import END, START, StateGraph

from store.errors import KaizenError

from . import nodes
from .settings import AgentSettings
from .state import AgentState, Context, turn_input


class QuestionError(KaizenError, ValueError):
    """The question cannot be asked (empty); the message is for a person."""


def build_graph(checkpointer=None):
    graph = StateGraph(AgentState, context_schema=Context)
    graph.add_node("contextualize", nodes.contextualize)
    graph.add_node("retrieve", nodes.retrieve)
    graph.add_node("grade_documents", nodes.grade_documents)
    graph.add_node("rewrite_query", nodes.rewrite_query)
    graph.add_node("abstain", nodes.abstain)
    graph.add_node("generate", nodes.generate)
    graph.add_node("check_answer", nodes.check_answer)
    graph.add_node("record", nodes.record)
    graph.add_conditional_edges(START, nodes.route_start, {"follow-up": "contextualize", "first turn": "retrieve"})
    graph.add_edge("contextualize", "retrieve")
    graph.add_edge("retrieve", "grade_documents")
    graph.add_conditional_edges(
        "grade_documents",
        nodes.route_after_grading,
        {"relevant": "generate", "none relevant": "rewrite_query", "still none": "abstain"},
    )
    graph.add_edge("rewrite_query", "retrieve")
    graph.add_edge("abstain", "record")
    graph.add_edge("generate", "check_answer")
    graph.add_conditional_edges(
        "check_answer",
        nodes.route_after_check,
        {"regenerate stricter": "generate", "deliver": "record"},
    )
    graph.add_edge("record", END)
    return graph.compile(checkpointer=checkpointer)


def mermaid() -> str:
    return build_graph().get_graph().draw_mermaid()


@dataclass
class TurnResult:
    thread_id: str
    interaction_id: int | None
    question: str
    standalone_query: str
    prompt_question: str
    answer: str
    abstained: bool
    verified: bool | None
    stopped: bool
    warning: str | None
    citations: list[dict]
    passages: list[dict]
    timings: dict[str, Any]
    usage: dict[str, Any]
    notices: list[str] = field(default_factory=list)
    kb_version: int | None = None
    rewrites: int = 0
    regenerations: int = 0
    model: str = ""
    gap_reason: str | None = None  # why it abstained (the knowledge gap's reason), when it did
    grades: list[dict] = field(default_factory=list)  # every grader's verdict this turn, as recorded

    @classmethod
    def from_state(cls, thread_id: str, state: dict, model: str) -> "TurnResult":
        usage = dict(state.get("usage") or {})
        return cls(
            thread_id=thread_id,
            interaction_id=state.get("interaction_id"),
            question=state.get("question", ""),
            standalone_query=state.get("standalone_query", ""),
            prompt_question=state.get("prompt_question", ""),
            answer=state.get("answer", ""),
            abstained=bool(state.get("abstained")),
            verified=state.get("verified"),
            stopped=bool(state.get("stopped")),
            warning=state.get("warning"),
            citations=list(state.get("citations") or []),
            passages=list(state.get("passages") or []),
            timings=dict(state.get("timings") or {}),
            usage=usage,
            notices=list(state.get("notices") or []),
            kb_version=state.get("kb_version"),
            rewrites=int(state.get("rewrites", 0)),
            regenerations=int(state.get("regenerations", 0)),
            model=model,
            gap_reason=state.get("gap_reason"),
            grades=[g.as_dict() for g in state.get("grades") or []],  # agent.state.Grade, as plain data
        )

    def as_json(self) -> dict:
        data = asdict(self)
        data["citations"] = [
            {k: c[k] for k in ("number", "chunk_id", "document_id", "source_uri", "title", "inferred")}
            for c in self.citations
        ]
        data["passages"] = [{k: p[k] for k in ("number", "chunk_id", "source_uri", "title", "trimmed")}
                            for p in self.passages]
        data["usage"] = {k: v for k, v in self.usage.items()}
        return data


def clean_question(question: str) -> str:
    if not isinstance(question, str):
        raise QuestionError("the question must be text")
    question = question.replace("\x00", " ").strip()
    if not question:
        raise QuestionError("the question is empty: type a question")
    return question


class Agent:
    """The store, the embedder, the model and the compiled graph (with Postgres checkpoints when `persist`)."""

    def __init__(self, store=None, *, llm=None, embedder=None, settings: AgentSettings | None = None,
                 persist: bool = True, on_recorded: Callable[[Any, int], Any] | None = None):
        from .llm import LLMSettings, get_llm

        self.settings = settings or AgentSettings()
        # a bad model path fails before anything loads
        llm_settings = None if llm is not None else LLMSettings.from_settings(self.settings)
        if store is None:
            from store.database import Store

            store = Store()
        self.store = store
        if embedder is None:
            from store.embeddings import store_embedder

            embedder = store_embedder(store.settings)
        self.embedder = embedder
        self.llm = llm or get_llm(llm_settings)
        self.checkpoints = None
        if persist:
            from .threads import Checkpoints

            self.checkpoints = Checkpoints(store)
        self.graph = build_graph(self.checkpoints.saver if self.checkpoints else None)
        # Called with (store, interaction_id) after each recorded answer; the CLI queues its evaluation here.
        self.on_recorded = on_recorded
        from .turns import Answering

        self.answering = Answering(store)  # workers on this database pause their model while this answers

    def config(self, thread_id: str) -> dict:
        return {"configurable": {"thread_id": thread_id}, "recursion_limit": self.settings.recursion_limit()}

    def ask(self, question: str, thread_id: str | None = None, *, on_event: Callable[[dict], None] | None = None,
            cancel: threading.Event | None = None, kb_version: int | None = None,
            record: bool = True) -> TurnResult:
        """Answer one question (a turn of `thread_id`, a new thread if None), streaming events to `on_event`.
        `kb_version`: read that version instead of the active one; `record`: False leaves no interaction (the
        repair guard's answers are measurements, not traffic)."""
        from .threads import new_thread_id

        question = clean_question(question)
        thread_id = thread_id or new_thread_id()
        state = turn_input(question, self.settings)
        state["thread_id"] = thread_id
        if self.checkpoints is None:
            state["history"] = []
        limit = self.settings.question_max_tokens
        if self.llm.count_tokens(question) > limit:
            state["prompt_question"] = self.llm.truncate(question, limit)
            state["notices"] = [f"the question was cut to its first {limit} tokens for the model"]
        context = Context(store=self.store, embedder=self.embedder, llm=self.llm, settings=self.settings,
                          cancel=cancel or threading.Event(), kb_version=kb_version, record=record)
        final: dict | None = None
        options = {"durability": "exit"} if self.checkpoints is not None else {}
        # a person's answer makes workers pause; a measurement (record=False, the worker's own guard) must not
        with self.answering.held() if record else contextlib.nullcontext():
            for mode, chunk in self.graph.stream(state, self.config(thread_id), context=context,
                                                 stream_mode=["custom", "values"], **options):
                if mode == "custom":
                    if on_event is not None:
                        on_event(chunk)
                else:
                    final = chunk
        result = TurnResult.from_state(thread_id, final or {}, self.llm.name)
        if self.on_recorded is not None and result.interaction_id is not None:
            self.on_recorded(self.store, result.interaction_id)
        return result

    def history(self, thread_id: str) -> list[dict]:
        if self.checkpoints is None:
            return []
        snapshot = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        return list((snapshot.values or {}).get("history") or [])

    def warm_up(self) -> threading.Thread:
        """Read the prompt prefix every call of the graph starts with into the model's KV cache, in a thread, so a
        person's first question does not wait for it (the question waits for the model's lock if it comes first)."""
        from .prompts import shared_prefix

        def warm() -> None:
            try:
                if hasattr(self.llm, "warm"):
                    self.llm.warm(shared_prefix())
            except Exception:  # the first question then reads the prefix itself
                pass

        # Not a daemon: the interpreter waits for it at exit instead of tearing llama.cpp down under it (a crash).
        thread = threading.Thread(target=warm, name="kaizen-warm-up", daemon=False)
        thread.start()
        self._warm_up = thread
        return thread

    def close(self) -> None:
        warm_up = getattr(self, "_warm_up", None)
        if warm_up is not None:
            warm_up.join()
        self.answering.close()
        if self.checkpoints is not None:
            self.checkpoints.close()
            self.checkpoints = None


def timed_ask(agent: Agent, question: str, **kwargs) -> tuple[TurnResult, float, float | None]:
    """ask() with wall-clock total and time to first token as a caller sees them (the benchmark uses it)."""
    first: dict[str, float | None] = {"t": None}
    user_cb = kwargs.pop("on_event", None)

    def on_event(event: dict) -> None:
        if event.get("type") == "token" and first["t"] is None:
            first["t"] = time.perf_counter()
        if user_cb:
            user_cb(event)

    started = time.perf_counter()
    result = agent.ask(question, on_event=on_event, **kwargs)
    total = (time.perf_counter() - started) * 1000
    ttft = None if first["t"] is None else (first["t"] - started) * 1000
    return result, total, ttft
