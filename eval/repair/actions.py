"""Repair actions. Each is one small, reviewable change, built into a candidate version by `build` (never into
the active one); `on_promote` runs inside the promotion transaction for the little an action changes outside the
versioned chunks (a re-ingested document's body), `on_discard` undoes anything `build` wrote outside it.

`guard` says what the held-out probes must show: "improve" (a trusted metric goes up, none regresses beyond the
tolerance) for everything derived from measurements; "non_inferior" (nothing regresses beyond the tolerance) for
knowledge a person supplied (a /bad correction), whose value probes cannot measure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar

import sqlalchemy as sa

from store.candidate import CandidateBuilder, IndexedTextChange, update_indexed_text
from store.errors import KaizenError
from store.indexing import content_hash, search_text_for
from store.kb_versions import record_change
from store.learned import learned_lines, with_learned

from .llm_outputs import generate_enrichment, generate_rewrite


class SourceVanished(KaizenError, RuntimeError):
    """A source the plan wanted to re-ingest is gone (deleted or no longer readable) by the time it is applied."""


class NothingToBuild(KaizenError, RuntimeError):
    """Every model output an action needed was rejected: there is no candidate to judge."""


@dataclass
class RepairContext:
    store: object
    embedder: object
    llm: Callable[[], object] | None = None  # lazily loads the local model (agent.llm.get_llm)
    rejected_outputs: list[dict] = field(default_factory=list)
    check: Callable[[], None] | None = None  # called between documents; tests inject a crash through it
    settings: Any = None  # the planner's EvalSettings (the guard's tolerance and minimum gain)


@dataclass
class Action:
    kind: ClassVar[str] = "action"
    guard: ClassVar[str] = "improve"
    # a change searched for on the train probes (a chunk size): it must beat the base version on them before the
    # held-out guard is consulted, so the guard's probes judge one proposal, not pick among many
    train_gate: ClassVar[bool] = False
    target: str = ""
    reason: str = ""
    document_ids: list[int] = field(default_factory=list)

    def signature(self) -> str:
        return f"{self.kind}:{self.target}"

    def chunk_params(self) -> tuple[int | None, int | None]:
        return None, None

    def search_params(self, base) -> dict | None:
        """The candidate's query-time parameters (store.search_params); None: the base version's."""
        return None

    def describe(self) -> str:
        return f"{self.kind} {self.target}: {self.reason}"

    def build(self, builder: CandidateBuilder, ctx: RepairContext) -> dict:
        raise NotImplementedError

    def on_promote(self, session, candidate_id: int, actor: str) -> None:
        pass

    def on_discard(self, store) -> None:
        pass

    def as_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        if len(data["document_ids"]) > 20:
            data["document_ids"] = data["document_ids"][:20] + [f"... {len(self.document_ids) - 20} more"]
        return {"kind": self.kind, "guard": self.guard, **data}


def _documents(store, ids: list[int] | None) -> list[tuple[int, str, str]]:
    sql = "SELECT id, title, body FROM documents WHERE status = 'active'"
    params = {}
    if ids is not None:
        sql += " AND id = ANY(:ids)"
        params["ids"] = list(ids)
    with store.session() as s:
        return [tuple(r) for r in s.execute(sa.text(sql + " ORDER BY id"), params).all()]


@dataclass
class Rebuild(Action):
    """Re-chunk and re-embed every active document from its stored body with the given chunk parameters: the
    re-chunking with other parameters, and (kind full_reindex) the re-embedding with the configured model."""

    kind: ClassVar[str] = "rechunk_all"
    chunk_tokens: int = 320
    chunk_overlap: int = 48

    def chunk_params(self):
        return self.chunk_tokens, self.chunk_overlap

    def build(self, builder, ctx):
        docs = _documents(ctx.store, None)
        written = builder.rechunk(docs, check=ctx.check)
        return {"documents": len(docs), "chunks": written, "chunk_tokens": self.chunk_tokens,
                "chunk_overlap": self.chunk_overlap}


@dataclass
class FullReindex(Rebuild):
    kind: ClassVar[str] = "full_reindex"


@dataclass
class RechunkDocuments(Action):
    """Re-chunk a few documents from their stored body (their chunks no longer match it); the rest is copied."""

    kind: ClassVar[str] = "rechunk_documents"

    def build(self, builder, ctx):
        builder.copy_unchanged(self.document_ids)
        docs = _documents(ctx.store, self.document_ids)
        return {"documents": len(docs), "chunks": builder.rechunk(docs, check=ctx.check),
                "copied": builder.copied_chunks}


@dataclass
class RestoreIndexedText(Action):
    """Re-derive the indexed text (title + chunk) of chunks whose indexed text drifted from it, and re-embed
    only those."""

    kind: ClassVar[str] = "reembed_chunks"
    chunks: list[list] = field(default_factory=list)  # [document_id, ordinal]

    def build(self, builder, ctx):
        builder.copy_unchanged()
        wanted = {(int(d), int(o)) for d, o in self.chunks}
        with ctx.store.session() as s:
            rows = s.execute(sa.text(
                "SELECT c.document_id, c.ordinal, d.title, c.text FROM chunks c JOIN documents d ON d.id = "
                "c.document_id WHERE c.kb_version = :v AND c.document_id = ANY(:docs)"),
                {"v": builder.id, "docs": sorted({d for d, _ in wanted})}).all()
        changes = [IndexedTextChange(r.document_id, r.ordinal, r.title, search_text_for(r.title, r.text), "original")
                   for r in rows if (r.document_id, r.ordinal) in wanted]
        if ctx.check is not None:
            ctx.check()
        return {"chunks": update_indexed_text(builder, changes), "copied": builder.copied_chunks}

    def as_dict(self):
        data = super().as_dict()
        data["chunks"] = len(self.chunks)
        return data


@dataclass
class ReingestSources(Action):
    """Re-read sources whose content changed on disk and re-chunk those documents; the stored body, title and
    hash change only if the candidate is promoted."""

    kind: ClassVar[str] = "reingest_sources"
    uris: list[str] = field(default_factory=list)
    _loaded: dict = field(default_factory=dict, repr=False)

    def build(self, builder, ctx):
        from store.loaders import LoadError, load_paths

        paths = sorted({uri_path(u) for u in self.uris})
        found = {}
        for item in load_paths(paths, ctx.store.settings.max_file_bytes):
            if isinstance(item, LoadError):
                continue
            for doc in item.documents:
                found[doc.source_uri] = doc
        gone = [u for u in self.uris if u not in found]
        if gone:
            raise SourceVanished(f"{len(gone)} source(s) vanished before the repair ran: {', '.join(gone[:3])}")
        with ctx.store.session() as s:
            ids = dict(s.execute(sa.text("SELECT source_uri, id FROM documents WHERE source_uri = ANY(:u)"),
                                 {"u": self.uris}).all())
        self._loaded = {ids[u]: found[u] for u in self.uris}
        builder.copy_unchanged(list(self._loaded))
        docs = [(doc_id, d.title, d.text) for doc_id, d in self._loaded.items()]
        return {"documents": len(docs), "chunks": builder.rechunk(docs, check=ctx.check)}

    def on_promote(self, session, candidate_id, actor):
        # The replaced row goes into the change log, so that `kaizen kb revert` can put it back.
        for doc_id, doc in self._loaded.items():
            previous = session.execute(sa.text("SELECT title, body, content_hash, source_id FROM documents "
                                               "WHERE id = :id FOR UPDATE"), {"id": doc_id}).mappings().one()
            digest = content_hash(doc.title, doc.text)
            session.execute(sa.text(
                "UPDATE documents SET title = :t, body = :b, content_hash = :h, source_id = :sid, updated_at = now() "
                "WHERE id = :id"), {"t": doc.title, "b": doc.text, "h": digest, "sid": doc.source_id, "id": doc_id})
            record_change(session, kind="document_replaced", kb_version=candidate_id, document_id=doc_id,
                          target=doc.source_uri, before=dict(previous), after={"content_hash": digest},
                          actor=actor)


def uri_path(uri: str) -> str:
    from urllib.parse import unquote

    return unquote(uri[len("file://"):].split("#", 1)[0]) if uri.startswith("file://") else uri


@dataclass
class AddCorrection(Action):
    """A /bad correction becomes a small user-provided document (chunks with origin 'user'), kept only if it
    costs nothing on the held-out probes. The text is the person's, never the model's."""

    kind: ClassVar[str] = "add_correction"
    guard: ClassVar[str] = "non_inferior"
    feedback_id: int = 0
    question: str = ""
    correction: str = ""
    _document_id: int | None = field(default=None, repr=False)

    def build(self, builder, ctx):
        title = f"User correction: {self.question[:200]}"
        body = f"Question: {self.question}\nCorrection (user-provided): {self.correction}"
        uri = f"kaizen://feedback/{self.feedback_id}"
        with ctx.store.session() as s:
            self._document_id = s.execute(sa.text(
                "INSERT INTO documents (source_uri, source_path, title, content_hash, body, metadata) VALUES "
                "(:u, :u, :t, :h, :b, CAST(:m AS jsonb)) ON CONFLICT (source_uri) DO UPDATE SET body = EXCLUDED.body "
                "RETURNING id"), {"u": uri, "t": title, "h": content_hash(title, body), "b": body,
                                  "m": '{"origin": "user", "feedback_id": %d}' % self.feedback_id}).scalar_one()
        self.document_ids = [self._document_id]
        builder.copy_unchanged([self._document_id])
        written = builder.rechunk([(self._document_id, title, body)], check=ctx.check)
        with ctx.store.session() as s:
            s.execute(sa.text("UPDATE chunks SET origin = 'user' WHERE kb_version = :v AND document_id = :d"),
                      {"v": builder.id, "d": self._document_id})
        return {"document_id": self._document_id, "chunks": written, "source_uri": uri}

    def on_promote(self, session, candidate_id, actor):
        # A revert withdraws the document again (kaizen kb revert), or a later reindex would bring it back.
        record_change(session, kind="document_added", kb_version=candidate_id, document_id=self._document_id,
                      target=f"kaizen://feedback/{self.feedback_id}", after={"origin": "user"}, actor=actor)

    def on_discard(self, store):
        if self._document_id is not None:
            with store.session() as s:
                s.execute(sa.text("DELETE FROM documents WHERE id = :id AND NOT EXISTS "
                                  "(SELECT 1 FROM chunks WHERE document_id = :id)"), {"id": self._document_id})


@dataclass
class _ModelAction(Action):
    """Shared by enrichment and rewrite: ask the model about each target chunk, keep the validated outputs."""

    chunk_ids: list[int] = field(default_factory=list)

    def signature(self) -> str:
        return self.kind  # the model is slow: one enrichment and one rewrite per planner run

    def generate(self, llm, title, text):
        raise NotImplementedError

    def indexed_text(self, title, text, search_text, generated) -> str:
        raise NotImplementedError

    def keep(self, ctx, builder, row, generated: str) -> str:
        """What of the validated output to use (a filter may drop lines; empty: nothing)."""
        return generated

    def build(self, builder, ctx):
        builder.copy_unchanged()
        with ctx.store.session() as s:
            rows = s.execute(sa.text(
                "SELECT c.id, c.document_id, c.ordinal, d.title, c.text, c.search_text FROM chunks c "
                "JOIN documents d ON d.id = c.document_id WHERE c.id = ANY(:ids) ORDER BY c.id"),
                {"ids": self.chunk_ids}).all()
        llm = ctx.llm()
        changes, outputs = [], []
        for row in rows:
            result = self.generate(llm, row.title, row.text)
            if not result.ok:
                ctx.rejected_outputs.append({"action": self.kind, "chunk_id": row.id, "error": result.error,
                                             "raw": (result.raw or "")[:300]})
                continue
            kept = self.keep(ctx, builder, row, result.text)
            if not kept:
                ctx.rejected_outputs.append({"action": self.kind, "chunk_id": row.id, "raw": result.text[:300],
                                             "error": "no generated line passed the filter"})
                continue
            outputs.append({"chunk_id": row.id, "generated": kept[:500]})
            # what the chunk learned from traffic stays its last lines, where learning reads and carries it
            indexed = self.indexed_text(row.title, row.text, with_learned(row.search_text, []), kept)
            changes.append(IndexedTextChange(row.document_id, row.ordinal, row.title,
                                             with_learned(indexed, learned_lines(row.search_text)),
                                             self.origin, row.id))
            if ctx.check is not None:
                ctx.check()
        if not changes:
            raise NothingToBuild(f"the model's {self.kind} output was rejected for all {len(rows)} chunk(s)")
        update_indexed_text(builder, changes)
        return {"chunks": len(changes), "rejected": len(rows) - len(changes), "outputs": outputs[:20]}


@dataclass
class Enrich(_ModelAction):
    """Generated questions and keywords appended to the indexed text of chunks that train probes miss."""

    kind: ClassVar[str] = "enrich_chunks"
    origin: ClassVar[str] = "enrichment"

    def generate(self, llm, title, text):
        return generate_enrichment(llm, title, text)

    def indexed_text(self, title, text, search_text, generated):
        return f"{search_text}\n{generated}"


@dataclass
class Rewrite(_ModelAction):
    """A cleaned-up rewrite of a chunk becomes its indexed text; the original stays the shown and cited text."""

    kind: ClassVar[str] = "rewrite_chunks"
    origin: ClassVar[str] = "rewritten"

    def generate(self, llm, title, text):
        return generate_rewrite(llm, title, text)

    def indexed_text(self, title, text, search_text, generated):
        return search_text_for(title, generated)
