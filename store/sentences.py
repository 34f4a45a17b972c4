"""The sentences of a chunk: the units its sentence vectors are made of (store.indexing).

A question usually asks about one sentence of a passage, and a passage's single vector averages that sentence with
the others. Each chunk therefore also gets one vector per sentence, and search scores a chunk by its best sentence
as well as by the whole (store.search). Sentences end at English and Japanese sentence punctuation (with any
closing quotes or brackets after it) and at line breaks; pieces too short to mean much on their own (a list
marker, "Yes.", an opening code fence) are joined to the sentence after them, and a closing code fence to the code
before it. A full stop after a common abbreviation ("e.g.", "Inc.") ends nothing, and a row of a Markdown table is
one unit, whatever punctuation its cells hold: split, its description would lose the name in its first cell (the
row of KAIZEN_LLM_URL would not say what it describes).

Line breaks end vector units because a line is often a unit of its own (a heading, a list item, a table row), but
prose hard-wrapped at a fixed width (Markdown, plain-text notes) then falls into line fragments that begin or end
mid-sentence. `reading_units` groups the fragments of one wrapped sentence back together for whoever reads them
(agent/passages.py gives the model whole sentences); the vectors stay one per line piece, as search scored them.
A line continues the sentence above it when that line ended without sentence punctuation inside a paragraph of
prose: not a heading, table row or code, not followed by a blank line or a new block (heading, list item, quote,
table, code fence), and not ending in Japanese script, where a line break is a paragraph's end.
"""

from __future__ import annotations

import re

from . import scripts

# Sentence-final punctuation with the closing quotes and brackets that follow it; a full stop only before a space
# (so "3.5" and "e.g.x" stay whole), and not after an abbreviation; or a line break.
ABBREVIATIONS = ("e.g", "i.e", "etc", "vs", "cf", "approx", "Mr", "Mrs", "Ms", "Dr", "Prof", "St", "Inc", "Ltd",
                 "Co", "Corp", "Jr", "Sr", "No", "Fig", "Vol")
_NOT_ABBREVIATION = "".join(f"(?<!\\b{re.escape(a)})" for a in ABBREVIATIONS)
_BOUNDARY = re.compile(r"[。．！？!?]+[」』）)\]\"'’”]*|" + _NOT_ABBREVIATION + r"\.(?=\s)[\"'’”)\]]*")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
MIN_SENTENCE_CHARS = 6
# A line that starts a block of its own (a heading, list item, quote, table row or code fence) continues nothing.
_BLOCK_START = re.compile(r"^\s*(#{1,6}\s|[-*+>]\s|\d{1,3}[.)]\s|\||```|~~~)")
_CJK_END = re.compile(f"[{scripts.JAPANESE}{scripts.FULLWIDTH_FORMS}]$")
_CLOSED = re.compile(r"[.:;。．！？!?][」』）)\]\"'’”]*$")  # a line that ends its sentence (or introduces what follows)
MAX_UNIT_PIECES = 8  # a "sentence" wrapped over more lines than this is read in pieces (a list without markers)


def _pieces(text: str) -> list[tuple[str, bool | None]]:
    """The pieces of `text`, each with whether the sentence it ends runs on to the next line (hard-wrapped); None
    marks a closing code fence, which belongs to the code above it."""
    pieces: list[tuple[str, bool | None]] = []
    lines = text.split("\n")
    in_code = False
    for n, line in enumerate(lines):
        fence = line.lstrip().startswith(("```", "~~~"))
        if fence:
            in_code = not in_code
            if not in_code and not line.strip().strip("`~"):
                pieces.append((line, None))
                continue
        if _TABLE_ROW.match(line):
            pieces.append((line, False))
            continue
        start = 0
        for match in _BOUNDARY.finditer(line):
            pieces.append((line[start : match.end()], False))
            start = match.end()
        rest = line[start:]
        following = lines[n + 1] if n + 1 < len(lines) else ""
        runs_on = bool(
            rest.strip() and not fence and not in_code and not line.lstrip().startswith("#")
            and following.strip() and not _BLOCK_START.match(following)
            and not _CJK_END.search(rest.rstrip()) and not _CLOSED.search(rest.rstrip()))
        pieces.append((rest, runs_on))
    return pieces


def _sentences(text: str) -> list[tuple[str, bool]]:
    """The sentences of `text` with whether each runs on to the next (see `_pieces`)."""
    sentences: list[tuple[str, bool]] = []
    carry = ""
    for piece, runs_on in _pieces(text):
        piece = piece.strip()
        if not piece:
            continue
        if runs_on is None and sentences and not carry:  # a closing fence ends the code above, not what follows
            sentences[-1] = (f"{sentences[-1][0]} {piece}", False)
            continue
        joined = f"{carry} {piece}" if carry else piece
        if len(joined) < MIN_SENTENCE_CHARS:
            carry = joined
            continue
        sentences.append((joined, bool(runs_on)))
        carry = ""
    if carry:
        if sentences:
            sentences[-1] = (f"{sentences[-1][0]} {carry}", False)
        else:
            sentences.append((carry, False))
    return sentences


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, stripped, in order; never empty for a text with any non-space character."""
    return [sentence for sentence, _ in _sentences(text)]


def reading_units(text: str) -> list[list[int]]:
    """The indices of `split_sentences(text)` grouped into the sentences a person reads: the line fragments of one
    hard-wrapped sentence form one group (at most MAX_UNIT_PIECES), every other sentence is a group of its own.
    Every index appears once, in order."""
    units: list[list[int]] = []
    open_unit = False
    for i, (_, runs_on) in enumerate(_sentences(text)):
        if open_unit and len(units[-1]) < MAX_UNIT_PIECES:
            units[-1].append(i)
        else:
            units.append([i])
        open_unit = runs_on
    return units
