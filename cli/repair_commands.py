"""The self-repair commands: `kaizen improve`, `kaizen gaps`, `kaizen kb log|show|revert|params|pin|unpin|prune`,
`kaizen export qa`."""

from __future__ import annotations

import click

from .output import err, json_option, out, print_json, print_table
from .store_commands import embedder, open_store


def register_commands(cli: click.Group) -> None:
    @cli.command(name="improve")
    @click.option("--dry-run", is_flag=True, help="only diagnose and print the plan")
    @click.option("--alert", type=int, help="the quality alert this run answers (enables enrichment)")
    @click.option("--wait", is_flag=True, help="wait for a running planner instead of exiting")
    @click.option("--budget", type=float, default=None, help="seconds after which no new action starts")
    @json_option
    def improve_command(dry_run: bool, alert: int | None, wait: bool, budget: float | None, as_json: bool) -> int:
        """diagnose the knowledge base and repair it under the held-out guard

        Each repair is built as a candidate KB version and promoted only if a trusted metric improves on the
        held-out probes and none regresses beyond KAIZEN_REPAIR_TOLERANCE; `kaizen kb log` shows the decisions.
        Without --alert it is an improvement pass: it also learns from traffic and tunes the retrieval parameters
        and the chunk size on the train probes (`kaizen kb params`). Exits 1 when another planner is running (see
        --wait)."""
        from eval.repair.planner import run_planner

        plan = run_planner(open_store(), alert_id=alert, dry_run=dry_run, embedder=embedder(), wait=wait,
                           actor="kaizen improve", budget_seconds=budget)
        if as_json:
            print_json(plan.as_dict())
            return 1 if plan.status == "busy" else 0
        if plan.status == "busy":
            err.print(plan.message)
            return 1
        print_plan(plan)
        return 0

    @cli.command(name="gaps")
    @click.option("--limit", type=int, default=50, help="at most N questions (default 50)")
    @json_option
    def gaps_command(limit: int, as_json: bool) -> int:
        """questions the knowledge base had nothing relevant for"""
        from eval.reports.gaps import list_gaps

        gaps = list_gaps(open_store(), limit)
        if as_json:
            print_json(gaps)
        elif not gaps:
            out.print("no knowledge gaps recorded")
        else:
            print_table(["times", "last asked", "question"],
                        [[g["times"], g["last_asked"], g["question"]] for g in gaps])
            out.print("[dim]Reported, not repaired: add documents that answer them and run `kaizen ingest`.[/dim]")
        return 0

    @cli.group(name="kb")
    def kb_group() -> None:
        """the knowledge base's change log and retrieval parameters; revert a repair; prune old versions"""

    @kb_group.command(name="log")
    @click.option("--limit", type=int, default=30, help="at most N changes (default 30)")
    @click.option("--all", "show_all", is_flag=True, help="every change (ingests, activations), not only repairs")
    @json_option
    def kb_log_command(limit: int, show_all: bool, as_json: bool) -> int:
        """changes to the knowledge base, newest first, with metrics before/after"""
        from store.revert import change_log

        rows = change_log(open_store(), limit, repairs_only=not show_all)
        if as_json:
            print_json(rows)
            return 0
        print_table(["id", "when", "kind", "version", "decision", "held-out before", "held-out after", "target"],
                    [[r["id"], str(r["created_at"])[:19], r["kind"], r["kb_version"], r["decision"],
                      _short(r["metrics_before"]), _short(r["metrics_after"]), r["target"]] for r in rows])
        return 0

    @kb_group.command(name="show")
    @click.argument("change_id", type=int)
    def kb_show_command(change_id: int) -> int:
        """one change whole, as JSON: a learning's questions and the interactions or probes they came from

        Exits 2 when there is no such change."""
        from store.revert import get_change

        print_json(get_change(open_store(), change_id))
        return 0

    @kb_group.command(name="revert")
    @click.argument("change_id", type=int)
    @json_option
    def kb_revert_command(change_id: int, as_json: bool) -> int:
        """undo a promoted repair (re-activate the version it replaced)

        Exits 2 when the change cannot be reverted (for instance, later changes must be reverted first)."""
        from store.revert import revert

        result = revert(open_store(), change_id)  # a RevertError is printed by the root group (exit 2)
        if as_json:
            print_json(result)
        else:
            out.print(f"reverted change {result['reverted']}: KB version {result['active']} is active again "
                      f"(version {result['retired']} retired)")
        return 0

    @kb_group.command(name="params")
    @json_option
    def kb_params_command(as_json: bool) -> int:
        """the retrieval parameters the active KB version searches with, and where each comes from"""
        from store import search_params
        from store.kb_versions import require_active

        store = open_store()
        with store.session() as s:
            version = require_active(s)
        rows = search_params.describe(store.settings, version)
        if as_json:
            print_json({"kb_version": version.id, "parameters": rows})
            return 0
        print_table(["parameter", "value", "from", "setting"],
                    [[r["name"], r["value"], r["origin"], r["setting"]] for r in rows],
                    title=f"KB version {version.id}")
        return 0

    @kb_group.command(name="pin")
    @click.argument("name")
    @click.argument("value")
    @json_option
    def kb_pin_command(name: str, value: str, as_json: bool) -> int:
        """fix a retrieval parameter: it wins over the settings and any tuned value, and is never tuned

        NAME is a parameter of `kaizen kb params` (fusion_alpha, cjk_fusion_alpha, sentence_weight,
        search_candidates, chunk_tokens). A bad name or value exits 2."""
        from store import search_params

        with open_store().session() as s:
            result = search_params.pin(s, name, value, actor="kaizen kb pin")
        if as_json:
            print_json(result)
        else:
            out.print(f"pinned {result['name']} = {result['value']}", highlight=False)
        return 0

    @kb_group.command(name="unpin")
    @click.argument("name")
    @json_option
    def kb_unpin_command(name: str, as_json: bool) -> int:
        """let the tuner vary a pinned parameter again"""
        from store import search_params

        with open_store().session() as s:
            result = search_params.unpin(s, name, actor="kaizen kb unpin")
        if as_json:
            print_json(result)
        else:
            out.print(f"unpinned {result['name']}" if result else f"{name} was not pinned", highlight=False)
        return 0

    @kb_group.command(name="prune")
    @click.option("--keep", type=int, default=2,
                  help="retired versions to keep, most recently active first (default 2)")
    @click.option("--dry-run", is_flag=True, help="only list what would be pruned")
    @json_option
    def kb_prune_command(keep: int, dry_run: bool, as_json: bool) -> int:
        """delete the chunks of old retired KB versions

        The version a revert of the latest change would re-activate is always kept."""
        from store.prune import prune_retired

        report = prune_retired(open_store(), keep=keep, dry_run=dry_run)  # a PruneError: the root group, exit 2
        if as_json:
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

    @cli.group(name="export")
    def export_group() -> None:
        """export training data"""

    @export_group.command(name="qa")
    @click.argument("file")
    @click.option("--min-score", type=float, required=True,
                  help="the lowest score to export: every trusted LLM metric of an interaction, MRR@10 of a probe")
    @click.option("--include-heldout", is_flag=True, help="also held-out probes (leaks the guard's test set)")
    @json_option
    def export_qa_command(file: str, min_score: float, include_heldout: bool, as_json: bool) -> int:
        """interactions and probes that passed the trusted metrics, as chat pairs

        FILE gets one JSON line per pair (messages in chat format, and their sources). Only train probes
        unless --include-heldout."""
        from eval.reports.export import export_qa

        result = export_qa(open_store(), embedder(), file, min_score, include_heldout=include_heldout)
        if as_json:
            print_json(result)
        else:
            trusted = ", ".join(result["trusted_llm_metrics"]) or "none (no interaction qualifies)"
            out.print(f"wrote {result['pairs']} pairs to {result['path']} ({result['interactions']} interactions, "
                      f"{result['probes']} probes); trusted LLM metrics: {trusted}", highlight=False)
        return 0


def print_plan(plan) -> None:
    """`kaizen improve` as text: the findings, the plan (dry run) or what was done, and the planner's message."""
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


def _delta(result, metric: str) -> str:
    if not result.metrics_before or not result.metrics_after:
        return ""
    return f"{result.metrics_before[metric]:.3f} -> {result.metrics_after[metric]:.3f}"


def _short(metrics) -> str:
    if not metrics:
        return ""
    return " ".join(f"{k} {metrics[k]:.3f}" for k in ("recall@5", "mrr@10") if isinstance(metrics.get(k), (int, float)))
