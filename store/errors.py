"""The one base class of the failures Kaizen explains to a person.

Every package's own errors (a bad setting, the database out of reach, a model file that is not a GGUF, a question
that is too long, a revert that cannot be done, ...) derive from `KaizenError`. Its message is complete and fit
for one line: the CLI prints it after `kaizen: ` and exits 2, the REPL prints it and goes on. Anything else is a
bug and keeps its traceback."""

from __future__ import annotations


class KaizenError(Exception):
    """A failure whose message says what went wrong and, where there is one, what to do about it."""
