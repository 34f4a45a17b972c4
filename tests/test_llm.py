"""The llama.cpp runtime on the real default GGUF: streaming with counts, KV-cache reuse, stop, constrained JSON,
context overflow, and clear errors for a bad model file."""

from __future__ import annotations

import threading

import pytest

from tests.support.common import run_cli

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What colour is the sky on a clear day?"}]


@pytest.fixture(scope="module")
def llm():
    from agent.llm import get_llm

    return get_llm()


def test_one_model_per_process(llm):
    from agent.llm import get_llm

    assert get_llm() is llm
    assert llm.render(MESSAGES).startswith("<|im_start|>system")  # the GGUF's own chat template


def test_streaming_reports_tokens_and_reuses_the_kv_cache(llm):
    pieces = []
    first = llm.stream_chat(MESSAGES, max_tokens=24).run(pieces.append)
    assert "".join(pieces) == first.text and first.text
    usage = first.usage
    assert usage.prompt_tokens == llm.count_prompt(MESSAGES)
    assert 1 <= usage.completion_tokens <= 24 and usage.ttft_ms is not None and usage.total_ms >= usage.ttft_ms
    again = llm.stream_chat(MESSAGES, max_tokens=24).run()
    assert again.text == first.text  # greedy decoding is reproducible
    assert again.usage.prompt_processed <= 1  # the whole prompt came from llama.cpp's KV cache


@pytest.fixture
def state_dir(llm, tmp_path):
    """The prefix-state directory of `llm` for one test (None: nothing saved or loaded), restored after it."""
    import dataclasses

    before = llm.settings

    def use(directory):
        llm.settings = dataclasses.replace(before, state_dir=directory)
        return directory

    yield use
    llm.settings = before


def test_warming_the_shared_prefix_leaves_only_the_question_to_read(llm, state_dir):
    from agent.prompts import shared_prefix

    state_dir(None)
    llm.reset()
    prefix = shared_prefix()
    evaluated = llm.warm(prefix)
    assert evaluated == llm.count_prompt(prefix) > 100
    assert llm.warm(prefix) == 0  # already there
    messages = [*prefix, {"role": "user", "content": "What colour is the sky on a clear day?"}]
    usage = llm.stream_chat(messages, max_tokens=8).run().usage
    assert usage.prompt_processed <= usage.prompt_tokens - evaluated + 8  # the user turn and its markers
    again = [*prefix, {"role": "user", "content": "Why is the sea salty?"}]
    assert llm.stream_chat(again, max_tokens=8).run().usage.prompt_processed < 30


def test_the_prefix_one_process_evaluated_is_loaded_by_the_next(llm, state_dir, tmp_path):
    """The shared prefix's KV cache is saved once and loaded by a fresh model: nothing evaluated, and the same
    greedy answer as from an evaluated prefix. A file cut short is ignored and written anew."""
    from agent.llm import LLM
    from agent.prompts import shared_prefix

    directory = state_dir(tmp_path / "states")
    prefix = shared_prefix()
    question = [*prefix, {"role": "user", "content": "What colour is the sky on a clear day?"}]
    llm.reset()
    assert llm.warm(prefix) == llm.count_prompt(prefix) > 100
    [saved] = list(directory.glob("prefix-*.kv"))
    evaluated = llm.stream_chat(question, max_tokens=16).run()

    fresh = LLM(llm.settings)  # another process's model: an empty KV cache
    assert fresh.warm(prefix) == 0
    # all of it but the chat template's last markers, which the next turn renders differently
    assert fresh.cached_prefix(fresh.prompt_tokens(question)) >= llm.count_prompt(prefix) - 8
    loaded = fresh.stream_chat(question, max_tokens=16).run()
    assert loaded.text == evaluated.text
    assert loaded.usage.prompt_processed <= loaded.usage.prompt_tokens - llm.count_prompt(prefix) + 8

    good = saved.read_bytes()
    saved.write_bytes(good[: len(good) // 2])  # a write cut half-way
    fresh.reset()
    assert fresh.warm(prefix) == llm.count_prompt(prefix)  # evaluated again, not loaded
    assert saved.read_bytes() == good and fresh.stream_chat(question, max_tokens=16).run().text == evaluated.text
    other = [{"role": "system", "content": "Another prompt entirely."}]
    fresh.reset()
    assert fresh.warm(other) > 0 and len(list(directory.glob("prefix-*.kv"))) == 2  # its own file


def test_a_stop_event_ends_generation(llm):
    stop = threading.Event()
    stream = llm.stream_chat([{"role": "user", "content": "Count from one to one hundred in words."}],
                             max_tokens=200, cancel=stop)
    seen = 0
    for _ in stream:
        seen += 1
        if seen == 3:
            stop.set()
    assert stream.usage.stopped and stream.usage.finish_reason == "stopped"
    assert stream.usage.completion_tokens < 10


def test_constrained_json_is_validated_and_failures_are_returned(llm):
    from agent.prompts import CHECK_SCHEMA, validate_check

    ok = llm.json_chat([*MESSAGES, {"role": "user",
                                    "content": 'Is the sky blue? Reply in JSON: {"supported": "yes" or "no"}'}],
                       CHECK_SCHEMA, validate=validate_check, max_tokens=16)
    assert ok.ok and ok.value in (True, False) and ok.error is None
    cut = llm.json_chat(MESSAGES, CHECK_SCHEMA, validate=validate_check, max_tokens=2)
    assert not cut.ok and "cut off" in cut.error and cut.raw  # recorded, not raised
    invalid = llm.json_chat(MESSAGES, {"type": "object", "properties": {"n": {"type": "integer", "enum": [1, 2, 3]}},
                                       "required": ["n"]}, validate=lambda v: v["missing"], max_tokens=16)
    assert not invalid.ok and "unexpected JSON" in invalid.error


def test_yes_probability_reads_the_distribution_and_reuses_the_kv_cache(llm):
    """P(yes) / (P(yes) + P(no)) from one forward pass; the same prompt again evaluates only its last token, and a
    prompt sharing its prefix (as the answer shares the grade's) evaluates only what differs."""
    question = [MESSAGES[0], {"role": "user", "content": "Is the sky blue on a clear day? Answer yes or no."}]
    first = llm.yes_probability(question, kind="grade")
    assert first.ok and 0.0 <= first.p_yes <= 1.0 and 0.0 < first.mass <= 1.0
    assert first.usage.prompt_tokens == llm.count_prompt(question) and first.usage.completion_tokens == 0
    again = llm.yes_probability(question, kind="grade")
    # Batch composition changes float rounding a little (whole prompt vs the replayed last token alone).
    assert again.p_yes == pytest.approx(first.p_yes, abs=0.03) and again.usage.prompt_processed == 1
    follow = llm.stream_chat([*question[:1], {"role": "user", "content": "Is the sky blue? Say why."}],
                             max_tokens=4).run()
    assert follow.usage.prompt_processed < follow.usage.prompt_tokens


def test_context_overflow_is_an_error_for_a_call_and_a_failed_result_for_json(llm):
    from agent.errors import explain
    from agent.llm import ContextOverflow

    huge = [{"role": "user", "content": "word " * (llm.n_ctx + 10)}]
    with pytest.raises(ContextOverflow) as info:
        llm.stream_chat(huge).run()
    assert "KAIZEN_LLM_CTX" in explain(info.value)
    result = llm.json_chat(huge, {"type": "object"})
    assert not result.ok and "context window" in result.error


@pytest.mark.parametrize("content", [None, b"not a model at all"])
def test_missing_or_non_gguf_model_names_the_setting(tmp_path, monkeypatch, content):
    from agent.errors import explain
    from agent.llm import LLMSettings
    from agent.model_files import ModelFileError
    from agent.settings import AgentSettings

    path = tmp_path / "model.gguf"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("KAIZEN_CHAT_MODEL", str(path))
    with pytest.raises(ModelFileError) as info:
        LLMSettings.from_settings(AgentSettings())
    message = explain(info.value)
    assert message.startswith(f"KAIZEN_CHAT_MODEL={path}")
    assert ("no such file" if content is None else "not a GGUF") in message


def test_bad_model_file_in_the_cli_is_one_line(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_text("hello")
    result = run_cli("ask", "anything", env={"KAIZEN_CHAT_MODEL": str(path)})
    assert result.returncode == 2
    assert "KAIZEN_CHAT_MODEL" in result.stderr and "not a GGUF" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_numeric_setting_is_named(monkeypatch):
    from agent.settings import AgentSettings
    from store.settings import ConfigError

    monkeypatch.setenv("KAIZEN_LLM_CTX", "lots")
    with pytest.raises(ConfigError, match="KAIZEN_LLM_CTX"):
        AgentSettings()


def test_a_gguf_without_a_chat_template_is_named_in_one_line_and_still_answers(llm, tmp_path, caplog):
    """A base model's GGUF has no chat template: the same SmolLM2 file with that metadata key renamed (same length,
    so the file stays valid) loads, says what it is in one warning line, and answers in the fallback format."""
    import dataclasses
    import logging

    from agent.llm import LLM

    data = llm.path.read_bytes()
    assert data.count(b"tokenizer.chat_template") == 1
    base = tmp_path / "base-model.gguf"
    base.write_bytes(data.replace(b"tokenizer.chat_template", b"tokenizer.chat_templatX"))
    with caplog.at_level(logging.WARNING, logger="agent.llm"):
        model = LLM(dataclasses.replace(llm.settings, model_path=base, state_dir=None))
    [line] = [r.getMessage() for r in caplog.records if r.name == "agent.llm"]
    assert "base-model.gguf has no chat template" in line and "\n" not in line and model.notice == line
    assert llm.notice is None  # the real chat model says nothing
    reply = model.stream_chat(MESSAGES, max_tokens=8).run()
    assert reply.usage.prompt_tokens == model.count_prompt(MESSAGES) > 0 and reply.usage.completion_tokens >= 1
