"""Learned questions in a chunk's indexed text, and the record of where each came from.

Learning from traffic (eval/repair/learning.py) appends questions that a chunk answered well to that chunk's
*indexed* text, after a header line; the shown and cited text never changes. Each addition is recorded with its
evidence in the change that made it (`kb_changes.after -> build -> evidence`: chunk id, question, source such as
`good:<interaction id>` or `probe:<id>`), so a person can read what was learned from what and an answer deleted
later withdraws it. Whatever re-chunks a document (store/candidate.py: a re-chunking repair, `kaizen reindex`)
gives its learned questions to the new chunks, with their evidence: the helpers for all of that live here, below
everything that decides what to learn.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

ORIGIN = "learned"  # chunks.origin of a chunk whose indexed text has learned questions
HEADER = "Questions this answers:"  # the line learned questions follow in the indexed text
_MARKER = f"\n{HEADER}\n"
MAX_PER_CHUNK = 8
# the kinds of evidence a question is learned from: a train probe, an answer rated /good, an answer every trusted
# metric scored high
SOURCES = ("probe", "good", "scored")


def normalise(question: str) -> str:
    return " ".join(re.sub(r"[?？。.!！]+$", "", question.strip()).split()).lower()


def learned_lines(search_text: str) -> list[str]:
    """The questions already learned into this indexed text."""
    _, sep, tail = search_text.partition(_MARKER)
    return [line for line in tail.splitlines() if line.strip()] if sep else []


def with_learned(search_text: str, lines: list[str]) -> str:
    """The indexed text with exactly these learned lines (none: the text as it was before any learning)."""
    base = search_text.partition(_MARKER)[0]
    return base + (_MARKER + "\n".join(lines) if lines else "")


def learned_chunks(session, version_id: int, document_ids=None) -> list:
    """(id, document_id, search_text) of the chunks of a version (of these documents only, when given) whose
    indexed text has learned questions, whatever their origin (an expansion keeps them), by document and position."""
    return session.execute(sa.text(
        "SELECT id, document_id, search_text FROM chunks WHERE kb_version = :v AND strpos(search_text, :m) > 0 "
        "AND (CAST(:docs AS bigint[]) IS NULL OR document_id = ANY(:docs)) ORDER BY document_id, ordinal"),
        {"v": version_id, "m": _MARKER, "docs": None if document_ids is None else sorted(document_ids)}).all()


def recorded_evidence(session) -> list:
    """What changes in force learned, oldest change first: (source, question, chunk_id, document_id) for each
    question a probe or an answer taught, from the changes that were promoted under the guard or applied by a
    person (`kaizen reindex`). Evidence records its chunk's document; for records older than that, document_id
    is read from the chunk, and is None once the chunk is pruned."""
    return session.execute(sa.text(
        "SELECT e ->> 'source' AS source, e ->> 'question' AS question, (e ->> 'chunk_id')::int AS chunk_id, "
        "coalesce((e ->> 'document_id')::int, ch.document_id) AS document_id "
        "FROM kb_changes c CROSS JOIN jsonb_array_elements(c.after -> 'build' -> 'evidence') e "
        "LEFT JOIN chunks ch ON ch.id = (e ->> 'chunk_id')::int "
        "WHERE c.decision IN ('promoted', 'applied') AND split_part(e ->> 'source', ':', 1) = ANY(:kinds) "
        "ORDER BY c.id"), {"kinds": list(SOURCES)}).all()
