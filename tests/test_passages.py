"""What the model reads (agent.passages): the best sentences of the relevant chunks under a token budget."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from agent.passages import CHUNK_WEIGHT, GAP, Scored, as_read, scored_chunks, select_sentences


def words(text: str) -> int:
    return len(text.split())


def cut(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def chunk(number, sentences, scores, title="T"):
    return Scored(number, 100 + number, title, sentences, scores)


def test_the_best_sentence_comes_with_its_neighbours_in_document_order():
    c = chunk(1, ["One a.", "Two b.", "Three c.", "Four d.", "Five e."], [0.1, 0.2, 0.9, 0.3, 0.1])
    [p] = select_sentences([c], budget=10, count=words, truncate=cut)  # 4 for "[1] T" and the gap
    assert p.text == "Two b. Three c. Four d."
    assert p.trimmed and p.number == 1 and p.chunk_id == 101


def test_sentences_are_chosen_across_chunks_by_score_and_chunks_left_without_one_are_dropped():
    a = chunk(1, ["Alpha one.", "Alpha two.", "Alpha three.", "Alpha four."], [0.95, 0.1, 0.1, 0.1])
    b = chunk(2, ["Beta one.", "Beta two."], [0.2, 0.1])
    c = chunk(3, ["Gamma one.", "Gamma two.", "Gamma three."], [0.1, 0.2, 0.9])
    kept = select_sentences([a, b, c], budget=16, count=words, truncate=cut)
    assert [p.chunk_id for p in kept] == [101, 103]
    assert kept[0].text == "Alpha one. Alpha two."
    assert kept[1].text == "Gamma two. Gamma three."


def test_a_gap_between_chosen_sentences_is_marked():
    c = chunk(1, ["S0 x.", "S1 x.", "S2 x.", "S3 x.", "S4 x.", "S5 x.", "S6 x."], [0.9, 0, 0, 0, 0, 0, 0.8])
    [p] = select_sentences([c], budget=12, count=words, truncate=cut, neighbours=1)
    assert p.text == f"S0 x. S1 x. {GAP} S5 x. S6 x."


def test_a_sentence_another_passage_already_gave_is_not_repeated():
    a = chunk(1, ["Shared fact here.", "Only in a."], [0.9, 0.5])
    b = chunk(2, ["Shared fact here.", "Only in b."], [0.9, 0.6])
    kept = select_sentences([a, b], budget=100, count=words, truncate=cut)
    assert sum(p.text.count("Shared fact here.") for p in kept) == 1
    assert "Only in b." in " ".join(p.text for p in kept)


def test_a_budget_that_fits_everything_gives_whole_chunks_untrimmed():
    c = chunk(1, ["One.", "Two.", "Three."], [0.3, 0.2, 0.1])
    [p] = select_sentences([c], budget=1000, count=words, truncate=cut)
    assert p.text == "One. Two. Three." and not p.trimmed


def test_a_best_sentence_longer_than_the_budget_is_cut_not_lost():
    long = " ".join(f"w{i}" for i in range(200)) + "."
    c = chunk(1, ["Short one.", long], [0.1, 0.9])
    [p] = select_sentences([c], budget=40, count=words, truncate=cut)
    assert p.text.startswith("w0 w1") and words(p.text) <= 40 and p.trimmed


@pytest.mark.parametrize("budget", [1, 5])
def test_a_budget_too_small_for_anything_gives_nothing_rather_than_overflowing(budget):
    c = chunk(1, ["A sentence of six words here."], [0.9], title="A long title of many words")
    assert select_sentences([c], budget=budget, count=words, truncate=cut) == []


def test_a_hard_wrapped_sentence_is_read_whole_and_scored_by_its_best_fragment():
    text = ("Intro sentence here.\n`KAIZEN_LLM_URL` points every process at one\nmodel server instead of a model.\n"
            "Unrelated closing words.")
    c = chunk(1, ["Intro sentence here.", "`KAIZEN_LLM_URL` points every process at one",
                  "model server instead of a model.", "Unrelated closing words."], [0.1, 0.2, 0.9, 0.1])
    read = as_read(c, text)
    assert read.sentences[1] == "`KAIZEN_LLM_URL` points every process at one model server instead of a model."
    assert read.scores == [0.1, 0.9, 0.1]
    [p] = select_sentences([read], budget=16, count=words, truncate=cut, neighbours=0)
    assert p.text.startswith("`KAIZEN_LLM_URL` points")  # line pieces alone would begin mid-sentence
    assert as_read(c, "Another text. Of two sentences.") is c  # not this text's sentences: left as it is


def test_search_s_ranking_of_the_chunks_weighs_in_when_sentences_score_alike():
    """Two chunks whose best sentences are nearly as close to the question: the one search ranked far higher (BM25's
    clear winner) is read, although its sentence's cosine is a hundredth lower."""
    query = np.array([1.0, 0.0])

    def unit(cos):
        return [cos, float(np.sqrt(1 - cos * cos))]

    hits = [SimpleNamespace(chunk_id=1, title="Retrieval", text="Hybrid search finds passages.", score=0.9),
            SimpleNamespace(chunk_id=2, title="Calibration", text="Judges are calibrated first.", score=0.3)]
    by_chunk = {1: (["Hybrid search finds passages."], np.array([unit(0.89)])),
                2: (["Judges are calibrated first."], np.array([unit(0.90)]))}
    chunks = scored_chunks(hits, by_chunk, query)
    assert chunks[0].scores[0] == pytest.approx(0.89 + CHUNK_WEIGHT * 0.9)
    [p] = select_sentences(chunks, budget=9, count=words, truncate=cut)  # room for one passage
    assert p.chunk_id == 1


@pytest.mark.slow
def test_the_real_store_s_sentences_are_scored_with_the_question(clean_store, embedder, tmp_path):
    """Against the real database and embedder: the sentence that answers is the one given, whether its vectors
    are the stored ones or embedded now (indexed text that differs from the shown text)."""
    from agent.passages import best_sentences
    from store.ingest import ingest
    from store.kb_versions import active_version
    from store.search import search

    doc = tmp_path / "lighthouse.md"
    doc.write_text(
        "# Kestrel Point\n\nThe lighthouse at Kestrel Point was painted red in 1911. Its lamp burned whale oil at "
        "first. The keeper's cottage has four rooms. Gulls nest on the rocks below. The nearest village is "
        "Harlow, six miles north. Ferries stopped calling there in 1962.\n", encoding="utf-8")
    ingest(clean_store, embedder, [str(doc)])
    question = "When did ferries stop calling at Kestrel Point?"
    with clean_store.session() as s:
        hits = search(s, embedder, question, k=1, settings=clean_store.settings, version=active_version(s))
    kept = best_sentences(clean_store, embedder, question, hits, 16, words, cut)
    assert "1962" in kept[0].text and "whale oil" not in kept[0].text
    hits[0].text = hits[0].text.replace("The keeper's cottage has four rooms. ", "")  # no longer the stored ones
    kept = best_sentences(clean_store, embedder, question, hits, 16, words, cut)
    assert "1962" in kept[0].text and "whale oil" not in kept[0].text


@pytest.mark.slow
def test_a_chunk_with_learned_questions_reads_its_stored_vectors(clean_store, embedder, tmp_path):
    """Questions learned into the index follow the shown text, so the stored sentence vectors begin with the shown
    sentences' own: they are used as they are, and nothing is embedded at question time."""
    import sqlalchemy as sa

    from agent.passages import best_sentences
    from store.indexing import embed_chunks, vector_params
    from store.ingest import ingest
    from store.kb_versions import active_version
    from store.search import search

    doc = tmp_path / "lighthouse.md"
    doc.write_text("# Kestrel Point\n\nThe lighthouse at Kestrel Point was painted red in 1911. Its lamp burned whale "
                   "oil at first. Ferries stopped calling there in 1962.\n", encoding="utf-8")
    ingest(clean_store, embedder, [str(doc)])
    question = "When did ferries stop calling at Kestrel Point?"
    with clean_store.session() as s:
        [hit] = search(s, embedder, question, k=1, settings=clean_store.settings, version=active_version(s))
        search_text = s.execute(sa.text("SELECT search_text FROM chunks WHERE id = :id"), {"id": hit.chunk_id}).scalar()
        learned = f"{search_text}\nQuestions this answers:\nWhich colour is the Kestrel Point lighthouse?"
        [vectors] = embed_chunks(embedder, [hit.title], [learned])
        s.execute(sa.text("UPDATE chunks SET search_text = :st, embedding = CAST(:embedding AS vector), "
                          "sentence_embeddings = CAST(:sentence_embeddings AS vector[]) WHERE id = :id"),
                  {"st": learned, "id": hit.chunk_id, **vector_params(vectors)})

    class Counting:
        embedded: list[str] = []

        def embed_queries(self, texts):
            return embedder.embed_queries(texts)

        def embed_passages(self, texts):
            self.embedded.extend(texts)
            return embedder.embed_passages(texts)

    counting = Counting()
    kept = best_sentences(clean_store, counting, question, [hit], 16, words, cut)
    assert counting.embedded == []  # the stored vectors served
    assert "1962" in kept[0].text and "Which colour" not in kept[0].text
