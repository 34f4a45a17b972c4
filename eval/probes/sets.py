"""Probes: questions with a reference and gold documents, stored in the `probes` table.

Imported sets use the ../shared/data format (`{"id", "question", "answerable", "reference", "answers"?,
"gold_passage_ids"}`, where gold ids are the corpus' source ids). Each probe is put in `train` or `heldout`
by a stable hash of its set and id, so a re-import never moves a probe between splits and repairs derived from
train probes are always judged on probes they never saw.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from store.errors import KaizenError

HELDOUT_SHARE = 0.3


class ProbeImportError(KaizenError, ValueError):
    """A probe file that cannot be imported; the message names the file and line."""


@dataclass
class Probe:
    id: int
    probe_set: str
    question: str
    reference: str | None
    answerable: bool
    split: str
    gold_document_ids: list[int] = field(default_factory=list)
    gold_chunk_ids: list[int] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    origin: str = "imported"


def split_for(probe_set: str, external_id: str, heldout_share: float = HELDOUT_SHARE) -> str:
    digest = hashlib.sha256(f"{probe_set}\x00{external_id}".encode()).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") / 2**64 < heldout_share else "train"


def read_question_file(path: Path) -> list[dict]:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeImportError(f"{path}: cannot read it ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ProbeImportError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
            raise ProbeImportError(f"{path}:{number}: expected an object with a non-empty \"question\"")
        rows.append(row)
    if not rows:
        raise ProbeImportError(f"{path}: no questions in it")
    return rows


def import_probes(store, path: str | Path, probe_set: str | None = None,
                  heldout_share: float = HELDOUT_SHARE) -> dict:
    """Load a question file as probes (upsert on set + id), resolving gold source ids to documents.
    Returns counts, including probes whose gold documents are not in the knowledge base."""
    path = Path(path)
    probe_set = probe_set or path.parent.name or path.stem
    rows = read_question_file(path)
    added = updated = unresolved = 0
    with store.session() as s:
        by_source = dict(s.execute(sa.text(
            "SELECT source_id, id FROM documents WHERE source_id IS NOT NULL AND status = 'active'")).all())
        for number, row in enumerate(rows, start=1):
            external_id = str(row.get("id") or f"line-{number}")
            gold_sources = [str(g) for g in row.get("gold_passage_ids") or []]
            gold_docs = [by_source[g] for g in gold_sources if g in by_source]
            answerable = bool(row.get("answerable", True))
            if answerable and gold_sources and not gold_docs:
                unresolved += 1
            answers = [a for a in (row.get("answers") or []) if isinstance(a, str)]
            inserted = s.execute(sa.text(
                """
                INSERT INTO probes (probe_set, external_id, question, reference, answers, answerable,
                                    gold_source_ids, gold_document_ids, split, origin, language)
                VALUES (:set, :ext, :q, :ref, CAST(:answers AS jsonb), :answerable, :sources, :docs, :split,
                        'imported', :lang)
                ON CONFLICT (probe_set, external_id) DO UPDATE SET
                    question = EXCLUDED.question, reference = EXCLUDED.reference, answers = EXCLUDED.answers,
                    answerable = EXCLUDED.answerable, gold_source_ids = EXCLUDED.gold_source_ids,
                    gold_document_ids = EXCLUDED.gold_document_ids, status = 'active', retired_at = NULL
                RETURNING (xmax = 0)
                """), {
                "set": probe_set, "ext": external_id, "q": row["question"].replace("\x00", " "),
                "ref": row.get("reference"), "answers": json.dumps(answers, ensure_ascii=False),
                "answerable": answerable, "sources": gold_sources, "docs": gold_docs,
                "split": split_for(probe_set, external_id, heldout_share), "lang": row.get("language"),
            }).scalar_one()
            added += int(bool(inserted))
            updated += int(not inserted)
    return {"probe_set": probe_set, "added": added, "updated": updated, "unresolved_gold": unresolved,
            "total": len(rows)}


def load_probes(store, *, split: str | None = None, probe_set: str | None = None, answerable_only: bool = True,
                with_gold: bool = True, limit: int | None = None) -> list[Probe]:
    """Active probes, optionally of one split / set; by default only answerable ones with gold documents."""
    clauses = ["status = 'active'"]
    params: dict = {}
    if split:
        clauses.append("split = :split")
        params["split"] = split
    if probe_set:
        clauses.append("probe_set = :set")
        params["set"] = probe_set
    if answerable_only:
        clauses.append("answerable")
    if with_gold:
        clauses.append("cardinality(gold_document_ids) > 0")
    sql = ("SELECT id, probe_set, question, reference, answerable, split, gold_document_ids, gold_chunk_ids, "
           f"answers, origin FROM probes WHERE {' AND '.join(clauses)} ORDER BY id")
    if limit:
        sql += " LIMIT :limit"
        params["limit"] = limit
    with store.session() as s:
        rows = s.execute(sa.text(sql), params).all()
    return [Probe(id=r[0], probe_set=r[1], question=r[2], reference=r[3], answerable=r[4], split=r[5],
                  gold_document_ids=list(r[6] or []), gold_chunk_ids=list(r[7] or []), answers=list(r[8] or []),
                  origin=r[9]) for r in rows]
