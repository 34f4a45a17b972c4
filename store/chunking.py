"""Token-aware chunking with LangChain's recursive splitter, measured in the embedding model's own tokens.

A Markdown heading belongs to the text after it. The splitter cuts between paragraphs wherever the size says, so
a section's heading can close the chunk before its section (a tenth of the chunks of Kaizen's own docs did): that
chunk's best-matching "sentence" was then a bare heading, and the section's first chunk had lost its name. So a
heading that ends a chunk is moved to the start of the next one (where the overlap has not already put it), and a
chunk that was nothing but headings goes with them; unless the next chunk would then be longer than the chunk size
(the embedding model reads at most 512 tokens, and the size may be set up to 510), where the heading stays.
"""

from __future__ import annotations

import re
from typing import Callable

from langchain_text_splitters import RecursiveCharacterTextSplitter

# Paragraphs, lines, then sentence ends in English and Japanese, then clauses, then words, then characters.
SEPARATORS = ["\n\n", "\n", "。", "．", ". ", "！", "？", "! ", "? ", "；", "; ", "、", ", ", " ", ""]
# One or more ATX heading lines ("## Retrieval") that close a chunk, each on a line of its own.
_TRAILING_HEADINGS = re.compile(r"(?:^|\n)((?:[ ]{0,3}#{1,6}[ \t][^\n]*(?:\n[ \t]*)*)+)$")


class Chunker:
    def __init__(self, count_tokens: Callable[[str], int], chunk_tokens: int, overlap: int):
        self.count_tokens = count_tokens
        self.chunk_tokens = chunk_tokens
        self.overlap = overlap
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_tokens,
            chunk_overlap=overlap,
            length_function=count_tokens,
            separators=SEPARATORS,
            keep_separator="end",
            strip_whitespace=True,
        )

    def split(self, text: str) -> list[str]:
        pieces = [piece for piece in self._splitter.split_text(text) if piece.strip()]
        return headings_lead(text, pieces, lambda chunk: self.count_tokens(chunk) <= self.chunk_tokens)


def headings_lead(text: str, chunks: list[str], fits: Callable[[str], bool] | None = None) -> list[str]:
    """`chunks` of `text` (in order, each a piece of it) with no chunk but the last ending in a heading: trailing
    headings start the next chunk instead, which then begins at the heading in `text`, where that chunk then still
    `fits` (the chunk size). Chunks that cannot be found in `text` are left as they are."""
    chunks = list(chunks)
    starts, at = [], 0
    for chunk in chunks:
        start = text.find(chunk, at)
        if start < 0:
            return chunks
        starts.append(start)
        at = start
    out: list[str] = []
    for i, chunk in enumerate(chunks):
        match = _TRAILING_HEADINGS.search(chunk) if i + 1 < len(chunks) else None
        if match:
            heading_at = starts[i] + match.start(1)
            if heading_at < starts[i + 1]:  # the next chunk does not hold the heading yet (the overlap may have)
                grown = text[heading_at : starts[i + 1] + len(chunks[i + 1])]
                if fits is not None and not fits(grown):
                    out.append(chunk)  # the next chunk is full: the heading stays
                    continue
                chunks[i + 1], starts[i + 1] = grown, heading_at
            chunk = chunk[: match.start(1)].rstrip()
        if chunk.strip():
            out.append(chunk)
    return out
