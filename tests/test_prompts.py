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
