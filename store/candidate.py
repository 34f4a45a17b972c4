"""A KB version built beside the active one: by a repair (eval/repair), cheaply, where unchanged documents' chunk
rows are copied with their embeddings (SQL, no model call) and only what an action changes is chunked and embedded;
or whole, from the configured settings, by `kaizen reindex` (store/reindex.py).

Lifecycle: `building` (rows being written) -> `candidate` (complete, indexed, being judged) -> `active` (promoted,
one transaction through store.kb_versions.activate) or `rolled_back` (its chunks and index are dropped). Until
promotion the active version is never written to, so a crash at any point leaves it untouched; a `building` or
`candidate` version a killed process left is cleaned by store.reindex.clean_abandoned on the next repair or reindex.

A document re-chunked here keeps what was learned from traffic (store/learned.py): when the version is finished,
each learned question of the base version's chunks of that document goes to the new chunk of the same document
that best answers it, and `carried` holds the evidence for the change to record.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from . import learned
from .chunking import Chunker
from .indexing import PreparedChunk, embed_chunks, prepare, vector_params, write_chunks
from .kb_versions import (
    KBVersion,
    create_vector_index,
    create_version,
    drop_version_chunks,
    get_version,
    record_change,
)
from .lexical import CURRENT_SCHEME, lexical_text

_COPY = sa.text(
    """
    INSERT INTO chunks (document_id, kb_version, ordinal, text, search_text, embedding, sentence_embeddings, tsv,
                        lexical_length, token_count, origin, derived_from)
    SELECT c.document_id, :new, c.ordinal, c.text, c.search_text, c.embedding, c.sentence_embeddings, c.tsv,
           c.lexical_length, c.token_count, c.origin, c.derived_from
    FROM chunks c JOIN documents d ON d.id = c.document_id AND d.status = 'active'
    WHERE c.kb_version = :base AND NOT (c.document_id = ANY(:skip))
    """
)


@dataclasses.dataclass
class _Doc:
    title: str
    text: str


class CandidateBuilder:
    """Write one candidate version derived from `base`. Use `copy_unchanged`, then `rechunk` / `write` /
    `update_indexed_text`, then `finish`; on any error call `discard` (the planner does).

    A repair's candidate keeps the base version's text search configuration, lexical scheme and (unless given)
    chunk and search parameters, so copied rows stay valid in it. `from_settings=True` (`kaizen reindex`, which
    re-chunks everything) takes them from the configured settings instead, and keeps the base version's tuned
    search parameters only if they were tuned for the same embedding model; `base` may then be None (nothing
    indexed yet)."""

    def __init__(self, store, embedder, base: KBVersion | None, *, reason: str, chunk_tokens: int | None = None,
                 chunk_overlap: int | None = None, search_params: dict | None = None, from_settings: bool = False):
        self.store = store
        self.embedder = embedder
        self.base = base
        if from_settings:
            settings, scheme = store.settings, CURRENT_SCHEME
            if search_params is None and base is not None and base.embedding_model == embedder.name:
                search_params = base.search_params
        else:
            settings = store.settings.model_copy(update={
                "text_search_config": base.text_search_config, "chunk_tokens": chunk_tokens or base.chunk_tokens,
                "chunk_overlap": base.chunk_overlap if chunk_overlap is None else chunk_overlap})
            scheme = base.lexical_scheme
            search_params = base.search_params if search_params is None else search_params
        with store.session() as s:
            self.version = create_version(s, reason=reason, status="building", embedding_model=embedder.name,
                                          embedding_dim=embedder.dim, settings=settings,
                                          parent_id=base.id if base else None, with_index=False,
                                          lexical_scheme=scheme, search_params=search_params)
        self.chunker = Chunker(embedder.count_tokens, self.version.chunk_tokens, self.version.chunk_overlap)
        self.written_documents: set[int] = set()
        self.embedded_chunks = 0
        self.copied_chunks = 0
        self.carried: list[dict] = []  # learned questions given to re-chunked documents' new chunks (finish)

    @property
    def id(self) -> int:
        return self.version.id

    def copy_unchanged(self, skip_document_ids=()) -> int:
        """Copy the base version's chunks of every active document not in `skip_document_ids`."""
        with self.store.session() as s:
            n = s.execute(_COPY, {"new": self.id, "base": self.base.id, "skip": list(skip_document_ids)}).rowcount
        self.copied_chunks += n
        return n

    def rechunk(self, documents: list[tuple[int, str, str]], batch_documents: int = 32, check=None) -> int:
        """Chunk and embed (document id, title, body) with this version's parameters and write them."""
        written = 0
        batch: list = []

        def flush():
            nonlocal written
            with self.store.session() as s:
                for doc_id, chunks in batch:
                    write_chunks(s, document_id=doc_id, kb_version=self.id,
                                 text_search_config=self.version.text_search_config,
                                 lexical_scheme=self.version.lexical_scheme, chunks=chunks)
                    written += len(chunks)
            batch.clear()

        for doc_id, chunks in prepare(((d, _Doc(t, b)) for d, t, b in documents), self.chunker, self.embedder):
            batch.append((doc_id, chunks))
            self.written_documents.add(doc_id)
            if check is not None:
                check()
            if len(batch) >= batch_documents:
                flush()
        if batch:
            flush()
        self.embedded_chunks += written
        return written

    def write(self, document_id: int, chunks: list[PreparedChunk]) -> None:
        """Write ready chunks of one document (their embeddings already computed)."""
        with self.store.session() as s:
            write_chunks(s, document_id=document_id, kb_version=self.id,
                         text_search_config=self.version.text_search_config,
                         lexical_scheme=self.version.lexical_scheme, chunks=chunks)
        self.written_documents.add(document_id)

    def finish(self) -> KBVersion:
        """Carry the learned questions of re-chunked documents over, index the version and mark it `candidate`:
        complete and searchable, not active."""
        self.carried = self._carry_learned()
        with self.store.session() as s:
            create_vector_index(s, self.id, self.version.embedding_dim, self.store.settings.index_build_mb)
            s.execute(sa.text("UPDATE kb_versions SET status = 'candidate' WHERE id = :id AND status = 'building'"),
                      {"id": self.id})
            self.version = get_version(s, self.id)
        return self.version

    def discard(self, actor: str, reason: str) -> None:
        discard_version(self.store, self.id, actor=actor, reason=reason)

    def _carry_learned(self) -> list[dict]:
        """Give each learned question of the base version's chunks of the re-chunked documents to the new chunk of
        the same document that best answers it (a search of this version filtered to the document). Returns the
        evidence as learning records it, with the source each question was first learned from ("carried" once
        that record is pruned)."""
        from .search import Filters, search

        if self.base is None or not self.written_documents:
            return []
        with self.store.session() as s:
            rows = learned.learned_chunks(s, self.base.id, self.written_documents)
            if not rows:
                return []
            # (document, question) -> the source it was learned from (the latest change's, when several)
            sources = {(r.document_id, learned.normalise(r.question)): r.source
                       for r in learned.recorded_evidence(s)}
            version = get_version(s, self.id)
            by_chunk: dict[int, dict[str, str]] = {}  # a question two overlapping old chunks had is one line
            for row in rows:
                for question in learned.learned_lines(row.search_text):
                    hits = search(s, self.embedder, question, k=1, settings=self.store.settings, version=version,
                                  filters=Filters(document_ids=(row.document_id,)))
                    if hits:
                        source = sources.get((row.document_id, learned.normalise(question)), "carried")
                        by_chunk.setdefault(hits[0].chunk_id, {}).setdefault(question, source)
            chunks = {r.id: r for r in s.execute(sa.text(
                "SELECT c.id, c.document_id, c.ordinal, d.title, c.search_text FROM chunks c JOIN documents d "
                "ON d.id = c.document_id WHERE c.id = ANY(:ids)"), {"ids": sorted(by_chunk)}).all()}
        changes, evidence = [], []
        for chunk_id, source_of in by_chunk.items():
            row = chunks[chunk_id]
            lines = list(source_of)[-learned.MAX_PER_CHUNK:]
            changes.append(IndexedTextChange(row.document_id, row.ordinal, row.title,
                                             learned.with_learned(row.search_text, lines), learned.ORIGIN))
            evidence += [{"chunk_id": chunk_id, "document_id": row.document_id, "question": q, "source": source_of[q]}
                         for q in lines]
        update_indexed_text(self, changes)
        return evidence


def discard_version(store, version_id: int, *, actor: str, reason: str) -> None:
    """Roll a building/candidate version back: status `rolled_back`, chunks and index dropped. Never touches an
    active or retired version."""
    with store.session() as s:
        status = s.execute(sa.text("SELECT status FROM kb_versions WHERE id = :id FOR UPDATE"),
                           {"id": version_id}).scalar()
        if status not in ("building", "candidate"):
            return
        s.execute(sa.text("UPDATE kb_versions SET status = 'rolled_back' WHERE id = :id"), {"id": version_id})
        drop_version_chunks(s, version_id)
        record_change(s, kind="version_rolled_back", kb_version=version_id, target=f"kb_version:{version_id}",
                      before={"status": status}, after={"status": "rolled_back", "reason": reason}, actor=actor,
                      decision="rolled_back")


_UPDATE_INDEXED = sa.text(
    """
    UPDATE chunks c SET search_text = :search_text, embedding = CAST(:embedding AS vector),
           sentence_embeddings = CAST(:sentence_embeddings AS vector[]), tsv = t.tsv,
           lexical_length = coalesce((SELECT sum(cardinality(u.positions)) FROM unnest(t.tsv) u), 0),
           origin = :origin, derived_from = :derived_from
    FROM (SELECT to_tsvector(CAST(:config AS regconfig), :lexical) AS tsv) t
    WHERE c.kb_version = :v AND c.document_id = :document_id AND c.ordinal = :ordinal
    """
)


@dataclasses.dataclass
class IndexedTextChange:
    """New indexed text for one copied chunk (its shown and cited `text` stays as it was)."""

    document_id: int
    ordinal: int
    title: str
    search_text: str
    origin: str
    derived_from: int | None = None


def update_indexed_text(builder: CandidateBuilder, changes: list[IndexedTextChange]) -> int:
    """Re-embed and re-index the given chunks of the candidate (copied there first)."""
    if not changes:
        return 0
    vectors = embed_chunks(builder.embedder, [c.title for c in changes], [c.search_text for c in changes])
    with builder.store.session() as s:
        for change, v in zip(changes, vectors):
            s.execute(_UPDATE_INDEXED, {
                "search_text": change.search_text, **vector_params(v), "origin": change.origin,
                "derived_from": change.derived_from, "config": builder.version.text_search_config,
                "lexical": lexical_text(change.search_text, builder.version.lexical_scheme), "v": builder.id,
                "document_id": change.document_id, "ordinal": change.ordinal,
            })
    builder.embedded_chunks += len(changes)
    return len(changes)
