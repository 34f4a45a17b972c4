"""`kaizen bench serve`: Kaizen as a service, measured with real processes. For each backend, in one run on one
store:

- `server`: one model server (llama-cpp-python's `python -m llama_cpp.server` on the chat model's GGUF) that
  `kaizen serve` and both workers use through KAIZEN_LLM_URL; `kaizen serve` answers several questions at once.
- `in-process`: `kaizen serve` and each worker load their own copy of the model; one question at a time.

Each starts `kaizen serve` and two `kaizen worker` processes; `clients` threads ask questions of the question file
in turn through the official `openai` client, streaming, until `requests` are answered. Per backend:
requests/minute over the asking phase, p50/p95 latency and time to first token as the clients saw them, errors.
Then the queue drains and everything stops, and the books are checked with the soak's checks: every answer
recorded and graded exactly once, no job lost or run twice. `server_vs_in_process` is the ratio of the two
backends' requests/minute. Before the workers start, `compare_ask` questions are asked one at a time through
`kaizen serve` and through `kaizen ask` on the same backend (`serve_against_ask`: what the HTTP API adds).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BACKENDS = ("server", "in-process")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float, ok=(200,)) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it answered")
        try:
            if httpx.get(url, timeout=10).status_code in ok:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s")


def model_server_command(model: Path, port: int, threads: int, ctx: int) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server on 127.0.0.1:`port` (docs/serve.md: a streaming answer is not
    cut short when another request arrives)."""
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port",
            str(port), "--n_ctx", str(ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads),
            "--interrupt_requests", "False"]


def start_model_server(model: Path, log: Path, threads: int, ctx: int) -> tuple[subprocess.Popen, str]:
    """The model server on a free port: (process, its URL)."""
    port = free_port()
    proc = subprocess.Popen(model_server_command(model, port, threads, ctx), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/v1/models", proc, "the model server", 300)
    return proc, url


def ask_all(base_url: str, key: str, questions: list[str], requests: int, clients: int) -> list[dict]:
    """`clients` threads asking in turn until `requests` questions are asked: one row per request."""
    from openai import OpenAI

    api = OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=900)
    counter = itertools.count()
    rows: list[dict] = []
    lock = threading.Lock()

    def one(question: str) -> dict:
        row = {"question": question, "ms": None, "ttft_ms": None, "interaction_id": None, "error": None,
               "started": time.time()}
        started = time.perf_counter()
        try:
            stream = api.chat.completions.create(model="kaizen", messages=[{"role": "user", "content": question}],
                                                 stream=True)
            for chunk in stream:
                if row["ttft_ms"] is None and chunk.choices and chunk.choices[0].delta.content:
                    row["ttft_ms"] = round((time.perf_counter() - started) * 1000, 1)
                meta = (chunk.model_extra or {}).get("kaizen")
                if meta:
                    row["interaction_id"] = meta.get("interaction_id")
                    row["abstained"] = meta.get("abstained")
        except Exception as exc:  # counted, with the reason
            row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        row["ms"] = round((time.perf_counter() - started) * 1000, 1)
        row["done_at"] = time.time()
        return row

    def client() -> None:
        while True:
            i = next(counter)
            if i >= requests:
                return
            row = one(questions[i % len(questions)])
            with lock:
                rows.append(row)

    threads = [threading.Thread(target=client, name=f"client-{n}") for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return rows


def serve_against_ask(base_url: str, key: str, env: dict, questions: list[str]) -> dict:
    """The same questions one at a time, through `kaizen serve` (an openai client, streaming) and through
    `kaizen ask --json` on the same backend, in turn: serve's latency as its client sees it against ask's own total
    (`timings.total`, from the question to the recorded answer: without the process start and model load that
    only a one-shot command pays, so the ratio is what the HTTP front door adds)."""
    from .soak import _kaizen

    rows = []
    for question in questions:
        [served] = ask_all(base_url, key, [question], 1, 1)
        started = time.perf_counter()
        done = subprocess.run(_kaizen("ask", question, "--json"), env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=900)
        wall = (time.perf_counter() - started) * 1000
        try:
            asked = json.loads(done.stdout) if done.returncode == 0 else None
        except ValueError:
            asked = None
        rows.append({"question": question, "serve_ms": served["ms"], "serve_ttft_ms": served["ttft_ms"],
                     "ask_ms": asked["timings"].get("total") if asked else None, "ask_command_ms": round(wall, 1),
                     "error": served["error"] or (None if asked else (done.stderr.strip().splitlines() or ["?"])[-1])})
    ok = [r for r in rows if not r["error"] and r["ask_ms"]]
    serve_ms = statistics.median(r["serve_ms"] for r in ok) if ok else None
    ask_ms = statistics.median(r["ask_ms"] for r in ok) if ok else None
    return {"questions": len(rows), "compared": len(ok), "serve_ms_median": serve_ms, "ask_ms_median": ask_ms,
            "serve_to_ask": round(serve_ms / ask_ms, 3) if serve_ms and ask_ms else None, "rows": rows}


def summarize(rows: list[dict], seconds: float) -> dict:
    from eval.metrics import percentile as nearest_rank

    def percentile(values: list[float], q: float) -> float | None:
        value = nearest_rank(values, q)
        return None if value is None else round(value, 1)

    ok = [r for r in rows if not r["error"]]
    latency = [r["ms"] for r in ok]
    ttft = [r["ttft_ms"] for r in ok if r["ttft_ms"] is not None]
    return {
        "requests": len(rows),
        "answered": len(ok),
        "errors": len(rows) - len(ok),
        "error_examples": sorted({r["error"] for r in rows if r["error"]})[:5],
        "abstained": sum(1 for r in ok if r.get("abstained")),
        "seconds": round(seconds, 1),
        "requests_per_minute": round(len(ok) / seconds * 60.0, 2) if seconds > 0 else None,
        "latency_ms": {"p50": percentile(latency, 0.5), "p95": percentile(latency, 0.95),
                       "mean": round(statistics.fmean(latency), 1) if latency else None},
        "ttft_ms": {"p50": percentile(ttft, 0.5), "p95": percentile(ttft, 0.95)},
    }


def run(corpus: str, questions: str, requests: int = 24, clients: int = 4, workers: int = 2,
        home: str | None = None, metrics: str = "answer_relevancy", backends: tuple[str, ...] = BACKENDS,
        drain_seconds: float = 900.0, concurrency: int | None = None, compare_ask: int = 3,
        progress=None) -> dict:
    from agent.llm import LLMSettings
    from agent.settings import AgentSettings
    from eval.bench.answer import load_questions

    from .corpus import bench_store, ingest_corpus, load_average
    from .soak import Worker, _kaizen, _queue_busy, _stop, check_interactions, check_jobs

    say = progress or (lambda message: None)
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(sorted(unknown))}: choose from {', '.join(BACKENDS)}")
    agent_settings = AgentSettings()
    model = LLMSettings.from_settings(agent_settings.model_copy(update={"llm_url": None})).model_path
    metric_names = [m.strip() for m in metrics.split(",") if m.strip()]
    pool = [q["question"] for q in load_questions(questions, None)]
    with bench_store(home, "kaizen-bench-serve-") as (store, embedder, home_dir):
        log_dir = home_dir / "serve-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        report = ingest_corpus(store, embedder, corpus)
        setup = round(time.perf_counter() - t, 1)
        key = secrets.token_urlsafe(16)
        base_env = {**os.environ, "KAIZEN_HOME": str(home_dir), "KAIZEN_EVAL_METRICS": ",".join(metric_names),
                    "KAIZEN_API_KEY": key, "KAIZEN_SERVE_QUEUE_SIZE": str(clients), "KAIZEN_PROBE_EVERY_MINUTES": "0",
                    "KAIZEN_IMPROVE_EVERY_MINUTES": "0"}
        for name in ("KAIZEN_DATABASE_URL", "KAIZEN_LLM_URL", "KAIZEN_JUDGE_URL"):
            base_env.pop(name, None)
        results: dict[str, dict] = {}
        load_before = load_average()
        for backend in backends:
            say(f"{backend}: starting")
            env = dict(base_env)
            model_server = None
            processes: list[subprocess.Popen] = []
            started_workers: list[Worker] = []
            try:
                if backend == "server":
                    model_server, url = start_model_server(model, log_dir / "model-server.log",
                                                           agent_settings.llm_threads, agent_settings.llm_ctx)
                    env["KAIZEN_LLM_URL"] = url
                    if concurrency:
                        env["KAIZEN_SERVE_CONCURRENCY"] = str(concurrency)
                port = free_port()
                serve = subprocess.Popen(_kaizen("serve", "--port", str(port)), env=env,
                                         stdout=open(log_dir / f"serve-{backend}.log", "w"),
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                processes.append(serve)
                base_url = f"http://127.0.0.1:{port}"
                _wait_http(f"{base_url}/health", serve, "kaizen serve", 300)
                warm = ask_all(base_url, key, ["warm-up: what is this knowledge base about?"], 1, 1)  # not measured
                if compare_ask:  # before the workers start, so both sides have the machine to themselves
                    say(f"{backend}: {compare_ask} question(s) through kaizen serve and through kaizen ask")
                    against_ask = serve_against_ask(base_url, key, env, pool[:compare_ask])
                for n in range(workers):
                    started_workers.append(Worker(f"{backend}-worker-{n + 1}", env, log_dir))
                say(f"{backend}: asking {requests} questions with {clients} clients")
                t = time.perf_counter()
                rows = ask_all(base_url, key, pool, requests, clients)
                seconds = time.perf_counter() - t
                results[backend] = {**summarize(rows, seconds), "warm_up_error": warm[0]["error"], "rows": rows}
                if compare_ask:
                    results[backend]["serve_against_ask"] = against_ask
                say(f"{backend}: {results[backend]['requests_per_minute']} requests/minute; draining the queue")
                deadline = time.monotonic() + drain_seconds
                while _queue_busy(store) and time.monotonic() < deadline:
                    time.sleep(2.0)
                results[backend]["queue_drained"] = not _queue_busy(store)
            finally:
                for w in started_workers:
                    _stop(w.proc, 120)
                    w.output.close()
                for p in processes:
                    _stop(p, 60)
                if model_server is not None:
                    _stop(model_server, 30)
        asked = [{"question": " ".join(r["question"].split()), "done_at": r.get("done_at"),
                  "errors": [r["error"]] if r["error"] else [], "interrupted": False}
                 for b in results.values() for r in b.pop("rows", [])]
        for b in results.values():  # each compared question was asked twice: through serve and through ask
            for r in (b.get("serve_against_ask") or {}).get("rows", []):
                asked += [{"question": " ".join(r["question"].split()), "done_at": time.time(),
                           "errors": [r["error"]] if r["error"] else [], "interrupted": False}] * 2
        interactions = check_interactions(store, metric_names, asked)
        interactions.pop("_created")
        jobs = check_jobs(store)
        rpm = {b: results[b]["requests_per_minute"] for b in results}
        ratio = (round(rpm["server"] / rpm["in-process"], 3)
                 if rpm.get("server") and rpm.get("in-process") else None)
        ok = (all(r["errors"] == 0 and r["queue_drained"] for r in results.values())
              and interactions["duplicate_grades"] == 0 and interactions["missing_grades"] == 0
              and interactions["evaluation_jobs_per_answer_above_one"] == 0 and jobs["lost"] == 0
              and jobs["run_twice"] == 0)
        return {
            "benchmark": "serve",
            "corpus": str(corpus),
            "questions": str(questions),
            "model": Path(model).name,
            "documents": report.added,
            "settings": {"requests": requests, "clients": clients, "workers": workers, "metrics": metric_names,
                         "llm_threads": agent_settings.llm_threads, "concurrency": concurrency,
                         "compare_ask": compare_ask},
            "backends": results,
            "server_vs_in_process": ratio,
            "interactions": interactions,
            "jobs": {k: jobs[k] for k in ("jobs", "by_status", "succeeded", "queued", "lost", "lost_jobs",
                                          "run_twice", "retried")},
            "seconds": {"setup": setup},
            "load_average": {"before": load_before, "after": load_average()},
            "ok": ok,
        }


__all__ = ["run", "summarize", "free_port", "model_server_command", "start_model_server", "BACKENDS"]
