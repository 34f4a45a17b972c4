"""Shared by the `kaizen serve` tests (no tests here): a real `kaizen serve` child process, the app served by
uvicorn in a thread of the test, a database connection that can be cut and restored (a TCP proxy in front of the
test database), and stand-in models slow or blocked enough to catch an answer in progress."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from eval.bench.serve import free_port
from tests.support.agent import FakeLLM, FakeStream
from tests.support.common import REPO
from tests.support.worker import wait_for


class ServeProcess:
    """`kaizen serve` on a free port of 127.0.0.1, sharing the test database (or `KAIZEN_DATABASE_URL` in env)."""

    def __init__(self, log: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--port", str(self.port)], cwd=REPO,
            stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO), **env})

    def health(self):
        import httpx

        try:
            return httpx.get(f"{self.url}/health", timeout=30)
        except httpx.TransportError:
            return None

    def wait_listening(self, timeout: float = 180) -> None:
        def up():
            assert self.proc.poll() is None, f"kaizen serve exited:\n{self.output()}"
            return self.health() is not None

        wait_for(up, timeout, "kaizen serve to listen", every=0.5)

    def wait_healthy(self, timeout: float = 180) -> dict:
        def healthy():
            assert self.proc.poll() is None, f"kaizen serve exited:\n{self.output()}"
            response = self.health()
            return response is not None and response.status_code == 200 and response.json()

        return wait_for(healthy, timeout, "kaizen serve to report a reachable database", every=0.5)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=30)


@contextmanager
def serving(app):
    """`app` served by uvicorn in a thread of this process: its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 60, "uvicorn to start", every=0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


class Proxy:
    """A TCP port that forwards to the test database (its Unix socket or its TCP port); `cut()` closes every
    connection through it and refuses new ones, as a database that went away does; `restore()` opens it again."""

    def __init__(self, store_url: str):
        from sqlalchemy.engine import make_url

        url = make_url(store_url)
        host = url.query.get("host") or url.host or "localhost"
        if isinstance(host, tuple):
            host = host[0]
        port = url.port or 5432
        self.target = f"{host}/.s.PGSQL.{port}" if str(host).startswith("/") else (host, port)
        self.port = free_port()
        query = {k: v for k, v in url.query.items() if k != "host"}
        self.url = url.set(drivername="postgresql", host="127.0.0.1", port=self.port, query=query) \
            .render_as_string(hide_password=False)
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def _connect_target(self) -> socket.socket:
        if isinstance(self.target, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(self.target)
        return s

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect_target()
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    continue
                self._sockets |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:  # shutdown first: close alone does not wake the thread blocked in accept()
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class GatedLLM(FakeLLM):
    """A stand-in model whose answer waits until the test opens `gate` (`answering` is set once it waits)."""

    def __init__(self, answer: str, **kwargs):
        super().__init__(answer, **kwargs)
        self.gate = threading.Event()
        self.answering = threading.Event()

    def stream_chat(self, messages, **kwargs):
        self.answering.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return super().stream_chat(messages, **kwargs)


class SlowStream(FakeStream):
    def __init__(self, llm: "SlowLLM", kind: str, cancel):
        super().__init__("", kind)
        self.llm, self.cancel = llm, cancel

    def run(self, on_token=None):
        pieces = []
        for i in range(self.llm.pieces):
            if self.cancel is not None and self.cancel.is_set():
                self.usage.stopped, self.usage.finish_reason = True, "stopped"
                break
            time.sleep(self.llm.delay)
            pieces.append(f"word{i} ")
            self.llm.sent += 1
            if on_token:
                on_token(pieces[-1])
        self.text = "".join(pieces)
        return self


class SlowLLM(FakeLLM):
    """A stand-in model that writes `pieces` words, one per `delay` seconds, and stops when told to."""

    def __init__(self, pieces: int = 400, delay: float = 0.05):
        super().__init__("unused")
        self.pieces, self.delay, self.sent = pieces, delay, 0

    def stream_chat(self, messages, *, max_tokens=None, cancel=None, kind="generate", stop=None):
        self.prompts.append(messages)
        self.generations += 1
        return SlowStream(self, kind, cancel)
