"""Chunk, embed and write documents: the one path by which chunks enter any KB version (ingest and reindex)."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from .chunking import Chunker
from .embeddings import Embedder
from .lexical import lexical_text


class DocumentText(Protocol):
    title: str
    text: str


@dataclass
class PreparedChunk:
    ordinal: int
    text: str
    search_text: str
    token_count: int
    embedding: np.ndarray


def content_hash(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\x00{text}".encode("utf-8", "surrogatepass")).hexdigest()


def search_text_for(title: str, chunk: str) -> str:
    """What gets embedded and indexed: the chunk with its document title, which names what the chunk is about."""
    return f"{title}\n{chunk}" if title and title not in chunk[: len(title) + 2] else chunk


def prepare(items: Iterable[tuple[object, DocumentText]], chunker: Chunker, embedder: Embedder,
            batch_chunks: int = 64) -> Iterator[tuple[object, list[PreparedChunk]]]:
    """Chunk documents and embed their chunks in batches that span documents (the model is faster on
    batches), yielding each document's prepared chunks in input order. `items` pairs a caller key with a doc.

    Pipelined one batch deep: while the caller stores the documents of one batch, the next batch is already
    being embedded in a background thread (the embedder's matmuls release the GIL), so the database's share of
    the work (tsvector, HNSW and GIN inserts, commits) overlaps the model's instead of adding to it."""

    def batches() -> Iterator[list[tuple[object, DocumentText, list[str]]]]:
        pending: list[tuple[object, DocumentText, list[str]]] = []
        pending_chunks = 0
        for key, doc in items:
            pieces = chunker.split(doc.text)
            pending.append((key, doc, pieces))
            pending_chunks += len(pieces)
            if pending_chunks >= batch_chunks:
                yield pending
                pending, pending_chunks = [], 0
        if pending:
            yield pending

    def embed(batch) -> tuple[list[str], np.ndarray]:
        texts = [search_text_for(doc.title, piece) for _, doc, pieces in batch for piece in pieces]
        vectors = embedder.embed_passages(texts) if texts else np.zeros((0, embedder.dim), np.float32)
        return texts, vectors

    def assemble(batch, texts: list[str], vectors: np.ndarray):
        at = 0
        for key, doc, pieces in batch:
            chunks = []
            for ordinal, piece in enumerate(pieces):
                chunks.append(PreparedChunk(ordinal, piece, texts[at], embedder.count_tokens(piece), vectors[at]))
                at += 1
            yield key, chunks

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kaizen-embed")
    try:
        previous = None
        for batch in batches():
            future = pool.submit(embed, batch)
            if previous is not None:
                yield from assemble(previous[0], *previous[1].result())
            previous = (batch, future)
        if previous is not None:
            yield from assemble(previous[0], *previous[1].result())
    finally:
        # A caller that stops early (an error, Ctrl-C) waits at most for the batch in flight.
        pool.shutdown(wait=True, cancel_futures=True)


def vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


_INSERT = sa.text(
    """
    INSERT INTO chunks (document_id, kb_version, ordinal, text, search_text, embedding, tsv, lexical_length,
                        token_count, origin)
    SELECT :document_id, :kb_version, :ordinal, :text, :search_text, CAST(:embedding AS vector), t.tsv,
           coalesce((SELECT sum(cardinality(u.positions)) FROM unnest(t.tsv) u), 0), :token_count, 'original'
    FROM (SELECT to_tsvector(CAST(:config AS regconfig), :lexical) AS tsv) t
    """
)


def write_chunks(session: Session, *, document_id: int, kb_version: int, text_search_config: str,
                 lexical_scheme: str, chunks: list[PreparedChunk]) -> None:
    if not chunks:
        return
    session.execute(
        _INSERT,
        [
            {
                "document_id": document_id,
                "kb_version": kb_version,
                "ordinal": c.ordinal,
                "text": c.text,
                "search_text": c.search_text,
                "embedding": vector_literal(c.embedding),
                "config": text_search_config,
                "lexical": lexical_text(c.search_text, lexical_scheme),
                "token_count": c.token_count,
            }
            for c in chunks
        ],
    )
