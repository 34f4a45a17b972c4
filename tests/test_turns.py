"""A person being answered comes first: a worker's model waits while an answer is in progress, and its replies are
the same whether it was paused or not."""

from __future__ import annotations

import threading
import time

import pytest


def test_the_worker_waits_while_an_answer_is_in_progress_and_not_otherwise(store):
    from agent.turns import Answering, PersonFirst

    answering, waiter = Answering(store), PersonFirst(store, every=0.05)
    started = time.monotonic()
    waiter.wait()
    assert time.monotonic() - started < 0.5  # nobody is being answered

    release = threading.Event()

    def answer():
        with answering.held():
            release.wait(5)

    person = threading.Thread(target=answer)
    person.start()
    time.sleep(0.3)
    threading.Timer(1.0, release.set).start()
    waiter._checked = 0.0
    started = time.monotonic()
    waiter.wait()
    waited = time.monotonic() - started
    person.join()
    assert 0.6 < waited < 4.0, waited
    assert waiter.paused_seconds >= 0.6
    # Two answers at once (shared holders) and a closed connection both leave the lock free afterwards.
    with answering.held(), Answering(store).held():
        pass
    answering.close()
    waiter._checked = 0.0
    started = time.monotonic()
    waiter.wait()
    assert time.monotonic() - started < 0.5


def test_a_bounded_pause_and_a_database_that_is_gone_never_block_for_good(store):
    from agent.turns import Answering, PersonFirst

    answering = Answering(store)
    with answering.held():
        waiter = PersonFirst(store, every=0.05, max_pause=0.3)
        started = time.monotonic()
        waiter.wait()
        assert time.monotonic() - started < 2.0
    answering.close()

    class Gone:
        class engine:
            @staticmethod
            def connect():
                raise OSError("connection refused")

    with Answering(Gone()).held():  # no signal, but the answer goes on
        PersonFirst(Gone(), every=0.0).wait()


@pytest.mark.slow
def test_a_paused_model_gives_the_same_reply_and_the_hook_runs_per_piece():
    from agent import llm as llm_module
    from agent.llm import LLMSettings, get_llm
    from agent.settings import AgentSettings

    model = get_llm(LLMSettings.from_settings(AgentSettings(chat_model="smollm2")))
    messages = [{"role": "user", "content": "List three colours of the rainbow. " * 12}]
    schema = {"type": "object", "properties": {"colours": {"type": "array", "items": {"type": "string"}}},
              "required": ["colours"]}
    model.reset()
    plain = model.json_chat(messages, schema, max_tokens=40)
    calls = []
    llm_module.yield_to(lambda: calls.append(time.sleep(0.01)))
    try:
        model.reset()
        paused = model.json_chat(messages, schema, max_tokens=40)
        model.reset()
        streamed = model.stream_chat(messages, max_tokens=8).run().text
        p_yes = model.yes_probability(messages + [{"role": "assistant", "content": "ok"},
                                                  {"role": "user", "content": "Is red a colour? Answer yes or no."}])
    finally:
        llm_module.yield_to(None)
    assert paused.raw == plain.raw and paused.error == plain.error  # the same reply, paused or not
    prompt = plain.usage.prompt_tokens
    assert len(calls) >= prompt // llm_module.PREFILL_PIECE + plain.usage.completion_tokens - 1
    model.reset()
    assert model.stream_chat(messages, max_tokens=8).run().text == streamed
    assert p_yes.ok
