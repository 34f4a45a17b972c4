"""`kaizen bench retrieval|scale|answer|judge|recovery|improve|soak|serve`: the benchmarks of eval/bench/, printed.

Each eval.bench module's `run(...)` returns its result as a dict (the `--json` output); the tables here are the
text view of it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .judge_commands import SHARED_DATA
from .output import err, json_option, out, print_json, print_table

HOME_HELP = "keep the benchmark database in this KAIZEN_HOME (default: temporary)"


def register_commands(cli: click.Group) -> None:
    @cli.group(name="bench")
    def bench_group() -> None:
        """benchmarks (JSON with --json)

        Each builds its own embedded database (in a temporary KAIZEN_HOME unless --home), never the one in use."""

    @bench_group.command(name="retrieval")
    @click.option("--corpus", required=True, help="the corpus (../shared/data format, JSONL)")
    @click.option("--questions", required=True, help="the question file (../shared/data format, JSONL)")
    @click.option("--limit", type=int, default=None, help="use only the first N answerable questions")
    @click.option("--home", help=HOME_HELP)
    @json_option
    def retrieval_command(corpus: str, questions: str, limit: int | None, home: str | None, as_json: bool) -> int:
        """recall@k / MRR / latency / ingestion speed on a question set

        Per search mode (hybrid, vector, text): recall@1/5/10 and MRR@10 of the gold passages, p50/p95 query
        latency; and ingestion speed against the raw embedding model. With --home a second run skips unchanged
        documents, so the ingestion figures mean something only on a fresh home."""
        from eval.bench.retrieval import run

        result = run(corpus, questions, limit, home)
        if as_json:
            print_json(result)
            return 0
        ing = result["ingest"]
        out.print(f"{result['documents']} documents, {result['chunks']} chunks; ingest {ing['seconds']}s "
                  f"({ing['chunks_per_second']} chunks/s, raw embedding {ing['raw_embedding_chunks_per_second']}/s)")
        keys = ["recall@1", "recall@5", "recall@10", "mrr@10", "latency_ms_p50", "latency_ms_p95"]
        print_table(["mode", *keys], [[mode, *[m[k] for k in keys]] for mode, m in result["modes"].items()])
        return 0

    @bench_group.command(name="scale")
    @click.option("--n", type=int, default=100000, help="vectors, or with --corpus distractor chunks (default 100000)")
    @click.option("--dim", type=int, default=384, help="dimensions of the synthetic vectors (default 384)")
    @click.option("--queries", type=int, default=200, help="synthetic queries (default 200)")
    @click.option("--m", "hnsw_m", type=click.IntRange(2, 100), default=None,
                  help="the synthetic HNSW index's m, links per node (default: what Kaizen builds with)")
    @click.option("--ef-construction", type=click.IntRange(4, 1000), default=None,
                  help="the synthetic HNSW index's ef_construction (default: what Kaizen builds with)")
    @click.option("--corpus", "corpora", multiple=True, type=click.Path(exists=True),
                  help="a corpus to ingest and recombine (repeat, one per --questions)")
    @click.option("--questions", "question_sets", multiple=True, type=click.Path(exists=True),
                  help="its questions with gold ids (repeat, in --corpus order)")
    @click.option("--per-set", type=int, default=100, help="questions evaluated per set (default 100)")
    @click.option("--home", type=click.Path(file_okay=False), default=None,
                  help="keep the --corpus database here; a later run reuses its chunks (default: a temporary one)")
    @json_option
    def scale_command(n: int, dim: int, queries: int, hnsw_m: int | None, ef_construction: int | None,
                      corpora: tuple[str, ...], question_sets: tuple[str, ...], per_set: int, home: str | None,
                      as_json: bool) -> int:
        """pgvector and the hybrid query at scale, in a throw-away embedded database

        Without --corpus: synthetic clustered vectors; insert rows/s (binary COPY), HNSW build time, recall@10
        against an exact scan of the same vectors and p50/p95 latency for several hnsw.ef_search values.

        With --corpus/--questions pairs: each corpus is ingested, its questions searched, then --n chunks made
        of the corpora's own sentences recombined are added and everything is measured again: the whole hybrid
        query's recall@5 and latency before and after, HNSW recall against exact per ef_search, and filtered
        searches (source prefix)."""
        if corpora or question_sets:
            if len(corpora) != len(question_sets):
                raise click.UsageError("give one --questions file for each --corpus")
            from eval.bench.scale import run_corpus

            result = run_corpus(n, list(zip(corpora, question_sets)), per_set, home=home)
            if as_json:
                print_json(result)
                return 0
            out.print(f"{result['chunks_total']} chunks (pgvector {result['pgvector']}); "
                      + ", ".join(f"{k} {v}s" for k, v in (result["timings"] or {}).items()))
            rows = []
            for entry in result["sets"]:
                small, large = list(entry.values())[-2:]
                rows.append([Path(entry["corpus"]).parent.name, (small or {}).get("recall@5"),
                             large["hybrid"]["recall@5"], large["hybrid_among_real_passages"]["recall@5"],
                             (small or {}).get("latency_ms_p95"), large["hybrid"]["latency_ms_p95"]])
            print_table(["set", "recall@5 small", "large", "large, real passages", "p95 ms small", "large"], rows)
            print_table(["ef_search", "recall@10", "p50 ms", "p95 ms"],
                        [[ef, m["recall@10"], m["latency_ms_p50"], m["latency_ms_p95"]]
                         for ef, m in result["vector_by_ef_search"].items()])
            return 0
        from eval.bench.scale import run
        from store.kb_versions import HNSW_EF_CONSTRUCTION, HNSW_M

        hnsw_m, ef_construction = hnsw_m or HNSW_M, ef_construction or HNSW_EF_CONSTRUCTION
        if ef_construction < 2 * hnsw_m:
            raise click.UsageError("--ef-construction must be at least twice --m")
        result = run(n, dim, queries, m=hnsw_m, ef_construction=ef_construction)
        if as_json:
            print_json(result)
            return 0
        out.print(f"{result['n']} vectors × {result['dim']}: insert {result['insert_rows_per_second']} rows/s, "
                  f"HNSW build {result['hnsw_build_seconds']}s")
        print_table(["ef_search", "recall@10", "p50 ms", "p95 ms"],
                    [[ef, m["recall@10"], m["latency_ms_p50"], m["latency_ms_p95"]]
                     for ef, m in result["by_ef_search"].items()])
        return 0

    @bench_group.command(name="answer")
    @click.option("--corpus", required=True, help="the corpus (../shared/data format, JSONL)")
    @click.option("--questions", required=True, help="the question file (../shared/data format, JSONL)")
    @click.option("--limit", type=int, default=20, help="the first N questions (answerable and unanswerable)")
    @click.option("--skip", type=int, default=0,
                  help="skip the first N answerable and N unanswerable questions (for example, those tuned on)")
    @click.option("--home", help=HOME_HELP)
    @click.option("--baseline", type=click.Choice(["naive"]), default=None,
                  help="also answer each question with a naive RAG (vector top-4, one plain prompt, one greedy "
                       "call) on the same store and model, and report both side by side")
    @click.option("--article", metavar="TITLE",
                  help="ingest only this article of the corpus, its passages joined into one .txt document (a long "
                       "document as a person adds it)")
    @click.option("--with-worker", is_flag=True,
                  help="then ask the questions again while a real `kaizen worker` grades the answers beside it, "
                       "and report the times against the first pass")
    @json_option
    def answer_command(corpus: str, questions: str, limit: int | None, skip: int, home: str | None,
                       baseline: str | None, with_worker: bool, article: str | None, as_json: bool) -> int:
        """answer latency vs raw llama.cpp, LLM calls, tokens, abstention, F1/EM

        The whole graph on each question, against one raw llama.cpp call generating as many tokens from the
        same final prompt; abstention on answerable and unanswerable questions; token F1 / exact match against
        the reference. Progress goes to stderr; --json gives every question."""
        from eval.bench.answer import run

        result = run(corpus, questions, limit, home, _answer_progress, skip, baseline=baseline,
                     with_worker=with_worker, article=article)
        if as_json:
            print_json(result)
            return 0
        print_answer_summary(result)
        if "baseline" in result:
            print_baseline_summary(result["baseline"])
        if "beside_worker" in result:
            w = result["beside_worker"]
            print_table(["median", "alone", "beside a grading worker", "ratio"],
                        [[k, w["median_ms_alone"][k], w["median_ms_beside_worker"][k], w["ratio_beside_to_alone"][k]]
                         for k in ("ttft_ms", "total_ms")], title=f"{w['questions']} questions again, "
                        f"{w['jobs_graded_by_the_end']} of {w['jobs_queued']} answers graded meanwhile")
        cold = result.get("cold_start") or {}
        if "loaded" in cold:
            print_table(["a new process's first question", "prefix tokens evaluated", "first token ms", "total ms"],
                        [[side, cold[side]["prefix_tokens_evaluated"], cold[side]["ttft_ms"], cold[side]["total_ms"]]
                         for side in ("evaluated", "loaded")],
                        title=f"cold start: first token {cold['ttft_ratio']}x with the saved prompt prefix")
        return 0

    @bench_group.command(name="judge")
    @click.option("--corpus", default=str(SHARED_DATA / "clapnq" / "corpus.jsonl"),
                  help="the corpus (default: ../shared/data/clapnq/corpus.jsonl)")
    @click.option("--questions", default=str(SHARED_DATA / "clapnq" / "questions.dev.jsonl"),
                  help="the question file (default: ../shared/data/clapnq/questions.dev.jsonl)")
    @click.option("--pairs", type=int, default=12, help="labelled pairs (default 12)")
    @click.option("--metrics", help="comma-separated LLM metrics (default: the reference-free ones + answer_accuracy)")
    @click.option("--interactions", type=int, default=2, help="real agent answers to time the evaluation on")
    @click.option("--judge-model", multiple=True,
                  help="a .gguf judge (repeatable; default: the chat model and the installed opt-in model)")
    @click.option("--output", help="also write the JSON here (updated after each judge)")
    @json_option
    def judge_command(corpus: str, questions: str, pairs: int, metrics: str | None, interactions: int,
                      judge_model: tuple[str, ...], output: str | None, as_json: bool) -> int:
        """judge AUC per metric and model, non-LLM metrics, seconds per evaluation

        Per judge model: the ROC AUC of every LLM metric on the same labelled pairs, seconds per judged item and
        per evaluated interaction; also the AUC of the metrics that need no LLM, and a check that the gold-id
        retrieval metrics agree exactly with the benchmark's own ranking code."""
        from eval.bench.judge import run

        def save(result: dict) -> None:
            if output:
                Path(output).write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str),
                                        encoding="utf-8")

        progress = None if as_json else (lambda message: out.print(message))
        result = run(corpus, questions, pairs=pairs, judge_models=list(judge_model) or None, metrics=metrics,
                     interactions=interactions, progress=progress, checkpoint=save)
        save(result)
        if as_json:
            print_json(result)
            return 0
        print_judge_summary(result)
        return 0

    @bench_group.command(name="recovery")
    @click.option("--corpus", required=True, help="the corpus (../shared/data format, JSONL)")
    @click.option("--questions", required=True, help="the question file (../shared/data format, JSONL)")
    @click.option("--limit", type=int, default=None, help="use only the first N answerable questions as probes")
    @click.option("--home", help=HOME_HELP)
    @click.option("--answer-probes", type=int, default=20,
                  help="held-out probes the agent answers at each phase for the RAGAS metrics (0: skip them)")
    @click.option("--judge-metrics", default="answer_relevancy",
                  help="comma-separated LLM metrics to calibrate the judge on and, where trusted, grade with")
    @click.option("--output", help="also write the JSON result to this file")
    @json_option
    def recovery_command(corpus: str, questions: str, limit: int | None, home: str | None, answer_probes: int,
                         judge_metrics: str, output: str | None, as_json: bool) -> int:
        """degrade the KB on purpose, let the planner repair it, measure recovery

        Measures held-out quality, lets the planner run on the clean KB (it must change nothing), degrades the KB
        (tiny fragments, titles stripped, noise chunks), raises the alert the worker's drift check would raise,
        lets the planner repair it and measures again. The recovered share is (recovered - degraded) /
        (baseline - degraded) of held-out recall@5."""
        from eval.bench.recovery import run
        from eval.judging.ragas_metrics import selected_metrics

        if answer_probes < 0:
            raise SystemExit("--answer-probes must be 0 or more")
        metrics = selected_metrics(judge_metrics, ("answer_relevancy",))
        result = run(corpus, questions, limit, home, answer_probes=answer_probes, judge_metrics=metrics)
        if output:
            Path(output).write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        if as_json:
            print_json(result)
            return 0
        print_recovery_summary(result)
        return 0

    @bench_group.command(name="improve")
    @click.option("--corpus", "corpora", multiple=True, required=True, type=click.Path(exists=True),
                  help="a corpus to ingest (repeat for several)")
    @click.option("--questions", "question_files", multiple=True, required=True, type=click.Path(exists=True),
                  help="questions with gold ids, split into traffic, the guard's probes and the evaluation part "
                       "(repeat)")
    @click.option("--eval-questions", type=click.Path(exists=True, dir_okay=False),
                  help="questions only scored, before and after, never shown to the loop")
    @click.option("--limit", type=int, default=None, help="the first N answerable questions of each file")
    @click.option("--budget", type=float, default=1200.0, show_default=True,
                  help="seconds the unattended loop may run")
    @click.option("--start", "start", multiple=True, metavar="NAME=VALUE",
                  help="a misconfigured start: chunk_tokens, or a retrieval parameter such as fusion_alpha (repeat)")
    @click.option("--answers", type=int, default=0, show_default=True,
                  help="evaluation questions the default model answers before and after (token F1, string presence)")
    @click.option("--home", help=HOME_HELP)
    @click.option("--output", help="also write the JSON result to this file")
    @json_option
    def improve_command(corpora: tuple[str, ...], question_files: tuple[str, ...], eval_questions: str | None,
                        limit: int | None, budget: float, start: tuple[str, ...], answers: int, home: str | None,
                        output: str | None, as_json: bool) -> int:
        """let the improvement loop run unattended and score held-out questions before and after

        The questions are split (a stable hash of their ids) into traffic (train probes the loop learns and tunes
        from), the guard's held-out probes, and an evaluation part nothing in the loop reads. With --start, the
        same questions are also scored on a clean default ingest, and gap_closed is the share of the deficit the
        loop recovered."""
        from eval.bench.improve import run

        pairs = {}
        for item in start:
            name, sep, value = item.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise click.BadParameter(f"{item!r}: use NAME=VALUE, for example fusion_alpha=0.1",
                                         param_hint="--start")
            pairs[name.strip()] = value.strip()
        result = run(list(corpora), list(question_files), home, start=pairs or None, eval_questions=eval_questions,
                     limit=limit, budget_seconds=budget, answers=answers)
        if output:
            Path(output).write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        if as_json:
            print_json(result)
            return 0
        rows = [[name, *(f"{result[phase][name][m]:.3f}" if result[phase].get(name) else "" for phase in
                         ("before", "after") for m in ("recall@1", "recall@5", "mrr@10"))]
                for name in result["before"]]
        print_table(["questions", "r@1 before", "r@5 before", "mrr before", "r@1 after", "r@5 after", "mrr after"],
                    rows)
        for a in result["actions"]:
            out.print(f"- {a['kind']} {a['params'] or ''}: {a['decision']} ({a['reason']})", highlight=False)
        out.print(f"{result['tried']} tried, {result['kept']} kept, {result['rolled_back']} rolled back in "
                  f"{result['seconds']['loop']} s", highlight=False)
        return 0

    @bench_group.command(name="soak")
    @click.option("--minutes", type=float, default=10.0, show_default=True, help="how long the soak runs")
    # The defaults are absolute paths, so they are spelt in the help (the printed width must not depend on where
    # the checkout is: docs/cli.md is generated from this help).
    @click.option("--corpus", default=str(SHARED_DATA / "clapnq" / "corpus.jsonl"),
                  help="the corpus (../shared/data format, JSONL; default: ../shared/data/clapnq/corpus.jsonl)")
    @click.option("--questions", default=str(SHARED_DATA / "clapnq" / "questions.dev.jsonl"),
                  help="the question file: the client asks them in turn, and they are imported as probes "
                       "(default: ../shared/data/clapnq/questions.dev.jsonl)")
    @click.option("--limit", type=int, default=None, help="import only the first N answerable questions as probes")
    @click.option("--home", help=HOME_HELP)
    @click.option("--metrics", default="answer_relevancy", show_default=True,
                  help="comma-separated metrics the workers grade each answer with (KAIZEN_EVAL_METRICS)")
    @click.option("--pause", type=float, default=5.0, show_default=True,
                  help="seconds the client waits between questions (the workers yield to an answer in progress)")
    @click.option("--down-seconds", type=float, default=5.0, show_default=True,
                  help="how long the database stays stopped when it is restarted")
    @click.option("--drain-seconds", type=float, default=None,
                  help="how long the workers may take to empty the queue after the end (default: half the soak, "
                       "at least 120)")
    @click.option("--output", help="also write the JSON result to this file")
    @json_option
    def soak_command(minutes: float, corpus: str, questions: str, limit: int | None, home: str | None,
                     metrics: str, pause: float, down_seconds: float, drain_seconds: float | None,
                     output: str | None, as_json: bool) -> int:
        """a client, two workers and the planner for N minutes, with faults; then the books are checked

        A `kaizen chat` client asks the questions in turn while two `kaizen worker` processes grade and probe;
        the KB is degraded so the planner repairs it, one worker is killed with SIGKILL (and replaced), the
        database is stopped and started under everyone, and the client gets SIGTERM (a new one continues).
        Then: answers graded exactly once, jobs lost or run twice, KB version consistency, each fault survived.
        Exits 1 when a target is missed (anything lost, doubled or inconsistent, or a fault not survived)."""
        from eval.bench.soak import run

        if minutes <= 0:
            raise SystemExit("--minutes must be more than 0")
        progress = None if as_json else (lambda message: err.print(f"[dim]{message}[/dim]"))
        result = run(corpus, questions, minutes=minutes, home=home, limit=limit, metrics=metrics,
                     pause_seconds=pause, down_seconds=down_seconds, drain_seconds=drain_seconds, progress=progress)
        if output:
            Path(output).write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        if as_json:
            print_json(result)
        else:
            print_soak_summary(result)
        return 0 if result["ok"] else 1

    _serve_command(bench_group)


def _serve_command(bench_group: click.Group) -> None:
    @bench_group.command(name="serve")
    @click.option("--corpus", default=str(SHARED_DATA / "clapnq" / "corpus.jsonl"),
                  help="the corpus (../shared/data format, JSONL; default: ../shared/data/clapnq/corpus.jsonl)")
    @click.option("--questions", default=str(SHARED_DATA / "clapnq" / "questions.dev.jsonl"),
                  help="the questions the clients ask in turn (default: ../shared/data/clapnq/questions.dev.jsonl)")
    @click.option("--requests", type=int, default=24, show_default=True, help="questions asked per backend")
    @click.option("--clients", type=int, default=4, show_default=True, help="clients asking at once")
    @click.option("--workers", type=int, default=2, show_default=True, help="`kaizen worker` processes grading")
    @click.option("--backend", "backends", multiple=True, type=click.Choice(["server", "in-process"]),
                  help="run only this backend (repeatable; default: both, in one run)")
    @click.option("--metrics", default="answer_relevancy", show_default=True,
                  help="comma-separated metrics the workers grade each answer with (KAIZEN_EVAL_METRICS)")
    @click.option("--drain-seconds", type=float, default=900.0, show_default=True,
                  help="how long the workers may take to grade what is left after the asking")
    @click.option("--compare-ask", type=click.IntRange(0, 100), default=3, show_default=True,
                  help="questions first asked one at a time through kaizen serve and through kaizen ask, on the "
                       "same backend (0: none)")
    @click.option("--home", help=HOME_HELP)
    @click.option("--output", help="also write the JSON result to this file")
    @json_option
    def serve_bench_command(corpus: str, questions: str, requests: int, clients: int, workers: int,
                            backends: tuple[str, ...], metrics: str, drain_seconds: float, compare_ask: int,
                            home: str | None, output: str | None, as_json: bool) -> int:
        """kaizen serve, its workers and the model: one model server against a model in every process

        Per backend (a llama-cpp-python model server that `kaizen serve` and the workers share through
        KAIZEN_LLM_URL; or each process loading its own model), `kaizen serve` and the workers run as real
        processes while CLIENTS openai clients ask REQUESTS questions, streaming: requests/minute, p50/p95
        latency and time to first token, errors; afterwards every answer graded exactly once and no job lost or
        run twice. Before that, --compare-ask questions one at a time through `kaizen serve` and through
        `kaizen ask` on the same backend: the latency the HTTP API adds. Exits 1 when a check fails."""
        from eval.bench.serve import BACKENDS, run

        if requests < 1 or clients < 1 or workers < 0:
            raise SystemExit("--requests and --clients must be at least 1, --workers at least 0")
        progress = None if as_json else (lambda message: err.print(f"[dim]{message}[/dim]"))
        result = run(corpus, questions, requests=requests, clients=clients, workers=workers, home=home,
                     metrics=metrics, backends=backends or BACKENDS, drain_seconds=drain_seconds,
                     compare_ask=compare_ask, progress=progress)
        if output:
            Path(output).write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        if as_json:
            print_json(result)
        else:
            print_table(["backend", "answered", "errors", "requests/min", "latency p50 / p95 ms",
                         "first token p50 / p95 ms"],
                        [[name, b["answered"], b["errors"], b["requests_per_minute"],
                          f"{b['latency_ms']['p50']} / {b['latency_ms']['p95']}",
                          f"{b['ttft_ms']['p50']} / {b['ttft_ms']['p95']}"] for name, b in result["backends"].items()],
                        title="kaizen serve")
            compared = {name: b["serve_against_ask"] for name, b in result["backends"].items()
                        if "serve_against_ask" in b}
            if compared:
                print_table(["backend", "questions compared", "kaizen serve ms (median)", "kaizen ask ms (median)",
                             "serve / ask"],
                            [[name, c["compared"], c["serve_ms_median"], c["ask_ms_median"], c["serve_to_ask"]]
                             for name, c in compared.items()], title="one question at a time")
            i, j = result["interactions"], result["jobs"]
            out.print(f"server / in-process requests per minute: {result['server_vs_in_process']} · answers "
                      f"{i['recorded']} recorded, {i['graded']} graded, {i['duplicate_grades']} graded twice · jobs "
                      f"{j['lost']} lost, {j['run_twice']} run twice · "
                      f"{'all checks passed' if result['ok'] else 'CHECKS FAILED'}")
        return 0 if result["ok"] else 1


def _answer_progress(i: int, n: int, row: dict) -> None:
    print(f"[{i}/{n}] {'A' if row['answerable'] else 'U'} {row['total_ms']:.0f} ms ratio "
          f"{row['latency_ratio']} calls {row['llm_calls']} abstained {row['abstained']} :: "
          f"{row['question'][:60]}", file=sys.stderr, flush=True)
    if "naive" in row:
        naive = row["naive"]
        print(f"      naive {naive['total_ms']:.0f} ms first token {naive['ttft_ms']} ms abstained "
              f"{naive['abstained']} f1 {naive['f1'] if naive['f1'] is None else round(naive['f1'], 2)}",
              file=sys.stderr, flush=True)


def print_answer_summary(result: dict) -> None:
    s = result["summary"]
    out.print(f"{result['model']} · {s['questions']} questions ({s['answerable']} answerable) · {result['seconds']}s")
    lr = s["latency_ratio_to_raw_llama_cpp"]
    rows = [
        ["latency ratio to raw llama.cpp (answerable, median / sum)",
         f"{lr['answerable_median']} / {lr['answerable_sum_ratio']}"],
        ["total latency ms (median / p90)", f"{s['total_ms']['median']} / {s['total_ms']['p90']}"],
        ["time to first token ms (median)", s["ttft_ms"]["median"]],
        ["LLM calls per question (median)", s["llm_calls"]["median"]],
        ["prompt tokens processed per question (median)", s["prompt_tokens_processed"]["median"]],
        ["generated tokens (median)", s["generated_tokens"]["median"]],
        ["tokens/s (median)", s["tokens_per_s"]["median"]],
        ["abstention answerable / unanswerable",
         f"{s['abstention_rate']['answerable']} / {s['abstention_rate']['unanswerable']}"],
    ]
    if "answer_quality_answerable" in s:
        q = s["answer_quality_answerable"]
        rows.append(["token F1 / exact match (answerable)", f"{q['token_f1']} / {q['exact_match']}"])
    h = s["handled_right"]
    rows.append(["string presence (answerable)", s["string_presence_answerable"]])
    rows.append(["handled right (answered with the reference and a citation, or abstained in the question's "
                 "language)", f"{h['count']}/{s['questions']} [{h['ci95'][0]}, {h['ci95'][1]}]"])
    print_table(["measure", "value"], rows)
    err.print("[dim]--json gives every question[/dim]")


def print_baseline_summary(baseline: dict) -> None:
    """Kaizen | naive, the same measures computed the same way (eval.bench.answer.side_summary)."""
    sides = (baseline["kaizen"], baseline["naive"])

    def share(kind, what):
        return [f"{s[kind][what]['share']} [{s[kind][what]['ci95'][0]}, {s[kind][what]['ci95'][1]}] "
                f"n={s[kind]['n']}" for s in sides]

    def both(get):
        return [get(s) for s in sides]

    rows = [
        ["answered, answerable", *share("answerable", "answered")],
        ["abstained, answerable", *share("answerable", "abstained")],
        ["answered, unanswerable", *share("unanswerable", "answered")],
        ["abstained, unanswerable", *share("unanswerable", "abstained")],
        ["token F1, answerable", *both(lambda s: s["answer_quality_answerable"]["token_f1"])],
        ["token F1, answered ones", *both(lambda s: s["answer_quality_answerable"]["token_f1_answered"])],
        ["string presence, answerable", *both(lambda s: s["answer_quality_answerable"]["string_presence"])],
        ["time to first token ms (median / p90)", *both(lambda s: f"{s['ttft_ms']['median']} / {s['ttft_ms']['p90']}")],
        ["total latency ms (median / p90)", *both(lambda s: f"{s['total_ms']['median']} / {s['total_ms']['p90']}")],
    ]
    print_table(["measure", "Kaizen", "naive"], rows,
                title="beside a naive RAG (vector top-4, one plain call); shares with Wilson 95% CI")
    ratios = baseline["kaizen_to_naive"]
    out.print(f"Kaizen/naive medians: first token {ratios['ttft_ms_median']}, total {ratios['total_ms_median']}; "
              f"naive LLM calls {baseline['naive']['llm_calls']['total']}")


def print_judge_summary(result: dict) -> None:
    rows = []
    for judge in result["judges"]:
        for m in judge["metrics"]:
            rows.append([judge["judge_model"], m["metric"], m["auc"], f"{m['scored']}/{m['items']}",
                         m["seconds_per_item"], "yes" if m["trusted"] else "no"])
    for m in result.get("non_llm_metrics", []):
        rows.append(["(no LLM)", m["metric"], m["auc"], f"{m['scored']}/{m['items']}", m["seconds_per_item"],
                     "yes" if m["trusted"] else "no"])
    print_table(["judge", "metric", "AUC", "scored", "s/item", "trusted"], rows, title="judge calibration")
    for judge in result["judges"]:
        out.print(f"{judge['judge_model']}: {judge['interaction_eval']['seconds_per_interaction']}s per evaluated "
                  f"interaction (load {judge['interaction_eval']['load_average_before']})")
    gold = result["gold_id_metrics"]
    out.print(f"gold-id metrics on {gold['probes']} probes: exact={gold['exact']} {gold['summary']}")


def print_recovery_summary(result: dict) -> None:
    from eval.judging.trust import GOLD_METRICS

    h = result["heldout"]
    print_table(["held-out", *GOLD_METRICS], [[phase, *[h[phase][m] for m in GOLD_METRICS]]
                                              for phase in ("baseline", "degraded", "recovered")])
    ragas = result["ragas"]
    if isinstance(ragas, dict) and ragas.get("trusted_metrics"):
        phases = [p for p in ("baseline", "degraded", "recovered") if p in ragas]
        print_table(["held-out answers", *ragas["trusted_metrics"], "abstained"],
                    [[p, *[ragas[p]["metrics"].get(m) for m in ragas["trusted_metrics"]], ragas[p]["abstained_share"]]
                     for p in phases])
    out.print(f"recovered {result['recovered_share_recall@5']} of the recall@5 lost; "
              f"{result['repair']['actions_taken']} action(s) taken, {result['repair']['actions_kept']} kept; "
              f"clean KB: {result['clean_kb']['message']}; {result['seconds']['total']}s "
              f"(load {result['load_average']})")


def print_soak_summary(result: dict) -> None:
    print_table(["fault", "at s", "survived"], [[f["fault"], f["at_seconds"], "yes" if f["survived"] else "NO"]
                                                for f in result["faults"]], title="faults")
    i, j, kb = result["interactions"], result["jobs"], result["kb"]
    print_table(["check", "count"], [
        ["answers recorded / graded / still queued", f"{i['recorded']} / {i['graded']} / {i['pending_grades']}"],
        ["duplicate grades", i["duplicate_grades"]],
        ["missing grades", i["missing_grades"]],
        ["answers acknowledged but not recorded", i["acknowledged_not_recorded"]],
        ["jobs / succeeded / queued", f"{j['jobs']} / {j['succeeded']} / {j['queued']}"],
        ["jobs lost", j["lost"]],
        ["jobs run twice", j["run_twice"]],
        ["KB inconsistencies", kb["inconsistencies"]],
    ], title="checks")
    out.print(f"{'all targets met' if result['ok'] else 'TARGETS MISSED'} · {result['seconds']['total']}s "
              f"(load {result['load_average']}) · --json gives the details")
