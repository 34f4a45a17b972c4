"""The sentences of a chunk: the units its sentence vectors are made of (store.indexing).

A question usually asks about one sentence of a passage, and a passage's single vector averages that sentence with
the others. Each chunk therefore also gets one vector per sentence, and search scores a chunk by its best sentence
as well as by the whole (store.search). Sentences end at English and Japanese sentence punctuation (with any
closing quotes or brackets after it) and at line breaks; pieces too short to mean much on their own (a list
marker, "Yes.") are joined to the sentence after them. A full stop after a common abbreviation ("e.g.", "Inc.")
ends nothing, and a row of a Markdown table is one unit, whatever punctuation its cells hold: split, its
description would lose the name in its first cell (the row of KAIZEN_LLM_URL would not say what it describes).
"""

from __future__ import annotations

import re

# Sentence-final punctuation with the closing quotes and brackets that follow it; a full stop only before a space
# (so "3.5" and "e.g.x" stay whole), and not after an abbreviation; or a line break.
ABBREVIATIONS = ("e.g", "i.e", "etc", "vs", "cf", "approx", "Mr", "Mrs", "Ms", "Dr", "Prof", "St", "Inc", "Ltd",
                 "Co", "Corp", "Jr", "Sr", "No", "Fig", "Vol")
_NOT_ABBREVIATION = "".join(f"(?<!\\b{re.escape(a)})" for a in ABBREVIATIONS)
_BOUNDARY = re.compile(r"[。．！？!?]+[」』）)\]\"'’”]*|" + _NOT_ABBREVIATION + r"\.(?=\s)[\"'’”)\]]*")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
MIN_SENTENCE_CHARS = 6


def _pieces(text: str) -> list[str]:
    pieces = []
    for line in text.split("\n"):
        if _TABLE_ROW.match(line):
            pieces.append(line)
            continue
        start = 0
        for match in _BOUNDARY.finditer(line):
            pieces.append(line[start : match.end()])
            start = match.end()
        pieces.append(line[start:])
    return pieces


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, stripped, in order; never empty for a text with any non-space character."""
    pieces = _pieces(text)
    sentences: list[str] = []
    carry = ""
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        joined = f"{carry} {piece}" if carry else piece
        if len(joined) < MIN_SENTENCE_CHARS:
            carry = joined
            continue
        sentences.append(joined)
        carry = ""
    if carry:
        if sentences:
            sentences[-1] = f"{sentences[-1]} {carry}"
        else:
            sentences.append(carry)
    return sentences
