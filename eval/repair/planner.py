"""The repair planner: diagnose -> plan -> build each action as a candidate -> guard on held-out probes ->
promote atomically or roll back, round after round until a round promotes nothing.

`run_planner` is what the worker's plan_repair job calls when a quality alert fires, and what `kaizen improve`
runs by hand. One planner runs at a time (a session advisory lock): a second one returns at once with status
"busy" and says so. Each build also holds `kaizen reindex`'s lock, so a manual re-index and a repair never
interleave. Every decision, with the held-out metrics before and after, is a `kb_changes` row.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

from eval.judging.trust import GOLD_METRICS, trusted_llm_metrics
from eval.settings import EvalSettings
from store import locks
from store.candidate import CandidateBuilder
from store.kb_versions import activate, record_change, require_active
from store.reindex import clean_abandoned

from .actions import Action, NothingToBuild, RepairContext, SourceVanished
from .diagnose import diagnose
from .guard import AnswerScorer, HeldoutScorer, answers_regress, decide

log = logging.getLogger(__name__)

ACTOR = "kaizen planner"


@dataclass
class ActionResult:
    action: dict
    decision: str  # promoted | rolled_back | skipped | failed
    reason: str
    candidate_version: int | None = None
    base_version: int | None = None
    metrics_before: dict | None = None
    metrics_after: dict | None = None
    build: dict | None = None
    seconds: float = 0.0
    change_id: int | None = None


@dataclass
class Plan:
    status: str  # done | nothing_to_do | dry_run | busy
    message: str
    alert_id: int | None = None
    dry_run: bool = False
    active_before: int | None = None
    active_after: int | None = None
    findings: list[dict] = field(default_factory=list)  # of the first round
    planned: list[dict] = field(default_factory=list)
    results: list[ActionResult] = field(default_factory=list)
    rounds: int = 0
    seconds: float = 0.0

    @property
    def kept(self) -> list[ActionResult]:
        return [r for r in self.results if r.decision == "promoted"]

    def as_dict(self) -> dict:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 2)
        data["actions_taken"] = len(self.results)
        data["actions_kept"] = len(self.kept)
        return data


def _last_change(session, version_id: int) -> int:
    return session.execute(sa.text("SELECT coalesce(max(id), 0) FROM kb_changes WHERE kb_version = :v"),
                           {"v": version_id}).scalar_one()


def _record(session, action: Action, result: ActionResult, actor: str) -> int:
    record_change(session, kind=f"repair:{action.kind}", kb_version=result.candidate_version,
                  target=action.target,
                  before={"base_version": result.base_version, "reason": action.reason},
                  after={"candidate_version": result.candidate_version, "why": result.reason,
                         "action": result.action, "build": result.build},
                  metrics_before=result.metrics_before, metrics_after=result.metrics_after,
                  decision=result.decision, actor=actor)
    return session.execute(sa.text("SELECT max(id) FROM kb_changes")).scalar_one()


def _apply(store, embedder, action: Action, ctx: RepairContext, scorer: HeldoutScorer, actor: str,
           reindex_lock_conn, answers: AnswerScorer | None = None) -> ActionResult:
    started = time.perf_counter()
    lock_lost = False
    with locks.session_lock(reindex_lock_conn, locks.REINDEX):
        clean_abandoned(store)  # under the lock: no other process is building or judging a version now
        with store.session() as s:
            base = require_active(s)
            base_change = _last_change(s, base.id)
        result = ActionResult(action.as_dict(), "built", "", base_version=base.id)
        tokens, overlap = action.chunk_params()
        builder = CandidateBuilder(store, embedder, base, reason=f"repair: {action.kind}", chunk_tokens=tokens,
                                   chunk_overlap=overlap, search_params=action.search_params(base))
        result.candidate_version = builder.id
        try:
            result.build = action.build(builder, ctx)
            builder.finish()
            if builder.carried:  # what re-chunked documents had learned, recorded where withdrawal looks for it
                result.build = {**result.build, "carried_learned": len(builder.carried),
                                "evidence": result.build.get("evidence", []) + builder.carried}
        except (SourceVanished, NothingToBuild) as exc:
            result.decision, result.reason = "skipped", str(exc)
        except Exception as exc:  # a crash half-way: the candidate goes, the active version was never touched
            log.exception("repair %s failed while building", action.kind)
            result.decision, result.reason = "failed", f"{type(exc).__name__}: {exc}"
            # The database went away under the build (a restart): the locks went with the session, so this
            # planner must not go on to the next action; the job runs again once the database is back.
            lock_lost = not locks.still_held(reindex_lock_conn)
        if result.decision not in ("skipped", "failed") and action.train_gate:
            gate = train_gate(store, embedder, base, builder.version, ctx.settings)
            result.build = {**(result.build or {}), "train_gate": gate}
            if not gate["passed"]:
                result.decision, result.reason = "rolled_back", gate["reason"]
        if result.decision in ("skipped", "failed", "rolled_back"):
            builder.discard(actor, result.reason)
            action.on_discard(store)
        else:
            result.metrics_before = scorer.metrics(base.id)
            result.metrics_after = scorer.metrics(builder.id)
            verdict = decide(result.metrics_before, result.metrics_after, action.guard,
                             ctx.settings.repair_tolerance, ctx.settings.repair_min_gain)
            result.reason = verdict.reason
            if verdict.promote and answers is not None and answers.enabled:  # only for what would be promoted
                before, after = answers.metrics(base.id), answers.metrics(builder.id)
                result.metrics_before = {**result.metrics_before, "answers": before}
                result.metrics_after = {**result.metrics_after, "answers": after}
                worse = answers_regress(before, after, ctx.settings.guard_answer_tolerance)
                if worse:
                    verdict.promote, result.reason = False, f"{verdict.reason}, but {worse}"
                else:
                    result.reason = (f"{verdict.reason}; its {after['answers']} held-out answers score token F1 "
                                     f"{before['token_f1']:.3f}->{after['token_f1']:.3f}, string presence "
                                     f"{before['string_presence']:.3f}->{after['string_presence']:.3f}")
            lock_lost = verdict.promote and not locks.still_held(reindex_lock_conn)
            if lock_lost:
                verdict.promote = False
                result.reason = ("the planner's database session ended while the candidate was built (a restart "
                                 "or a cut connection) and its locks with it: not promoted; the job runs again")
            with store.session() as s:
                if verdict.promote and _last_change(s, base.id) != base_change:
                    verdict.promote = False
                    result.reason = "the active version changed while the candidate was built; try again"
                if verdict.promote:
                    s.execute(sa.text("SELECT id FROM kb_versions WHERE status = 'active' FOR UPDATE"))
                    activate(s, builder.id, actor=actor, reason=f"repair: {action.kind}",
                             metrics={"heldout": result.metrics_after})
                    s.execute(sa.text("UPDATE kb_versions SET metrics = metrics || CAST(:m AS jsonb) WHERE id = :id"),
                              {"m": __import__("json").dumps({"heldout": result.metrics_after}), "id": builder.id})
                    action.on_promote(s, builder.id, actor)
                    result.decision = "promoted"
            if result.decision != "promoted":
                result.decision = "rolled_back"
                builder.discard(actor, result.reason)
                action.on_discard(store)
        result.seconds = round(time.perf_counter() - started, 2)
        with store.session() as s:
            for rejected in ctx.rejected_outputs:
                record_change(s, kind="repair_output_rejected", kb_version=result.candidate_version,
                              target=f"chunk:{rejected['chunk_id']}", after=rejected, decision="rejected", actor=actor)
            ctx.rejected_outputs.clear()
            result.change_id = _record(s, action, result, actor)
        if lock_lost:
            raise locks.LockLost(f"repair {action.kind}: the planner's database session ended (a restart or a cut "
                                 f"connection): {result.reason}")
        return result


def train_gate(store, embedder, base, candidate, settings: EvalSettings) -> dict:
    """Whether `candidate` beats `base` on (a sample of) the train probes by KAIZEN_REPAIR_MIN_GAIN."""
    from .tuning import TrainScorer, even_sample, objective, tuning_probes

    sample = even_sample(tuning_probes(store, base), settings.tune_max_probes)
    if not sample:
        return {"passed": False, "reason": "no train probes to judge it on: not promoted", "before": None,
                "after": None, "gain": None}
    scorer = TrainScorer(store, embedder, sample)
    before, after = scorer.score(base), scorer.score(candidate)
    gain = objective(after) - objective(before)
    passed = gain >= settings.repair_min_gain
    reason = (f"train probes {objective(before):.3f} -> {objective(after):.3f} ({gain:+.3f}): "
              + ("passes the train gate" if passed else f"below the minimum gain {settings.repair_min_gain}, the "
                 "held-out probes were not consulted"))
    return {"passed": passed, "reason": reason, "before": before, "after": after, "gain": round(gain, 4)}


def _alert(store, alert_id: int | None, status: str | None = None) -> dict | None:
    if alert_id is None:
        return None
    with store.session() as s:
        if status is not None:
            s.execute(sa.text("UPDATE quality_alerts SET status = :st, resolved_at = CASE WHEN :st IN "
                              "('repaired', 'no_repair') THEN now() END WHERE id = :id"),
                      {"st": status, "id": alert_id})
        row = s.execute(sa.text("SELECT id, metric, baseline, observed, status FROM quality_alerts WHERE id = :id"),
                        {"id": alert_id}).mappings().first()
    return dict(row) if row else None


def _answer_scorer(store, embedder, ctx: RepairContext) -> AnswerScorer:
    """The guard's answer side: the agent, on the planner's model, answering KAIZEN_GUARD_ANSWERS held-out probes."""
    def agent():
        from agent.graph import Agent

        return Agent(store, embedder=embedder, llm=ctx.llm(), persist=False)

    return AnswerScorer(store, embedder, agent, ctx.settings.guard_answers)


def _default_llm():
    from agent.llm import get_llm

    return get_llm()


def run_planner(store, *, alert_id: int | None = None, dry_run: bool = False, embedder=None,
                actor: str = ACTOR, wait: bool = False, llm=None, check=None, max_rounds: int | None = None,
                settings: EvalSettings | None = None, budget_seconds: float | None = None) -> Plan:
    """Diagnose the active KB version and repair it under the held-out guard. `alert_id`: the quality alert that
    asked for it (its metric must be trusted for the planner to go beyond fixing defects); `dry_run`: only print
    the plan; `llm`: a factory for the model (default agent.llm.get_llm); `check`: called during builds (tests
    inject crashes through it); `settings`: an EvalSettings (default: EvalSettings()); `budget_seconds`: no new
    action (or tuning grid point) starts after this long."""
    started = time.perf_counter()
    deadline = started + budget_seconds if budget_seconds else None
    settings = settings or EvalSettings()
    if embedder is None:
        from store.embeddings import store_embedder

        embedder = store_embedder(store.settings)
    with store.engine.connect() as conn, locks.session_lock(conn, locks.PLANNER, wait=wait) as held:
        if not held:
            return Plan("busy", "another repair planner is running on this knowledge base; this one exits without "
                        "changing anything (run `kaizen improve` again when it is done)", alert_id, dry_run)
        plan = Plan("done", "", alert_id, dry_run)
        try:
            alert = _alert(store, alert_id, None if dry_run else "planning")
            explore = False
            notes = []
            if alert is not None:
                trusted = set(GOLD_METRICS) | trusted_llm_metrics(store, settings=settings)
                explore = alert["metric"] in trusted
                if not explore:
                    notes.append(f"alert {alert_id} is on {alert['metric']}, which the judge calibration does not "
                                 "trust: only defects are repaired")
            elif alert_id is not None:
                notes.append(f"no quality alert {alert_id}")
            with store.session() as s:
                plan.active_before = require_active(s).id
            ctx = RepairContext(store, embedder, llm or _default_llm, check=check, settings=settings)
            scorer = HeldoutScorer(store, embedder)
            answers = _answer_scorer(store, embedder, ctx)
            tried: set[str] = set()
            rounds = max_rounds or settings.repair_max_rounds
            while plan.rounds < rounds:
                with store.session() as s:
                    version = require_active(s)
                # A quality alert asks for repairs; learning from traffic is for improvement passes
                diagnosis = diagnose(store, embedder, version, explore=explore, learn=alert_id is None,
                                     settings=settings, deadline=deadline)
                pending = [a for a in diagnosis.actions if a.signature() not in tried]
                if plan.rounds == 0:
                    plan.findings = [f.as_dict() for f in diagnosis.findings]
                    plan.planned = [a.as_dict() for a in pending]
                plan.rounds += 1
                if dry_run or not pending:
                    break
                promoted = False
                for action in pending:
                    if deadline is not None and time.perf_counter() > deadline:
                        notes.append(f"the time budget of {budget_seconds:g} s ran out")
                        break
                    tried.add(action.signature())
                    result = _apply(store, embedder, action, ctx, scorer, actor, conn, answers)
                    plan.results.append(result)
                    log.info("repair %s: %s (%s)", action.kind, result.decision, result.reason)
                    if result.decision == "promoted":
                        promoted = True
                        break  # the KB changed: diagnose again before the next action
                if not promoted or (deadline is not None and time.perf_counter() > deadline):
                    break
            with store.session() as s:
                plan.active_after = require_active(s).id
            if dry_run:
                plan.status = "dry_run"
                plan.message = (f"{len(plan.planned)} action(s) planned" if plan.planned
                                else "nothing to do: no defect found in the knowledge base")
            elif not plan.results:
                plan.status = "nothing_to_do"
                plan.message = ("nothing to do: no defect found" + ("" if alert_id is not None else
                                ", and no evidence of anything that would improve it") +
                                "; the knowledge base is left as it is")
            else:
                plan.message = (f"{len(plan.results)} action(s) tried, {len(plan.kept)} kept; active KB version "
                                f"{plan.active_before} -> {plan.active_after}")
            if notes:
                plan.message += " (" + "; ".join(notes) + ")"
            if alert is not None and not dry_run:
                _alert(store, alert_id, "repaired" if plan.kept else "no_repair")
        finally:
            plan.seconds = time.perf_counter() - started
    return plan


def run_actions(store, embedder, actions: list[Action], *, llm=None, check=None,
                actor: str = ACTOR, settings: EvalSettings | None = None) -> list[ActionResult]:
    """Apply given actions (no diagnosis) under the same locks and guard: for tests and scripted repairs."""
    with store.engine.connect() as conn, locks.session_lock(conn, locks.PLANNER):
        ctx = RepairContext(store, embedder, llm or _default_llm, check=check, settings=settings or EvalSettings())
        scorer = HeldoutScorer(store, embedder)
        answers = _answer_scorer(store, embedder, ctx)
        return [_apply(store, embedder, a, ctx, scorer, actor, conn, answers) for a in actions]


__all__ = ["run_planner", "run_actions", "Plan", "ActionResult"]
