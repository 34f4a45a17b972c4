"""Printing for people (rich tables, progress) and for programs (--json)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import click
from rich.console import Console
from rich.table import Table

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# The one `--json` flag: every command that can print JSON carries this very Option object.
JSON_OPTION = click.Option(["--json", "as_json"], is_flag=True, help="print JSON (for programs) instead of text")


def json_option(f):
    """Decorator: give a command the shared `--json` flag (its callback gets `as_json`)."""
    if isinstance(f, click.Command):
        f.params.append(JSON_OPTION)
    else:
        f.__dict__.setdefault("__click_params__", []).append(JSON_OPTION)
    return f


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def print_table(columns: list[str], rows: Iterable[Iterable[Any]], title: str | None = None) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(v) for v in row])
    out.print(table)


@contextmanager
def progress_bar(description: str) -> Iterator:
    """A callback (done, total, label) driving a progress bar on stderr; silent when stderr is not a TTY."""
    if not sys.stderr.isatty():
        yield lambda done, total, label: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[label]}"), console=err, transient=False) as progress:
        task = progress.add_task(description, total=None, label="")

        def update(done: int, total: int, label: str) -> None:
            progress.update(task, completed=done, total=total, label=(label or "")[:40])

        yield update
