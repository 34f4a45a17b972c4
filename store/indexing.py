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
from .sentences import split_sentences


class DocumentText(Protocol):
    title: str
    text: str


@dataclass
class PreparedChunk:
    ordinal: int
    text: str
    search_text: str
    token_count: int
    embedding: np.ndarray  # the unit-length mean of sentence_embeddings
    sentence_embeddings: np.ndarray  # one unit vector per sentence of the chunk (store.sentences)


def content_hash(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\x00{text}".encode("utf-8", "surrogatepass")).hexdigest()


def search_text_for(title: str, chunk: str) -> str:
    """What gets embedded and indexed: the chunk with its document title, which names what the chunk is about."""
    return f"{title}\n{chunk}" if title and title not in chunk[: len(title) + 2] else chunk


def sentence_texts(title: str, search_text: str) -> list[str]:
    """What gets embedded for one chunk: each sentence of its indexed text, with the document title (a sentence
    alone often does not say what it is about). A title line that `search_text_for` put first is not a sentence."""
    body = search_text[len(title) + 1 :] if title and search_text.startswith(f"{title}\n") else search_text
    return [search_text_for(title, sentence) for sentence in split_sentences(body)] or [search_text]


@dataclass
class ChunkVectors:
    embedding: np.ndarray
    sentence_embeddings: np.ndarray  # empty for chunks indexed before sentence vectors

    def score(self, query: np.ndarray, sentence_weight: float) -> float:
        """The vector side's score of this chunk for a unit query vector, as the search SQL computes it:
        (1 - w) * cosine(chunk) + w * cosine(best sentence), or the chunk cosine alone without sentences."""
        chunk = float(np.dot(query, self.embedding))
        if not len(self.sentence_embeddings):
            return chunk
        return (1 - sentence_weight) * chunk + sentence_weight * float(np.max(self.sentence_embeddings @ query))


def load_chunk_vectors(session: Session, chunk_ids: list[int]) -> dict[int, ChunkVectors]:
    """The stored vectors of these chunks, by chunk id."""
    if not chunk_ids:
        return {}
    rows = session.execute(
        sa.text("SELECT id, embedding, sentence_embeddings FROM chunks WHERE id = ANY(:ids)"),
        {"ids": list(chunk_ids)},
    ).all()
    out = {}
    for chunk_id, embedding, sentences in rows:  # pgvector.Vector (store.database registers the adapter)
        vector = _unit(embedding.to_numpy())
        out[chunk_id] = ChunkVectors(
            vector, np.array([_unit(v.to_numpy()) for v in sentences or []], dtype=np.float32).reshape(-1, len(vector)))
    return out


def _unit(vec: np.ndarray) -> np.ndarray:
    return vec / (np.linalg.norm(vec) or 1.0)


def embed_chunks(embedder: Embedder, titles: list[str], search_texts: list[str]) -> list[ChunkVectors]:
    """Embed chunks through their sentences, in one batch: each sentence gets a vector, and the chunk's vector is
    the normalised mean of its sentences' (one embedding pass instead of two; on the dev sets it ranks as well as
    embedding the whole chunk, once the best sentence is scored beside it)."""
    groups = [sentence_texts(title, text) for title, text in zip(titles, search_texts)]
    flat = [text for group in groups for text in group]
    vectors = embedder.embed_passages(flat) if flat else np.zeros((0, embedder.dim), np.float32)
    out, at = [], 0
    for group in groups:
        sentences = vectors[at : at + len(group)]
        at += len(group)
        mean = sentences.mean(axis=0) if len(group) else np.zeros(embedder.dim, np.float32)
        norm = float(np.linalg.norm(mean))
        out.append(ChunkVectors((mean / norm if norm else mean).astype(np.float32), sentences))
    return out


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

    def embed(batch) -> tuple[list[str], list[ChunkVectors]]:
        titles = [doc.title for _, doc, pieces in batch for _ in pieces]
        texts = [search_text_for(doc.title, piece) for _, doc, pieces in batch for piece in pieces]
        return texts, embed_chunks(embedder, titles, texts)

    def assemble(batch, texts: list[str], vectors: list[ChunkVectors]):
        at = 0
        for key, doc, pieces in batch:
            chunks = []
            for ordinal, piece in enumerate(pieces):
                v = vectors[at]
                chunks.append(PreparedChunk(ordinal, piece, texts[at], embedder.count_tokens(piece), v.embedding,
                                            v.sentence_embeddings))
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


def vector_params(vectors: ChunkVectors | PreparedChunk) -> dict:
    """A chunk's vectors as query parameters: pgvector's adapter sends the numpy array as a `vector` and the list
    of sentence vectors (one array each) as a `vector[]`."""
    return {"embedding": vectors.embedding, "sentence_embeddings": list(vectors.sentence_embeddings)}


_INSERT = sa.text(
    """
    INSERT INTO chunks (document_id, kb_version, ordinal, text, search_text, embedding, sentence_embeddings, tsv,
                        lexical_length, token_count, origin)
    SELECT :document_id, :kb_version, :ordinal, :text, :search_text, CAST(:embedding AS vector),
           CAST(:sentence_embeddings AS vector[]), t.tsv,
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
                **vector_params(c),
                "config": text_search_config,
                "lexical": lexical_text(c.search_text, lexical_scheme),
                "token_count": c.token_count,
            }
            for c in chunks
        ],
    )
