"""Cheap signals the graph decides with, none of which needs an LLM call.

- Retrieval relevance: the e5 cosine of the query and the chunk (the store's vector score), helped by BM25
  presence (the chunk ranks in the full-text top 2).
- Grounding: how much of each answer sentence is found in the passages it cites (content words; CJK as
  character bigrams), and the e5 cosine of the sentence with those passages' stored embeddings.
- Specifics: numbers, capitalised names and katakana words of the answer that appear nowhere in what the model
  read or was asked (an invented name or year, which a paraphrase's cosine can still pass).
- Prompt-injection guard: instruction-like sentences aimed at the assistant are redacted from document text
  before it enters the prompt (the system prompt also says document text is data).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from store import scripts

from .prompts import strip_citations

_STOP = set(
    """a an the and or but if of to in on at by for with from as is are was were be been being it its this that
    these those there here what which who whom whose when where why how do does did doing done have has had
    having not no nor so than too very can could should would may might must will shall just also about into
    over under again further then once only own same such both each few more most other some any all i me my
    we our you your he him his she her they them their theirs itself themselves up down out off above below
    between through during before after until while because per via one two""".split()
)
_WORD = re.compile(r"\w+", re.U)
_CJK = re.compile(f"[{scripts.JAPANESE}{scripts.COMPATIBILITY_IDEOGRAPHS}{scripts.HALFWIDTH_KATAKANA}]+")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|\n+|(?<=[。！？])")


def content_tokens(text: str, cjk_chars: bool = False) -> set[str]:
    """Lower-cased content words (stop words and 1-letter words dropped; crude plural folding) plus CJK bigrams
    (and a CJK character standing alone). With `cjk_chars`, every CJK character is a token too: the tokens of a
    passage, so that an answer's lone character ("1900年": the year's counter) is found in "1900年に…"."""
    text = unicodedata.normalize("NFKC", text).lower()
    tokens: set[str] = set()
    for run in _CJK.findall(text):
        if len(run) == 1 or cjk_chars:
            tokens.update(run)
        tokens.update(run[i:i + 2] for i in range(len(run) - 1))
    for word in _WORD.findall(_CJK.sub(" ", text)):
        if len(word) < 2 or word in _STOP:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        tokens.add(word)
    return tokens


def sentences(text: str) -> list[str]:
    parts = [p.strip() for p in _SENTENCE.split(text) if p and p.strip()]
    return [p for p in parts if len(content_tokens(strip_citations(p))) >= 1]


@dataclass
class SentenceSupport:
    sentence: str
    cited: list[int]
    best_passage: int | None
    lexical: float
    cosine: float | None = None

    def supported(self, lexical_min: float, cosine_min: float) -> bool:
        return self.lexical >= lexical_min or (self.cosine is not None and self.cosine >= cosine_min)


@dataclass
class Grounding:
    sentences: list[SentenceSupport] = field(default_factory=list)
    lexical: float = 0.0  # token-weighted share of answer words found in the supporting passages
    supported_share: float = 0.0  # share of sentences supported (lexically or by embedding)

    def as_dict(self) -> dict:
        return {
            "lexical": round(self.lexical, 3),
            "supported_share": round(self.supported_share, 3),
            "sentences": [
                {"text": s.sentence[:200], "cited": s.cited, "best_passage": s.best_passage,
                 "lexical": round(s.lexical, 3), "cosine": None if s.cosine is None else round(s.cosine, 3)}
                for s in self.sentences
            ],
        }


_CITE = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")

LEXICAL_MIN = 0.6  # a sentence whose content words are mostly in a passage is supported by it
COSINE_MIN = 0.88  # e5 vector score (store.indexing.ChunkVectors.score) that counts as a paraphrase of the passage


def grounding(answer: str, passages: Sequence[dict], embedder=None, passage_vectors: dict | None = None,
              sentence_weight: float = 0.8) -> Grounding:
    """How well the answer's sentences are supported by the passages they cite (or, uncited, by any passage).
    `passage_vectors` maps passage numbers to their stored ChunkVectors."""
    numbers = [p["number"] for p in passages]
    tokens_by_number = {p["number"]: content_tokens(f"{p.get('title', '')} {p['text']}", cjk_chars=True)
                        for p in passages}
    result = Grounding()
    weights = []
    for raw in sentences(answer):
        cited = [int(n) for m in _CITE.finditer(raw) for n in m.group(1).split(",") if int(n) in tokens_by_number]
        words = content_tokens(strip_citations(raw))
        if not words:
            continue
        candidates = cited or numbers
        best, best_share = None, 0.0
        for n in candidates:
            share = len(words & tokens_by_number[n]) / len(words)
            if share > best_share:
                best, best_share = n, share
        result.sentences.append(SentenceSupport(raw, cited, best, best_share))
        weights.append(len(words))
    if not result.sentences:
        return result
    if embedder is not None and passage_vectors:
        texts = [strip_citations(s.sentence) for s in result.sentences]
        vectors = embedder.embed_queries(texts)
        for s, vec in zip(result.sentences, vectors):
            vec = vec / (np.linalg.norm(vec) or 1.0)
            candidates = [n for n in (s.cited or numbers) if n in passage_vectors]
            if not candidates:
                continue
            sims = [passage_vectors[n].score(vec, sentence_weight) for n in candidates]
            best = int(np.argmax(sims))
            s.cosine = sims[best]
            if s.lexical < LEXICAL_MIN and s.cosine >= COSINE_MIN:
                s.best_passage = candidates[best]
    total = sum(weights)
    result.lexical = sum(s.lexical * w for s, w in zip(result.sentences, weights)) / total
    result.supported_share = sum(
        w for s, w in zip(result.sentences, weights) if s.supported(LEXICAL_MIN, COSINE_MIN)
    ) / total
    return result


# -- specifics -------------------------------------------------------------------------------------------------------
_NAME = re.compile(r"(?<!\w)[A-Z][\w-]*[A-Za-z]")  # a capitalised Latin word ("Point's": "Point")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_KATAKANA_WORD = re.compile(r"[ァ-ヺー]{3,}")  # names and loanwords; shorter runs are mostly endings
_AFTER_SENTENCE_START = re.compile(r"(?:^|[.!?。！？:]\s+|\n)[\s\"'(\[*`]*$")
_WORD_PARTS = re.compile(r"[^\W_]+", re.U)  # "KAIZEN_LLM_URL" has the word "url"


_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60",
                                                     "seventy": "70", "eighty": "80", "ninety": "90",
                                                     "hundred": "100", "thousand": "1000"}


def _digits(text: str) -> set[str]:
    """The numbers written in digits in `text`, without thousands separators or leading zeros."""
    return {m.group(0).replace(",", "").rstrip(".").lstrip("0") or "0" for m in _NUMBER.finditer(text)}


def _numbers(text: str) -> set[str]:
    """`_digits`, and the numbers spelled as a word ("three": "3")."""
    return _digits(text) | {_NUMBER_WORDS[w] for w in _WORD_PARTS.findall(text.lower()) if w in _NUMBER_WORDS}


def novel_specifics(answer: str, passages: Sequence[dict], asked: Sequence[str]) -> list[str]:
    """The answer's numbers, capitalised names (not at a sentence's start) and katakana words that appear in none
    of the passages the model read (title and text) nor in what was asked: specifics it brought from elsewhere.
    On the dev answers looked at (docs/benchmarks.md) these were wrong answers; a paraphrase never needs one."""
    answer = unicodedata.normalize("NFKC", strip_citations(answer))
    read = unicodedata.normalize("NFKC", "\n".join([*asked, *(f"{p.get('title') or ''}\n{p['text']}"
                                                              for p in passages)]))
    words = {w.lower() for w in _WORD_PARTS.findall(read)}
    novel = [m.group(0) for m in _NAME.finditer(answer)
             if not _AFTER_SENTENCE_START.search(answer[: m.start()])
             and not all(part.lower() in words for part in _WORD_PARTS.findall(m.group(0)))]
    novel += sorted(_digits(answer) - _numbers(read))
    novel += [m.group(0) for m in _KATAKANA_WORD.finditer(answer) if m.group(0) not in read]
    return list(dict.fromkeys(novel))


# -- prompt injection -------------------------------------------------------------------------------------------
_INJECTION = re.compile(
    r"[^.!?\n。]*\b(?:ignore|disregard|forget|override|bypass)\b[^.!?\n。]{0,30}"
    r"\b(?:previous|prior|above|earlier|preceding|all|any|your|system|original|these|those|other)\b[^.!?\n。]{0,30}"
    r"\b(?:instructions?|rules?|prompts?|directions?|guidelines?|system message)\b[^.!?\n。]*[.!?。]?"
    r"|[^.!?\n。]*\b(?:you are now|act as|pretend to be|from now on,? you|new instructions?:)[^.!?\n。]*[.!?。]?"
    r"|[^.!?\n。]*\b(?:you|the assistant|the ai|the model|the chatbot)\s+(?:must|should|shall|will|have to)\s+"
    r"(?:now\s+|always\s+|only\s+)*"
    r"(?:answer|reply|respond|say|output|print|write)\b[^.!?\n。]*[.!?。]?"
    r"|[^.!?\n。]*(?:以前の指示|前の指示|これまでの指示)[^。\n]*[。]?",
    re.I,
)
REDACTED = "[instruction-like text removed]"


def redact_injections(text: str) -> tuple[str, int]:
    """Replace instruction-like sentences aimed at the assistant with a marker; return (text, how many)."""
    count = 0

    def _sub(match: re.Match) -> str:
        nonlocal count
        count += 1
        return " " + REDACTED + " "

    return _INJECTION.sub(_sub, text), count
