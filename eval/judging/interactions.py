"""Grading recorded answers with RAGAS, and probe answers against their references.

Public API (what the worker, reports and the repair guard call):

- `evaluate_interaction(store, interaction_id, *, judge=None, embedder=None, run_id=None, metrics=None,
  settings=None)`
  → list of the `eval_scores` rows it wrote (dicts: id, metric, value, reason, judge_model, interaction_id,
  run_id, kb_version, detail). Reference-free metrics (`INTERACTION_METRICS`, or `metrics`, or the setting
  KAIZEN_EVAL_METRICS) judged on the chunks that were in the answer's context (`retrievals.in_context`). An
  abstained answer, or one with no context, gets one NULL row per metric with the reason. An unknown id gives [].
- `evaluate_interactions(store, ids, ...)` → {interaction_id: rows}: the same for many, one metric over all of
  them at a time (llama.cpp then reuses each prompt's prefix).
- `evaluate_probe_answer(store, probe_id, answer, contexts, *, retrieved_document_ids=None, judge=None,
  embedder=None, run_id=None, kb_version=None, llm_metrics=None)` → rows written for that probe: string metrics
  against the reference (chrf, rouge_l, token_f1; string_presence for short accepted answers), semantic_similarity
  (e5), gold-id metrics when `retrieved_document_ids` is given (recall@1/5/10, mrr@10 over distinct documents, as
  `kaizen bench retrieval`), and the LLM reference metrics (`REFERENCE_METRICS` by default; `llm_metrics=()` for
  none). `evaluate_probe_answers(store, items, ...)` does many (items: `ProbeAnswer`).

`judge` is an `eval.judging.judge.LlamaJudge` (default: `load_judge()`, the process's shared model or
KAIZEN_JUDGE_MODEL); `embedder` a store embedder (default: the store's KAIZEN_EMBEDDER); `settings` an
`EvalSettings` (default: EvalSettings()). Nothing here raises for a bad judge reply: the row holds NULL and the
reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import sqlalchemy as sa

from eval.settings import EvalSettings

from .ragas_metrics import INTERACTION_METRICS, METRICS, REFERENCE_METRICS, Score, score_rows, selected_metrics
from .scores import insert_scores, score_row


@dataclass
class RecordedInteraction:
    id: int
    question: str
    answer: str
    abstained: bool
    kb_version: int | None
    contexts: list[str]
    chunk_ids: list[int]

    def ragas_row(self) -> dict:
        from agent.prompts import strip_citations

        return {"user_input": self.question, "response": strip_citations(self.answer).strip(),
                "retrieved_contexts": self.contexts}

    def ungradable(self) -> str | None:
        if self.abstained:
            return "the agent abstained: no answer to grade"
        if not self.contexts:
            return "no retrieved context: nothing was in the answer's context"
        if not self.answer.strip():
            return "empty answer"
        return None


def load_interactions(store, ids: Sequence[int]) -> list[RecordedInteraction]:
    if not ids:
        return []
    with store.session() as s:
        rows = s.execute(sa.text(
            "SELECT id, coalesce(standalone_query, question), question, answer, abstained, kb_version "
            "FROM interactions WHERE id = ANY(:ids)"), {"ids": list(ids)}).all()
        contexts = s.execute(sa.text(
            """
            SELECT r.interaction_id, r.chunk_id, c.text
            FROM retrievals r JOIN chunks c ON c.id = r.chunk_id
            WHERE r.interaction_id = ANY(:ids) AND r.in_context
            ORDER BY r.interaction_id, r.attempt DESC, r.rank
            """), {"ids": list(ids)}).all()
    by_id: dict[int, list[tuple[int, str]]] = {}
    for iid, chunk_id, text in contexts:
        seen = by_id.setdefault(iid, [])
        if chunk_id not in {c for c, _ in seen}:
            seen.append((chunk_id, text))
    found = {}
    for iid, standalone, question, answer, abstained, kb_version in rows:
        # A follow-up is judged by its standalone form ("when was it built?" → "when was the lighthouse built?").
        chunks = by_id.get(iid, [])
        found[iid] = RecordedInteraction(iid, standalone or question, answer or "", bool(abstained), kb_version,
                                         [t for _, t in chunks], [c for c, _ in chunks])
    return [found[i] for i in ids if i in found]


def _judge_name(judge, settings: EvalSettings) -> str:
    if judge is not None:
        return judge.name
    from agent.model_files import judge_model_path
    from agent.settings import AgentSettings

    chat_model = None if settings.judge_model else AgentSettings().chat_model
    return judge_model_path(settings.judge_model, chat_model).name


class _Lazy:
    """The judge and embeddings, loaded only if some row actually needs them."""

    def __init__(self, judge, embedder, store, settings: EvalSettings):
        self._judge, self._embedder, self._embeddings = judge, embedder, None
        self._store, self._settings = store, settings

    @property
    def judge(self):
        if self._judge is None:
            from .judge import load_judge

            self._judge = load_judge(settings=self._settings)
        return self._judge

    @property
    def embeddings(self):
        if self._embeddings is None:
            from store.embeddings import load_embedder

            from .ragas_embeddings import E5RagasEmbeddings

            self._embedder = self._embedder or load_embedder(self._store.settings.embedder)
            self._embeddings = E5RagasEmbeddings(self._embedder)
        return self._embeddings

    def score(self, metric: str, rows: list[dict]) -> list[Score]:
        spec = METRICS[metric]
        judge = self.judge if spec.uses_llm else None
        embeddings = self.embeddings if spec.uses_embeddings else None
        return score_rows(metric, rows, judge, embeddings)


def interaction_metrics(metrics=None, configured: str | None = None) -> tuple[str, ...]:
    """`metrics`, else `configured` (KAIZEN_EVAL_METRICS), else every reference-free metric."""
    return selected_metrics(metrics if metrics is not None else configured or None, INTERACTION_METRICS)


def calibrated_metrics(store, judge_name: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Of `names`, those the judge's calibration trusts (metrics without an LLM always stay). Without any
    calibration of this judge, all of them: untrusted scores are still shown, they just never trigger repairs."""
    from .calibration import trusted_metrics

    trusted = trusted_metrics(store, judge_name)
    judged = [n for n in names if METRICS[n].uses_llm]
    if not any(n in trusted for n in judged):
        return names
    kept = tuple(n for n in names if not METRICS[n].uses_llm or trusted.get(n))
    return kept or names


def evaluate_interactions(store, interaction_ids: Iterable[int], *, judge=None, embedder=None,
                          run_id: int | None = None, metrics=None,
                          settings: EvalSettings | None = None) -> dict[int, list[dict]]:
    settings = settings or EvalSettings()
    names = interaction_metrics(metrics, settings.eval_metrics)
    records = load_interactions(store, list(dict.fromkeys(interaction_ids)))
    lazy = _Lazy(judge, embedder, store, settings)
    if metrics is None and not settings.eval_metrics and any(r.ungradable() is None for r in records):
        # A metric the judge cannot be trusted with costs the worker 10-25 s per answer for nothing it may act on.
        names = calibrated_metrics(store, _judge_name(lazy._judge, settings), names)
    gradable = [r for r in records if r.ungradable() is None]
    scores: dict[int, list[Score]] = {r.id: [] for r in records}
    for name in names:  # one metric over every interaction before the next
        for record, score in zip(gradable, lazy.score(name, [r.ragas_row() for r in gradable]) if gradable else []):
            scores[record.id].append(score)
        for record in records:
            if record.id not in {g.id for g in gradable}:
                scores[record.id].append(Score(name, None, record.ungradable()))
    judge_model = _judge_name(lazy._judge, settings)
    rows = []
    for record in records:
        for score in scores[record.id]:
            rows.append(score_row(score, interaction_id=record.id, run_id=run_id, kb_version=record.kb_version,
                                  judge_model=judge_model if METRICS[score.metric].uses_llm else None))
    written = insert_scores(store, rows)
    out: dict[int, list[dict]] = {r.id: [] for r in records}
    for row in written:
        out[row["interaction_id"]].append(row)
    return out


def evaluate_interaction(store, interaction_id: int, *, judge=None, embedder=None, run_id: int | None = None,
                         metrics=None, settings: EvalSettings | None = None) -> list[dict]:
    return evaluate_interactions(store, [interaction_id], judge=judge, embedder=embedder, run_id=run_id,
                                 metrics=metrics, settings=settings).get(interaction_id, [])


# -- probes -----------------------------------------------------------------------------------------------------
@dataclass
class ProbeAnswer:
    """One answer to a probe: what the agent said, what it was given, and what search ranked."""

    probe_id: int
    answer: str
    contexts: list[str] = field(default_factory=list)
    retrieved_document_ids: list[int] | None = None
    abstained: bool = False


def _probe_rows(store, ids: list[int]) -> dict[int, dict]:
    with store.session() as s:
        rows = s.execute(sa.text(
            "SELECT id, question, reference, answers, gold_document_ids FROM probes WHERE id = ANY(:ids)"),
            {"ids": ids}).all()
    return {r[0]: {"question": r[1], "reference": r[2], "answers": list(r[3] or []), "gold": list(r[4] or [])}
            for r in rows}


def _response(item: ProbeAnswer) -> str:
    """What a probe's answer is scored as: its text without citation markers, or nothing when it abstained."""
    from agent.prompts import strip_citations
    from eval.metrics import scored_text

    return strip_citations(scored_text(item.answer, item.abstained)).strip()


def _non_llm_scores(item: ProbeAnswer, probe: dict) -> list[Score]:
    from eval.metrics import STRING_METRICS, string_scores

    answer = _response(item)
    references = [probe["reference"]] if probe["reference"] else []
    references += [a for a in probe["answers"] if a not in references]
    out: list[Score] = []
    if not references:
        out += [Score(name, None, "the probe has no reference answer") for name in STRING_METRICS]
    elif item.abstained:
        out += [Score(name, 0.0, None, {"abstained": True}) for name in STRING_METRICS]
    else:
        out += [Score(name, value) for name, value in string_scores(answer, references).items()]
    if item.retrieved_document_ids is not None:
        from eval.metrics import score_ranking

        if probe["gold"]:
            ranked = [str(d) for d in dict.fromkeys(item.retrieved_document_ids)]
            for name, value in score_ranking(ranked, {str(d) for d in probe["gold"]}).items():
                out.append(Score(name, value))
        else:
            out += [Score(n, None, "the probe has no gold documents") for n in ("recall@1", "recall@5",
                                                                                 "recall@10", "mrr@10")]
    return out


def evaluate_probe_answers(store, items: Sequence[ProbeAnswer], *, judge=None, embedder=None,
                           run_id: int | None = None, kb_version: int | None = None,
                           llm_metrics=None, settings: EvalSettings | None = None) -> dict[int, list[dict]]:
    """Score answers to probes (see the module doc); returns {probe_id: rows written}."""
    settings = settings or EvalSettings()
    names = selected_metrics(llm_metrics, REFERENCE_METRICS)
    probes = _probe_rows(store, [i.probe_id for i in items])
    items = [i for i in items if i.probe_id in probes]
    lazy = _Lazy(judge, embedder, store, settings)
    scores: list[list[Score]] = [_non_llm_scores(i, probes[i.probe_id]) for i in items]
    ragas_rows = []
    for item in items:
        probe = probes[item.probe_id]
        ragas_rows.append({"user_input": probe["question"], "reference": probe["reference"] or "",
                           "response": _response(item),
                           "retrieved_contexts": list(item.contexts)})
    short = [len((probes[i.probe_id]["answers"] or [""])[0]) for i in items]
    for name in ("semantic_similarity", *names):
        for k, score in enumerate(lazy.score(name, ragas_rows) if ragas_rows else []):
            if items[k].abstained and name == "answer_relevancy":
                # A probe has a reference answer, so abstaining is a miss; ragas scores a noncommittal answer 0.
                score = Score(name, 0.0, None, {"abstained": True})
            elif items[k].abstained and name not in ("context_recall",):
                score = Score(name, None, "the agent abstained: no answer to grade")
            scores[k].append(score)
    if any(short):  # accepted short spans (JSQuAD): does the answer contain one?
        presence = lazy.score("string_presence", [{"reference": (probes[i.probe_id]["answers"] or [""])[0],
                                                    "response": r["response"]} for i, r in zip(items, ragas_rows)])
        for k, score in enumerate(presence):
            if short[k]:
                scores[k].append(score)
    judge_model = _judge_name(lazy._judge, settings) if names else None
    rows = []
    for item, item_scores in zip(items, scores):
        for score in item_scores:
            rows.append(score_row(score, probe_id=item.probe_id, run_id=run_id, kb_version=kb_version,
                                  judge_model=judge_model if score.metric in METRICS
                                  and METRICS[score.metric].uses_llm else None))
    out: dict[int, list[dict]] = {i.probe_id: [] for i in items}
    for row in insert_scores(store, rows):
        out[row["probe_id"]].append(row)
    return out


def evaluate_probe_answer(store, probe_id: int, answer: str, contexts: Sequence[str] = (), *,
                          retrieved_document_ids: Sequence[int] | None = None, abstained: bool = False,
                          judge=None, embedder=None, run_id: int | None = None, kb_version: int | None = None,
                          llm_metrics=None, settings: EvalSettings | None = None) -> list[dict]:
    item = ProbeAnswer(probe_id, answer, list(contexts),
                       None if retrieved_document_ids is None else list(retrieved_document_ids), abstained)
    return evaluate_probe_answers(store, [item], judge=judge, embedder=embedder, run_id=run_id,
                                  kb_version=kb_version, llm_metrics=llm_metrics, settings=settings).get(probe_id, [])


__all__ = ["evaluate_interaction", "evaluate_interactions", "evaluate_probe_answer", "evaluate_probe_answers",
           "ProbeAnswer", "RecordedInteraction", "load_interactions", "interaction_metrics"]
