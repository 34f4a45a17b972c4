"""The self-evaluation commands: `kaizen eval ...`, `kaizen worker`, `kaizen bench judge`.

The judge's own commands (`eval calibrate`, `eval score`, `bench judge`) live in cli_judge."""

from __future__ import annotations


def register(sub) -> None:
    """Add `kaizen eval ...` and `kaizen worker` to the top-level subparsers."""
    from . import cli_judge

    p = sub.add_parser("eval", help="self-evaluation: probes, scores, judge calibration, reports")
    esub = p.add_subparsers(dest="eval_command", required=True)

    q = esub.add_parser("import", help="load a question file (../shared/data format, JSONL) as probes")
    q.add_argument("file")
    q.add_argument("--set", dest="probe_set", help="probe set name (default: the file's folder name)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_import)

    q = esub.add_parser("probes", help="generate probes (question + reference) from chunks with the local model")
    q.add_argument("--per-document", type=int, default=2, help="chunks (one probe each) per document (default 2)")
    q.add_argument("--limit", type=int, default=None, help="at most N probes in this pass")
    q.add_argument("--set", dest="probe_set", default="generated")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_probes)

    q = esub.add_parser("run", help="score the probes on the active KB version now (a probe run), then check drift")
    q.add_argument("--set", dest="probe_set", help="only this probe set")
    q.add_argument("--split", choices=["train", "heldout"])
    q.add_argument("--baseline", action="store_true", help="make this run the version's baseline for drift checks")
    q.add_argument("--queue", action="store_true", help="queue it for the worker instead of running it here")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_run)

    q = esub.add_parser("answer", help="let the agent answer probes and grade the answers with the trusted metrics")
    q.add_argument("--split", choices=["train", "heldout", "all"], default="heldout")
    q.add_argument("--limit", type=int, default=20, help="the first N probes (default 20)")
    q.add_argument("--metrics", help="comma-separated LLM metrics (default: those the judge calibration trusts)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_answer)

    q = esub.add_parser("report", help="quality over time: a table here and a chart written to a file")
    q.add_argument("--json", action="store_true")
    q.add_argument("--chart", help="where to write the HTML chart (default $KAIZEN_HOME/reports/quality.html)")
    q.add_argument("--runs", type=int, default=15, help="how many recent runs the table lists")
    q.set_defaults(func=cmd_report)

    cli_judge.register_eval(esub)

    p = sub.add_parser("worker", help="run the background worker: evaluations, periodic probe runs, repairs")
    p.add_argument("--concurrency", type=int, default=1, help="jobs at once (default 1; the model runs one call "
                   "at a time anyway)")
    p.add_argument("--once", action="store_true", help="stop when the queue is empty")
    p.add_argument("--log", nargs="?", const="", metavar="FILE",
                   help="log each job to FILE instead of the terminal (alone: $KAIZEN_HOME/worker.log)")
    p.set_defaults(func=cmd_worker)


def register_bench(bsub) -> None:
    """Add `kaizen bench judge` to the bench subparsers."""
    from . import cli_judge

    cli_judge.register_bench(bsub)


def cmd_import(args) -> int:
    from eval.probe_sets import ProbeImportError, import_probes

    from .cli_store import open_store
    from .console import err, out, print_json

    try:
        result = import_probes(open_store(), args.file, probe_set=args.probe_set)
    except ProbeImportError as exc:
        err.print(f"kaizen: {exc}", highlight=False)
        return 1
    if args.json:
        print_json(result)
    else:
        out.print(f"probe set {result['probe_set']}: {result['added']} added, {result['updated']} updated "
                  f"({result['total']} in the file; {result['unresolved_gold']} with gold documents not in the "
                  "knowledge base)", highlight=False)
    return 0


def cmd_probes(args) -> int:
    from eval.probe_generation import generate_probes

    from .cli_store import open_store
    from .console import err, out, print_json, progress_bar

    store = open_store()
    with progress_bar("generating probes") as progress:
        report = generate_probes(store, per_document=args.per_document, limit=args.limit, probe_set=args.probe_set,
                                 progress=progress)
    if args.json:
        print_json(report.as_dict())
        return 0
    out.print(f"probe set {report.probe_set}: {report.added} added, {report.rejected} rejected, {report.retired} "
              f"retired (changed documents), {report.skipped} chunks already had probes; "
              f"{report.seconds:.1f}s", highlight=False)
    for reason, count in sorted(report.rejections.items()):
        err.print(f"  rejected {count}: {reason}", highlight=False)
    return 0


def cmd_run(args) -> int:
    from .cli_store import open_store
    from .console import out, print_json

    store = open_store()
    if args.queue:
        from eval.jobs import defer

        job = defer(store, "probe_run")
        print_json({"job_id": job}) if args.json else out.print(f"queued probe run: job {job}")
        return 0
    from eval.jobs import Resources, after_evaluation
    from eval.probe_runs import run_probes

    from .cli_store import embedder

    run = run_probes(store, embedder(), probe_set=args.probe_set, split=args.split, baseline=args.baseline)
    run["alerts"] = after_evaluation(Resources(store))
    if args.json:
        print_json(run)
        return 0
    summary = run["summary"]
    metrics = ", ".join(f"{m} {summary[m]:.3f}" for m in ("recall@1", "recall@5", "mrr@10")
                        if summary.get(m) is not None)
    out.print(f"probe run {run['run_id']} on KB version {run['kb_version']}: {run['items']} probes"
              + (f"; {metrics}" if metrics else f"; {summary.get('note', '')}"), highlight=False)
    for alert in run["alerts"]:
        out.print(f"[red]quality drop[/red]: alert {alert} (see `kaizen eval report`)")
    return 0


def cmd_answer(args) -> int:
    from eval.answer_probes import run_answer_probes
    from eval.ragas_metrics import selected_metrics

    from .cli_store import embedder, open_store
    from .console import out, print_json, print_table
    from .graph import Agent

    if args.limit is not None and args.limit < 1:
        raise SystemExit("kaizen: --limit must be 1 or more")
    metrics = selected_metrics(args.metrics, ()) if args.metrics else None
    store = open_store()
    agent = Agent(store, embedder=embedder(), persist=False)
    try:
        run = run_answer_probes(store, agent, split=None if args.split == "all" else args.split, limit=args.limit,
                                llm_metrics=metrics,
                                progress=None if args.json else lambda n, total: out.print(
                                    f"[dim]answered {n}/{total}[/dim]", highlight=False))
    finally:
        agent.close()
    if args.json:
        print_json(run)
        return 0
    summary = run["summary"]
    print_table(["metric", "mean", "scored", "null"],
                [[m, v["mean"], v["n"], v["null"]] for m, v in summary["metrics"].items()])
    out.print(f"answer run {run['run_id']} on KB version {run['kb_version']}: {run['items']} probes, "
              f"abstained on {summary['abstained_share']}; LLM metrics: {', '.join(run['llm_metrics']) or 'none trusted'}",
              highlight=False)
    return 0


def cmd_report(args) -> int:
    from eval.report import build_report, default_chart_path, print_report, write_chart

    from .cli_store import open_store
    from .console import print_json

    store = open_store()
    report = build_report(store, runs=args.runs)
    path = write_chart(report, args.chart or default_chart_path(store))
    report["chart"] = str(path)
    if args.json:
        print_json(report)
    else:
        print_report(report)
    return 0


def _log_to_file(path: str) -> None:
    """Job starts, ends and warnings go to a file (the worker beside a REPL must not print into it)."""
    import logging
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def cmd_worker(args) -> int:
    from eval.worker import WorkerSettings, WorkerStopped, be_polite, run_worker

    from .cli_store import open_store
    from .console import err

    settings = WorkerSettings.from_env()
    be_polite(settings)  # before anything loads a model
    store = open_store()
    if args.log is not None:
        _log_to_file(args.log or str(store.settings.home / "worker.log"))
    try:
        run_worker(store, concurrency=max(1, args.concurrency), once=args.once, settings=settings)
    except WorkerStopped as exc:
        err.print(f"kaizen worker: {exc}", highlight=False)
        return 3
    finally:
        from eval.jobs import close_deferrers

        close_deferrers()
        store.close()
    return 0

