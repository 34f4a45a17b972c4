"""Degrade a knowledge base on purpose (for the recovery benchmark and its test): a new active version in
which documents are cut into tiny fragments, titles are stripped from the indexed text, and a share of the
chunks is replaced with noise (words drawn at random from the corpus). Documents' bodies are not touched: the
damage is in the KB version, as a bad re-index or a corrupted import would leave it."""

from __future__ import annotations

import random

import sqlalchemy as sa

from store.candidate import CandidateBuilder
from store.indexing import PreparedChunk, embed_chunks
from store.kb_versions import activate, require_active

ACTOR = "kaizen bench recovery (degrade)"


def degrade(store, embedder, *, fragment_tokens: int = 24, noise_share: float = 0.2, strip_titles: bool = True,
            seed: int = 7) -> dict:
    rng = random.Random(seed)
    with store.session() as s:
        base = require_active(s)
        docs = s.execute(sa.text("SELECT id, title, body FROM documents WHERE status = 'active' ORDER BY id")).all()
    builder = CandidateBuilder(store, embedder, base, reason="degraded on purpose (benchmark)",
                               chunk_tokens=fragment_tokens, chunk_overlap=0)
    pieces = [(d.id, d.title, p) for d in docs for p in builder.chunker.split(d.body)]
    vocabulary = [w for _, _, p in pieces for w in p.split()] or ["noise"]
    cjk = any("\u3040" <= ch <= "\u9fff" for ch in vocabulary[0] + vocabulary[-1])
    noisy = set(rng.sample(range(len(pieces)), int(round(noise_share * len(pieces)))))
    texts, indexed = [], []
    for i, (_, title, piece) in enumerate(pieces):
        if i in noisy:
            words = rng.choices(vocabulary, k=max(4, len(piece.split())))
            piece = ("" if cjk else " ").join(words)
        texts.append(piece)
        indexed.append(piece if strip_titles else f"{title}\n{piece}")
    vectors = embed_chunks(embedder, ["" if strip_titles else title for _, title, _ in pieces], indexed)
    by_doc: dict[int, list[PreparedChunk]] = {}
    for (doc_id, _, _), text, search, v in zip(pieces, texts, indexed, vectors):
        chunks = by_doc.setdefault(doc_id, [])
        chunks.append(PreparedChunk(len(chunks), text, search, embedder.count_tokens(text), v.embedding,
                                    v.sentence_embeddings))
    for doc_id, chunks in by_doc.items():
        builder.write(doc_id, chunks)
    version = builder.finish()
    with store.session() as s:
        activate(s, version.id, actor=ACTOR, reason="degraded on purpose (benchmark)")
    return {"version": version.id, "from_version": base.id, "chunks": len(pieces), "noise_chunks": len(noisy),
            "fragment_tokens": fragment_tokens, "titles_stripped": strip_titles, "noise_share": noise_share}
