"""`kaizen reindex`: rebuild every active document's chunks and embeddings into a new KB version, then switch.

The new version is built beside the active one (status `building`), committed in batches, indexed, and made
active in one transaction. Until that last transaction the active version is untouched and answers queries;
a crash leaves an orphan `building` version that the next reindex marks `rolled_back` and deletes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import sqlalchemy as sa

from . import locks
from .chunking import Chunker
from .database import Store
from .embeddings import Embedder
from .indexing import prepare, write_chunks
from .kb_versions import (
    activate,
    active_version,
    create_vector_index,
    create_version,
    drop_version_chunks,
    record_change,
)

ACTOR = "kaizen reindex"


@dataclass
class _Doc:
    title: str
    text: str


@dataclass
class ReindexReport:
    previous_version: int | None
    new_version: int
    documents: int
    chunks: int
    seconds: float

    def as_dict(self) -> dict:
        return self.__dict__ | {"seconds": round(self.seconds, 2)}


def clean_abandoned(store: Store) -> list[int]:
    """Versions left `building` by a crashed reindex: mark them rolled back and free their chunks."""
    with store.session() as s:
        locks.hold(s, locks.ABANDONED_VERSIONS)
        ids = s.execute(sa.text("UPDATE kb_versions SET status = 'rolled_back' WHERE status = 'building' "
                                "RETURNING id")).scalars().all()
        for version_id in ids:
            drop_version_chunks(s, version_id)
            record_change(s, kind="version_abandoned", kb_version=version_id, target=f"kb_version:{version_id}",
                          before={"status": "building"}, after={"status": "rolled_back"}, actor=ACTOR,
                          decision="rolled_back")
    return list(ids)


def reindex(store: Store, embedder: Embedder, reason: str = "reindex",
            progress: Callable[[int, int, str], None] | None = None, batch_documents: int = 32) -> ReindexReport:
    started = time.perf_counter()
    settings = store.settings
    # One reindex at a time across processes: a second one waits on this session-level lock, held on a
    # connection of its own for the whole rebuild.
    with store.engine.connect() as lock, locks.session_lock(lock, locks.REINDEX):
        clean_abandoned(store)
        with store.session() as s:
            previous = active_version(s)
            new = create_version(s, reason=reason, status="building", embedding_model=embedder.name,
                                 embedding_dim=embedder.dim, settings=settings,
                                 parent_id=previous.id if previous else None, with_index=False,
                                 # tuned values carry over, unless they were tuned for another embedding model
                                 search_params=previous.search_params if previous and
                                 previous.embedding_model == embedder.name else None)
            docs = s.execute(sa.text("SELECT id, title, body FROM documents WHERE status = 'active' ORDER BY id")).all()
        chunker = Chunker(embedder.count_tokens, new.chunk_tokens, new.chunk_overlap)
        total_chunks = 0
        batch = []
        done = 0
        if progress:
            progress(0, len(docs), "")

        def flush(rows):
            nonlocal total_chunks
            with store.session() as s:
                for doc_id, chunks in rows:
                    write_chunks(s, document_id=doc_id, kb_version=new.id,
                                 text_search_config=new.text_search_config,
                                 lexical_scheme=new.lexical_scheme, chunks=chunks)
                    total_chunks += len(chunks)

        for doc_id, chunks in prepare(((row.id, _Doc(row.title, row.body)) for row in docs), chunker, embedder):
            batch.append((doc_id, chunks))
            done += 1
            if progress:
                progress(done, len(docs), "")
            if len(batch) >= batch_documents:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        with store.session() as s:
            create_vector_index(s, new.id, new.embedding_dim, store.settings.index_build_mb)
        with store.session() as s:
            s.execute(sa.text("UPDATE kb_versions SET status = 'candidate' WHERE id = :id"), {"id": new.id})
            activate(s, new.id, actor=ACTOR, reason=reason,
                     metrics={"documents": len(docs), "chunks": total_chunks})
    return ReindexReport(previous.id if previous else None, new.id, len(docs), total_chunks,
                         time.perf_counter() - started)
