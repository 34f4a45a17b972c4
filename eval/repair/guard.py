"""The guard: a candidate is scored on held-out probes (never the train probes repairs are derived from) beside
the version it was built from, and promoted only if a trusted metric improves and none regresses beyond the
tolerance (`KAIZEN_REPAIR_TOLERANCE`, default 0.02 absolute); a rise counts from `KAIZEN_REPAIR_MIN_GAIN` (0.005,
below it one probe moving one rank is noise). The gold-id retrieval metrics are the trusted ones
the guard measures; LLM-judged metrics never decide a promotion on their own.

Answers weigh too: with `KAIZEN_GUARD_ANSWERS` > 0 the agent answers that many held-out probes on both versions
(read from the version, never recorded as traffic), and a change whose answers score lower than the base's by more
than `KAIZEN_GUARD_ANSWER_TOLERANCE` in token F1, string presence of an accepted reference or semantic similarity
to the reference, with at least two more probes worse than better, is not promoted, however much recall rose:
the recovery benchmark found a small model answering better from short fragments while recall fell, and the
opposite can happen too."""

from __future__ import annotations

from dataclasses import dataclass

from eval.judging.trust import GOLD_METRICS, GUARD_METRICS
from eval.settings import EvalSettings

DEFAULT_TOLERANCE = EvalSettings.model_fields["repair_tolerance"].default
DEFAULT_MIN_GAIN = EvalSettings.model_fields["repair_min_gain"].default


@dataclass
class Verdict:
    promote: bool
    reason: str
    before: dict
    after: dict

    @property
    def deltas(self) -> dict:
        return {m: round(self.after[m] - self.before[m], 4) for m in GOLD_METRICS
                if m in self.before and m in self.after}


class HeldoutScorer:
    """Held-out gold-id metrics per KB version, computed once per version in a planner run."""

    def __init__(self, store, embedder, exclude_probe_ids=()):
        from eval.probes.sets import load_probes

        self.store = store
        self.embedder = embedder
        excluded = set(exclude_probe_ids)
        self.probes = [p for p in load_probes(store, split="heldout") if p.id not in excluded]
        self._cache: dict[int, dict] = {}

    def metrics(self, version_id: int) -> dict:
        from eval.probes.retrieval import score_probes

        if version_id not in self._cache:
            _, summary = score_probes(self.store, self.embedder, self.probes, version_id)
            self._cache[version_id] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}
        return self._cache[version_id]


ANSWER_METRICS = ("token_f1", "string_presence", "semantic_similarity")


class AnswerScorer:
    """Non-LLM answer metrics of the first `n` held-out probes with a reference, answered by the agent on a given
    KB version; computed once per version in a planner run. `agent()` makes the agent when first needed."""

    def __init__(self, store, embedder, agent, n: int):
        from eval.probes.sets import load_probes

        self.store = store
        self.embedder = embedder
        self._agent_factory = agent
        self._agent = None
        self.probes = [p for p in load_probes(store, split="heldout") if p.answers or p.reference][:n] if n else []
        self._cache: dict[int, dict] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.probes)

    def _similarity(self, answer: str, references: list[str]) -> float:
        import numpy as np

        if not answer.strip() or not references:
            return 0.0
        vectors = np.asarray(self.embedder.embed_queries([answer, *references]), dtype=np.float32)
        return float(max(vectors[1:] @ vectors[0]))

    def metrics(self, version_id: int) -> dict | None:
        from agent.prompts import strip_citations
        from eval.metrics import answer_figures, references_of, scored_text

        if not self.probes:
            return None
        if version_id not in self._cache:
            if self._agent is None:
                self._agent = self._agent_factory()
            rows = []
            for probe in self.probes:
                turn = self._agent.ask(probe.question, kb_version=version_id, record=False)
                question = {"answers": probe.answers, "reference": probe.reference}
                figures = answer_figures(turn.answer, turn.abstained, question)
                text = scored_text(turn.answer, turn.abstained)
                rows.append({"probe_id": probe.id, "abstained": turn.abstained, "token_f1": figures["f1"] or 0.0,
                             "string_presence": figures["string_presence"] or 0.0,
                             "semantic_similarity": self._similarity(strip_citations(text), references_of(question))})
            n = len(rows)
            self._cache[version_id] = {
                "answers": n, "abstained": sum(r["abstained"] for r in rows),
                **{m: round(sum(r[m] for r in rows) / n, 4) for m in ANSWER_METRICS},
                "per_probe": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}
        return self._cache[version_id]


MIN_NET_WORSE = 2  # answers are few and a small model's vary: a regression is a drop most probes agree on


def answers_regress(before: dict | None, after: dict | None, tol: float) -> str | None:
    """Why the candidate's answers are worse than the base's, or None: a metric whose mean falls by more than
    `tol` while at least MIN_NET_WORSE more probes got worse than better (one answer changing its wording is
    not a regression)."""
    if not before or not after:
        return None
    pairs = list(zip(before["per_probe"], after["per_probe"]))
    worse = []
    for m in ANSWER_METRICS:
        down = sum(a[m] < b[m] - 1e-9 for b, a in pairs)
        up = sum(a[m] > b[m] + 1e-9 for b, a in pairs)
        if after[m] < before[m] - tol - 1e-9 and down - up >= MIN_NET_WORSE:
            worse.append(f"{m} {before[m]:.3f}->{after[m]:.3f} (worse on {down}, better on {up})")
    if not worse:
        return None
    return ("its held-out answers regress: " + ", ".join(worse) + f" beyond the answer tolerance {tol} "
            f"({before['answers']} answers)")


def decide(before: dict, after: dict, mode: str = "improve", tol: float | None = None,
           gain: float | None = None) -> Verdict:
    """`tol`: KAIZEN_REPAIR_TOLERANCE; `gain`: KAIZEN_REPAIR_MIN_GAIN, the smallest rise that counts as an
    improvement (below it, one probe moving one rank is noise). None: the declared defaults."""
    tol = DEFAULT_TOLERANCE if tol is None else tol
    gain = DEFAULT_MIN_GAIN if gain is None else gain
    if not before.get("probes"):
        return Verdict(False, "no held-out probes to judge the change on (import or generate probes first)",
                       before, after)
    regressed = [m for m in GOLD_METRICS if after[m] < before[m] - tol - 1e-9]
    if regressed:
        return Verdict(False, "regresses " + ", ".join(f"{m} {before[m]:.3f}->{after[m]:.3f}" for m in regressed)
                       + f" beyond the tolerance {tol}", before, after)
    improved = [m for m in GUARD_METRICS if after[m] >= before[m] + gain - 1e-9 and after[m] > before[m]]
    if mode == "improve" and not improved:
        return Verdict(False, f"no trusted held-out metric improved by {gain} or more", before, after)
    if improved:
        return Verdict(True, "improves " + ", ".join(f"{m} {before[m]:.3f}->{after[m]:.3f}" for m in improved)
                       + f"; nothing regresses beyond {tol}", before, after)
    return Verdict(True, f"user-provided knowledge: nothing regresses beyond {tol}", before, after)
