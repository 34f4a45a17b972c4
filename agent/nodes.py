"""The graph's nodes and routing functions. Each node reads the state, uses the run context (store, embedder,
model) and returns an update; `timed` adds its wall time to `timings` and the model's token counts to `usage`.

Streamed events (LangGraph's "custom" stream): {"type": "token", "text"}, {"type": "status", "node", "text"},
{"type": "retry", "reason"} (a stricter answer follows), {"type": "notice", "text"}, {"type": "revised", "text"}
(the streamed answer was changed after the fact: the whole answer as it stands, for example without a sentence
that repeated Kaizen's own instructions, or the abstention in the question's language).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

from langgraph.runtime import Runtime

from . import prompts
from .llm import Usage
from .nodes_checks import (
    COSINE_MIN,
    LEXICAL_MIN,
    content_tokens,
    grounding,
    novel_specifics,
)
from .passages import build_passages as passages_for
from .passages import choose as choose_passages
from .state import AgentState, Context, Grade, Hit, grade_reading

COPY_LEXICAL = 0.8  # answers whose words are this much from the passages skip the model's self-check


def emit(runtime: Runtime, event: dict) -> None:
    writer = getattr(runtime, "stream_writer", None)
    if writer is not None:
        writer(event)


def add_usage(usage: dict, call: Usage) -> dict:
    usage = dict(usage or {})
    usage["llm_calls"] = usage.get("llm_calls", 0) + 1
    usage["prompt_tokens"] = usage.get("prompt_tokens", 0) + call.prompt_tokens
    usage["prompt_processed"] = usage.get("prompt_processed", 0) + call.prompt_processed
    usage["completion_tokens"] = usage.get("completion_tokens", 0) + call.completion_tokens
    usage["llm_ms"] = round(usage.get("llm_ms", 0.0) + call.total_ms, 2)
    calls = list(usage.get("calls", []))
    calls.append({"kind": call.kind, "prompt": call.prompt_tokens, "processed": call.prompt_processed,
                  "completion": call.completion_tokens, "ms": round(call.total_ms, 1),
                  "ttft_ms": None if call.ttft_ms is None else round(call.ttft_ms, 1)})
    usage["calls"] = calls
    return usage


def timed(name: str) -> Callable:
    def decorate(fn: Callable[[AgentState, Runtime[Context]], dict]) -> Callable:
        @functools.wraps(fn)
        def node(state: AgentState, runtime: Runtime[Context]) -> dict:
            started = time.perf_counter()
            update = fn(state, runtime) or {}
            elapsed = (time.perf_counter() - started) * 1000
            timings = dict(update.get("timings") or state.get("timings") or {})
            timings[name] = round(timings.get(name, 0.0) + elapsed, 2)
            update["timings"] = timings
            return update

        return node

    return decorate


# -- contextualize ------------------------------------------------------------------------------------------------
def route_start(state: AgentState) -> str:
    return "follow-up" if state.get("history") else "first turn"


@timed("contextualize")
def contextualize(state: AgentState, runtime: Runtime[Context]) -> dict:
    """A follow-up becomes a standalone query (one short constrained LLM call); first turns never get here."""
    ctx = runtime.context
    history = list(state.get("history") or [])[-ctx.settings.history_turns:]
    question = state["prompt_question"]
    emit(runtime, {"type": "status", "node": "contextualize", "text": "reading the conversation"})
    result = ctx.llm.json_chat(prompts.contextualize_messages(history, question), prompts.QUERY_SCHEMA,
                               validate=prompts.validate_query, max_tokens=64, kind="contextualize")
    usage = add_usage(state.get("usage"), result.usage)
    if result.ok and content_tokens(result.value):
        standalone = result.value[:500]
        verdict = "rewritten"
    else:  # a malformed reply is recorded; the search falls back to the last query plus the follow-up
        previous = history[-1].get("standalone_query") or history[-1].get("question", "") if history else ""
        standalone = f"{previous} {question}".strip()[:1000]
        verdict = "fallback"
    grade = Grade("contextualize", verdict, detail={"query": standalone, "raw": result.raw[:500]},
                  parse_error=None if result.ok else result.error)
    update = {"standalone_query": standalone, "query": standalone, "usage": usage,
              "grades": [*state.get("grades", []), grade]}
    if verdict == "rewritten":
        update["prompt_question"] = standalone  # the answer prompt has no history: ask the standalone question
    return update


# -- retrieve and grade --------------------------------------------------------------------------------------------
@timed("retrieve")
def retrieve(state: AgentState, runtime: Runtime[Context]) -> dict:
    from store.kb_versions import active_version, get_version
    from store.search import search

    ctx = runtime.context
    query = state.get("query") or state["standalone_query"]
    attempt = len(state.get("queries") or [])
    widen = state.get("widen", 0)
    emit(runtime, {"type": "status", "node": "retrieve", "text": f"searching: {query[:80]}"})
    with ctx.store.session() as session:
        version = get_version(session, ctx.kb_version) if ctx.kb_version is not None else active_version(session)
        if version is None:
            return {"hits": [], "kb_version": None, "queries": [*state.get("queries", []), query],
                    "warning": "the knowledge base is empty: add documents with `kaizen ingest PATH`"}
        found = search(session, ctx.embedder, query, k=ctx.settings.top_k * (1 + widen), settings=ctx.store.settings,
                       version=version)
    if widen:  # the next-ranked chunks, after those the model already read
        seen = {h.chunk_id for h in state.get("all_hits") or []}
        found = [hit for hit in found if hit.chunk_id not in seen][: ctx.settings.top_k]
    hits = [Hit(**hit.as_dict(), rank=rank, attempt=attempt, query=query) for rank, hit in enumerate(found, start=1)]
    return {"hits": hits, "kb_version": version.id, "queries": [*state.get("queries", []), query]}


def is_relevant(hit: Hit, threshold: float) -> bool:
    """The vector score decides. (A BM25 top-2 rank used to count a chunk 0.01 below the threshold as relevant;
    with the sentence-aware score it passed no more of ClapNQ dev's answerable questions, only 3% more of its
    unanswerable ones.)"""
    score = hit.grade_score
    return score is not None and score >= threshold


def _question_scores(ctx: Context, question: str, hits: list[Hit]) -> dict[int, float]:
    """The vector score (store.indexing.ChunkVectors.score, the one search ranks by) of the user's (standalone)
    question against each hit's stored vectors."""
    import numpy as np

    vec = ctx.embedder.embed_queries([question[:4000]])[0]
    vec = vec / (np.linalg.norm(vec) or 1.0)
    weight = ctx.store.settings.sentence_weight
    return {chunk_id: vectors.score(vec, weight) for chunk_id, vectors in
            _chunk_vectors(ctx, [h.chunk_id for h in hits]).items()}


def _chunk_vectors(ctx: Context, ids: list[int]) -> dict[int, Any]:
    """The stored vectors (chunk and sentences) of these chunks, by chunk id."""
    from store.indexing import load_chunk_vectors

    with ctx.store.session() as session:
        return load_chunk_vectors(session, ids)


@timed("grade_documents")
def grade_documents(state: AgentState, runtime: Runtime[Context]) -> dict:
    """Relevance from retrieval signals alone (no LLM call): the e5 cosine of the question and the chunk, helped
    by BM25 presence. Hits found by a rewritten query are graded against the question, not against the rewrite
    (short keyword queries score high against anything that shares a word)."""
    ctx = runtime.context
    threshold = ctx.settings.relevance_min
    hits = [dataclasses.replace(h) for h in state.get("hits") or []]  # the state's hits stay as retrieved
    rewritten = (state.get("queries") or [""])[-1] != state.get("standalone_query")
    if rewritten and hits:
        scores = _question_scores(ctx, state["standalone_query"], hits)
        for h in hits:
            h.question_score, h.rescored = scores.get(h.chunk_id), True
    for h in hits:
        h.relevant = is_relevant(h, threshold)
    relevant = [h for h in hits if h.relevant]
    top = max((h.grade_score or 0.0 for h in hits), default=None)
    grade = Grade(
        "retrieval_relevance",
        "relevant" if relevant else "none relevant",
        score=top,
        detail={"attempt": len(state.get("queries") or []) - 1, "query": (state.get("queries") or [""])[-1],
                "threshold": threshold, "relevant": len(relevant), "graded_against": "question" if rewritten
                else "query", "chunks": [[h.chunk_id, h.grade_score, h.text_rank, h.relevant] for h in hits]},
    )
    grades = [*state.get("grades", []), grade]
    update: dict[str, Any] = {"hits": hits, "all_hits": [*state.get("all_hits", []), *hits], "grades": grades,
                              "context_answers": None}
    if relevant and ctx.settings.llm_grade and not ctx.cancel.is_set():
        update.update(_llm_context_grade({**state, "hits": hits}, ctx, grades))
    return update


def _llm_context_grade(state: AgentState, ctx: Context, grades: list[Grade]) -> dict:
    """Does the context the answer will get contain the answer? The question is asked on the answer prompt
    itself (same prefix, same numbered context, only the last sentence differs), so llama.cpp evaluates the
    context once for this grade and the answer.

    Per model (state.grade_reading): either no reply is generated and the next-token distribution gives
    P(yes) / (P(yes) + P(no)), the context "answering" when that reaches the threshold (a model that leans "yes"
    on every topical context can still rank the ones that answer higher, which its greedy reply cannot show);
    or the reply is a constrained "yes"/"no" (three tokens)."""
    selection = choose_passages(state.get("hits") or [], state["prompt_question"], ctx)
    passages, _, _, _ = passages_for(state.get("hits") or [], state["prompt_question"], ctx, False, selection)
    if not passages:
        return {"selection": selection}
    kept = [prompts.Passage(p["number"], p["chunk_id"], p["title"], p["text"], p["trimmed"]) for p in passages]
    messages = prompts.grade_messages(state["prompt_question"], kept)
    reading, threshold, source = grade_reading(ctx.settings, getattr(ctx.llm, "name", ""))
    if reading == "probability" and not getattr(ctx.llm, "has_logprobs", True):
        reading, source = "reply", f"{source}; the model server gives no logprobs"
    detail: dict[str, Any] = {"reading": reading, "threshold": threshold, "threshold_source": source,
                              "passages": len(passages), "chunk_ids": [p["chunk_id"] for p in passages]}
    if reading == "probability":
        scored = ctx.llm.yes_probability(messages, kind="grade")
        answers = (scored.p_yes >= threshold) if scored.ok else None
        score = None if scored.p_yes is None else round(scored.p_yes, 4)
        detail.update(p_yes=score, mass=None if scored.mass is None else round(scored.mass, 4))
        usage, error = scored.usage, scored.error
    else:
        result = ctx.llm.json_chat(messages, prompts.YES_NO_SCHEMA, validate=prompts.validate_check, max_tokens=8,
                                   kind="grade")
        answers, score = (result.value if result.ok else None), None
        detail.update(raw=result.raw[:200])
        usage, error = result.usage, None if result.ok else result.error
    verdict = {True: "answers", False: "does not answer", None: "unparsed"}[answers]
    grade = Grade("llm_context_grade", verdict, score=score, detail=detail, parse_error=error)
    return {"context_answers": answers, "usage": add_usage(state.get("usage"), usage), "grades": [*grades, grade],
            "selection": selection}


def route_after_grading(state: AgentState) -> str:
    relevant = any(h.relevant for h in state.get("hits") or [])
    if relevant and state.get("context_answers") is not False:
        return "relevant"
    if state.get("kb_version") is not None and state.get("rewrites", 0) < state.get("max_rewrites", 0):
        return "none relevant"
    return "still none"


@timed("rewrite_query")
def rewrite_query(state: AgentState, runtime: Runtime[Context]) -> dict:
    """Nothing relevant came back: the model writes another search query (one short constrained call). Relevant
    chunks came back but the model read them and said they do not answer: no call; the same query reads on
    to the next-ranked chunks (a rephrased query found the same chunks again on ClapNQ dev, at 2-3 s a call)."""
    ctx = runtime.context
    question = state["standalone_query"]
    tried = list(state.get("queries") or [])
    if state.get("context_answers") is False:
        emit(runtime, {"type": "status", "node": "rewrite_query", "text": "these passages do not answer; reading on"})
        widen = state.get("widen", 0) + 1
        grade = Grade("rewrite", "read on", detail={"query": tried[-1] if tried else question, "widen": widen})
        return {"query": tried[-1] if tried else question, "widen": widen, "rewrites": state.get("rewrites", 0) + 1,
                "grades": [*state.get("grades", []), grade]}
    emit(runtime, {"type": "status", "node": "rewrite_query", "text": "nothing that answers found; rephrasing"})
    result = ctx.llm.json_chat(prompts.rewrite_messages(question[:2000], tried[-3:]), prompts.QUERY_SCHEMA,
                               validate=prompts.validate_query, max_tokens=48, kind="rewrite")
    usage = add_usage(state.get("usage"), result.usage)
    query = result.value if result.ok else None
    if not query or query.strip().lower() in {t.strip().lower() for t in tried} or not content_tokens(query):
        # Fall back to the question's content words only (a different query for both rankings).
        words = [w for w in question.split() if w.strip("?,.!:;").lower() in content_tokens(w)]
        query = " ".join(words) or question
    grade = Grade("rewrite", "rewritten" if result.ok else "fallback", detail={"query": query,
                  "raw": result.raw[:500]}, parse_error=None if result.ok else result.error)
    return {"query": query, "rewrites": state.get("rewrites", 0) + 1, "usage": usage,
            "grades": [*state.get("grades", []), grade]}


@timed("abstain")
def abstain(state: AgentState, runtime: Runtime[Context]) -> dict:
    if state.get("kb_version") is None:
        reason = "knowledge base empty"
    elif state.get("context_answers") is False:
        reason = "context does not answer"
    else:
        reason = "no relevant chunks"
    sentence = prompts.abstention_for(state["question"])
    emit(runtime, {"type": "token", "text": sentence})
    return {"answer": sentence, "abstained": True, "gap_reason": reason, "passages": [], "citations": []}


# -- generate and check --------------------------------------------------------------------------------------------
def build_passages(state: AgentState, ctx: Context, strict: bool) -> tuple[list[dict], int, list[dict], int]:
    """The passages the model reads for this state's hits (agent.passages): (passages, how many were cut or dropped
    to fit the window, the answer messages, injections redacted), from the selection the grade read when it
    was made for these hits."""
    return passages_for(state.get("hits") or [], state["prompt_question"], ctx, strict, state.get("selection"))


def answer_messages_for(state: AgentState, strict: bool) -> list[dict]:
    passages = [prompts.Passage(p["number"], p["chunk_id"], p["title"], p["text"], p["trimmed"])
                for p in state.get("passages") or []]
    return prompts.answer_messages(state["prompt_question"], passages, strict=strict)


@timed("generate")
def generate(state: AgentState, runtime: Runtime[Context]) -> dict:
    ctx = runtime.context
    strict = state.get("regenerations", 0) > 0
    passages, cut, messages, redacted = build_passages(state, ctx, strict)
    notices = list(state.get("notices") or [])
    if cut and not strict:
        notices.append(f"{cut} passage(s) cut or left out to fit the model's context window")
    if redacted and not strict:
        notices.append(f"{redacted} instruction-like sentence(s) in the documents were not passed to the model")
    first = {"t": None}
    started_at = state.get("started_at") or time.time()

    def on_token(piece: str) -> None:
        if first["t"] is None:
            first["t"] = time.time()
        emit(runtime, {"type": "token", "text": piece})

    emit(runtime, {"type": "status", "node": "generate", "text": "answering" + (" (stricter)" if strict else "")})
    # A stricter answer copies facts briefly: half the token budget keeps the retry cheap.
    max_tokens = max(32, ctx.llm.settings.max_tokens // 2) if strict else None
    stream = ctx.llm.stream_chat(messages, cancel=ctx.cancel, kind="regenerate" if strict else "generate",
                                 stop=prompts.ANSWER_STOP, max_tokens=max_tokens)
    stream.run(on_token)
    answer = stream.text.strip()
    usage = add_usage(state.get("usage"), stream.usage)
    timings = dict(state.get("timings") or {})
    if first["t"] is not None and "ttft" not in timings:
        timings["ttft"] = round((first["t"] - started_at) * 1000, 2)
    update: dict[str, Any] = {
        "answer": answer, "passages": passages, "trimmed": cut, "usage": usage, "timings": timings,
        "stopped": stream.usage.stopped, "abstained": (not stream.usage.stopped) and prompts.is_abstention(answer),
        "notices": notices,
    }
    if redacted and not strict:
        update["grades"] = [*state.get("grades", []), Grade("injection_guard", "redacted", float(redacted))]
    return update


def _passage_vectors(ctx: Context, passages: list[dict]) -> dict[int, Any]:
    by_id = _chunk_vectors(ctx, [p["chunk_id"] for p in passages])
    return {p["number"]: by_id[p["chunk_id"]] for p in passages if p["chunk_id"] in by_id}


@timed("check_answer")
def check_answer(state: AgentState, runtime: Runtime[Context]) -> dict:
    """Citations valid? Sentences grounded in the cited passages? Plus the model's own yes/no on the cached
    conversation (a few constrained tokens). A failure asks for a stricter answer until the cap, then warns."""
    ctx = runtime.context
    answer = state.get("answer", "")
    passages = state.get("passages") or []
    grades = list(state.get("grades") or [])
    update: dict[str, Any] = {}
    if state.get("stopped"):
        return {"verified": None, "retry": False, "warning": "stopped before the answer was complete",
                "citations": []}
    leaked = prompts.leaked_sentences(answer)
    if leaked:  # Kaizen's own instructions never reach the person: those sentences are taken out
        answer = prompts.without_leaks(answer)
        grades.append(Grade("instruction_leak", "removed", score=float(len(leaked)),
                            detail={"sentences": [s[:200] for s in leaked]}))
        update.update(answer=answer, abstained=not answer.strip() or prompts.is_abstention(answer))
    abstained = update.get("abstained", state.get("abstained"))
    if abstained:
        sentence = prompts.abstention_for(state["question"])
        if answer != sentence:  # in the question's language, whatever the model wrote
            emit(runtime, {"type": "revised", "text": sentence})
        grades.append(Grade("abstention", "abstained", detail={"answer": answer[:300]}))
        return {**update, "answer": sentence, "abstained": True, "grades": grades, "verified": None,
                "retry": False, "gap_reason": "model abstained", "citations": []}
    if leaked:
        emit(runtime, {"type": "revised", "text": answer})

    numbers = {p["number"] for p in passages}
    cited = prompts.cited_numbers(answer)
    invalid = [n for n in cited if n not in numbers]
    vectors = _passage_vectors(ctx, passages)
    ground = grounding(answer, passages, ctx.embedder, vectors, ctx.store.settings.sentence_weight)
    grades.append(Grade("citations", "invalid" if invalid else ("cited" if cited else "none"),
                        score=float(len([n for n in cited if n in numbers])),
                        detail={"cited": cited, "invalid": invalid, "passages": sorted(numbers)}))
    grades.append(Grade("grounding", "supported" if ground.supported_share >= ctx.settings.grounded_min
                        else "unsupported", score=round(ground.supported_share, 4),
                        detail=ground.as_dict() | {"lexical_min": LEXICAL_MIN, "cosine_min": COSINE_MIN}))
    novel = novel_specifics(answer, passages, [state["question"], state.get("prompt_question") or ""])
    if novel:
        grades.append(Grade("specifics", "not_in_sources", score=float(len(novel)), detail={"novel": novel[:20]}))
    llm_says = None
    usage = state.get("usage")
    # The model's own yes/no is asked only where the cheap signals leave room: the answer is not already failing
    # and is not a near copy of the passages. It continues the cached answer conversation (a few prompt tokens,
    # three constrained output tokens).
    undecided = (not invalid and not novel and ground.supported_share >= ctx.settings.grounded_min
                 and ground.lexical < COPY_LEXICAL)
    if ctx.settings.llm_check and answer and undecided and not ctx.cancel.is_set():
        strict = state.get("regenerations", 0) > 0
        result = ctx.llm.json_chat(prompts.check_messages(answer_messages_for(state, strict), answer),
                                   prompts.YES_NO_SCHEMA, validate=prompts.validate_check, max_tokens=8,
                                   kind="check")
        usage = add_usage(usage, result.usage)
        llm_says = result.value if result.ok else None
        grades.append(Grade("llm_self_check", {True: "yes", False: "no", None: "unparsed"}[llm_says],
                            detail={"raw": result.raw[:200]}, parse_error=None if result.ok else result.error))
        update["usage"] = usage

    reasons = []
    if invalid:
        reasons.append(f"it cites passage(s) {', '.join(map(str, invalid))} that the context does not have")
    if not answer:
        reasons.append("the answer is empty")
    elif ground.supported_share < ctx.settings.grounded_min:
        reasons.append(f"only {ground.supported_share:.0%} of it is found in the sources")
    if novel:
        reasons.append(f"it names {', '.join(novel[:3])}, which no source mentions")
    if llm_says is False:
        reasons.append("the model's own check says it is not supported")
    passed = not reasons

    valid = [n for n in cited if n in numbers]
    inferred = []
    if not valid:  # the model did not cite: attribute each supported sentence to its best passage
        for s in ground.sentences:
            if s.best_passage is not None and s.supported(LEXICAL_MIN, COSINE_MIN) and s.best_passage not in inferred:
                inferred.append(s.best_passage)
    by_number = {p["number"]: p for p in passages}
    citations = [
        {"number": n, "chunk_id": by_number[n]["chunk_id"], "document_id": by_number[n]["document_id"],
         "source_uri": by_number[n]["source_uri"], "title": by_number[n]["title"], "inferred": n in inferred}
        for n in (valid or inferred)
    ]
    update.update({"grades": grades, "citations": citations, "verified": passed, "retry": False})
    if passed:
        return update
    reason = "; ".join(reasons)
    if state.get("regenerations", 0) < state.get("max_regenerations", 0):
        emit(runtime, {"type": "retry", "reason": reason})
        update["regenerations"] = state.get("regenerations", 0) + 1
        update["retry"] = True
    elif novel:
        # Still naming what no source mentions after the stricter retry: on the dev answers looked at, such an
        # answer was wrong every time, so the honest reply is the abstention, not the invention with a warning.
        sentence = prompts.abstention_for(state["question"])
        emit(runtime, {"type": "revised", "text": sentence})
        grades.append(Grade("abstention", "abstained", detail={"answer": answer[:300]}))  # what was not delivered
        update.update(answer=sentence, abstained=True, verified=None, citations=[],
                      gap_reason=f"the answer named {', '.join(novel[:3])}, which no source mentions")
    else:
        update["warning"] = f"Kaizen could not verify this answer against its sources: {reason}"
    return update


def route_after_check(state: AgentState) -> str:
    if state.get("retry") and state.get("regenerations", 0) <= state.get("max_regenerations", 0):
        return "regenerate stricter"
    return "deliver"


# -- record ----------------------------------------------------------------------------------------------------------
@timed("record")
def record(state: AgentState, runtime: Runtime[Context]) -> dict:
    from .recorder import record_turn

    ctx = runtime.context
    timings = dict(state.get("timings") or {})
    timings["total"] = round((time.time() - (state.get("started_at") or time.time())) * 1000, 2)
    state = {**state, "timings": timings}
    interaction_id = record_turn(ctx.store, state, ctx.llm.name) if ctx.record else None
    turn = {"question": state["question"][:2000], "standalone_query": state.get("standalone_query", "")[:2000],
            "answer": state.get("answer", ""), "abstained": bool(state.get("abstained")),
            "interaction_id": interaction_id}
    return {"interaction_id": interaction_id, "timings": timings,
            "history": [*(state.get("history") or []), turn][-50:]}
