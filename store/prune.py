"""`kaizen kb prune`: free the chunks of old retired KB versions.

Each `kaizen reindex` and each promoted repair retires the previous version with all its chunks, vectors and vector
index, because a revert re-activates it. Left alone, the chunks table grows by a whole knowledge base per change.
Pruning keeps the `keep` most recently retired versions, and always the active version's parent (the version a
revert of the latest change would re-activate); every older retired version loses its chunks and vector index and
is marked `pruned`. Its kb_versions row and kb_changes history stay, and retrievals that named its chunks keep
their ranks and scores (chunk_id becomes NULL). Each version is pruned in its own transaction, recorded as a
`version_pruned` change; a crash leaves every version either whole or pruned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import sqlalchemy as sa

from . import locks
from .errors import KaizenError
from .kb_versions import drop_version_chunks, record_change

ACTOR = "kaizen kb prune"


class PruneError(KaizenError, ValueError):
    pass


@dataclass
class PrunedVersion:
    id: int
    reason: str
    activated_at: str | None
    chunks: int


@dataclass
class PruneReport:
    kept: list[int] = field(default_factory=list)
    pruned: list[PrunedVersion] = field(default_factory=list)
    dry_run: bool = False

    @property
    def chunks(self) -> int:
        return sum(v.chunks for v in self.pruned)

    def as_dict(self) -> dict:
        return {"kept": self.kept, "pruned": [asdict(v) for v in self.pruned], "chunks": self.chunks,
                "dry_run": self.dry_run}


_RETIRED = sa.text(
    """
    SELECT v.id, v.reason, v.activated_at::text AS activated_at,
           (SELECT count(*) FROM chunks c WHERE c.kb_version = v.id) AS chunks
    FROM kb_versions v WHERE v.status = 'retired'
    ORDER BY v.activated_at DESC NULLS LAST, v.id DESC
    """
)


def prune_retired(store, keep: int = 2, dry_run: bool = False, actor: str = ACTOR) -> PruneReport:
    """Prune retired versions beyond the `keep` most recently active ones (and the active version's parent)."""
    if keep < 0:
        raise PruneError(f"--keep must be 0 or more, not {keep}")
    report = PruneReport(dry_run=dry_run)
    with store.session() as s:
        retired = s.execute(_RETIRED).mappings().all()
        parent = s.execute(sa.text("SELECT parent_id FROM kb_versions WHERE status = 'active'")).scalar()
    doomed = []
    for i, row in enumerate(retired):
        if i < keep or row["id"] == parent:
            report.kept.append(row["id"])
        else:
            doomed.append(row)
    for row in doomed:
        if dry_run:
            report.pruned.append(PrunedVersion(row["id"], row["reason"], row["activated_at"], row["chunks"]))
            continue
        with store.session() as s:
            locks.hold(s, locks.PLANNER, locks.REINDEX)
            status = s.execute(sa.text("SELECT status FROM kb_versions WHERE id = :id FOR UPDATE"),
                               {"id": row["id"]}).scalar()
            if status != "retired":  # re-activated by a revert since the list was read
                continue
            chunks = drop_version_chunks(s, row["id"])
            s.execute(sa.text("UPDATE kb_versions SET status = 'pruned' WHERE id = :id"), {"id": row["id"]})
            record_change(s, kind="version_pruned", kb_version=row["id"], target=f"kb_version:{row['id']}",
                          before={"status": "retired", "chunks": chunks}, after={"status": "pruned"}, actor=actor)
        report.pruned.append(PrunedVersion(row["id"], row["reason"], row["activated_at"], chunks))
    return report
