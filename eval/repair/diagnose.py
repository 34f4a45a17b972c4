"""Diagnosis from stored signals, cheapest first. Each finding names what is wrong, how much, and the action
that would repair it (None when it is only reported: knowledge gaps, vanished sources, untrusted signals).

- embedding model: the active version was embedded with another model -> full re-index;
- chunking: chunk parameters differ from the configured ones, or most chunks are tiny fragments -> re-chunk all;
- integrity: chunks whose text is no longer part of their document's body (corrupted, noise) -> re-chunk those
  documents;
- indexed text: chunks whose indexed text is no longer title + text (a title stripped) -> re-embed those chunks;
- staleness: sources whose content on disk differs from the stored hash -> re-ingest them;
- feedback: /bad answers; their corrections -> candidate knowledge marked user-provided;
- content: chunks cited by answers a *trusted* LLM metric scored low -> rewrite them;
- retrieval: train probes whose gold documents are not in the top 5 -> enrich the best chunk of each gold
  document when a quality alert asked for repairs; in an improvement pass, once nothing above is left, the model
  writes the questions those chunks answer, kept only if they find their chunk (eval/repair/expansion.py);
- traffic: questions answered well (train probes, /good answers, answers every trusted metric scored high) not
  yet learned -> learn them into the indexed text of the chunks that answered them (eval/repair/learning.py), once
  there are `KAIZEN_IMPROVE_MIN_EVIDENCE` of them and no defect above is left to repair, in an improvement pass
  (`kaizen improve`), not in a repair after a quality alert; the held-out guard decides;
- tuning: with enough train probes, the query-time retrieval parameters searched on them, and other chunk sizes
  (eval/repair/tuning.py), in an improvement pass once no defect is left; the held-out guard decides;
- knowledge gaps: questions nothing relevant was found for, reported by `kaizen gaps`, never filled in.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import sqlalchemy as sa

from eval.judging.trust import trusted_llm_metrics
from eval.settings import EvalSettings
from store.indexing import content_hash, search_text_for

from . import actions as A
from .learning import learning
from .tuning import tuning

LOW_SCORE = 0.5


@dataclass
class Finding:
    kind: str
    summary: str
    count: int
    action: A.Action | None = None
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "summary": self.summary, "count": self.count, "detail": self.detail,
                "action": self.action.as_dict() if self.action else None}


@dataclass
class Diagnosis:
    version_id: int
    findings: list[Finding]
    train_metrics: dict | None = None

    @property
    def actions(self) -> list[A.Action]:
        return [f.action for f in self.findings if f.action is not None]

    def as_dict(self) -> dict:
        return {"kb_version": self.version_id, "train_metrics": self.train_metrics,
                "findings": [f.as_dict() for f in self.findings]}


def embedding_model(version, embedder) -> list[Finding]:
    if version.embedding_model == embedder.name and version.embedding_dim == embedder.dim:
        return []
    settings_tokens = version.chunk_tokens
    return [Finding("embedding_model", f"KB version {version.id} was embedded with {version.embedding_model}, "
                    f"the configured model is {embedder.name}", 1,
                    A.FullReindex(target="all documents", reason="embedding model changed",
                                  chunk_tokens=settings_tokens, chunk_overlap=version.chunk_overlap))]


def chunking(store, version) -> list[Finding]:
    want_tokens, want_overlap = store.settings.chunk_tokens, store.settings.chunk_overlap
    with store.session() as s:
        counts = s.execute(sa.text(
            "SELECT c.token_count FROM chunks c JOIN (SELECT document_id FROM chunks WHERE kb_version = :v "
            "GROUP BY document_id HAVING count(*) > 1) m USING (document_id) WHERE c.kb_version = :v"),
            {"v": version.id}).scalars().all()
    median = statistics.median(counts) if counts else None
    params_differ = (version.chunk_tokens, version.chunk_overlap) != (want_tokens, want_overlap)
    tiny = median is not None and median < want_tokens / 4
    if not (params_differ or tiny):
        return []
    why = []
    if params_differ:
        why.append(f"built with {version.chunk_tokens}/{version.chunk_overlap}-token chunks, configured "
                   f"{want_tokens}/{want_overlap}")
    if tiny:
        why.append(f"median chunk of a multi-chunk document is {median:.0f} tokens")
    return [Finding("chunking", "; ".join(why), len(counts),
                    A.Rebuild(target="all documents", reason="; ".join(why), chunk_tokens=want_tokens,
                              chunk_overlap=want_overlap),
                    {"median_tokens": median, "version_params": [version.chunk_tokens, version.chunk_overlap]})]


def integrity(store, version) -> list[Finding]:
    with store.session() as s:
        rows = s.execute(sa.text(
            "SELECT c.document_id, count(*) FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE c.kb_version = :v AND c.origin = 'original' AND d.status = 'active' "
            "AND strpos(d.body, c.text) = 0 GROUP BY c.document_id ORDER BY c.document_id"),
            {"v": version.id}).all()
    if not rows:
        return []
    docs = [r[0] for r in rows]
    chunks = sum(r[1] for r in rows)
    summary = f"{chunks} chunk(s) in {len(docs)} document(s) are not part of their document's text"
    return [Finding("integrity", summary, chunks,
                    A.RechunkDocuments(target=f"{len(docs)} documents", reason=summary, document_ids=docs))]


def indexed_text(store, version, skip_documents=()) -> list[Finding]:
    skip = set(skip_documents)
    with store.session() as s:
        rows = s.execute(sa.text(
            "SELECT c.document_id, c.ordinal, d.title, c.text, c.search_text FROM chunks c "
            "JOIN documents d ON d.id = c.document_id WHERE c.kb_version = :v AND c.origin = 'original' "
            "AND d.status = 'active'"), {"v": version.id}).all()
    drifted = [[r.document_id, r.ordinal] for r in rows
               if r.document_id not in skip and r.search_text != search_text_for(r.title, r.text)]
    if not drifted:
        return []
    docs = sorted({d for d, _ in drifted})
    summary = f"{len(drifted)} chunk(s) in {len(docs)} document(s) are indexed without their title or with other text"
    return [Finding("indexed_text", summary, len(drifted),
                    A.RestoreIndexedText(target=f"{len(drifted)} chunks", reason=summary, document_ids=docs,
                                         chunks=drifted))]


def staleness(store) -> list[Finding]:
    from store.loaders import LoadError, load_paths

    with store.session() as s:
        rows = s.execute(sa.text("SELECT source_uri, source_path, content_hash FROM documents "
                                 "WHERE status = 'active' AND source_uri LIKE 'file://%'")).all()
        # Source texts a person reverted (kaizen kb revert): not proposed again; `kaizen ingest` still takes them.
        rejected = {tuple(r) for r in s.execute(sa.text(
            "SELECT r.key, r.value FROM kb_changes c, jsonb_each_text(c.after->'rejected') r "
            "WHERE c.kind = 'revert'"))}
    by_path: dict[str, dict[str, str]] = {}
    for uri, path, digest in rows:
        by_path.setdefault(path, {})[uri] = digest
    changed, vanished = [], []
    for path, known in sorted(by_path.items()):
        current = {}
        for item in load_paths([path], store.settings.max_file_bytes):
            if not isinstance(item, LoadError):
                current.update({d.source_uri: content_hash(d.title, d.text) for d in item.documents})
        for uri, digest in known.items():
            if uri not in current:
                vanished.append(uri)
            elif current[uri] != digest and (uri, current[uri]) not in rejected:
                changed.append(uri)
    out = []
    if changed:
        summary = f"{len(changed)} source(s) changed on disk since they were ingested"
        out.append(Finding("stale_sources", summary, len(changed),
                           A.ReingestSources(target=f"{len(changed)} sources", reason=summary, uris=changed)))
    if vanished:
        out.append(Finding("vanished_sources", f"{len(vanished)} source(s) no longer exist on disk (`kaizen ingest` "
                           "on their folder marks them missing)", len(vanished), None, {"uris": vanished[:20]}))
    return out


def feedback(store) -> list[Finding]:
    with store.session() as s:
        rows = s.execute(sa.text(
            "SELECT f.id, i.question, f.correction FROM feedback f JOIN interactions i ON i.id = f.interaction_id "
            "WHERE f.rating = -1 ORDER BY f.id")).all()
        used = set(s.execute(sa.text("SELECT target FROM kb_changes WHERE kind = 'repair:add_correction' "
                                     "AND decision IN ('promoted', 'rolled_back')")).scalars().all())
    out = []
    plain = [r for r in rows if not (r.correction or "").strip()]
    if plain:
        out.append(Finding("bad_feedback", f"{len(plain)} answer(s) rated /bad without a correction", len(plain),
                           None, {"feedback_ids": [r.id for r in plain][:50]}))
    for r in rows:
        target = f"feedback:{r.id}"
        if (r.correction or "").strip() and target not in used:
            out.append(Finding("correction", f"/bad correction {r.id} on {r.question[:80]!r}", 1,
                               A.AddCorrection(target=target, reason="user correction from /bad",
                                               feedback_id=r.id, question=r.question,
                                               correction=r.correction.strip())))
    return out


def content(store, version, max_chunks: int, settings: EvalSettings | None = None) -> list[Finding]:
    trusted = trusted_llm_metrics(store, settings=settings)
    with store.session() as s:
        judged = s.execute(sa.text("SELECT count(*) FROM eval_scores WHERE interaction_id IS NOT NULL "
                                   "AND value IS NOT NULL")).scalar_one()
        if not judged:
            return []
        if not trusted:
            return [Finding("content_untrusted", f"{judged} LLM-judged score(s) exist but no LLM metric is trusted "
                            "by the judge calibration: no repair rests on them", judged)]
        rows = s.execute(sa.text(
            "SELECT c.id, count(DISTINCT e.interaction_id) AS answers FROM eval_scores e "
            "JOIN retrievals r ON r.interaction_id = e.interaction_id AND r.cited "
            "JOIN chunks c ON c.id = r.chunk_id AND c.kb_version = :v "
            "WHERE e.metric = ANY(:m) AND e.value < :low GROUP BY c.id HAVING count(DISTINCT e.interaction_id) >= 2 "
            "ORDER BY answers DESC, c.id LIMIT :n"),
            {"v": version.id, "m": sorted(trusted), "low": LOW_SCORE, "n": max_chunks}).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    summary = f"{len(ids)} chunk(s) cited by answers that trusted metrics ({', '.join(sorted(trusted))}) scored low"
    return [Finding("content", summary, len(ids), A.Rewrite(target=f"{len(ids)} chunks", reason=summary,
                                                           chunk_ids=ids))]


def retrieval(store, embedder, version, *, explore: bool, max_chunks: int) -> tuple[list[Finding], dict | None]:
    """Train probes that miss their gold document in the top 5: enrichment after a quality alert (`explore`);
    otherwise reported, with the chunks to expand in an improvement pass in `detail["chunk_ids"]`."""
    from eval.probes.retrieval import score_probes
    from eval.probes.sets import load_probes

    probes = load_probes(store, split="train")
    if not probes:
        return [], None
    per_probe, summary = score_probes(store, embedder, probes, version.id)
    by_id = {p.id: p for p in probes}
    misses = [by_id[r.probe_id] for r in per_probe if r.scores["recall@5"] == 0.0]
    if not misses:
        return [], summary
    chunk_ids = _missed_chunks(store, embedder, version, misses, max_chunks)
    detail = {"probes": len(per_probe), "missed": [p.id for p in misses][:50], "chunk_ids": chunk_ids}
    summary_text = f"{len(misses)} of {len(per_probe)} train probes miss their gold document in the top 5"
    if not explore:
        return [Finding("retrieval_misses", summary_text + " (enrichment runs when a quality alert asks for it, "
                        "generated questions in an improvement pass)", len(misses), None, detail)], summary
    action = A.Enrich(target=f"{len(chunk_ids)} chunks", reason=summary_text, chunk_ids=chunk_ids,
                      document_ids=[]) if chunk_ids else None
    return [Finding("retrieval_misses", summary_text, len(misses), action, detail)], summary


def _missed_chunks(store, embedder, version, misses, max_chunks: int) -> list[int]:
    """The chunk of each missed probe's gold document that best matches its question (not yet expanded)."""
    from store.search import Filters, search

    from .expansion import GENERATED_HEADER

    chunk_ids: list[int] = []
    with store.session() as s:
        for probe in misses:
            hits = search(s, embedder, probe.question, k=1, settings=store.settings, version=version,
                          filters=Filters(document_ids=tuple(probe.gold_document_ids)))
            if hits and hits[0].chunk_id not in chunk_ids:
                chunk_ids.append(hits[0].chunk_id)
        expanded = set(s.execute(sa.text("SELECT id FROM chunks WHERE id = ANY(:ids) AND strpos(search_text, :h) > 0"),
                                 {"ids": chunk_ids, "h": GENERATED_HEADER}).scalars())
    return [c for c in chunk_ids if c not in expanded][:max_chunks]


def expansion(store, version, found: list[Finding]) -> list[Finding]:
    """Generated questions for the chunks train probes miss, in an improvement pass; not proposed again for the
    same chunks of a version once the guard has refused them."""
    from .expansion import ExpandWithQuestions

    chunk_ids = next((f.detail.get("chunk_ids") for f in found if f.kind == "retrieval_misses"), None)
    if not chunk_ids:
        return []
    with store.session() as s:
        refused = s.execute(sa.text(
            "SELECT EXISTS (SELECT 1 FROM kb_changes WHERE kind = 'repair:expand_questions' AND decision <> "
            "'promoted' AND (before ->> 'base_version')::int = :v)"), {"v": version.id}).scalar()
    if refused:
        return [Finding("expansion", f"generated questions for missed chunks were already refused on KB version "
                        f"{version.id}", 0)]
    summary = f"{len(chunk_ids)} chunk(s) train probes miss: the model writes the questions they answer (filtered)"
    return [Finding("expansion", summary, len(chunk_ids),
                    ExpandWithQuestions(target=f"{len(chunk_ids)} chunks", reason=summary, chunk_ids=chunk_ids))]


def knowledge_gaps(store) -> list[Finding]:
    with store.session() as s:
        n = s.execute(sa.text("SELECT count(*) FROM knowledge_gaps")).scalar_one()
    if not n:
        return []
    return [Finding("knowledge_gaps", f"{n} question(s) found no relevant context: see `kaizen gaps` (reported, "
                    "never filled in by the model)", n)]


def diagnose(store, embedder, version, *, explore: bool = False, learn: bool = True,
             settings: EvalSettings | None = None, deadline: float | None = None) -> Diagnosis:
    """Every finding on `version`; `settings` (default: EvalSettings()) caps the chunks the model may rewrite.
    `learn`: an improvement pass, which looks for traffic to learn from and tunes the retrieval parameters (a
    repair after a quality alert does neither); `deadline` (perf_counter) stops the tuning grid."""
    settings = settings or EvalSettings()
    max_model_chunks = settings.repair_max_model_chunks
    findings = embedding_model(version, embedder)
    if findings:  # nothing can be searched on this version until it is re-embedded
        return Diagnosis(version.id, findings + staleness(store) + feedback(store) + knowledge_gaps(store))
    findings += chunking(store, version)
    found_integrity = integrity(store, version)
    findings += found_integrity
    skip = {d for f in found_integrity for d in f.action.document_ids}
    findings += indexed_text(store, version, skip)
    findings += staleness(store)
    findings += feedback(store)
    findings += content(store, version, max_model_chunks, settings)
    found, train_metrics = retrieval(store, embedder, version, explore=explore, max_chunks=max_model_chunks)
    findings += found
    if learn and not any(f.action for f in findings):  # defects first; improvements once there are none
        # tuning before learning: tuning scores on the train probes not yet learned (a learned question scores
        # every parameter alike), so it is worth most before learning takes probes away from it
        findings += tuning(store, embedder, version, settings, deadline=deadline)
        findings += learning(store, embedder, version, min_evidence=settings.improve_min_evidence,
                             trusted=trusted_llm_metrics(store, settings=settings))
        findings += expansion(store, version, found)
    findings += knowledge_gaps(store)
    return Diagnosis(version.id, findings, train_metrics)
