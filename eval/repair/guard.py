"""The guard: a candidate is scored on held-out probes (never the train probes repairs are derived from) beside
the version it was built from, and promoted only if a trusted metric improves and none regresses beyond the
tolerance (`KAIZEN_REPAIR_TOLERANCE`, default 0.02 absolute); a rise counts from `KAIZEN_REPAIR_MIN_GAIN` (0.005,
below it one probe moving one rank is noise). The gold-id retrieval metrics are the trusted ones
the guard measures; LLM-judged metrics never decide a promotion on their own."""

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
