"""Japanese end to end on the default model: an article ingested as .txt and as .html, a question answered in
Japanese with a citation of it, a question it does not cover abstained on in Japanese, and none of Kaizen's own
instruction text in any answer."""

from __future__ import annotations

import re

import pytest

from tests.support.agent import clean_agent_tables

pytestmark = pytest.mark.slow

ARTICLE = (
    "浜名湖の養殖\n\n"
    "浜名湖は静岡県の西部にある汽水湖で、面積は約65平方キロメートルである。"
    "湖は1498年の明応地震によって遠州灘とつながり、海水が入るようになった。"
    "浜名湖ではウナギの養殖が盛んで、その歴史は1900年に服部倉治郎が養殖池を作ったことに始まる。"
    "現在では牡蠣とスッポンの養殖も行われている。\n\n"
    "湖の南にある今切口は、遠州灘と湖を結ぶ水路である。"
    "今切口の幅は約200メートルで、潮の満ち引きによって強い流れが生じる。"
)
HTML = ("<html><head><title>浜名湖の観光</title></head><body><h1>浜名湖の観光</h1>"
        "<p>浜名湖の舘山寺温泉は1958年に開かれた温泉地で、湖の北東岸にある。</p>"
        "<p>毎年夏には浜名湖の花火大会が開かれ、約3万人が訪れる。</p></body></html>")


@pytest.fixture(scope="module")
def japanese_kb(store, embedder, tmp_path_factory):
    from store.ingest import ingest
    from tests.support.common import reset

    reset(store)
    clean_agent_tables(store)
    folder = tmp_path_factory.mktemp("ja-kb")
    (folder / "hamanako.txt").write_text(ARTICLE, encoding="utf-8")
    (folder / "kanko.html").write_text(HTML, encoding="utf-8")
    report = ingest(store, embedder, [str(folder)])
    assert report.ok and report.added == 2, report
    yield store
    clean_agent_tables(store)


@pytest.fixture(scope="module")
def agent(japanese_kb, embedder):
    from agent.graph import Agent
    from agent.model_files import DEFAULT_MODEL
    from agent.settings import AgentSettings

    a = Agent(japanese_kb, embedder=embedder, persist=False, settings=AgentSettings(chat_model=DEFAULT_MODEL))
    yield a
    a.close()


def _no_instructions(answer: str) -> None:
    from agent.prompts import leaked_sentences

    assert not leaked_sentences(answer), answer
    assert "<context>" not in answer and "Question:" not in answer


def test_a_japanese_question_is_answered_in_japanese_with_a_citation(agent):
    from agent.prompts import is_abstention
    from store.lexical import cjk_ratio

    result = agent.ask("浜名湖でウナギの養殖が始まったのは何年ですか？")
    assert not result.abstained and not is_abstention(result.answer), result.answer
    assert "1900" in result.answer, result.answer
    letters = re.sub(r"[\d\W_]+", "", result.answer)  # digits and punctuation belong to no language
    assert letters and cjk_ratio(letters) > 0.5, result.answer  # written in Japanese ("1900年" is)
    assert any(c["source_uri"].endswith("hamanako.txt") for c in result.citations), result.citations
    _no_instructions(result.answer)


def test_an_html_page_is_found_and_answered_from_or_honestly_abstained_on(agent, japanese_kb, embedder):
    from agent.prompts import ABSTAIN_JA
    from store.search import search

    question = "舘山寺温泉が開かれたのはいつですか？"
    with japanese_kb.session() as s:
        hits = search(s, embedder, question, k=2, settings=japanese_kb.settings)
    assert hits[0].source_uri.endswith("kanko.html")
    result = agent.ask(question)
    _no_instructions(result.answer)
    # Qwen2.5-1.5B sometimes abstains after its own grade said the context answers (P(yes) 0.91 here; issue 13
    # item 6). What may never happen: a wrong year, an English abstention, or an answer citing the wrong page.
    if result.abstained:
        assert result.answer == ABSTAIN_JA
    else:
        assert "1958" in result.answer, result.answer
        assert any("kanko.html" in c["source_uri"] for c in result.citations), result.citations


def test_a_question_the_article_does_not_cover_is_abstained_on_in_japanese(agent):
    from agent.prompts import ABSTAIN_JA

    result = agent.ask("富士山の高さは何メートルですか？")
    assert result.abstained, result.answer
    assert result.answer == ABSTAIN_JA
