"""`kaizen chat`: the REPL. Streams tokens, shows the sources after each answer, stores feedback.

Works the same in a pipe (no TTY: no prompt, no colours, one command or question per line) for scripting.
Ctrl-C while an answer is generated stops it (the partial answer is recorded as stopped) and keeps the REPL;
Ctrl-C at the prompt clears the line; Ctrl-D or /quit leaves. Line editing and history through readline, with
the history file in $KAIZEN_HOME/chat_history.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
from pathlib import Path
from typing import TextIO

HELP = """\
Type a question and press Enter. Commands:
  /sources          the passages the last answer was given, with their sources
  /good             mark the last answer as good
  /bad [correction] mark the last answer as bad, optionally with the right answer
  /new              start a new conversation thread
  /threads          recent threads (resume one with /resume ID)
  /resume ID        continue an earlier thread
  /history          the questions and answers of this thread
  /help             this help
  /quit             leave (or Ctrl-D)
Ctrl-C stops an answer being generated."""


class Repl:
    def __init__(self, agent, *, thread_id: str | None = None, stdin: TextIO | None = None,
                 stdout: TextIO | None = None, stderr: TextIO | None = None, interactive: bool | None = None):
        from .threads import new_thread_id

        self.agent = agent
        self.stdin = stdin or sys.stdin
        self.out = stdout or sys.stdout
        self.err = stderr or sys.stderr
        self.interactive = self.stdin.isatty() if interactive is None else interactive
        self.color = self.interactive and self.out.isatty() and not os.environ.get("NO_COLOR")
        self.thread_id = thread_id or new_thread_id()
        self.last = None  # TurnResult of the last answer
        self._cancel = threading.Event()
        self._interrupts = 0

    # -- output -------------------------------------------------------------------------------------------------
    def _style(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def say(self, text: str = "", *, style: str | None = None, err: bool = False) -> None:
        stream = self.err if err else self.out
        stream.write((self._style(text, style) if style else text) + "\n")
        stream.flush()

    # -- input ----------------------------------------------------------------------------------------------------
    def _setup_readline(self) -> None:
        if not self.interactive:
            return
        try:
            import readline
        except ImportError:  # pragma: no cover - platforms without readline still work, without editing
            return
        home = Path(self.agent.store.settings.home)
        self._history_file = home / "chat_history"
        try:
            home.mkdir(parents=True, exist_ok=True)
            if self._history_file.exists():
                readline.read_history_file(self._history_file)
            readline.set_history_length(1000)
        except OSError:
            pass
        import atexit

        def save() -> None:
            try:
                readline.write_history_file(self._history_file)
            except OSError:
                pass

        atexit.register(save)

    def read_line(self) -> str | None:
        if self.interactive:
            try:
                return input(self._style("you> ", "1;36") if self.color else "you> ")
            except EOFError:
                self.say()
                return None
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    # -- the loop -------------------------------------------------------------------------------------------------
    def run(self) -> int:
        self._setup_readline()
        self.agent.warm_up()  # while the person types the first question
        if self.interactive:
            self.say(f"Kaizen · model {self.agent.llm.name} · thread {self.thread_id} · /help for commands",
                     style="2")
        while True:
            try:
                line = self.read_line()
            except KeyboardInterrupt:
                self.say("\n(Ctrl-D or /quit leaves)", style="2")
                continue
            if line is None:
                return 0
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                try:
                    if self.command(line) == "quit":
                        return 0
                except Exception as exc:  # a command failing must not end the session
                    self.report(exc)
                continue
            self.answer(line)

    def report(self, exc: BaseException) -> None:
        from agent.errors import explain

        message = explain(exc) or f"{type(exc).__name__}: {exc}"
        self.say(f"error: {message}", style="31", err=True)

    def _on_sigint(self, signum, frame) -> None:
        self._interrupts += 1
        if self._interrupts > 1:
            raise KeyboardInterrupt
        self._cancel.set()

    def answer(self, question: str) -> None:
        self._cancel.clear()
        self._interrupts = 0
        streamed = {"any": False, "at_line_start": True}

        def on_event(event: dict) -> None:
            kind = event.get("type")
            if kind == "token":
                text = event["text"]
                if not streamed["any"]:
                    text = text.lstrip()
                    self.out.write(self._style("kaizen> ", "1;32") if self.color else "")
                streamed["any"] = True
                self.out.write(text)
                self.out.flush()
                streamed["at_line_start"] = text.endswith("\n")
            elif kind == "retry":
                if streamed["any"]:
                    self.out.write("\n")
                self.say(f"[not verified ({event.get('reason')}); answering again more strictly]", style="33")
                streamed["any"] = False
            elif kind == "revised":
                if streamed["any"]:
                    self.out.write("\n")
                self.say(f"[revised] {event['text']}", style="33")
                streamed["any"] = False
            elif kind == "status" and self.interactive and event.get("node") == "contextualize":
                self.say("[reading the conversation…]", style="2", err=True)

        previous = None
        main_thread = threading.current_thread() is threading.main_thread()
        if main_thread:
            previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            result = self.agent.ask(question, self.thread_id, on_event=on_event, cancel=self._cancel)
        except KeyboardInterrupt:
            self.say("\n[interrupted]", style="33")
            return
        except Exception as exc:
            if streamed["any"]:
                self.out.write("\n")
            self.report(exc)
            return
        finally:
            if main_thread:
                signal.signal(signal.SIGINT, previous)
        if streamed["any"]:
            self.out.write("\n")
        self.last = result
        if result.stopped:
            self.say("[stopped]", style="33")
        if result.warning and not result.stopped:
            self.say(f"⚠ {result.warning}", style="33")
        for notice in result.notices:
            self.say(f"note: {notice}", style="2")
        self.print_sources(result, brief=True)

    def print_sources(self, result, brief: bool) -> None:
        if result.abstained:
            if result.interaction_id:
                self.say("(recorded as a knowledge gap)", style="2")
            return
        if brief and not result.citations:
            if result.passages:
                self.say("(no passage supports this answer; /sources shows what the model was given)", style="2")
            return
        cited = {c["number"]: c for c in result.citations}
        self.say("Sources:", style="1")
        for passage in result.passages:
            citation = cited.get(passage["number"])
            if brief and citation is None:
                continue
            mark = "" if citation is None else (" (matched)" if citation.get("inferred") else " (cited)")
            self.say(f"  [{passage['number']}] {passage['title'] or '(untitled)'} · {passage['source_uri']} · "
                     f"chunk {passage['chunk_id']}{mark}", style="2")
            if not brief:
                excerpt = " ".join(passage["text"].split())
                excerpt = excerpt if len(excerpt) <= 500 else excerpt[:500] + "…"
                self.say(textwrap.indent(textwrap.fill(excerpt, 100), "      "))

    # -- commands ---------------------------------------------------------------------------------------------------
    def command(self, line: str) -> str | None:
        name, _, rest = line.partition(" ")
        name = name.lower()
        rest = rest.strip()
        if name in ("/quit", "/exit", "/q"):
            return "quit"
        if name in ("/help", "/?"):
            self.say(HELP)
        elif name == "/sources":
            if self.last is None:
                self.say("no answer yet")
            elif not self.last.passages:
                self.say("the last answer had no sources" + (" (Kaizen abstained)" if self.last.abstained else ""))
            else:
                self.print_sources(self.last, brief=False)
        elif name in ("/good", "/bad"):
            from .recorder import add_feedback

            if self.last is None:
                self.say("no answer to rate yet: ask a question first")
                return None
            rating = 1 if name == "/good" else -1
            add_feedback(self.agent.store, self.last.interaction_id, rating, rest or None)
            self.say("thanks: feedback recorded" + (" with your correction" if rest else ""))
        elif name == "/new":
            from .threads import new_thread_id

            self.thread_id = new_thread_id()
            self.last = None
            self.say(f"new thread {self.thread_id}")
        elif name == "/threads":
            from .threads import list_threads

            threads = list_threads(self.agent.store)
            if not threads:
                self.say("no threads yet")
            for t in threads:
                mark = "*" if t["thread_id"] == self.thread_id else " "
                first = " ".join(str(t["first_question"]).split())[:60]
                self.say(f"{mark} {t['thread_id']}  {t['turns']} turn(s)  last {t['last_at']:%Y-%m-%d %H:%M}  {first}")
        elif name == "/resume":
            if not rest:
                self.say("usage: /resume THREAD_ID (see /threads)")
                return None
            self.thread_id = rest.split()[0]
            self.last = None
            turns = self.agent.history(self.thread_id)
            self.say(f"thread {self.thread_id}: {len(turns)} earlier turn(s)")
        elif name == "/history":
            turns = self.agent.history(self.thread_id)
            if not turns:
                self.say(f"thread {self.thread_id} has no turns yet")
            for i, turn in enumerate(turns, start=1):
                self.say(f"{i}. you: {turn['question'][:300]}")
                self.say(f"   kaizen: {turn['answer'][:500]}")
        else:
            self.say(f"unknown command {name}: /help lists the commands")
        return None
