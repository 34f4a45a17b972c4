"""Token-aware chunking with LangChain's recursive splitter, measured in the embedding model's own tokens."""

from __future__ import annotations

from typing import Callable

from langchain_text_splitters import RecursiveCharacterTextSplitter

# Paragraphs, lines, then sentence ends in English and Japanese, then clauses, then words, then characters.
SEPARATORS = ["\n\n", "\n", "。", "．", ". ", "！", "？", "! ", "? ", "；", "; ", "、", ", ", " ", ""]


class Chunker:
    def __init__(self, count_tokens: Callable[[str], int], chunk_tokens: int, overlap: int):
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
        return [piece for piece in self._splitter.split_text(text) if piece.strip()]
