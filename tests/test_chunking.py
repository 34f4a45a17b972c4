"""store.chunking: a Markdown heading starts the chunk of the text it names, and nothing of the text is lost."""

import re

import pytest

from store.chunking import Chunker, headings_lead

HEADING_AT_END = re.compile(r"\n#{1,6} [^\n]*\s*$")


def words(text: str) -> int:
    return len(text.split())


def markdown(sections: int = 6, paragraphs: int = 3, words_each: int = 14) -> str:
    parts = ["# Manual"]
    for s in range(sections):
        parts.append(f"## Section {s}")
        for p in range(paragraphs):
            parts.append(" ".join(f"s{s}p{p}w{w}" for w in range(words_each)) + ".")
    return "\n\n".join(parts) + "\n"


@pytest.mark.parametrize("overlap", [0, 8])
def test_no_chunk_but_the_last_ends_with_a_heading(overlap):
    text = markdown()
    chunker = Chunker(words, chunk_tokens=40, overlap=overlap)
    raw = [c for c in chunker._splitter.split_text(text) if c.strip()]
    assert any(HEADING_AT_END.search(c) for c in raw[:-1])  # the splitter alone leaves headings dangling here
    chunks = chunker.split(text)
    assert not any(HEADING_AT_END.search(c) for c in chunks[:-1])
    for s in range(6):  # each section's first paragraph is read under its heading
        first = next(c for c in chunks if f"s{s}p0w0" in c)
        assert f"## Section {s}" in first
    assert all(c in text for c in chunks)  # still pieces of the document (the integrity check relies on it)
    covered = set()
    for c in chunks:
        start = text.find(c)
        covered.update(range(start, start + len(c)))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())  # nothing lost


def test_a_chunk_of_headings_only_joins_the_next():
    text = "# Title\n\n## Part\n\n" + " ".join(f"w{i}" for i in range(30)) + "."
    assert headings_lead(text, ["# Title\n\n## Part", " ".join(f"w{i}" for i in range(30)) + "."]) == [text]


def test_plain_text_and_code_comments_inside_a_chunk_are_left_alone():
    plain = " ".join(f"word{i}." for i in range(200))
    chunker = Chunker(words, chunk_tokens=40, overlap=5)
    assert chunker.split(plain) == [c for c in chunker._splitter.split_text(plain) if c.strip()]
    code = "Run it:\n\n```bash\n# install first\nmake install\n```\n\nThen ask."
    assert headings_lead(code, [code]) == [code]
    japanese = "梅雨入りは六月です。\n\n## 夏\n\n夏は暑い。"
    got = headings_lead(japanese, ["梅雨入りは六月です。\n\n## 夏", "夏は暑い。"])
    assert got == ["梅雨入りは六月です。", "## 夏\n\n夏は暑い。"]


def test_a_heading_stays_where_moving_it_would_overfill_the_next_chunk():
    body = " ".join(f"w{i}" for i in range(40)) + "."
    text = "Intro line.\n\n## Part\n\n" + body
    chunks = ["Intro line.\n\n## Part", body]
    assert headings_lead(text, chunks, lambda c: words(c) <= 40) == chunks  # body is full: 40 words
    assert headings_lead(text, chunks, lambda c: words(c) <= 42) == ["Intro line.", "## Part\n\n" + body]


@pytest.mark.parametrize("size,overlap", [(20, 0), (30, 5), (40, 8)])
def test_chunks_stay_within_the_size_the_splitter_kept(size, overlap):
    text = markdown(sections=8, paragraphs=2, words_each=size // 2 - 1)
    chunker = Chunker(words, chunk_tokens=size, overlap=overlap)
    assert all(words(c) <= size for c in chunker._splitter.split_text(text))
    assert all(words(c) <= size for c in chunker.split(text))
