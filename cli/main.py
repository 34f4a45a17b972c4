"""`kaizen`: the command line. The only package that sees store/, agent/ and eval/ (their imports stay lazy,
inside the commands, so `kaizen --help` loads none of them).

The root group is `cli`; each `cli/*_commands.py` module adds its own commands through `register_commands(cli)`,
as a plugin of simonw/llm does. A command parses its options, calls a plain library function that returns data,
and prints it: as text, or as JSON with the shared `--json` flag (cli.output.json_option).
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import sys
import threading
import warnings

import click

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

from cli import (  # noqa: E402  (after the environment defaults above)
    agent_commands,
    bench_commands,
    eval_commands,
    judge_commands,
    repair_commands,
    serve_commands,
    store_commands,
)

# The modules that add commands, in the order they register them.
COMMAND_MODULES = (store_commands, agent_commands, serve_commands, eval_commands, judge_commands, repair_commands,
                   bench_commands)


def _first_paragraph(text: str | None) -> str:
    """The summary a command list shows: the help's first paragraph, whole (click would cut it at ~45 columns)."""
    return " ".join(inspect.cleandoc(text or "").split("\n\n")[0].split())


class Command(click.Command):
    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or _first_paragraph(self.help)


class Group(click.Group):
    """A group whose commands and sub-groups are of these classes too."""

    command_class = Command
    group_class = type  # sub-groups are Groups

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or _first_paragraph(self.help)


class RootGroup(Group):
    """`kaizen`: turns what a command returns or raises into the exit code.

    A command's non-zero return value is the exit code; a known failure (a `KaizenError`, or anything
    agent.errors.explain recognises) prints `kaizen: <message>` on stderr and exits 2 (with -v it keeps its
    traceback); Ctrl-C prints `kaizen: interrupted` and exits 130. Anything else is a bug and keeps its traceback."""

    group_class = Group

    def invoke(self, ctx: click.Context):
        try:
            rv = super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("kaizen: interrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except Exception as exc:  # one line for a person; -v shows the traceback
            from agent.errors import explain

            message = explain(exc)
            if message is None or ctx.params.get("verbose"):
                raise
            click.echo(f"kaizen: {message}", err=True)
            raise click.exceptions.Exit(2) from None
        if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
            raise click.exceptions.Exit(rv)
        return rv


def build_cli() -> click.Group:
    """A new root group with every command registered (the module's `cli` is one; tests can build their own)."""

    @click.group(name="kaizen", cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("-v", "--verbose", is_flag=True, help="log what happens (and show tracebacks)")
    def cli(verbose: bool) -> None:
        """Kaizen: a self-improving RAG agent.

        It answers questions from a knowledge base (PostgreSQL + pgvector) with a local model, grades its own
        answers in the background, and repairs the knowledge base when the grades drop. `kaizen COMMAND --help`
        explains each command."""
        logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                            format="%(levelname)s %(name)s: %(message)s")

    for module in COMMAND_MODULES:
        module.register_commands(cli)
    return cli


cli = build_cli()


class Terminated(SystemExit):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt but a SystemExit, so no
    `except Exception` keeps the process alive, the REPL does not take it for "stop this answer", and every
    `finally` and atexit handler runs: the embedded server is stopped when this was its last user, a benchmark's
    temporary home is deleted, the REPL's thread is already in its checkpoints. (Python's own SIGTERM kills the
    process without any of that.) The worker answers SIGTERM itself (eval.worker.runner)."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM,)
# While a stop is on its way out (raised, not yet back in main): its signal number. A second SIGTERM then raises
# again (someone insists); once main has it, the exit's clean-up runs with the stop signals ignored.
_stopping: list[int] = []


def _on_stop_signal(signum, frame) -> None:
    _stopping[:] = [signum]
    raise Terminated(signum)


def _resend_swallowed(previous):
    """sys.unraisablehook: a signal's exception raised inside a weakref callback, a __del__ or a ctypes callback is
    printed and dropped by Python, which would leave the process running as if the signal never came. The signal
    is sent again a moment later, to land in ordinary code."""
    def hook(unraisable) -> None:
        exc = unraisable.exc_value
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT if isinstance(
            exc, KeyboardInterrupt) else None
        if signum is None:
            return previous(unraisable)
        main_thread = threading.main_thread().ident
        timer = threading.Timer(0.05, lambda: (_stopping or signum == signal.SIGINT)
                                and signal.pthread_kill(main_thread, signum))
        timer.daemon = True
        timer.start()

    return hook


def _install_stop_handlers() -> dict:
    """SIGTERM raises Terminated (unless the parent made this process ignore it)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in STOP_SIGNALS:
        current = signal.getsignal(sig)
        if current is not signal.SIG_IGN:
            previous[sig] = current
            signal.signal(sig, _on_stop_signal)
    return previous


def main(argv: list[str] | None = None) -> int:
    """Run `kaizen` with `argv` (default: sys.argv[1:]) and return its exit code. As the program itself (no
    `argv`), the signals that stop it are ignored once the command is over, so the exit's clean-up (atexit:
    stopping the embedded server, deleting a temporary one) is not interrupted; called with `argv` (tests),
    the previous handlers come back."""
    previous = _install_stop_handlers()
    unraisable = sys.unraisablehook
    if previous:
        sys.unraisablehook = _resend_swallowed(unraisable)
    try:
        return _run(argv)
    except Terminated as exc:
        print(f"kaizen: stopped by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return exc.code
    finally:
        _stopping.clear()
        if argv is None and previous:
            for sig in (*previous, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
        else:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sys.unraisablehook = unraisable


def _run(argv: list[str] | None) -> int:
    try:
        rv = cli.main(args=argv, prog_name="kaizen", standalone_mode=False)
    except click.ClickException as exc:  # a usage error: click's message, exit 2
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            print("kaizen: interrupted", file=sys.stderr)
            return 130
        print("Aborted!", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("kaizen: interrupted", file=sys.stderr)
        return 130
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
