"""The self-repair commands: `kaizen improve`, `kaizen gaps`, `kaizen kb log|revert|prune`, `kaizen export qa`,
`kaizen bench recovery`."""

from __future__ import annotations


def register(sub) -> None:
    """Add the repair commands to the top-level subparsers."""
    p = sub.add_parser("improve", help="diagnose the knowledge base and repair it under the held-out guard")
    p.add_argument("--dry-run", action="store_true", help="only diagnose and print the plan")
    p.add_argument("--alert", type=int, help="the quality alert this run answers (enables enrichment)")
    p.add_argument("--wait", action="store_true", help="wait for a running planner instead of exiting")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_improve)

    p = sub.add_parser("gaps", help="questions the knowledge base had nothing relevant for")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gaps)

    kb = sub.add_parser("kb", help="the knowledge base's change log; revert a repair; prune old versions")
    ksub = kb.add_subparsers(dest="kb_command", required=True)
    p = ksub.add_parser("log", help="changes to the knowledge base, newest first, with metrics before/after")
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--all", action="store_true", help="every change (ingests, activations), not only repairs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_kb_log)
    p = ksub.add_parser("revert", help="undo a promoted repair (re-activate the version it replaced)")
    p.add_argument("change_id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_kb_revert)
    p = ksub.add_parser("prune", help="delete the chunks of old retired KB versions")
    p.add_argument("--keep", type=int, default=2, help="retired versions to keep, most recently active first (default 2)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be pruned")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_kb_prune)

    ex = sub.add_parser("export", help="export training data")
    xsub = ex.add_subparsers(dest="export_command", required=True)
    p = xsub.add_parser("qa", help="interactions and probes that passed the trusted metrics, as chat pairs")
    p.add_argument("file")
    p.add_argument("--min-score", type=float, required=True)
    p.add_argument("--include-heldout", action="store_true", help="also held-out probes (leaks the guard's test set)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_qa)


def register_bench(bsub) -> None:
    """Add `kaizen bench recovery` to the bench subparsers."""
    p = bsub.add_parser("recovery", help="degrade the KB on purpose, let the planner repair it, measure recovery")
    p.add_argument("--corpus", required=True)
    p.add_argument("--questions", required=True)
    p.add_argument("--limit", type=int, default=None, help="use only the first N answerable questions as probes")
    p.add_argument("--home", help="keep the benchmark database in this KAIZEN_HOME (default: temporary)")
    p.add_argument("--answer-probes", type=int, default=20,
                   help="held-out probes the agent answers at each phase for the RAGAS metrics (0: skip them)")
    p.add_argument("--judge-metrics", default="answer_relevancy",
                   help="comma-separated LLM metrics to calibrate the judge on and, where trusted, grade with")
    p.add_argument("--output", help="also write the JSON result to this file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda a: __import__("eval.repair.bench_recovery", fromlist=["main"]).main(a))


def _store_and_embedder():
    from .cli_store import embedder, open_store

    return open_store(), embedder()


def cmd_improve(args) -> int:
    from eval.repair.planner import run_planner

    from .console import err, out, print_json, print_table

    store, emb = _store_and_embedder()
    plan = run_planner(store, alert_id=args.alert, dry_run=args.dry_run, embedder=emb, wait=args.wait,
                       actor="kaizen improve")
    if args.json:
        print_json(plan.as_dict())
        return 1 if plan.status == "busy" else 0
    if plan.status == "busy":
        err.print(plan.message)
        return 1
    for f in plan.findings:
        out.print(f"- {f['kind']}: {f['summary']}" + ("" if f["action"] else "  [dim](reported only)[/dim]"),
                  highlight=False)
    if plan.dry_run:
        if plan.planned:
            print_table(["#", "action", "target", "guard", "why"],
                        [[i, a["kind"], a["target"], a["guard"], a["reason"]] for i, a in enumerate(plan.planned, 1)],
                        title="plan (nothing applied)")
    elif plan.results:
        print_table(["change", "action", "decision", "recall@5", "mrr@10", "why", "s"],
                    [[r.change_id, r.action["kind"], r.decision, _delta(r, "recall@5"), _delta(r, "mrr@10"),
                      r.reason, r.seconds] for r in plan.results])
    out.print(plan.message, highlight=False)
    return 0


def _delta(result, metric: str) -> str:
    if not result.metrics_before or not result.metrics_after:
        return ""
    return f"{result.metrics_before[metric]:.3f} -> {result.metrics_after[metric]:.3f}"


def cmd_gaps(args) -> int:
    from eval.repair.gaps import list_gaps

    from .console import out, print_json, print_table
    from .cli_store import open_store

    gaps = list_gaps(open_store(), args.limit)
    if args.json:
        print_json(gaps)
    elif not gaps:
        out.print("no knowledge gaps recorded")
    else:
        print_table(["times", "last asked", "question"], [[g["times"], g["last_asked"], g["question"]] for g in gaps])
        out.print("[dim]Reported, not repaired: add documents that answer them and run `kaizen ingest`.[/dim]")
    return 0


def cmd_kb_log(args) -> int:
    from eval.repair.revert import change_log

    from .console import print_json, print_table
    from .cli_store import open_store

    rows = change_log(open_store(), args.limit, repairs_only=not args.all)
    if args.json:
        print_json(rows)
        return 0
    print_table(["id", "when", "kind", "version", "decision", "held-out before", "held-out after", "target"],
                [[r["id"], str(r["created_at"])[:19], r["kind"], r["kb_version"], r["decision"],
                  _short(r["metrics_before"]), _short(r["metrics_after"]), r["target"]] for r in rows])
    return 0


def _short(metrics) -> str:
    if not metrics:
        return ""
    return " ".join(f"{k} {metrics[k]:.3f}" for k in ("recall@5", "mrr@10") if isinstance(metrics.get(k), (int, float)))


def cmd_kb_revert(args) -> int:
    from eval.repair.revert import RevertError, revert

    from .console import err, out, print_json
    from .cli_store import open_store

    try:
        result = revert(open_store(), args.change_id)
    except RevertError as exc:
        err.print(f"kaizen: {exc}", highlight=False)
        return 2
    if args.json:
        print_json(result)
    else:
        out.print(f"reverted change {result['reverted']}: KB version {result['active']} is active again "
                  f"(version {result['retired']} retired)")
    return 0


def cmd_kb_prune(args) -> int:
    from store.prune import PruneError, prune_retired

    from .console import err, out, print_json
    from .cli_store import open_store

    try:
        report = prune_retired(open_store(), keep=args.keep, dry_run=args.dry_run)
    except PruneError as exc:
        err.print(f"kaizen: {exc}", highlight=False)
        return 2
    if args.json:
        print_json(report.as_dict())
        return 0
    verb = "would prune" if report.dry_run else "pruned"
    for v in report.pruned:
        out.print(f"{verb} KB version {v.id} ({v.reason}, active from {(v.activated_at or '?')[:19]}): "
                  f"{v.chunks} chunks", highlight=False)
    kept = ", ".join(map(str, report.kept)) or "none"
    n = len(report.pruned)
    out.print(f"{verb} {n} retired version{'s' * (n != 1)}, {report.chunks} chunks; kept retired versions: {kept}",
              highlight=False)
    return 0


def cmd_export_qa(args) -> int:
    from eval.repair.export import export_qa

    from .console import out, print_json

    store, emb = _store_and_embedder()
    result = export_qa(store, emb, args.file, args.min_score, include_heldout=args.include_heldout)
    if args.json:
        print_json(result)
    else:
        trusted = ", ".join(result["trusted_llm_metrics"]) or "none (no interaction qualifies)"
        out.print(f"wrote {result['pairs']} pairs to {result['path']} ({result['interactions']} interactions, "
                  f"{result['probes']} probes); trusted LLM metrics: {trusted}", highlight=False)
    return 0
