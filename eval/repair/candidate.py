"""A candidate KB version built beside the active one, cheaply: unchanged documents' chunk rows are copied with
their embeddings (SQL, no model call), and only what an action changes is chunked and embedded.

Lifecycle: `building` (rows being written) -> `candidate` (complete, indexed, being judged) -> `active` (promoted,
one transaction through store.kb_versions.activate) or `rolled_back` (its chunks and index are dropped). Until
promotion the active version is never written to, so a crash at any point leaves it untouched; an orphan
`building` version is cleaned by store.reindex.clean_abandoned on the next run.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from store.chunking import Chunker
from store.indexing import PreparedChunk, prepare, write_chunks
from store.kb_versions import (
    KBVersion,
    create_vector_index,
    create_version,
    drop_version_chunks,
    get_version,
    record_change,
)

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
    """Write one candidate version derived from `base`. Use `copy_unchanged`, then `replace_document(s)` /
    `write`, then `finish`; on any error call `discard` (the planner does)."""

    def __init__(self, store, embedder, base: KBVersion, *, reason: str, chunk_tokens: int | None = None,
                 chunk_overlap: int | None = None, search_params: dict | None = None):
        self.store = store
        self.embedder = embedder
        self.base = base
        settings = store.settings.model_copy(update={
            "text_search_config": base.text_search_config, "chunk_tokens": chunk_tokens or base.chunk_tokens,
            "chunk_overlap": base.chunk_overlap if chunk_overlap is None else chunk_overlap})
        with store.session() as s:
            self.version = create_version(s, reason=reason, status="building", embedding_model=embedder.name,
                                          embedding_dim=embedder.dim, settings=settings, parent_id=base.id,
                                          with_index=False, lexical_scheme=base.lexical_scheme,
                                          search_params=base.search_params if search_params is None
                                          else search_params)
        self.chunker = Chunker(embedder.count_tokens, self.version.chunk_tokens, self.version.chunk_overlap)
        self.written_documents: set[int] = set()
        self.embedded_chunks = 0
        self.copied_chunks = 0

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
        """Index the version and mark it `candidate`: complete and searchable, not active."""
        with self.store.session() as s:
            create_vector_index(s, self.id, self.version.embedding_dim, self.store.settings.index_build_mb)
            s.execute(sa.text("UPDATE kb_versions SET status = 'candidate' WHERE id = :id AND status = 'building'"),
                      {"id": self.id})
            self.version = get_version(s, self.id)
        return self.version

    def discard(self, actor: str, reason: str) -> None:
        discard_version(self.store, self.id, actor=actor, reason=reason)


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
    from store.indexing import embed_chunks, vector_params
    from store.lexical import lexical_text

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
