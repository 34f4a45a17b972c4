"""What the model reads: the relevant chunks, numbered [1]..[n], cut down to the sentences that answer.

On two cores reading the prompt is most of the wait for the first token (Qwen2.5-1.5B reads about 75 prompt tokens
a second here), and a retrieved chunk is mostly sentences about something else. So each relevant chunk is reduced
to its best-matching sentences, with the sentence before and after each (a "he" or "it" needs its antecedent),
chosen across all the chunks by how well they match the question (the same e5 vectors search scored them with),
until `KAIZEN_CONTEXT_TOKENS` tokens of the chat model are used. A sentence that an earlier passage already gave
is not given twice, and a chunk none of whose sentences made it is left out. The citations and the sources shown to
the person stay the whole chunks. `KAIZEN_CONTEXT_TOKENS=0` gives whole chunks, cut only to fit the window.

A sentence's score is its cosine with the question plus CHUNK_WEIGHT times its chunk's hybrid search score. The e5
cosines of sentences on one topic sit within a few hundredths of each other, so on cosine alone the order among
them is mostly noise, and what search knew (BM25's clear winner, the fused rank) was thrown away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import sqlalchemy as sa

from store.indexing import load_chunk_vectors, search_text_for, sentence_texts
from store.sentences import reading_units, split_sentences

from . import prompts
from .nodes_checks import redact_injections

GAP = "…"  # between sentences of one chunk that were not next to each other
CHECK_RESERVE = 64  # tokens kept free after the answer for the self-check question and its JSON reply
# What a chunk's fused search score (0-1) adds to each of its sentences' cosines. Measured offline on what the model
# reads (research script, no generation), 0 -> 0.1: JSQuAD dev 0-299 answer span in the context 0.943 -> 0.963,
# dev 1000-1299 (not tuned on) 0.887 -> 0.900; ClapNQ dev reference-token recall 0.916 -> 0.920; the sample KB's
# 15 answerable questions 0.556 -> 0.638. Larger weights gained nothing more on JSQuAD and lost on the docs.
CHUNK_WEIGHT = 0.1


@dataclass
class Scored:
    """A relevant chunk as sentences, each with its score against the question."""

    number: int
    chunk_id: int
    title: str
    sentences: list[str]
    scores: list[float]


def select_sentences(chunks: Sequence[Scored], budget: int, count: Callable[[str], int],
                     truncate: Callable[[str, int], str], neighbours: int = 1) -> list[prompts.Passage]:
    """The best sentences (and their neighbours) of all `chunks` within `budget` tokens, each chunk's in its own
    order; chunks left without a sentence are dropped, the others keep their numbers for now (renumbered later).
    The best sentence of all is always given, cut to the budget if it alone is longer."""
    ranked = sorted(((s, c, i) for c, chunk in enumerate(chunks) for i, s in enumerate(chunk.scores)),
                    key=lambda t: -t[0])
    chosen: list[set[int]] = [set() for _ in chunks]
    seen: set[str] = set()
    used = 0
    cut: dict[tuple[int, int], str] = {}
    for _, c, i in ranked:
        chunk = chunks[c]
        if i in chosen[c] or chunk.sentences[i].strip() in seen:
            continue
        for j in [i, *(i - d for d in range(1, neighbours + 1)), *(i + d for d in range(1, neighbours + 1))]:
            if not 0 <= j < len(chunk.sentences) or j in chosen[c]:
                continue
            text = chunk.sentences[j].strip()
            if text in seen:
                continue
            cost = count(text + " ") + (0 if chosen[c] else count(f"[{chunk.number}] {chunk.title}\n\n") + 2)
            if used + cost > budget:
                if used == 0 and j == i:  # nothing given yet: the best sentence, cut to what fits
                    room = budget - (cost - count(text + " "))
                    if room > 8:
                        cut[(c, j)] = truncate(text, room)
                        chosen[c].add(j)
                        used = budget
                if j == i:
                    break
                continue
            chosen[c].add(j)
            seen.add(text)
            used += cost
        if used >= budget:
            break
    kept = []
    for c, chunk in enumerate(chunks):
        if not chosen[c]:
            continue
        order = sorted(chosen[c])
        pieces = []
        for k, j in enumerate(order):
            if k and j != order[k - 1] + 1:
                pieces.append(GAP)
            pieces.append(cut.get((c, j), chunk.sentences[j].strip()))
        trimmed = len(order) < len(chunk.sentences) or bool(cut)
        kept.append(prompts.Passage(chunk.number, chunk.chunk_id, chunk.title, " ".join(pieces), trimmed))
    return kept


def _sentence_vectors(session, embedder, hits) -> dict[int, tuple[list[str], np.ndarray]]:
    """Each hit's sentences (of the text shown, which the model reads) and their unit vectors: the stored ones when
    the indexed text is the shown text (the same sentences) or begins with it (questions learned into the index
    follow the shown text), else embedded now."""
    stored = load_chunk_vectors(session, [h.chunk_id for h in hits])
    split = {h.chunk_id: split_sentences(h.text) or [h.text] for h in hits}
    extended = _indexed_sentences(session, [h for h in hits if h.chunk_id in stored and
                                            len(stored[h.chunk_id].sentence_embeddings) > len(split[h.chunk_id])])
    out, missing = {}, []
    for h in hits:
        sentences = split[h.chunk_id]
        vectors = stored.get(h.chunk_id)
        shown = [search_text_for(h.title or "", s) for s in sentences]
        if vectors is not None and len(vectors.sentence_embeddings) == len(sentences):
            out[h.chunk_id] = (sentences, vectors.sentence_embeddings)
        elif vectors is not None and extended.get(h.chunk_id, [])[: len(shown)] == shown:
            out[h.chunk_id] = (sentences, vectors.sentence_embeddings[: len(shown)])
        else:
            missing.append((h, sentences))
    if missing:
        flat = [search_text_for(h.title or "", s) for h, sentences in missing for s in sentences]
        vecs = embedder.embed_passages(flat)
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)
        at = 0
        for h, sentences in missing:
            out[h.chunk_id] = (sentences, vecs[at : at + len(sentences)])
            at += len(sentences)
    return out


def _indexed_sentences(session, hits) -> dict[int, list[str]]:
    """What was embedded, sentence by sentence, for each of these hits' indexed text (store.indexing)."""
    if not hits:
        return {}
    rows = session.execute(sa.text("SELECT id, search_text FROM chunks WHERE id = ANY(:ids)"),
                           {"ids": [h.chunk_id for h in hits]}).all()
    titles = {h.chunk_id: h.title or "" for h in hits}
    return {chunk_id: sentence_texts(titles[chunk_id], search_text) for chunk_id, search_text in rows}


def best_sentences(store, embedder, question: str, hits, budget: int, count, truncate) -> list[prompts.Passage]:
    """The relevant `hits` (in rank order, numbered from 1) cut to their best sentences for `question`."""
    query = embedder.embed_queries([question[:4000]])[0]
    query = query / (np.linalg.norm(query) or 1.0)
    with store.session() as session:
        by_chunk = _sentence_vectors(session, embedder, hits)
    return select_sentences(scored_chunks(hits, by_chunk, query), budget, count, truncate)


def scored_chunks(hits, by_chunk: dict[int, tuple[list[str], np.ndarray]], query: np.ndarray) -> list[Scored]:
    """Each hit as sentences scored for the unit `query`: cosine plus CHUNK_WEIGHT times the hit's search score."""
    chunks = []
    for number, h in enumerate(hits, start=1):
        sentences, vectors = by_chunk[h.chunk_id]
        bonus = CHUNK_WEIGHT * float(h.score or 0.0)
        chunks.append(as_read(Scored(number, h.chunk_id, h.title or "", sentences,
                                     [float(v) + bonus for v in vectors @ query]), h.text))
    return chunks


def as_read(chunk: Scored, text: str) -> Scored:
    """`chunk` with the line fragments of each hard-wrapped sentence of `text` joined into the whole sentence
    (store.sentences.reading_units), scored by its best fragment: the model reads sentences, not the line pieces
    the vectors were made of. A chunk whose sentences are not `text`'s split is returned as it is."""
    units = reading_units(text)
    if sum(len(u) for u in units) != len(chunk.sentences) or all(len(u) == 1 for u in units):
        return chunk
    return Scored(chunk.number, chunk.chunk_id, chunk.title,
                  [" ".join(chunk.sentences[i].strip() for i in unit) for unit in units],
                  [max(chunk.scores[i] for i in unit) for unit in units])


def choose(hits, question: str, ctx) -> dict:
    """What the model will read of the relevant `hits` for `question`: their best sentences (or whole chunks),
    numbered [1]..[n] without gaps, injected instructions redacted. A plain dict (it is kept in the graph's
    state, so the grade and the answer, and a stricter retry, read one selection made once):
    {"chunk_ids": the relevant hits', "question", "passages": [{number, chunk_id, title, text, trimmed}],
    "redacted": how many instruction-like sentences were taken out}."""
    relevant = [h for h in hits if h.relevant]
    budget = ctx.settings.context_tokens
    llm = ctx.llm
    if budget and relevant:
        chosen = best_sentences(ctx.store, ctx.embedder, question, relevant, budget, llm.count_tokens, llm.truncate)
    else:
        chosen = [prompts.Passage(n, h.chunk_id, h.title or "", h.text) for n, h in enumerate(relevant, start=1)]
    redacted = 0
    passages = []
    for number, p in enumerate(chosen, start=1):  # renumbered: the model sees [1]..[n] without gaps
        text, n = redact_injections(p.text)
        redacted += n
        passages.append({"number": number, "chunk_id": p.chunk_id, "title": p.title, "text": text,
                         "trimmed": p.trimmed})
    return {"chunk_ids": [h.chunk_id for h in relevant], "question": question, "passages": passages,
            "redacted": redacted}


def matches(selection: dict | None, hits, question: str) -> bool:
    """Whether `selection` was made for these hits' relevant chunks and this question."""
    return bool(selection) and selection.get("question") == question and \
        selection.get("chunk_ids") == [h.chunk_id for h in hits if h.relevant]


def build_passages(hits, question: str, ctx, strict: bool,
                   selection: dict | None = None) -> tuple[list[dict], int, list[dict], int]:
    """The answer prompt for the relevant hits: their selection (`choose`, made now unless `selection` is the one
    for these hits and question), fitted into the context window left by the (strict or plain) answer prompt.
    Returns (passages, how many chunks were cut or dropped, the answer messages, injections redacted)."""
    llm = ctx.llm
    if not matches(selection, hits, question):
        selection = choose(hits, question, ctx)
    candidates = [prompts.Passage(p["number"], p["chunk_id"], p["title"], p["text"], p["trimmed"])
                  for p in selection["passages"]]
    skeleton = prompts.answer_messages(question, [], strict=strict)
    window = llm.n_ctx - llm.settings.max_tokens - llm.count_prompt(skeleton) - CHECK_RESERVE
    kept, _ = prompts.fit_passages(candidates, max(0, window), llm.count_tokens, llm.truncate)
    texts = {p.chunk_id: p.text for p in candidates}
    cut = len(candidates) - sum(1 for p in kept if p.text == texts[p.chunk_id])  # by the window, not the budget
    by_chunk = {h.chunk_id: h for h in hits if h.relevant}
    passages = [
        {"number": p.number, "chunk_id": p.chunk_id, "document_id": by_chunk[p.chunk_id].document_id,
         "source_uri": by_chunk[p.chunk_id].source_uri, "title": p.title, "text": p.text, "trimmed": p.trimmed}
        for p in kept
    ]
    messages = prompts.answer_messages(question, kept, strict=strict)
    return passages, cut, messages, selection["redacted"]
