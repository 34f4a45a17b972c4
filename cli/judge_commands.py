"""The judge's commands: `kaizen eval calibrate`, `kaizen eval score`, `kaizen eval trusted`.

They join the `eval` group that eval_commands creates (`kaizen bench judge` is in bench_commands)."""

from __future__ import annotations

from pathlib import Path

import click

from .output import json_option, out, print_json, print_table
from .store_commands import embedder, open_store

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

JUDGE_MODEL_HELP = "a .gguf judge (default: KAIZEN_JUDGE_MODEL, else the chat model)"


def register_commands(cli: click.Group) -> None:
    eval_group = cli.commands["eval"]
    assert isinstance(eval_group, click.Group)

    @eval_group.command(name="calibrate")
    @click.option("--judge-model", help=JUDGE_MODEL_HELP)
    @click.option("--pairs", type=int, default=12, help="labelled pairs (one good and one bad answer each)")
    @click.option("--metrics", help="comma-separated metrics (default: all LLM-judged ones)")
    @click.option("--corpus", help="take the pairs from this corpus.jsonl ... (with --questions) instead of probes")
    @click.option("--questions", help="... and this question file (../shared/data format)")
    @json_option
    def calibrate_command(judge_model: str | None, pairs: int, metrics: str | None, corpus: str | None,
                          questions: str | None, as_json: bool) -> int:
        """measure how well each judged metric tells good answers from bad (ROC AUC)

        The pairs come from the probes with reference answers (or ../shared/data/clapnq when there are none).
        A metric whose AUC reaches KAIZEN_TRUST_AUC is trusted for this judge model; only trusted LLM metrics
        feed drift alerts, answer grading and repairs."""
        from eval.judging.calibration import calibrate, sources_from_files, sources_from_store
        from eval.settings import EvalSettings

        store = open_store()
        sources, label = None, "probes"
        if corpus or questions:
            if not (corpus and questions):
                raise SystemExit("kaizen: --corpus and --questions go together")
            sources, label = sources_from_files(corpus, questions), f"{questions}"
        elif not sources_from_store(store, limit=2):
            fallback = SHARED_DATA / "clapnq"
            if not fallback.exists():
                raise SystemExit("kaizen: no probes with reference answers: `kaizen eval import FILE.jsonl` first, "
                                 "or pass --corpus and --questions")
            sources = sources_from_files(fallback / "corpus.jsonl", fallback / "questions.dev.jsonl")
            label = str(fallback / "questions.dev.jsonl")
            if not as_json:
                out.print(f"no probes with reference answers in the store: using {label}")
        names = [m.strip() for m in metrics.split(",")] if metrics else None
        judge = _judge(judge_model)
        progress = None if as_json else (lambda c: out.print(f"  {c.metric}: AUC {c.auc} ({c.scored}/{c.items} "
                                                              f"scored, {c.seconds_per_item}s/item)"))
        if not as_json:
            out.print(f"calibrating {judge.name} on {pairs} pairs from {label} "
                      f"(trusted: AUC >= {EvalSettings().trust_auc})")
        summary = calibrate(store, judge=judge, embedder=embedder(), pairs=pairs, metrics=names,
                            sources=sources, source_label=label, progress=progress)
        if as_json:
            print_json(summary)
        else:
            calibration_table(summary["metrics"])
        return 0

    @eval_group.command(name="score")
    @click.argument("interaction_ids", type=int, nargs=-1, required=True)
    @click.option("--judge-model", help=JUDGE_MODEL_HELP)
    @click.option("--metrics", help="comma-separated metrics (default: KAIZEN_EVAL_METRICS or all reference-free)")
    @json_option
    def score_command(interaction_ids: tuple[int, ...], judge_model: str | None, metrics: str | None,
                      as_json: bool) -> int:
        """grade recorded interactions now with the RAGAS metrics (writes eval_scores)

        Exits 1 when an interaction id does not exist."""
        from eval.judging.interactions import evaluate_interactions

        store = open_store()
        judge = _judge(judge_model)
        results = evaluate_interactions(store, list(interaction_ids), judge=judge, embedder=embedder(),
                                        metrics=metrics)
        rows = [r for rs in results.values() for r in rs]
        if as_json:
            print_json(rows)
            return 0
        missing = [i for i in interaction_ids if i not in results]
        print_table(["interaction", "metric", "value", "reason"],
                    [[r["interaction_id"], r["metric"], "NULL" if r["value"] is None else f"{r['value']:.3f}",
                      r["reason"] or ""] for r in rows], title=f"judge: {judge.name}")
        if missing:
            out.print(f"no such interaction: {', '.join(map(str, missing))}")
            return 1
        return 0

    @eval_group.command(name="trusted")
    @click.option("--judge-model", help="a .gguf path or file name (default: the configured judge)")
    @json_option
    def trusted_command(judge_model: str | None, as_json: bool) -> int:
        """the latest calibration of each metric for a judge model"""
        if judge_model:
            name = Path(judge_model).name
        else:
            from agent.model_files import judge_model_path
            from agent.settings import AgentSettings
            from eval.settings import EvalSettings

            name = judge_model_path(EvalSettings().judge_model, AgentSettings().chat_model).name
        from eval.judging.calibration import trusted_metric_rows

        data = trusted_metric_rows(open_store(), name)
        if as_json:
            print_json(data)
            return 0
        if not data:
            out.print(f"{name} has not been calibrated: run `kaizen eval calibrate`")
            return 0
        print_table(["judge", "metric", "AUC", "pairs", "trusted", "calibrated"],
                    [[d["judge_model"], d["metric"], "-" if d["auc"] is None else f"{d['auc']:.3f}", d["pairs"],
                      "yes" if d["trusted"] else "no", d["calibrated_at"][:19]] for d in data])
        return 0


def _judge(path):
    from eval.judging.judge import load_judge

    return load_judge(path)


def calibration_table(metrics: list[dict]) -> None:
    rows = [[m["judge_model"], m["metric"], "-" if m["auc"] is None else f"{m['auc']:.3f}",
             f"{m['scored']}/{m['items']}", m["seconds_per_item"], "yes" if m["trusted"] else "no"] for m in metrics]
    print_table(["judge", "metric", "AUC", "scored", "s/item", "trusted"], rows, title="judge calibration")
