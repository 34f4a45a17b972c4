"""The sentences of a chunk: the units its sentence vectors are made of (store.indexing).

A question usually asks about one sentence of a passage, and a passage's single vector averages that sentence with
the others. Each chunk therefore also gets one vector per sentence, and search scores a chunk by its best sentence
as well as by the whole (store.search). Sentences end at English and Japanese sentence punctuation (with any
closing quotes or brackets after it) and at line breaks; pieces too short to mean much on their own (a list
marker, "Yes.") are joined to the sentence after them.
"""

from __future__ import annotations

import re

# Sentence-final punctuation with the closing quotes and brackets that follow it; a full stop only before a space
# (so "3.5" and "e.g.x" stay whole); or a line break.
_BOUNDARY = re.compile(r"[。．！？!?]+[」』）)\]\"'’”]*|\.(?=\s)[\"'’”)\]]*|\n")
MIN_SENTENCE_CHARS = 6


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, stripped, in order; never empty for a text with any non-space character."""
    pieces, start = [], 0
    for match in _BOUNDARY.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
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
