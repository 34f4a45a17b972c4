"""Learning from traffic: questions that were answered well become evidence for the chunks that answered them.

This is query-log document expansion (doc2query's idea, with questions people and probes really asked instead of
generated ones): a question is appended to the *indexed* text of the chunk that answered it, so the next question
asked in other words finds that chunk by its meaning (the question becomes one of the chunk's sentence vectors)
and by its words (BM25). The shown and cited text never changes. Evidence, strongest first:

- a train probe (its gold document is known): the chunk of the gold document that best matches the question;
- an answer rated /good: the chunks it cited;
- an answer every trusted LLM metric scored at least `HIGH_SCORE` (only once the judge calibration trusts a metric):
  the chunks it cited.

A /bad answer does the opposite: its question is never learned, and a line equal to it is taken out of the learned
text of the chunks it cited. Held-out probe questions never feed it (nor an answer to the same question), so the
guard that judges the change on them is not judging its own training data. Each addition is one line of the
chunk's indexed text, recorded with its evidence (`kb_changes.after -> build -> evidence`); at most
`store.learned.MAX_PER_CHUNK` learned lines a chunk. Evidence already tried (promoted or rolled back) is not
proposed again, so the planner does not rebuild the same candidate on every run. How learned lines are written, read
and carried through a re-chunk is store/learned.py's and store/candidate.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import sqlalchemy as sa

from store.candidate import IndexedTextChange, update_indexed_text
from store.learned import (
    MAX_PER_CHUNK,
    ORIGIN,
    learned_chunks,
    learned_lines,
    normalise,
    recorded_evidence,
    with_learned,
)
from store.lexical import lexical_text

from .actions import Action, NothingToBuild

HIGH_SCORE = 0.8
MAX_LEARNED_CHARS = 300  # a question longer than this is not a question to index


@dataclass
class Evidence:
    chunk_id: int  # in the version the evidence is gathered for
    question: str
    source: str  # "probe:<id>", "good:<interaction id>", "scored:<interaction id>"

    def as_dict(self) -> dict:
        return {"chunk_id": self.chunk_id, "question": self.question, "source": self.source}


def _tried_sources(session) -> set[str]:
    rows = session.execute(sa.text(
        "SELECT after -> 'build' -> 'evidence_sources' FROM kb_changes WHERE kind = 'repair:learn_from_traffic' "
        "AND decision IN ('promoted', 'rolled_back')")).scalars().all()
    return {s for row in rows if row for s in row}


def _same_chunk(session, chunk_ids: list[int], version_id: int) -> dict[int, int]:
    """Chunks of earlier versions mapped to the chunk with the same document and text in this version."""
    if not chunk_ids:
        return {}
    rows = session.execute(sa.text(
        "SELECT old.id, new.id FROM chunks old JOIN chunks new ON new.document_id = old.document_id "
        "AND new.text = old.text AND new.kb_version = :v WHERE old.id = ANY(:ids)"),
        {"ids": chunk_ids, "v": version_id}).all()
    return dict(rows)


def _cited_evidence(session, version_id: int, rows, kind: str) -> list[Evidence]:
    mapped = _same_chunk(session, sorted({r.chunk_id for r in rows}), version_id)
    return [Evidence(mapped[r.chunk_id], r.question, f"{kind}:{r.interaction_id}") for r in rows
            if r.chunk_id in mapped]


def refusal(session, question: str, chunk_id: int, chunk_text: str, *, from_people: bool,
            scheme: str) -> str | None:
    """Why a question may not go into a chunk's indexed text, or None. Any question: not longer than
    MAX_LEARNED_CHARS, no instruction aimed at the assistant. A question from people (a /good or highly scored
    answer, not a curated probe) must also be in the chunk's script and share a search term with the chunk, so a
    hostile or off-topic question rated /good cannot plant text in the index of a chunk it has nothing to do with.
    `scheme`: the lexical scheme of the chunk's KB version."""
    from agent.nodes_checks import redact_injections

    from .llm_outputs import same_script

    if len(question) > MAX_LEARNED_CHARS:
        return f"longer than {MAX_LEARNED_CHARS} characters"
    if redact_injections(question)[1]:
        return "instruction-like text"
    if not from_people:
        return None
    if not same_script(chunk_text, question):
        return "in another language than the chunk"
    shares = session.execute(sa.text(
        "SELECT EXISTS (SELECT 1 FROM chunks c JOIN kb_versions v ON v.id = c.kb_version, "
        "unnest(to_tsvector(v.text_search_config, :q)) q WHERE c.id = :c AND c.tsv @@ CAST(quote_literal(q.lexeme) "
        "AS tsquery))"), {"q": lexical_text(question, scheme), "c": chunk_id}).scalar()
    return None if shares else "shares no search term with the chunk"


def _withdrawn(session, version_id: int) -> list[Evidence]:
    """Learned questions whose only evidence was answers that are gone now (deleted interactions): to unlearn.
    Evidence is matched by document and question, so it holds after the chunks it named were re-chunked away or
    pruned: the lines go from whichever chunks of that document in `version_id` carry them."""
    rows = [r for r in recorded_evidence(session) if r.document_id is not None]
    if not rows:
        return []
    people = {int(r.source.split(":")[1]) for r in rows if not r.source.startswith("probe:")}
    alive = set(session.execute(sa.text("SELECT id FROM interactions WHERE id = ANY(:ids)"),
                                {"ids": sorted(people)}).scalars()) if people else set()
    support: dict[tuple[int, str], list] = {}
    for r in rows:
        support.setdefault((r.document_id, normalise(r.question)), []).append(r)
    gone: dict[tuple[int, str], str] = {}  # (document, question) -> the interaction it was learned from
    for key, evidence in support.items():
        dead = [r for r in evidence if not r.source.startswith("probe:") and int(r.source.split(":")[1]) not in alive]
        if dead and len(dead) == len(evidence):
            gone[key] = dead[0].source.split(":")[1]
    if not gone:
        return []
    chunks = learned_chunks(session, version_id, {d for d, _ in gone})
    return [Evidence(c.id, line, "withdrawn:" + gone[(c.document_id, normalise(line))]) for c in chunks
            for line in learned_lines(c.search_text) if (c.document_id, normalise(line)) in gone]


def gather(store, embedder, version, *, trusted: set[str] | None = None,
           rejected: list[dict] | None = None) -> tuple[list[Evidence], list[Evidence]]:
    """(what to learn, what to unlearn) on `version`: new evidence only, held-out questions left out; questions
    `refusal` keeps out are appended to `rejected` with the reason."""
    from eval.probes.sets import load_probes
    from store.search import Filters, search

    heldout = {normalise(p.question) for p in load_probes(store, split="heldout", with_gold=False)}
    learn: list[Evidence] = []
    with store.session() as s:
        tried = _tried_sources(s)
        for probe in load_probes(store, split="train"):
            source = f"probe:{probe.id}"
            if source in tried or normalise(probe.question) in heldout:
                continue
            hits = search(s, embedder, probe.question, k=1, settings=store.settings, version=version,
                          filters=Filters(document_ids=tuple(probe.gold_document_ids)))
            if hits:
                learn.append(Evidence(hits[0].chunk_id, probe.question, source))
        cited = ("SELECT DISTINCT i.id AS interaction_id, i.question, r.chunk_id FROM interactions i "
                 "JOIN retrievals r ON r.interaction_id = i.id AND r.cited AND r.chunk_id IS NOT NULL ")
        good = s.execute(sa.text(cited + "WHERE NOT i.abstained AND EXISTS (SELECT 1 FROM feedback f WHERE "
                                 "f.interaction_id = i.id AND f.rating = 1) AND NOT EXISTS (SELECT 1 FROM feedback f "
                                 "WHERE f.interaction_id = i.id AND f.rating = -1)")).all()
        learn += _cited_evidence(s, version.id, good, "good")
        if trusted:
            scored = s.execute(sa.text(
                cited + "WHERE NOT i.abstained AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.interaction_id = i.id) "
                "AND (SELECT count(*) FILTER (WHERE e.value >= :high) = count(*) AND count(*) > 0 FROM eval_scores e "
                "WHERE e.interaction_id = i.id AND e.metric = ANY(:m) AND e.value IS NOT NULL)"),
                {"high": HIGH_SCORE, "m": sorted(trusted)}).all()
            learn += _cited_evidence(s, version.id, scored, "scored")
        bad = s.execute(sa.text(cited + "WHERE EXISTS (SELECT 1 FROM feedback f WHERE f.interaction_id = i.id "
                                "AND f.rating = -1)")).all()
        unlearn = _cited_evidence(s, version.id, bad, "bad") + _withdrawn(s, version.id)
        chunks = {r.id: r for r in s.execute(sa.text("SELECT id, text, search_text FROM chunks WHERE id = ANY(:ids)"),
                                             {"ids": sorted({e.chunk_id for e in learn + unlearn})}).all()}
        admitted = []
        for e in learn:
            why = refusal(s, e.question, e.chunk_id, chunks[e.chunk_id].text,
                          from_people=not e.source.startswith("probe:"), scheme=version.lexical_scheme)
            if why is None:
                admitted.append(e)
            elif rejected is not None:
                rejected.append({**e.as_dict(), "question": e.question[:200], "why": why})
        learn = admitted
    known = {chunk: {normalise(line) for line in learned_lines(row.search_text)} for chunk, row in chunks.items()}
    refused = {normalise(e.question) for e in unlearn}
    fresh, seen = [], set()
    for e in learn:
        key = (e.chunk_id, normalise(e.question))
        if e.source in tried or key in seen or key[1] in heldout or key[1] in refused \
                or key[1] in known.get(e.chunk_id, ()):
            continue
        seen.add(key)
        fresh.append(e)
    unlearn = [e for e in unlearn if normalise(e.question) in known.get(e.chunk_id, ())]
    return fresh, unlearn


@dataclass
class LearnFromTraffic(Action):
    """Questions answered well appended to the indexed text of the chunks that answered them (see the module)."""

    kind: ClassVar[str] = "learn_from_traffic"
    origin: ClassVar[str] = ORIGIN
    learn: list[dict] = field(default_factory=list)  # Evidence.as_dict()
    unlearn: list[dict] = field(default_factory=list)

    def signature(self) -> str:
        return self.kind

    def as_dict(self) -> dict:
        data = super().as_dict()
        data["learn"], data["unlearn"] = self.learn[:20], self.unlearn[:20]
        return data

    def build(self, builder, ctx):
        builder.copy_unchanged()
        by_old: dict[int, dict[str, list[str]]] = {}
        for e in self.learn:
            by_old.setdefault(e["chunk_id"], {"add": [], "drop": []})["add"].append(e["question"])
        for e in self.unlearn:
            by_old.setdefault(e["chunk_id"], {"add": [], "drop": []})["drop"].append(e["question"])
        with ctx.store.session() as s:  # the base version's chunks, copied into the candidate by position
            rows = s.execute(sa.text(
                "SELECT c.id, c.document_id, c.ordinal, d.title, c.search_text FROM chunks c "
                "JOIN documents d ON d.id = c.document_id WHERE c.id = ANY(:ids) ORDER BY c.id"),
                {"ids": sorted(by_old)}).all()
        changes = []
        for row in rows:
            wanted = by_old[row.id]
            drop = {normalise(q) for q in wanted["drop"]}
            lines = [line for line in learned_lines(row.search_text) if normalise(line) not in drop]
            lines += [" ".join(q.split()) for q in wanted["add"]]
            lines = lines[-MAX_PER_CHUNK:]
            changes.append(IndexedTextChange(row.document_id, row.ordinal, row.title,
                                             with_learned(row.search_text, lines), self.origin, row.id))
        if not changes:
            raise NothingToBuild("none of the chunks the evidence points to is in the base version any more")
        update_indexed_text(builder, changes)
        sources = sorted({e["source"] for e in self.learn + self.unlearn})
        document_of = {row.id: row.document_id for row in rows}  # what withdrawal matches on, once chunks are gone
        evidence = [{**e, "document_id": document_of.get(e["chunk_id"])} for e in self.learn + self.unlearn]
        return {"chunks": len(changes), "learned": len(self.learn), "unlearned": len(self.unlearn),
                "evidence": evidence, "evidence_sources": sources}


def _record_refused(store, version_id: int, rejected: list[dict]) -> None:
    """Each question kept out of the index, once (a `learning_refused` row per evidence source)."""
    from store.kb_versions import record_change

    with store.session() as s:
        done = set(s.execute(sa.text("SELECT target FROM kb_changes WHERE kind = 'learning_refused'")).scalars())
        for r in rejected:
            if r["source"] not in done:
                record_change(s, kind="learning_refused", kb_version=version_id, target=r["source"], after=r,
                              decision="rejected", actor="kaizen planner")


def learning(store, embedder, version, *, min_evidence: int, trusted: set[str] | None = None):
    """The diagnosis finding: new evidence to learn (an action once there is at least `min_evidence` of it)."""
    from .diagnose import Finding

    rejected: list[dict] = []
    learn, unlearn = gather(store, embedder, version, trusted=trusted, rejected=rejected)
    if rejected:
        _record_refused(store, version.id, rejected)
    if not learn and not unlearn:
        return []
    kinds: dict[str, int] = {}
    for e in learn:
        kind = e.source.split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    summary = (f"{len(learn)} question(s) answered well to learn into {len({e.chunk_id for e in learn})} chunk(s) "
               f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), {len(unlearn)} to unlearn after /bad")
    detail = {"learn": len(learn), "unlearn": len(unlearn), "by_source": kinds}
    if len(learn) + len(unlearn) < min_evidence:
        return [Finding("traffic", summary + f" (waiting for {min_evidence})", len(learn), None, detail)]
    action = LearnFromTraffic(target=f"{len({e.chunk_id for e in learn + unlearn})} chunks", reason=summary,
                              learn=[e.as_dict() for e in learn], unlearn=[e.as_dict() for e in unlearn])
    return [Finding("traffic", summary, len(learn), action, detail)]
