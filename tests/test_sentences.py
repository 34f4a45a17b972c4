"""store.sentences: the units a chunk's sentence vectors are made of."""

from store.sentences import MAX_UNIT_PIECES, reading_units, split_sentences


def test_japanese_sentences_end_at_the_full_stop_and_keep_closing_brackets():
    text = "梅雨は気象現象である。「梅雨入り」は発表される。」雨季の一種だ！本当？"
    assert split_sentences(text) == ["梅雨は気象現象である。", "「梅雨入り」は発表される。」", "雨季の一種だ！ 本当？"]


def test_english_full_stops_split_only_before_a_space():
    text = "Pi is about 3.14 in most uses. See e.g.this page! Really?\nA new line"
    assert split_sentences(text) == ["Pi is about 3.14 in most uses.", "See e.g.this page!", "Really?",
                                     "A new line"]


def test_short_pieces_join_the_next_sentence_or_the_last():
    assert split_sentences("1.\nThe first step is to boil water.\nAll done.") == [
        "1. The first step is to boil water.", "All done."]
    assert split_sentences("A long enough sentence. Ok.") == ["A long enough sentence. Ok."]


def test_blank_text_has_no_sentences_and_text_without_punctuation_is_one():
    assert split_sentences(" \n\t ") == []
    assert split_sentences("no punctuation at all here") == ["no punctuation at all here"]


def test_a_full_stop_after_an_abbreviation_ends_nothing():
    assert split_sentences("Point it at a server, e.g. http://127.0.0.1:8080 here. Google Inc. は会社です。") == [
        "Point it at a server, e.g. http://127.0.0.1:8080 here.", "Google Inc. は会社です。"]


def test_a_markdown_table_row_is_one_unit_whatever_its_cells_hold():
    table = ("| variable | meaning |\n|---|---|\n"
             "| `KAIZEN_LLM_URL` | a model server, e.g. http://127.0.0.1:8080. Then no model is loaded. |\n"
             "After the table. A sentence.")
    assert split_sentences(table) == [
        "| variable | meaning |", "|---|---|",
        "| `KAIZEN_LLM_URL` | a model server, e.g. http://127.0.0.1:8080. Then no model is loaded. |",
        "After the table.", "A sentence."]


WRAPPED = """# Model server

`KAIZEN_LLM_URL` points every Kaizen process at one
OpenAI-compatible model server instead of loading a model. The
server must speak JSON. Set it once.

- A list item that wraps
  onto a second line.
- Another item
| a | b |
```python
code line one
code line two
```
梅雨は気象現象で
次の行は別の段落です。"""


def test_the_fragments_of_a_hard_wrapped_sentence_read_as_one_unit():
    sentences = split_sentences(WRAPPED)
    read = [" ".join(sentences[i] for i in unit) for unit in reading_units(WRAPPED)]
    assert read == [
        "# Model server",
        "`KAIZEN_LLM_URL` points every Kaizen process at one OpenAI-compatible model server instead of loading a "
        "model.",
        "The server must speak JSON.",
        "Set it once.",
        "- A list item that wraps onto a second line.",
        "- Another item",
        "| a | b |",
        "```python", "code line one",
        "code line two ```",  # a closing fence ends the code, not the sentence after it
        "梅雨は気象現象で",
        "次の行は別の段落です。",
    ]


def test_reading_units_cover_every_sentence_once_in_order():
    for text in [WRAPPED, "", "one line", "a\nb\nc", "No end\n" * 30, "A. B c d e.\nf g h"]:
        units = reading_units(text)
        assert [i for unit in units for i in unit] == list(range(len(split_sentences(text))))
        assert all(len(unit) <= MAX_UNIT_PIECES for unit in units)


def test_a_closing_code_fence_ends_the_code_and_never_starts_the_next_sentence():
    text = "Run it:\n```\nmake chat\n```\nThe REPL opens.\n~~~\nkaizen ask hi\n~~~\nDone here now."
    assert split_sentences(text) == [
        "Run it:", "``` make chat ```",  # a bare opening fence is too short alone and joins the code after it
        "The REPL opens.", "~~~ kaizen ask hi ~~~", "Done here now."]
    # a chunk cut inside a code block may begin with the closing fence: alone it reads as an opening one
    assert split_sentences("```\nNext sentence here.") == ["``` Next sentence here."]
