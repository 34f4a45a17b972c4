"""How text becomes full-text search terms (store.lexical), without a database."""

from __future__ import annotations

import pytest

from store.lexical import BIGRAMS, BIGRAMS_WORDS, CURRENT_SCHEME, UnknownLexicalScheme, japanese_words, lexical_text


def test_bigram_scheme_is_unchanged():
    # KB versions indexed before lexical schemes were recorded hold exactly these terms; their queries must too.
    assert lexical_text("梅雨入り（つゆいり）は5月", BIGRAMS) == " 梅雨 雨入 入り ( つゆ ゆい いり ) は 5 月 "


def test_current_scheme_adds_marked_content_words_in_dictionary_form():
    assert CURRENT_SCHEME == BIGRAMS_WORDS
    terms = lexical_text("梅雨の時期が始まった。").split()
    assert terms[:3] == ["梅雨", "雨の", "の時"] and "始ま" in terms
    # Inflected "始まっ" is indexed as "始まる"; particles (の, が) and auxiliaries (た) are not words.
    assert [t for t in terms if t.startswith("w")] == ["w梅雨", "w時期", "w始まる"]


def test_loanword_lemma_keeps_the_japanese_part_and_latin_words_count():
    assert japanese_words("ドローイングとJCPは1994年") == ["ドローイング", "jcp", "1994", "年"]


def test_text_without_kana_gets_bigrams_alone():
    for text in ("Green tea is made from leaves", "中国的首都是北京", "한국어 문장"):
        assert lexical_text(text) == lexical_text(text, BIGRAMS)


def test_unknown_scheme_names_reindex():
    with pytest.raises(UnknownLexicalScheme, match="kaizen reindex"):
        lexical_text("梅雨", "some-future-scheme")
