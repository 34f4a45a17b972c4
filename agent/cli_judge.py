"""The judge's commands: `kaizen eval calibrate`, `kaizen eval score`, `kaizen eval trusted`, `kaizen bench judge`."""

from __future__ import annotations

from pathlib import Path

from .console import out, print_json, print_table

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def register_eval(esub) -> None:
    """Add the judge's subcommands to `kaizen eval`."""
    p = esub.add_parser("calibrate", help="measure how well each judged metric tells good answers from bad (ROC AUC)")
    p.add_argument("--judge-model", help="a .gguf judge (default: KAIZEN_JUDGE_MODEL, else the chat model)")
    p.add_argument("--pairs", type=int, default=12, help="labelled pairs (one good and one bad answer each)")
    p.add_argument("--metrics", help="comma-separated metrics (default: all LLM-judged ones)")
    p.add_argument("--corpus", help="take the pairs from this corpus.jsonl ... (with --questions) instead of probes")
    p.add_argument("--questions", help="... and this question file (../shared/data format)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calibrate)

    p = esub.add_parser("score", help="grade recorded interactions now with the RAGAS metrics (writes eval_scores)")
    p.add_argument("interaction_ids", type=int, nargs="+")
    p.add_argument("--judge-model", help="a .gguf judge (default: KAIZEN_JUDGE_MODEL, else the chat model)")
    p.add_argument("--metrics", help="comma-separated metrics (default: KAIZEN_EVAL_METRICS or all reference-free)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_score)

    p = esub.add_parser("trusted", help="the latest calibration of each metric for a judge model")
    p.add_argument("--judge-model", help="a .gguf path or file name (default: the configured judge)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_trusted)


def register_bench(bsub) -> None:
    """Add `kaizen bench judge`."""
    p = bsub.add_parser("judge", help="judge AUC per metric and model, non-LLM metrics, seconds per evaluation")
    p.add_argument("--corpus", default=str(SHARED_DATA / "clapnq" / "corpus.jsonl"))
    p.add_argument("--questions", default=str(SHARED_DATA / "clapnq" / "questions.dev.jsonl"))
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--metrics", help="comma-separated LLM metrics (default: the reference-free ones + answer_accuracy)")
    p.add_argument("--interactions", type=int, default=2, help="real agent answers to time the evaluation on")
    p.add_argument("--judge-model", action="append",
                   help="a .gguf judge (repeatable; default: the chat model and the installed opt-in model)")
    p.add_argument("--output", help="also write the JSON here (updated after each judge)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda a: __import__("eval.bench_judge", fromlist=["main"]).main(a))


def _judge(path):
    from eval.judge import load_judge

    return load_judge(path)


def _calibration_table(metrics: list[dict]) -> None:
    rows = [[m["judge_model"], m["metric"], "-" if m["auc"] is None else f"{m['auc']:.3f}",
             f"{m['scored']}/{m['items']}", m["seconds_per_item"], "yes" if m["trusted"] else "no"] for m in metrics]
    print_table(["judge", "metric", "AUC", "scored", "s/item", "trusted"], rows, title="judge calibration")


def cmd_calibrate(args) -> int:
    from eval.calibration import calibrate, sources_from_files, sources_from_store, trust_threshold

    from .cli_store import embedder, open_store

    store = open_store()
    sources, label = None, "probes"
    if args.corpus or args.questions:
        if not (args.corpus and args.questions):
            raise SystemExit("kaizen: --corpus and --questions go together")
        sources, label = sources_from_files(args.corpus, args.questions), f"{args.questions}"
    elif not sources_from_store(store, limit=2):
        fallback = SHARED_DATA / "clapnq"
        if not fallback.exists():
            raise SystemExit("kaizen: no probes with reference answers: `kaizen eval import FILE.jsonl` first, "
                             "or pass --corpus and --questions")
        sources = sources_from_files(fallback / "corpus.jsonl", fallback / "questions.dev.jsonl")
        label = str(fallback / "questions.dev.jsonl")
        if not args.json:
            out.print(f"no probes with reference answers in the store: using {label}")
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    judge = _judge(args.judge_model)
    progress = None if args.json else (lambda c: out.print(f"  {c.metric}: AUC {c.auc} ({c.scored}/{c.items} "
                                                             f"scored, {c.seconds_per_item}s/item)"))
    if not args.json:
        out.print(f"calibrating {judge.name} on {args.pairs} pairs from {label} (trusted: AUC >= {trust_threshold()})")
    summary = calibrate(store, judge=judge, embedder=embedder(), pairs=args.pairs, metrics=metrics,
                        sources=sources, source_label=label, progress=progress)
    if args.json:
        print_json(summary)
    else:
        _calibration_table(summary["metrics"])
    return 0


def cmd_score(args) -> int:
    from eval.interaction_eval import evaluate_interactions

    from .cli_store import embedder, open_store

    store = open_store()
    judge = _judge(args.judge_model)
    results = evaluate_interactions(store, args.interaction_ids, judge=judge, embedder=embedder(),
                                    metrics=args.metrics)
    rows = [r for rs in results.values() for r in rs]
    if args.json:
        print_json(rows)
        return 0
    missing = [i for i in args.interaction_ids if i not in results]
    print_table(["interaction", "metric", "value", "reason"],
                [[r["interaction_id"], r["metric"], "NULL" if r["value"] is None else f"{r['value']:.3f}",
                  r["reason"] or ""] for r in rows], title=f"judge: {judge.name}")
    if missing:
        out.print(f"no such interaction: {', '.join(map(str, missing))}")
        return 1
    return 0


def cmd_trusted(args) -> int:
    import sqlalchemy as sa

    from eval.calibration import NO_JUDGE

    from .cli_store import open_store

    if args.judge_model:
        name = Path(args.judge_model).name
    else:
        from .model_files import judge_model_path

        name = judge_model_path().name
    store = open_store()
    with store.session() as s:
        rows = s.execute(sa.text(
            "SELECT judge_model, metric, auc, pairs, threshold, trusted, created_at FROM trusted_metrics "
            "WHERE judge_model IN (:j, :none) ORDER BY judge_model, metric"), {"j": name, "none": NO_JUDGE}).all()
    data = [{"judge_model": r[0], "metric": r[1], "auc": r[2], "pairs": r[3], "threshold": r[4], "trusted": r[5],
             "calibrated_at": r[6].isoformat()} for r in rows]
    if args.json:
        print_json(data)
        return 0
    if not data:
        out.print(f"{name} has not been calibrated: run `kaizen eval calibrate`")
        return 0
    print_table(["judge", "metric", "AUC", "pairs", "trusted", "calibrated"],
                [[d["judge_model"], d["metric"], "-" if d["auc"] is None else f"{d['auc']:.3f}", d["pairs"],
                  "yes" if d["trusted"] else "no", d["calibrated_at"][:19]] for d in data])
    return 0
