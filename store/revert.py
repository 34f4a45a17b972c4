"""`kaizen kb log` and `kaizen kb revert ID`.

A promoted repair is reverted by making the version it was built from active again (retired versions keep their
chunks and index), in one transaction, recorded as a `revert` change. A revert is refused, with the reason and
what to do, when later changes built on the repaired version: a later promotion (revert that one first), or
documents ingested into it after the repair (re-activating the older version would silently drop them)."""

from __future__ import annotations

import sqlalchemy as sa

from store import locks
from store.errors import KaizenError
from store.kb_versions import activate, create_vector_index, get_version, record_change

ACTOR = "kaizen kb revert"


class RevertError(KaizenError, ValueError):
    """A revert that cannot be done; the message says why and what to do instead."""


def change_log(store, limit: int = 50, repairs_only: bool = False) -> list[dict]:
    where = "WHERE kind LIKE 'repair:%' OR kind = 'revert'" if repairs_only else ""
    with store.session() as s:
        rows = s.execute(sa.text(
            f"SELECT id, created_at, kind, kb_version, target, decision, actor, before, after, metrics_before, "
            f"metrics_after FROM kb_changes {where} ORDER BY id DESC LIMIT :n"), {"n": limit}).mappings().all()
    return [dict(r) for r in rows]


def get_change(store, change_id: int) -> dict:
    """One change, whole: what it was, what it did (a learning's evidence: each question with the interaction or
    probe it came from), the held-out metrics before and after."""
    with store.session() as s:
        row = s.execute(sa.text(
            "SELECT id, created_at, kind, kb_version, document_id, target, decision, actor, before, after, "
            "metrics_before, metrics_after FROM kb_changes WHERE id = :id"), {"id": change_id}).mappings().first()
    if row is None:
        raise RevertError(f"there is no change {change_id} (see `kaizen kb log`)")
    return dict(row)


def revert(store, change_id: int, actor: str = ACTOR) -> dict:
    with store.session() as s:
        change = s.execute(sa.text("SELECT id, kind, kb_version, decision, before FROM kb_changes WHERE id = :id"),
                           {"id": change_id}).mappings().first()
        if change is None:
            raise RevertError(f"there is no change {change_id} (see `kaizen kb log`)")
        if not change["kind"].startswith("repair:") or change["decision"] != "promoted":
            raise RevertError(f"change {change_id} is a {change['kind']} ({change['decision']}): only promoted repairs "
                              "can be reverted")
        locks.hold(s, locks.PLANNER, locks.REINDEX)
        version = get_version(s, change["kb_version"])
        parent_id = (change["before"] or {}).get("base_version") or version.parent_id
        already = s.execute(sa.text("SELECT id FROM kb_changes WHERE kind = 'revert' AND target = :t"),
                            {"t": f"kb_change:{change_id}"}).scalar()
        if already:
            raise RevertError(f"change {change_id} was already reverted (change {already})")
        if version.status != "active":
            later = s.execute(sa.text(
                "SELECT id, kind FROM kb_changes WHERE id > :id AND ((kind LIKE 'repair:%' AND decision = 'promoted') "
                "OR kind IN ('revert', 'version_activated')) ORDER BY id"), {"id": change_id}).all()
            names = ", ".join(f"{r.id} ({r.kind})" for r in later if r.kind != "version_activated") or \
                ", ".join(str(r.id) for r in later)
            raise RevertError(f"change {change_id} built KB version {version.id}, which is no longer active: later "
                              f"changes built on it ({names}); revert those first, newest first")
        built_on = s.execute(sa.text(
            "SELECT id, kind FROM kb_changes WHERE id > :id AND kb_version = :v AND kind NOT IN "
            "('version_activated', 'version_rolled_back', 'revert') AND decision NOT IN ('no_change', 'rejected') "
            "ORDER BY id"),
            {"id": change_id, "v": version.id}).all()
        if built_on:
            names = ", ".join(f"{r.id} ({r.kind})" for r in built_on[:5])
            raise RevertError(f"KB version {version.id} changed after repair {change_id} ({names}): re-activating "
                              f"version {parent_id} would drop those changes; run `kaizen reindex` or `kaizen improve`"
                              " instead")
        parent = get_version(s, parent_id)
        chunks = s.execute(sa.text("SELECT count(*) FROM chunks WHERE kb_version = :v"), {"v": parent.id}).scalar_one()
        if parent.status == "pruned":
            raise RevertError(f"KB version {parent.id}, which change {change_id} replaced, "
                              "was pruned (`kaizen kb prune`"
                              "): its chunks are gone, so it cannot be made active again")
        if parent.status != "retired" or not chunks:
            raise RevertError(f"KB version {parent.id}, which change {change_id} replaced, is {parent.status} with "
                              f"{chunks} chunks: it cannot be made active again")
        create_vector_index(s, parent.id, parent.embedding_dim, store.settings.index_build_mb)
        activate(s, parent.id, actor=actor, reason=f"revert of change {change_id}")
        documents = _restore_documents(s, version.id)
        record_change(s, kind="revert", kb_version=parent.id, target=f"kb_change:{change_id}",
                      before={"active": version.id}, after={"active": parent.id, **documents}, decision="reverted",
                      actor=actor)
    return {"reverted": change_id, "active": parent.id, "retired": version.id, **documents}


def _restore_documents(session, version_id: int) -> dict:
    """Undo what the repair changed outside its KB version, from its own change rows: a replaced document gets
    its previous title, body and hash back (`rejected` keeps the hash of the text it reverted, so the planner
    does not propose it again; `kaizen ingest` still takes it), an added one is withdrawn (status `missing`).
    Without this a later `kaizen reindex`, which chunks the documents table, would silently redo the repair."""
    rows = session.execute(sa.text(
        "SELECT kind, document_id, target, before, after FROM kb_changes WHERE kb_version = :v "
        "AND kind IN ('document_replaced', 'document_added') AND document_id IS NOT NULL ORDER BY id"),
        {"v": version_id}).mappings().all()
    restored, withdrawn, rejected = [], [], {}
    for row in rows:
        if row["kind"] == "document_replaced":
            before = row["before"]
            session.execute(sa.text(
                "UPDATE documents SET title = :title, body = :body, content_hash = :content_hash, "
                "source_id = :source_id, updated_at = now() WHERE id = :id"), {**before, "id": row["document_id"]})
            restored.append(row["document_id"])
            rejected[row["target"]] = row["after"]["content_hash"]
        else:
            session.execute(sa.text("UPDATE documents SET status = 'missing', updated_at = now() WHERE id = :id"),
                            {"id": row["document_id"]})
            withdrawn.append(row["document_id"])
    return {"documents_restored": restored, "documents_withdrawn": withdrawn, "rejected": rejected}

