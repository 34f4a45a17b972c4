"""`store.indexing.prepare`: embedding runs one batch ahead of the caller, and nothing is reordered or lost."""

import threading

import numpy as np
import pytest

from store.chunking import Chunker
from store.indexing import embed_chunks, prepare, search_text_for


class Doc:
    def __init__(self, title, text):
        self.title, self.text = title, text


class RecordingEmbedder:
    """Real vectors are not the point here: each text maps to a vector that encodes its position, and every call
    records which thread ran it."""

    name, dim = "recording", 2

    def __init__(self, fail_on_call=None):
        self.calls, self.threads, self.fail_on_call = [], [], fail_on_call
        self.seen = 0

    def embed_passages(self, texts):
        self.calls.append(list(texts))
        self.threads.append(threading.current_thread().name)
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("embedding failed")
        out = np.array([[self.seen + i, len(t)] for i, t in enumerate(texts)], dtype=np.float32)
        self.seen += len(texts)
        return out

    def count_tokens(self, text):
        return len(text.split())


def test_documents_come_back_in_order_with_their_own_vectors():
    embedder = RecordingEmbedder()
    chunker = Chunker(embedder.count_tokens, chunk_tokens=4, overlap=0)
    docs = [(i, Doc(f"T{i}", " ".join(f"w{i}x{j}" for j in range(3 + i % 5)))) for i in range(23)]
    out = list(prepare(docs, chunker, embedder, batch_chunks=5))
    assert [key for key, _ in out] == list(range(23))
    flat = [c for _, chunks in out for c in chunks]
    # one sentence a chunk here: each chunk got its own row, and its vector is that row normalised
    assert [int(c.sentence_embeddings[0][0]) for c in flat] == list(range(len(flat)))
    for c in flat:
        np.testing.assert_allclose(c.embedding, c.sentence_embeddings[0] / np.linalg.norm(c.sentence_embeddings[0]))
    for key, chunks in out:
        assert all(c.search_text.startswith(f"T{key}\n") for c in chunks)
        assert " ".join(c.text for c in chunks) == docs[key][1].text
    assert len(embedder.calls) > 3  # several batches, so the pipeline really ran ahead
    assert all(name.startswith("kaizen-embed") for name in embedder.threads)


def test_an_embedding_error_reaches_the_caller_after_the_earlier_documents():
    embedder = RecordingEmbedder(fail_on_call=3)
    chunker = Chunker(embedder.count_tokens, chunk_tokens=4, overlap=0)
    docs = [(i, Doc("", "one two three")) for i in range(12)]
    got = []
    with pytest.raises(RuntimeError, match="embedding failed"):
        for key, _ in prepare(docs, chunker, embedder, batch_chunks=2):
            got.append(key)
    assert got == [0, 1, 2, 3]  # the two batches embedded before the failure were all delivered


def test_a_chunk_is_embedded_sentence_by_sentence_with_its_title():
    embedder = RecordingEmbedder()
    title = "梅雨"
    body = "梅雨は東アジアの気象現象で、5月から7月の雨の多い期間のこと。雨季の一種である。\nIt rains a lot. Yes."
    [vectors] = embed_chunks(embedder, [title], [search_text_for(title, body)])
    assert embedder.calls == [[
        "梅雨は東アジアの気象現象で、5月から7月の雨の多い期間のこと。",  # already begins with its title
        "梅雨\n雨季の一種である。",
        "梅雨\nIt rains a lot. Yes.",  # "Yes." alone is too short to be a sentence
    ]]
    assert vectors.sentence_embeddings.shape == (3, 2)
    mean = vectors.sentence_embeddings.mean(axis=0)
    np.testing.assert_allclose(vectors.embedding, mean / np.linalg.norm(mean), rtol=1e-6)
