"""The local multilingual-e5 embedder as a ragas embedding (`ragas.embeddings.BaseRagasEmbedding`).

Relevancy metrics compare a question with questions the judge wrote back from the answer, and semantic
similarity compares an answer with a reference: both sides are the same kind of text, so both are embedded with
e5's symmetric "query: " prefix (`embed_queries`). Vectors are normalised, so cosine = dot product."""

from __future__ import annotations

from typing import Any

from ragas.embeddings.base import BaseRagasEmbedding


class E5RagasEmbeddings(BaseRagasEmbedding):
    def __init__(self, embedder):
        super().__init__(cache=None)
        self.embedder = embedder

    @property
    def name(self) -> str:
        return getattr(self.embedder, "name", type(self.embedder).__name__)

    def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        if not texts:
            return []
        return [[float(x) for x in row] for row in self.embedder.embed_queries(list(texts))]

    def embed_text(self, text: str, **kwargs: Any) -> list[float]:
        return self.embed_texts([text])[0]

    async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
        return self.embed_text(text)

    async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
        return self.embed_texts(texts)
