"""Kaizen's own instructions never reach an answer, and an abstention is in the question's language."""

from __future__ import annotations

import pytest

from agent import prompts


@pytest.mark.parametrize("instruction", [prompts.STRICT_INSTRUCTION, prompts.ANSWER_INSTRUCTION, prompts.SYSTEM,
                                         prompts.GRADE_INSTRUCTION, prompts.REWRITE_INSTRUCTION])
def test_every_instruction_echoed_into_an_answer_is_found(instruction):
    answer = f"The lighthouse is 42 metres tall [1]. {instruction.splitlines()[-1]}"
    assert prompts.leaked_sentences(answer)
    cleaned = prompts.without_leaks(answer)
    assert cleaned.startswith("The lighthouse is 42 metres tall [1].")
    assert not prompts.leaked_sentences(cleaned)


def test_the_abstention_and_ordinary_answers_are_not_leaks():
    assert prompts.leaked_sentences(prompts.ABSTAIN) == []
    assert prompts.leaked_sentences("Answer: the context says the garden opens at 7 am [1].") == []
    assert prompts.leaked_sentences("Owls hunt at night, and the question is answered in passage 2 [2].") == []


def test_abstention_in_the_question_s_language():
    assert prompts.abstention_for("ラオスの首都はどこですか？") == prompts.ABSTAIN_JA
    assert prompts.abstention_for("What is the capital of Laos?") == prompts.ABSTAIN
    assert prompts.abstention_for("「Kaizen」のマスコットは何ですか") == prompts.ABSTAIN_JA
    assert prompts.is_abstention(prompts.ABSTAIN_JA)


def test_a_japanese_question_gets_the_answer_instruction_in_japanese_and_its_echo_is_a_leak():
    ja = prompts.answer_messages("梅雨とは何季の一種か?", [])[-1]["content"]
    en = prompts.answer_messages("What is the rainy season?", [])[-1]["content"]
    assert ja.endswith(prompts.ANSWER_INSTRUCTION_JA) and en.endswith(prompts.ANSWER_INSTRUCTION)
    assert prompts.answer_messages("梅雨とは何季の一種か?", [], strict=True)[-1]["content"].endswith(
        prompts.STRICT_INSTRUCTION)
    answer = f"梅雨は雨季の一種です [1]。{prompts.ANSWER_INSTRUCTION_JA}"
    assert prompts.leaked_sentences(answer) == [prompts.ANSWER_INSTRUCTION_JA]
    assert prompts.without_leaks(answer) == "梅雨は雨季の一種です [1]。"
    assert prompts.leaked_sentences("梅雨は5月から7月にかけての雨の多い期間です [1]。") == []
