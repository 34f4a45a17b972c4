"""`kaizen bench answer`: the whole graph on a question set, against one raw llama.cpp call.

Per question and in summary: time to first token, total latency, LLM calls, prompt tokens (all, and those
llama.cpp actually processed after reusing its KV cache), generated tokens, tokens/s; the ratio of Kaizen's total
latency to one raw llama.cpp call that generates the same number of tokens from the same final prompt (timed
right after, with the KV cache reset, so the raw call processes the whole prompt); abstention on answerable and
unanswerable questions (ClapNQ has both); token F1 / exact match against the reference (JSQuAD: best over its
accepted short answers; character tokens for Japanese).

Runs in a fresh embedded database (a temporary KAIZEN_HOME, or --home DIR to keep and reuse it).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from agent.settings import MODEL_FIELDS
from eval.metrics import exact_match, f1_score, normalise_tokens, percentile


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


def answer_scores(answer: str, row: dict) -> tuple[float | None, float | None]:
    from agent.prompts import strip_citations

    references = row.get("answers") or ([row["reference"]] if row.get("reference") else [])
    if not references:
        return None, None
    text = strip_citations(answer)
    f1 = max(f1_score(text, ref) for ref in references)
    em = max(exact_match(text, ref) for ref in references)
    # Short-span sets (JSQuAD): an answer that contains an accepted span also counts as a match.
    if row.get("answers"):
        norm = "".join(normalise_tokens(text))
        em = max(em, float(any("".join(normalise_tokens(ref)) in norm for ref in references if ref)))
    return f1, em


def raw_call(llm, messages: list[dict], n_tokens: int, stop: list[str], warm_prefix: list[dict] | None = None) -> dict:
    """One plain llama.cpp chat completion of the final prompt, `n_tokens` at most, from a cold KV cache; or,
    with `warm_prefix`, from a cache that holds those messages (as Kaizen's does after any earlier question)."""
    llm.reset()
    if warm_prefix:
        with llm.lock:  # untimed: leave the shared prefix in the KV cache, as the previous question would
            llm.model.create_chat_completion(messages=[*warm_prefix, {"role": "user", "content": "Hello."}],
                                             max_tokens=1, **llm.sampling())
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


def _r(value, digits=1):
    return None if value is None else round(value, digits)


def run_questions(agent, questions: list[dict], progress=None) -> list[dict]:
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
            "answer": result.answer, "abstained": result.abstained, "verified": result.verified,
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
        row["f1"], row["em"] = answer_scores("" if result.abstained else result.answer, q)
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


def run(corpus: str, questions_path: str, limit: int | None = 20, home: str | None = None, progress=None,
        skip: int = 0) -> dict:
    from agent.graph import Agent

    from .corpus import bench_store, ingest_corpus, load_average

    with bench_store(home, "kaizen-bench-answer-") as (store, embedder, _):
        report = ingest_corpus(store, embedder, corpus)
        questions = load_questions(questions_path, limit, skip)
        agent = Agent(store, embedder=embedder, persist=False)
        llm = agent.llm
        agent.ask("warm-up: what is this knowledge base about?")  # loads everything; not measured
        load_before = load_average()
        started = time.perf_counter()
        rows = run_questions(agent, questions, progress)
        seconds = time.perf_counter() - started
        return {
            "benchmark": "answer",
            "corpus": str(corpus),
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
            "per_question": rows,
        }
