"""The Unicode ranges of the scripts written without spaces between words, each named once.

What counts as "CJK" differs by use, and each use composes its own class from these names: the full-text index
treats Hangul like kanji (store.lexical; changing its class would change every stored tsvector), while Japanese
detection must not count Hangul (a Korean question is not Japanese: agent.prompts), and a line that ends in
Japanese script or full-width punctuation ends its paragraph (store.sentences) where a Korean line does not.
Each constant is a regular-expression character-class body (ranges without the brackets).
"""

HIRAGANA = "\u3040-\u309f"
KATAKANA = "\u30a0-\u30ff"
KANA = HIRAGANA + KATAKANA
HALFWIDTH_KATAKANA = "\uff66-\uff9f"
IDEOGRAPHS = "\u3400-\u4dbf\u4e00-\u9fff"  # CJK Unified Ideographs and Extension A
COMPATIBILITY_IDEOGRAPHS = "\uf900-\ufaff"
ITERATION_MARKS = "\u3005\u3006"  # 々 〆
HANGUL = "\uac00-\ud7af"  # syllables
FULLWIDTH_FORMS = "\uff00-\uffef"  # full-width letters, digits and punctuation, half-width katakana

JAPANESE = KANA + IDEOGRAPHS  # the characters a Japanese question is written in (kanji are shared with Chinese)
