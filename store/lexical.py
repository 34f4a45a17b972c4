"""Text prepared for PostgreSQL full-text search, in any language.

PostgreSQL's text search configurations split words on spaces and punctuation, which leaves Japanese (and
Chinese) text as one enormous "word". Runs of CJK characters are therefore rewritten as overlapping character
bigrams ("梅雨入り" -> "梅雨 雨入 入り"), the usual approach of CJK search engines; the rest of the text passes
through so that the configured configuration (default `english`) still stems and drops stop words. The same
function prepares documents and queries, so both sides agree.

Japanese text also gets its content words: a morphological analyser (MeCab through `fugashi`, with the UniDic
dictionary that the `unidic-lite` wheel ships, so nothing is downloaded) splits the text into words, particles,
auxiliaries and punctuation are dropped, and each remaining word is added in its dictionary form (UniDic's lemma:
"始まっ" -> "始まる"; numbers and latin words in the Japanese text count as words too) behind a "w" marker ("w始まる"),
so that words and bigrams are separate terms. Bigrams find
any substring; words weigh a whole-word match and match across inflections. On JSQuAD dev, bigrams plus words
rank the gold passage first for 91.9% of questions with BM25 alone, against 90.8% for bigrams alone.

Which of these is used is the KB version's *lexical scheme* (kb_versions.lexical_scheme): the tsvectors of a
version were made with one scheme and its queries must be prepared with the same one, so a KB built before a
scheme change keeps working (with its own scheme) until `kaizen reindex` rebuilds it with the current one.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from . import scripts
from .errors import KaizenError

# The index's class: part of every stored tsvector, so it does not change with the other uses (store.scripts).
_CJK = scripts.KANA + scripts.IDEOGRAPHS + scripts.COMPATIBILITY_IDEOGRAPHS + scripts.HANGUL + scripts.ITERATION_MARKS
_CJK_RUN = re.compile(f"[{_CJK}]+")
_KANA = re.compile(f"[{scripts.KANA}]")
_WORD = re.compile(r"\w+")

BIGRAMS = "cjk-bigram"  # CJK runs as overlapping character bigrams (every KB version before lexical schemes)
BIGRAMS_WORDS = "cjk-bigram-words"  # bigrams, plus the dictionary forms of Japanese content words
SCHEMES = (BIGRAMS, BIGRAMS_WORDS)
CURRENT_SCHEME = BIGRAMS_WORDS

WORD_MARK = "w"  # a latin letter: PostgreSQL's parser keeps "w梅雨" one word, distinct from the bigram "梅雨"
# UniDic parts of speech that carry no content: particles, auxiliary verbs, symbols, punctuation, spaces.
_FUNCTION_POS = frozenset({"助詞", "助動詞", "補助記号", "記号", "空白"})


class UnknownLexicalScheme(KaizenError, ValueError):
    pass


def _bigrams(run: str) -> str:
    if len(run) == 1:
        return run
    return " ".join(run[i : i + 2] for i in range(len(run) - 1))


@lru_cache(maxsize=1)
def _tagger():
    import fugashi
    import unidic_lite

    # -r /dev/null: no mecabrc needed; the dictionary comes from the unidic-lite wheel.
    return fugashi.Tagger(f'-r /dev/null -d "{unidic_lite.DICDIR}"')


def japanese_words(text: str) -> list[str]:
    """Dictionary forms of the content words of `text`: those written in CJK characters, and numbers and latin
    words (years, acronyms, names), which are strong evidence in Japanese text."""
    words = []
    for word in _tagger()(text):
        feature = word.feature
        if feature.pos1 in _FUNCTION_POS:
            continue
        # UniDic's lemma of a loanword carries its origin ("ドローイング-drawing"): keep the Japanese part.
        lemma = (feature.lemma or "").split("-", 1)[0]
        for form in (lemma, word.surface):
            if form and (_CJK_RUN.fullmatch(form) or _WORD.fullmatch(form)):
                words.append(form.lower())
                break
    return words


def lexical_text(text: str, scheme: str = CURRENT_SCHEME) -> str:
    """The text to hand to to_tsvector(): NFKC-normalised, CJK runs as bigrams separated by spaces, and with
    the `cjk-bigram-words` scheme the marked content words of Japanese text appended."""
    if scheme not in SCHEMES:
        raise UnknownLexicalScheme(
            f"lexical scheme {scheme!r} is not one this Kaizen knows ({', '.join(SCHEMES)}); "
            "upgrade Kaizen or run `kaizen reindex`"
        )
    normal = unicodedata.normalize("NFKC", text)
    out = _CJK_RUN.sub(lambda m: f" {_bigrams(m.group(0))} ", normal)
    if scheme == BIGRAMS_WORDS and _KANA.search(normal):
        # Only text with kana is Japanese; Chinese and Korean keep bigrams alone.
        words = japanese_words(normal)
        if words:
            out = f"{out} " + " ".join(WORD_MARK + w for w in words)
    return out


def cjk_ratio(text: str) -> float:
    """Share of the non-space characters that are CJK; used to describe a query's script."""
    chars = [ch for ch in text if not ch.isspace()]
    if not chars:
        return 0.0
    return sum(1 for ch in chars if _CJK_RUN.match(ch)) / len(chars)
