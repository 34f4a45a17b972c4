"""Text prepared for PostgreSQL full-text search, in any language.

PostgreSQL's text search configurations split words on spaces and punctuation, which leaves Japanese (and
Chinese) text as one enormous "word". Runs of CJK characters are therefore rewritten as overlapping character
bigrams ("梅雨入り" -> "梅雨 雨入 入り"), the usual approach of CJK search engines; the rest of the text passes
through so that the configured configuration (default `english`) still stems and drops stop words. The same
function prepares documents and queries, so both sides agree.
"""

from __future__ import annotations

import re
import unicodedata

_CJK = (
    "\u3040-\u309f"  # Hiragana
    "\u30a0-\u30ff"  # Katakana
    "\u3400-\u4dbf"  # CJK Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\uac00-\ud7af"  # Hangul syllables
    "\u3005\u3006"  # 々 〆
)
_CJK_RUN = re.compile(f"[{_CJK}]+")


def _bigrams(run: str) -> str:
    if len(run) == 1:
        return run
    return " ".join(run[i : i + 2] for i in range(len(run) - 1))


def lexical_text(text: str) -> str:
    """The text to hand to to_tsvector(): NFKC-normalised, CJK runs as bigrams separated by spaces."""
    normal = unicodedata.normalize("NFKC", text)
    return _CJK_RUN.sub(lambda m: f" {_bigrams(m.group(0))} ", normal)


def cjk_ratio(text: str) -> float:
    """Share of the non-space characters that are CJK; used to describe a query's script."""
    chars = [ch for ch in text if not ch.isspace()]
    if not chars:
        return 0.0
    return sum(1 for ch in chars if _CJK_RUN.match(ch)) / len(chars)
