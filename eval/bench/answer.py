"""`kaizen bench answer`: the whole graph on a question set, against one raw llama.cpp call.

Per question and in summary: time to first token, total latency, LLM calls, prompt tokens (all, and those
llama.cpp actually processed after reusing its KV cache), generated tokens, tokens/s; the ratio of Kaizen's total
latency to one raw llama.cpp call that generates the same number of tokens from the same final prompt (timed
right after, with the KV cache reset, so the raw call processes the whole prompt); abstention on answerable and
unanswerable questions (ClapNQ has both); token F1 / exact match against the reference (JSQuAD: best over its
accepted short answers; character tokens for Japanese).

With `baseline="naive"` (`--baseline naive`) every question is also answered, on the same store, embedder and
loaded model, by the RAG a user would build instead: the vector-only top-4 chunks, one plain prompt (no citation
or abstention rules, no worked example), one greedy call from a cold KV cache, streamed. Both are reported side by
side under "baseline": answered / abstained shares with Wilson 95% intervals, token F1 and string presence against
the references, time to first token and total latency, and Kaizen/naive ratios of the medians.

"cold_start": a new process's first question (as `kaizen ask` asks it) on a freshly loaded model, once evaluating
the shared prompt prefix and once loading the KV cache an earlier process saved: time to first token of each.

Runs in a fresh embedded database (a temporary KAIZEN_HOME, or --home DIR to keep and reuse it).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from agent.settings import MODEL_FIELDS
from eval.metrics import answer_figures, contains_reference, percentile, wilson_interval

BASELINES = ("naive",)
NAIVE_K = 4
NAIVE_SYSTEM = "Answer the question using the context."


def load_questions(path: str, limit: int | None, skip: int = 0) -> list[dict]:
    """Up to `limit` questions, half answerable and half not when the set has both, after skipping the first
    `skip` of each kind (the questions a setting was tuned on, for instance)."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    answerable = [r for r in rows if r.get("answerable", True)][skip:]
    unanswerable = [r for r in rows if not r.get("answerable", True)][skip:]
    if not limit:
        return answerable + unanswerable if skip else rows
    if not unanswerable:
        return answerable[:limit]
    # Both kinds: half and half, interleaved, so a short run still measures both abstention rates.
    a, u = answerable[: (limit + 1) // 2], unanswerable[: limit // 2]
    mixed = []
    for i in range(max(len(a), len(u))):
        mixed.extend(x[i] for x in (a, u) if i < len(x))
    return mixed


def handled_right(row: dict, question: dict) -> bool:
    """The question was handled as a person would want: an answerable one answered with an accepted reference in
    the answer (every one of `required`, when the question lists the parts a whole answer has) and at least one
    citation; an unanswerable one abstained on, in the question's language."""
    from agent.prompts import abstention_for, strip_citations

    if question.get("answerable", True):
        text = strip_citations(row["answer"])
        whole = all(contains_reference(text, [part]) for part in question.get("required", []))
        return bool(not row["abstained"] and row.get("string_presence") and row.get("citations") and whole)
    return bool(row["abstained"] and row["answer"] == abstention_for(question["question"]))


def raw_call(llm, messages: list[dict], n_tokens: int, stop: list[str], warm_prefix: list[dict] | None = None) -> dict:
    """One plain llama.cpp chat completion of the final prompt, `n_tokens` at most, from a cold KV cache; or,
    with `warm_prefix`, from a cache that holds those messages (as Kaizen's does after any earlier question)."""
    llm.reset()
    if warm_prefix:
        warm_cache(llm, warm_prefix)
    started = time.perf_counter()
    first = None
    pieces = []
    with llm.lock:
        for chunk in llm.model.create_chat_completion(messages=messages, max_tokens=max(1, n_tokens), stream=True,
                                                      stop=stop, **llm.sampling()):
            piece = chunk["choices"][0].get("delta", {}).get("content") or ""
            if piece:
                if first is None:
                    first = time.perf_counter()
                pieces.append(piece)
    total = (time.perf_counter() - started) * 1000
    return {"ms": total, "ttft_ms": None if first is None else (first - started) * 1000, "text": "".join(pieces)}


def warm_cache(llm, prefix: list[dict]) -> None:
    """Untimed: leave `prefix` (and one short user turn) in the KV cache, as the previous question would."""
    with llm.lock:
        llm.model.create_chat_completion(messages=[*prefix, {"role": "user", "content": "Hello."}],
                                         max_tokens=1, **llm.sampling())


def naive_messages(question: str, hits) -> list[dict]:
    """The plain prompt of the naive RAG: a one-line system message, the chunks' titles and texts, the question."""
    context = "\n\n".join(f"{h.title}\n{h.text}" if h.title else h.text for h in hits)
    return [{"role": "system", "content": NAIVE_SYSTEM},
            {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"}]


def _calls_since(llm, last) -> int:
    """How many LLM calls were recorded after `last` (llm.calls keeps only its recent tail)."""
    for i in range(len(llm.calls) - 1, -1, -1):
        if llm.calls[i] is last:
            return len(llm.calls) - 1 - i
    return len(llm.calls)


def naive_answer(llm, store, embedder, question: str) -> dict:
    """The RAG a user would build instead: vector top-4 chunks of the active KB version, one plain prompt, one
    streamed call (Kaizen's own sampling, greedy by default; the answers' max_tokens; no stop strings) from a cold
    KV cache. Time to first token and total are measured from the start of the question, the search included."""
    from agent.llm import ContextOverflow, Usage
    from agent.prompts import is_abstention
    from store.search import search

    last = llm.calls[-1] if llm.calls else None
    llm.reset()  # cold: nothing of Kaizen's prompts (or the previous question) in the KV cache; not timed
    error = None
    started = time.perf_counter()
    with store.session() as session:
        hits = search(session, embedder, question, k=NAIVE_K, mode="vector", settings=store.settings)
    search_ms = (time.perf_counter() - started) * 1000
    messages = naive_messages(question, hits)
    try:  # the same runtime and sampling as Kaizen's answers (greedy by default), no stop strings
        stream = llm.stream_chat(messages, kind="naive").run()
        text, usage = stream.text, stream.usage
    except (ContextOverflow, ValueError, RuntimeError) as exc:  # a refused prompt: an empty answer, recorded
        text, usage, error = "", Usage(kind="naive"), str(exc)
    if usage.ttft_ms is not None:
        usage.ttft_ms += search_ms  # from the question's start
    total_ms = (time.perf_counter() - started) * 1000
    answer = text.strip()
    return {
        "answer": answer, "abstained": is_abstention(answer), "error": error,
        "ttft_ms": _r(usage.ttft_ms), "total_ms": _r(total_ms), "search_ms": _r(search_ms),
        "llm_calls": _calls_since(llm, last), "prompt_tokens": usage.prompt_tokens,
        "prompt_tokens_processed": usage.prompt_processed, "generated_tokens": usage.completion_tokens,
        "finish_reason": usage.finish_reason, "chunks": [h.chunk_id for h in hits],
        "passages": [h.source_id for h in hits],
    }


def _r(value, digits=1):
    return None if value is None else round(value, digits)


def run_questions(agent, questions: list[dict], progress=None, baseline: str | None = None) -> list[dict]:
    from agent.graph import timed_ask
    from agent.nodes import answer_messages_for
    from agent.prompts import ANSWER_STOP, shared_prefix

    llm = agent.llm
    rows = []
    for i, q in enumerate(questions, start=1):
        result, total_ms, ttft_ms = timed_ask(agent, q["question"])
        calls = result.usage.get("calls", [])
        generations = [c for c in calls if c["kind"] in ("generate", "regenerate")]
        row = {
            "id": q.get("id"), "question": q["question"], "answerable": q.get("answerable", True),
            "interaction_id": result.interaction_id, "answer": result.answer, "abstained": result.abstained,
            "verified": result.verified,
            "warning": result.warning, "rewrites": result.rewrites, "regenerations": result.regenerations,
            "abstain_reason": (result.gap_reason or "the answer says so") if result.abstained else None,
            "context_grades": [{"verdict": g["verdict"], "p_yes": g["score"], "threshold": g["detail"].get("threshold")}
                               for g in result.grades if g["grader"] == "llm_context_grade"],
            "total_ms": _r(total_ms), "ttft_ms": _r(ttft_ms), "llm_calls": result.usage.get("llm_calls", 0),
            "prompt_tokens": result.usage.get("prompt_tokens", 0),
            "prompt_tokens_processed": result.usage.get("prompt_processed", 0),
            "generated_tokens": result.usage.get("completion_tokens", 0),
            "answer_tokens": generations[-1]["completion"] if generations else 0,
            "timings": {k: v for k, v in result.timings.items() if isinstance(v, (int, float))},
            "calls": calls, "citations": [c["chunk_id"] for c in result.citations],
            "gold_cited": bool(set(q.get("gold_passage_ids") or []) & {c["source_uri"].rsplit("#", 1)[-1]
                                                                      for c in result.citations}),
        }
        gen_ms = sum(c["ms"] for c in generations)
        # tokens/s: generated tokens over the whole generation calls (prompt included); decode: after the 1st token
        row["tokens_per_s"] = _r(sum(c["completion"] for c in generations) / (gen_ms / 1000), 2) if gen_ms else None
        decode_ms = sum(c["ms"] - c["ttft_ms"] for c in generations if c.get("ttft_ms") is not None)
        decoded = sum(c["completion"] - 1 for c in generations if c.get("ttft_ms") is not None)
        row["decode_tokens_per_s"] = _r(decoded / (decode_ms / 1000), 2) if decode_ms > 0 and decoded > 0 else None
        prompt_ms = sum(c["ttft_ms"] for c in generations if c.get("ttft_ms") is not None)
        processed = sum(c["processed"] for c in generations if c.get("ttft_ms") is not None)
        row["prompt_tokens_per_s"] = _r(processed / (prompt_ms / 1000), 1) if prompt_ms > 0 and processed else None
        if generations:
            strict = result.regenerations > 0
            messages = answer_messages_for({"prompt_question": result.prompt_question,
                                            "passages": result.passages}, strict)
            raw = raw_call(llm, messages, row["answer_tokens"], ANSWER_STOP)
            warm = raw_call(llm, messages, row["answer_tokens"], ANSWER_STOP, warm_prefix=shared_prefix())
            row.update(raw_ms=_r(raw["ms"]), raw_ttft_ms=_r(raw["ttft_ms"]), raw_same_text=raw["text"].strip() ==
                       result.answer, latency_ratio=_r(total_ms / raw["ms"], 3) if raw["ms"] else None,
                       raw_warm_ms=_r(warm["ms"]),
                       latency_ratio_warm=_r(total_ms / warm["ms"], 3) if warm["ms"] else None,
                       final_prompt_tokens=llm.count_prompt(messages))
        else:
            row.update(raw_ms=None, raw_ttft_ms=None, raw_same_text=None, latency_ratio=None, raw_warm_ms=None,
                       latency_ratio_warm=None, final_prompt_tokens=None)
        row.update(answer_figures(result.answer, result.abstained, q))
        row["handled_right"] = handled_right(row, q)
        if baseline == "naive":
            # Order and KV cache: Kaizen answers first (above, with the cache its previous question left), then
            # the naive RAG from a reset cache (naive_answer resets it). Afterwards the cache is reset again and
            # only the shared prompt prefix is put back (untimed), so Kaizen's next question finds what it would
            # after any earlier question of its own, and never the naive prompt.
            naive = naive_answer(llm, agent.store, agent.embedder, q["question"])
            naive.update(answer_figures(naive["answer"], naive["abstained"], q))
            gold = set(q.get("gold_passage_ids") or [])
            naive["gold_retrieved"] = bool(gold & set(naive["passages"]))
            row["naive"] = naive
            llm.reset()
            warm_cache(llm, shared_prefix())
        rows.append(row)
        if progress:
            progress(i, len(questions), row)
    return rows


def summarise(rows: list[dict]) -> dict:
    def med(key, subset):
        return _r(percentile([r[key] for r in subset if r.get(key) is not None], 0.5), 3)

    answerable = [r for r in rows if r["answerable"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    generated = [r for r in answerable if r.get("latency_ratio") is not None]
    summary = {
        "questions": len(rows), "answerable": len(answerable), "unanswerable": len(unanswerable),
        "latency_ratio_to_raw_llama_cpp": {
            "answerable_median": med("latency_ratio", generated),
            "answerable_p90": _r(percentile([r["latency_ratio"] for r in generated], 0.9), 3),
            "answerable_sum_ratio": _r(sum(r["total_ms"] for r in generated) / sum(r["raw_ms"] for r in generated), 3)
            if generated else None,
            "all_median": med("latency_ratio", [r for r in rows if r.get("latency_ratio") is not None]),
            "note": "raw = one llama.cpp call of the final prompt from a reset KV cache; warm = the same call with "
                    "the shared prompt prefix (system rules + worked example) already cached, as Kaizen has it "
                    "after any earlier question",
            "warm_answerable_median": med("latency_ratio_warm", generated),
            "warm_answerable_p90": _r(percentile([r["latency_ratio_warm"] for r in generated], 0.9), 3),
            "warm_answerable_sum_ratio": _r(sum(r["total_ms"] for r in generated) /
                                            sum(r["raw_warm_ms"] for r in generated), 3) if generated else None,
            "raw_reproduced_answer_share": _r(sum(1 for r in generated if r["raw_same_text"]) / len(generated), 3)
            if generated else None,
            "measured_on": len(generated),
        },
        "total_ms": {"median": med("total_ms", rows), "p90": _r(percentile([r["total_ms"] for r in rows], 0.9))},
        "ttft_ms": {"median": med("ttft_ms", rows), "p90": _r(percentile([r["ttft_ms"] for r in rows], 0.9))},
        "llm_calls": {"median": med("llm_calls", rows), "mean": _r(statistics.mean(r["llm_calls"] for r in rows), 2)
                      if rows else None},
        "prompt_tokens_processed": {"median": med("prompt_tokens_processed", rows),
                                    "mean": _r(statistics.mean(r["prompt_tokens_processed"] for r in rows))
                                    if rows else None},
        "prompt_tokens": {"median": med("prompt_tokens", rows)},
        "final_prompt_tokens": {"median": med("final_prompt_tokens", rows)},
        "generated_tokens": {"median": med("generated_tokens", rows), "answer_median": med("answer_tokens", rows)},
        "tokens_per_s": {"median": med("tokens_per_s", rows), "decode_median": med("decode_tokens_per_s", rows),
                         "prompt_processing_median": med("prompt_tokens_per_s", rows)},
        "abstention_rate": {
            "answerable": _r(sum(r["abstained"] for r in answerable) / len(answerable), 3) if answerable else None,
            "unanswerable": _r(sum(r["abstained"] for r in unanswerable) / len(unanswerable), 3)
            if unanswerable else None,
        },
        "regenerated_share": _r(sum(r["regenerations"] > 0 for r in rows) / len(rows), 3) if rows else None,
        "unverified_warning_share": _r(sum(bool(r["warning"]) and not r["abstained"] for r in rows) / len(rows), 3)
        if rows else None,
        "handled_right": _share(sum(bool(r.get("handled_right")) for r in rows), len(rows)),
        "string_presence_answerable": _r(statistics.mean(r["string_presence"] for r in answerable
                                                         if r.get("string_presence") is not None), 3)
        if any(r.get("string_presence") is not None for r in answerable) else None,
        "gold_passage_cited_share_answerable": _r(sum(r["gold_cited"] for r in answerable) / len(answerable), 3)
        if answerable else None,
    }
    scored = [r for r in answerable if r["f1"] is not None]
    if scored:
        summary["answer_quality_answerable"] = {
            "token_f1": _r(statistics.mean(r["f1"] for r in scored), 4),
            "exact_match": _r(statistics.mean(r["em"] for r in scored), 4),
            "scored": len(scored),
        }
    return summary


def _share(successes: int, n: int) -> dict:
    low, high = wilson_interval(successes, n)
    return {"count": successes, "share": _r(successes / n, 3) if n else None, "ci95": [_r(low, 3), _r(high, 3)]}


def side_summary(rows: list[dict]) -> dict:
    """One side of the comparison (Kaizen's rows, or the naive rows), every figure computed the same way:
    answered / abstained shares with Wilson 95% intervals and their sample sizes, per kind of question; token F1
    (abstentions score 0) and string presence on the answerable ones; time to first token and total latency."""
    out: dict = {}
    for kind, subset in (("answerable", [r for r in rows if r["answerable"]]),
                         ("unanswerable", [r for r in rows if not r["answerable"]])):
        abstained = sum(bool(r["abstained"]) for r in subset)
        out[kind] = {"n": len(subset), "answered": _share(len(subset) - abstained, len(subset)),
                     "abstained": _share(abstained, len(subset))}
    scored = [r for r in rows if r["answerable"] and r.get("f1") is not None]
    answered = [r for r in scored if not r["abstained"]]
    out["answer_quality_answerable"] = {
        "token_f1": _r(statistics.mean(r["f1"] for r in scored), 4) if scored else None,
        "token_f1_answered": _r(statistics.mean(r["f1"] for r in answered), 4) if answered else None,
        "string_presence": _r(statistics.mean(r["string_presence"] for r in scored), 4) if scored else None,
        "scored": len(scored), "answered": len(answered),
    }
    for key in ("ttft_ms", "total_ms"):
        values = [r[key] for r in rows]
        out[key] = {"median": _r(percentile(values, 0.5)), "p90": _r(percentile(values, 0.9)),
                    "measured_on": sum(v is not None for v in values)}
    return out


def baseline_summary(rows: list[dict]) -> dict:
    """Kaizen beside the naive RAG, on the same questions: both sides, then Kaizen/naive ratios of the medians
    and the differences the targets are stated in."""
    kaizen = side_summary(rows)
    naive_rows = [{**r["naive"], "answerable": r["answerable"]} for r in rows]
    naive = side_summary(naive_rows)
    naive["llm_calls"] = {"total": sum(r["llm_calls"] for r in naive_rows),
                          "per_question_max": max((r["llm_calls"] for r in naive_rows), default=0)}
    naive["gold_passage_retrieved_share_answerable"] = _r(
        statistics.mean(float(r["gold_retrieved"]) for r in naive_rows if r["answerable"]), 3) \
        if any(r["answerable"] for r in naive_rows) else None
    naive["setup"] = {"search": "vector", "k": NAIVE_K, "system": NAIVE_SYSTEM, "temperature": 0.0,
                      "kv_cache": "reset before each question"}

    def ratio(key):
        k, n = kaizen[key]["median"], naive[key]["median"]
        return _r(k / n, 3) if k is not None and n else None

    def minus(a, b):
        return None if a is None or b is None else _r(a - b, 4)

    return {
        "naive": naive,
        "kaizen": kaizen,
        "kaizen_to_naive": {"ttft_ms_median": ratio("ttft_ms"), "total_ms_median": ratio("total_ms")},
        "kaizen_minus_naive": {
            "token_f1_answerable": minus(kaizen["answer_quality_answerable"]["token_f1"],
                                         naive["answer_quality_answerable"]["token_f1"]),
            "abstained_share_unanswerable": minus(kaizen["unanswerable"]["abstained"]["share"],
                                                  naive["unanswerable"]["abstained"]["share"]),
        },
        "note": "same store, embedder and loaded model; per question Kaizen first, then the naive RAG from a reset "
                "KV cache; then the cache is reset and only Kaizen's shared prompt prefix put back (untimed)",
    }


def beside_worker(agent, store, home, questions: list[dict], rows: list[dict]) -> dict:
    """The same questions again (Kaizen only) while a real `kaizen worker` grades the first pass's answers beside
    it on the same database, against the first pass's times: what a person at the REPL feels of the worker."""
    import os
    import subprocess
    import sys

    import sqlalchemy as sa

    from agent.graph import timed_ask
    from eval.metrics import percentile
    from eval.worker.jobs import close_deferrers, enqueue_interaction

    ids = [r["interaction_id"] for r in rows if r.get("interaction_id")]
    queued = [enqueue_interaction(store, i) for i in ids]
    close_deferrers()
    env = {**os.environ, "KAIZEN_HOME": str(home)}
    env.pop("KAIZEN_DATABASE_URL", None)
    worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(20)  # let it load its model and start on a job, as a worker that has been running would have
        with store.session() as s:
            started_jobs = s.execute(sa.text("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")
                                     ).scalar_one()
        again = []
        for q in questions:
            _, total_ms, ttft_ms = timed_ask(agent, q["question"])
            again.append({"ttft_ms": ttft_ms, "total_ms": total_ms})
        with store.session() as s:
            done = s.execute(sa.text("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded' "
                                     "AND task_name LIKE '%evaluate_interaction'")).scalar_one()
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=120)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    alone = {k: percentile([r.get(k) for r in rows], 0.5) for k in ("ttft_ms", "total_ms")}
    beside = {k: percentile([r.get(k) for r in again], 0.5) for k in ("ttft_ms", "total_ms")}
    return {
        "questions": len(again),
        "jobs_queued": len([j for j in queued if j]),
        "worker_busy_when_measuring_started": bool(started_jobs),
        "jobs_graded_by_the_end": done,
        "median_ms_alone": {k: _r(v) for k, v in alone.items()},
        "median_ms_beside_worker": {k: _r(v) for k, v in beside.items()},
        "ratio_beside_to_alone": {k: None if not alone[k] or beside[k] is None else round(beside[k] / alone[k], 3)
                                  for k in alone},
        "per_question": [{k: _r(v) for k, v in r.items()} for r in again],
    }


def cold_start(llm, store, embedder, question: str) -> dict:
    """A new process's first question (`kaizen ask`): a freshly loaded model whose KV cache is empty asks
    `question`, once evaluating the shared prompt prefix itself and once loading the state an earlier process
    saved (agent.prefix_state), both measured from the question. Greedy decoding: the answers must be equal."""
    import dataclasses

    from agent.graph import Agent, timed_ask
    from agent.llm import LLM
    from agent.prompts import shared_prefix

    if llm.settings.state_dir is None:
        return {"skipped": "the model has no prefix-state directory"}
    with llm.lock:  # make sure the saved state exists (written by the first warm of this model and prompt)
        llm.reset()
        llm.warm(shared_prefix())
    sides = {}
    for side, state_dir in (("evaluated", None), ("loaded", llm.settings.state_dir)):
        fresh = LLM(dataclasses.replace(llm.settings, state_dir=state_dir))
        agent = Agent(store, embedder=embedder, llm=fresh, persist=False)
        try:
            started = time.perf_counter()
            evaluated = fresh.warm(shared_prefix())
            warm_ms = (time.perf_counter() - started) * 1000
            result, total_ms, ttft_ms = timed_ask(agent, question, record=False)
        finally:
            agent.close()
        first = None if ttft_ms is None else warm_ms + ttft_ms
        sides[side] = {"prefix_tokens_evaluated": evaluated, "prefix_ms": _r(warm_ms), "ttft_ms": _r(first),
                       "total_ms": _r(warm_ms + total_ms), "answer": result.answer}
        del fresh
    evaluated, loaded = sides["evaluated"], sides["loaded"]
    return {"question": question, **sides, "same_answer": evaluated["answer"] == loaded["answer"],
            "ttft_ratio": _r(loaded["ttft_ms"] / evaluated["ttft_ms"], 3)
            if loaded["ttft_ms"] and evaluated["ttft_ms"] else None,
            "total_ratio": _r(loaded["total_ms"] / evaluated["total_ms"], 3)}


def run(corpus: str, questions_path: str, limit: int | None = 20, home: str | None = None, progress=None,
        skip: int = 0, baseline: str | None = None, with_worker: bool = False, article: str | None = None) -> dict:
    from agent.graph import Agent

    if baseline is not None and baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}: choose one of {', '.join(BASELINES)}")
    from agent.settings import AgentSettings
    from store.settings import ConfigError

    if AgentSettings().llm_url:  # the raw baseline is a call on the loaded llama.cpp model itself
        raise ConfigError("KAIZEN_LLM_URL is set: kaizen bench answer times raw llama.cpp calls on the in-process "
                          "model; unset it")

    from .corpus import article_file, bench_store, ingest_corpus, load_average

    with bench_store(home, "kaizen-bench-answer-") as (store, embedder, home_dir):
        source = article_file(corpus, article, home_dir / "article") if article else corpus
        report = ingest_corpus(store, embedder, source)
        questions = load_questions(questions_path, limit, skip)
        agent = Agent(store, embedder=embedder, persist=False)
        llm = agent.llm
        agent.ask("warm-up: what is this knowledge base about?")  # loads everything; not measured
        load_before = load_average()
        started = time.perf_counter()
        rows = run_questions(agent, questions, progress, baseline)
        seconds = time.perf_counter() - started
        result = {
            "benchmark": "answer",
            "corpus": str(corpus),
            "article": article,
            "questions_file": str(questions_path),
            "skipped_per_kind": skip,
            "model": llm.name,
            "llm": {"threads": llm.settings.threads, "ctx": llm.settings.ctx, "max_tokens": llm.settings.max_tokens,
                    "temperature": llm.settings.temperature},
            "agent": agent.settings.model_dump(exclude=set(MODEL_FIELDS)),  # the answering ones (the model's: "llm")
            "documents": report.added + report.updated + report.unchanged,
            "chunks": report.chunks,
            "seconds": round(seconds, 1),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "summary": summarise(rows),
        }
        if baseline == "naive":
            result["baseline"] = baseline_summary(rows)  # beside Kaizen's summary
        if with_worker:
            result["beside_worker"] = beside_worker(agent, store, home_dir, questions, rows)
        if questions and hasattr(llm, "warm"):
            result["cold_start"] = cold_start(llm, store, embedder, questions[0]["question"])
        result["per_question"] = rows
        return result
