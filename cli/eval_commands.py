"""The self-evaluation commands: `kaizen eval import|probes|run|answer|report` and `kaizen worker`.

The judge's own commands (`eval calibrate`, `eval score`, `eval trusted`) live in judge_commands."""

from __future__ import annotations

import click

from .output import err, json_option, out, print_json, print_table, progress_bar
from .store_commands import embedder, open_store


def register_commands(cli: click.Group) -> None:
    @cli.group(name="eval")
    def eval_group() -> None:
        """self-evaluation: probes, scores, judge calibration, reports"""

    @eval_group.command(name="import")
    @click.argument("file")
    @click.option("--set", "probe_set", help="probe set name (default: the file's folder name)")
    @json_option
    def import_command(file: str, probe_set: str | None, as_json: bool) -> int:
        """load a question file (../shared/data format, JSONL) as probes

        Exits 1 when the file cannot be read as questions."""
        from eval.probes.sets import ProbeImportError, import_probes

        try:
            result = import_probes(open_store(), file, probe_set=probe_set)
        except ProbeImportError as exc:
            err.print(f"kaizen: {exc}", highlight=False)
            return 1
        if as_json:
            print_json(result)
        else:
            out.print(f"probe set {result['probe_set']}: {result['added']} added, {result['updated']} updated "
                      f"({result['total']} in the file; {result['unresolved_gold']} with gold documents not in the "
                      "knowledge base)", highlight=False)
        return 0

    @eval_group.command(name="probes")
    @click.option("--per-document", type=int, default=2, help="chunks (one probe each) per document (default 2)")
    @click.option("--limit", type=int, default=None, help="at most N probes in this pass")
    @click.option("--set", "probe_set", default="generated", help="probe set name (default generated)")
    @json_option
    def probes_command(per_document: int, limit: int | None, probe_set: str, as_json: bool) -> int:
        """generate probes (question + reference) from chunks with the local model"""
        from eval.probes.generation import generate_probes

        store = open_store()
        with progress_bar("generating probes") as progress:
            report = generate_probes(store, per_document=per_document, limit=limit, probe_set=probe_set,
                                     progress=progress)
        if as_json:
            print_json(report.as_dict())
            return 0
        out.print(f"probe set {report.probe_set}: {report.added} added, {report.rejected} rejected, {report.retired} "
                  f"retired (changed documents), {report.skipped} chunks already had probes; "
                  f"{report.seconds:.1f}s", highlight=False)
        for reason, count in sorted(report.rejections.items()):
            err.print(f"  rejected {count}: {reason}", highlight=False)
        return 0

    @eval_group.command(name="run")
    @click.option("--set", "probe_set", help="only this probe set")
    @click.option("--split", type=click.Choice(["train", "heldout"]), help="only the train or the held-out probes")
    @click.option("--baseline", is_flag=True, help="make this run the version's baseline for drift checks")
    @click.option("--queue", is_flag=True, help="queue it for the worker instead of running it here")
    @json_option
    def run_command(probe_set: str | None, split: str | None, baseline: bool, queue: bool, as_json: bool) -> int:
        """score the probes on the active KB version now (a probe run), then check drift"""
        store = open_store()
        if queue:
            from eval.worker.jobs import defer

            job = defer(store, "probe_run")
            print_json({"job_id": job}) if as_json else out.print(f"queued probe run: job {job}")
            return 0
        from eval.probes.runs import run_probes
        from eval.worker.jobs import Resources, after_evaluation

        run = run_probes(store, embedder(), probe_set=probe_set, split=split, baseline=baseline)
        run["alerts"] = after_evaluation(Resources(store))
        if as_json:
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

    @eval_group.command(name="answer")
    @click.option("--split", type=click.Choice(["train", "heldout", "all"]), default="heldout",
                  help="which probes (default heldout)")
    @click.option("--limit", type=int, default=20, help="the first N probes (default 20)")
    @click.option("--metrics", help="comma-separated LLM metrics (default: those the judge calibration trusts)")
    @json_option
    def answer_command(split: str, limit: int | None, metrics: str | None, as_json: bool) -> int:
        """let the agent answer probes and grade the answers with the trusted metrics"""
        from agent.graph import Agent
        from eval.judging.ragas_metrics import selected_metrics
        from eval.probes.answers import run_answer_probes

        if limit is not None and limit < 1:
            raise SystemExit("kaizen: --limit must be 1 or more")
        llm_metrics = selected_metrics(metrics, ()) if metrics else None
        store = open_store()
        agent = Agent(store, embedder=embedder(), persist=False)
        try:
            run = run_answer_probes(store, agent, split=None if split == "all" else split, limit=limit,
                                    llm_metrics=llm_metrics,
                                    progress=None if as_json else lambda n, total: out.print(
                                        f"[dim]answered {n}/{total}[/dim]", highlight=False))
        finally:
            agent.close()
        if as_json:
            print_json(run)
            return 0
        summary = run["summary"]
        print_table(["metric", "mean", "scored", "null"],
                    [[m, v["mean"], v["n"], v["null"]] for m, v in summary["metrics"].items()])
        out.print(f"answer run {run['run_id']} on KB version {run['kb_version']}: {run['items']} probes, "
                  f"abstained on {summary['abstained_share']}; "
                  f"LLM metrics: {', '.join(run['llm_metrics']) or 'none trusted'}", highlight=False)
        return 0

    @eval_group.command(name="report")
    @json_option
    @click.option("--chart", help="where to write the HTML chart (default $KAIZEN_HOME/reports/quality.html)")
    @click.option("--runs", type=int, default=15, help="how many recent runs the table lists")
    def report_command(as_json: bool, chart: str | None, runs: int) -> int:
        """quality over time: a table here and a chart written to a file"""
        from eval.reports.quality import build_report, default_chart_path, write_chart

        store = open_store()
        report = build_report(store, runs=runs)
        path = write_chart(report, chart or default_chart_path(store))
        report["chart"] = str(path)
        if as_json:
            print_json(report)
        else:
            print_report(report)
        return 0

    @cli.command(name="worker")
    @click.option("--concurrency", type=int, default=1,
                  help="jobs at once (default 1; the model runs one call at a time anyway)")
    @click.option("--once", is_flag=True, help="stop when the queue is empty")
    @click.option("--log", metavar="FILE", is_flag=False, flag_value="", default=None,
                  help="log each job to FILE instead of the terminal (alone: $KAIZEN_HOME/worker.log)")
    def worker_command(concurrency: int, once: bool, log: str | None) -> int:
        """run the background worker: evaluations, periodic probe runs, repairs

        Ctrl-C or SIGTERM lets the running job finish first; a second one hands it back to the queue and stops at
        once. Exits 3 when it gives up: the database out of
        reach for longer than KAIZEN_WORKER_RECONNECT_SECONDS."""
        from eval.settings import EvalSettings
        from eval.worker.jobs import close_deferrers
        from eval.worker.runner import WorkerStopped, be_polite, run_worker

        settings = EvalSettings()
        be_polite(settings)  # before anything loads a model
        store = open_store()
        if log is not None:
            _log_to_file(log or str(store.settings.home / "worker.log"))
        try:
            run_worker(store, concurrency=max(1, concurrency), once=once, settings=settings)
        except WorkerStopped as exc:
            err.print(f"kaizen worker: {exc}", highlight=False)
            return 3
        finally:
            close_deferrers()
            store.close()
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


def _fmt(value, digits: int = 3) -> str:
    from datetime import datetime

    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, datetime):
        return value.strftime("%m-%d %H:%M")
    return str(value)


def print_report(report: dict) -> None:
    """`kaizen eval report` as tables (the report of eval.reports.quality.build_report, with its chart path)."""
    from eval.reports.quality import CHART_METRICS

    print_table(["run", "kind", "KB", "status", "items", *CHART_METRICS, "seconds", "finished"],
                [[r["id"], r["kind"] + (" (baseline)" if r["baseline"] else ""), r["kb_version"], r["status"],
                  r["items"], *[_fmt(r[m]) for m in CHART_METRICS], _fmt(r["seconds"], 1), _fmt(r["finished_at"])]
                 for r in report["runs"]], title="evaluation runs, newest first")
    if report["versions"]:
        print_table(["KB version", "state", "probe runs", "latest run", "probes", *CHART_METRICS],
                    [[v["kb_version"], v["version_status"], v["runs"], v["latest_run"], v["items"],
                      *[_fmt(v[m]) for m in CHART_METRICS]] for v in report["versions"]],
                    title="probe metrics per KB version (latest run)")
    if report["interaction_trend"]:
        print_table(["hour", "KB", "metric", "answers", "scored", "mean"],
                    [[_fmt(t["hour"]), t["kb_version"], t["metric"], t["items"], t["scored"], _fmt(t["mean"])]
                     for t in report["interaction_trend"][-20:]], title="answer metrics per hour")
    checks = [c for c in report["drift"] if c["status"] != "no_baseline"]
    if checks:
        print_table(["metric", "on", "KB", "baseline", "window", "samples", "state"],
                    [[c["metric"], c["subject"], c["kb_version"], _fmt(c["baseline"]), _fmt(c["observed"]),
                      c["samples"], c["status"]] for c in checks], title="drift (trusted metrics only)")
    if report["alerts"]:
        print_table(["alert", "KB", "metric", "baseline", "observed", "samples", "status", "at"],
                    [[a["id"], a["kb_version"], a["metric"], _fmt(a["baseline"]), _fmt(a["observed"]),
                      a["window_size"], a["status"], _fmt(a["created_at"])] for a in report["alerts"]],
                    title="quality alerts")
    if report["queue"]:
        print_table(["job", "status", "count"], [[q["task_name"], q["status"], q["jobs"]] for q in report["queue"]],
                    title="job queue")
    if not report["runs"] and not report["interaction_trend"]:
        out.print("no evaluations yet: `kaizen eval import FILE` or `kaizen eval probes`, then `kaizen eval run`")
    out.print(f"chart: {report['chart']}", highlight=False)
