"""A person being answered gets the CPU: on two cores a worker grading beside the REPL halves the answer's speed.

While the REPL or `kaizen ask` answers, it holds a shared advisory lock (store.locks.ANSWERING) on a connection of
its own. A worker installs `PersonFirst(store).wait` as its model's yield hook (agent.llm.yield_to): the model
calls it before each piece of work (a prompt is evaluated in small pieces, and a reply token by token), and it
blocks while any answer is in progress, anywhere on the same database. The worker's work is paused, not lost: the
KV cache and the partial reply stay where they were."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from store import locks

log = logging.getLogger(__name__)


class Answering:
    """The answering side: `with answering.held(): ...` around one answer. A database that cannot be reached
    only loses the signal (the answer goes on)."""

    def __init__(self, store):
        self.store = store
        self._connection = None
        self._lock = threading.Lock()

    @contextmanager
    def held(self) -> Iterator[None]:
        taken = self._call(locks.take_shared)
        try:
            yield
        finally:
            if taken:
                self._call(locks.release_shared)

    def _call(self, function) -> bool:
        with self._lock:  # one connection, shared by the answers of this process
            try:
                if self._connection is None:
                    self._connection = self.store.engine.connect()
                function(self._connection, locks.ANSWERING)
                return True
            except Exception as exc:  # no signal is better than no answer; closing releases what was held
                log.info("could not tell workers whether an answer is in progress: %s", exc)
                self._drop()
                return False

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:
                pass
        self._connection = None

    def close(self) -> None:
        with self._lock:
            self._drop()


class PersonFirst:
    """The worker's side: `wait()` returns at once when nobody is being answered, else when the answer is done
    (or after `max_pause` seconds, so that a stuck client cannot stop the worker for good). The database is asked
    at most every `every` seconds."""

    def __init__(self, store, *, every: float = 0.25, max_pause: float = 300.0):
        self.store = store
        self.every = every
        self.max_pause = max_pause
        self._connection = None
        self._checked = 0.0
        self.paused_seconds = 0.0

    def _answering(self) -> bool:
        try:
            if self._connection is None:
                self._connection = self.store.engine.connect()
            return locks.is_held(self._connection, locks.ANSWERING)
        except Exception:  # the worker's own error handling deals with a lost database
            if self._connection is not None:
                try:
                    self._connection.close()
                except Exception:
                    pass
            self._connection = None
            return False

    def wait(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.every:
            return
        self._checked = now
        started = now
        while self._answering() and time.monotonic() - started < self.max_pause:
            time.sleep(self.every)
            self._checked = time.monotonic()
        self.paused_seconds += self._checked - started
