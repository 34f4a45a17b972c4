"""`kaizen reindex`: rebuild every active document's chunks and embeddings into a new KB version, then switch.

The new version is built beside the active one (status `building`, store/candidate.py) with the configured chunk
parameters, embedding model and text search configuration, committed in batches, indexed, and made active in one
transaction. Until that last transaction the active version is untouched and answers queries; a failure rolls
the new version back at once, and one a killed process left is marked `rolled_back` and deleted by the next
reindex or repair. What the active version learned from traffic (store/learned.py) goes to the new chunks, and
its evidence is recorded with the switch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import sqlalchemy as sa

from . import locks
from .candidate import CandidateBuilder
from .database import Store
from .embeddings import Embedder
from .kb_versions import activate, active_version, drop_version_chunks, record_change

ACTOR = "kaizen reindex"


@dataclass
class ReindexReport:
    previous_version: int | None
    new_version: int
    documents: int
    chunks: int
    seconds: float
    carried_learned: int = 0

    def as_dict(self) -> dict:
        return self.__dict__ | {"seconds": round(self.seconds, 2)}


def clean_abandoned(store: Store) -> list[int]:
    """Versions left `building` or `candidate` by a process that died (a reindex, a repair): mark them rolled back
    and free their chunks. Call it only while holding the REINDEX lock: every version is built and judged under
    it, so no other process is working on one of them then."""
    with store.session() as s:
        locks.hold(s, locks.ABANDONED_VERSIONS)
        rows = s.execute(sa.text(
            "UPDATE kb_versions v SET status = 'rolled_back' FROM (SELECT id, status FROM kb_versions "
            "WHERE status IN ('building', 'candidate') FOR UPDATE) old WHERE v.id = old.id "
            "RETURNING v.id, old.status")).all()
        for version_id, status in rows:
            drop_version_chunks(s, version_id)
            record_change(s, kind="version_abandoned", kb_version=version_id, target=f"kb_version:{version_id}",
                          before={"status": status}, after={"status": "rolled_back"}, actor=ACTOR,
                          decision="rolled_back")
    return [version_id for version_id, _ in rows]


def reindex(store: Store, embedder: Embedder, reason: str = "reindex",
            progress: Callable[[int, int, str], None] | None = None, batch_documents: int = 32) -> ReindexReport:
    started = time.perf_counter()
    # One reindex at a time across processes: a second one waits on this session-level lock, held on a
    # connection of its own for the whole rebuild.
    with store.engine.connect() as lock, locks.session_lock(lock, locks.REINDEX):
        clean_abandoned(store)
        with store.session() as s:
            previous = active_version(s)
            docs = [tuple(r) for r in s.execute(sa.text(
                "SELECT id, title, body FROM documents WHERE status = 'active' ORDER BY id")).all()]
        builder = CandidateBuilder(store, embedder, previous, reason=reason, from_settings=True)
        done = 0

        def step():
            nonlocal done
            done += 1
            progress(done, len(docs), "")

        if progress:
            progress(0, len(docs), "")
        try:
            chunks = builder.rechunk(docs, batch_documents=batch_documents, check=step if progress else None)
            new = builder.finish()
            with store.session() as s:
                activate(s, new.id, actor=ACTOR, reason=reason, metrics={"documents": len(docs), "chunks": chunks})
                if builder.carried:  # where learning reads its evidence, so a deleted answer still withdraws it
                    record_change(s, kind="learned_carried", kb_version=new.id, target=f"kb_version:{new.id}",
                                  after={"build": {"carried_learned": len(builder.carried),
                                                   "evidence": builder.carried}}, actor=ACTOR)
        except Exception as exc:
            try:  # free the half-built version now; if the database is gone, the next reindex or repair does
                builder.discard(ACTOR, f"{type(exc).__name__}: {exc}"[:300])
            except Exception:
                pass
            raise
    return ReindexReport(previous.id if previous else None, new.id, len(docs), chunks,
                         time.perf_counter() - started, len(builder.carried))
