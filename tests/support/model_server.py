"""Shared by the model-server tests (no tests here): llama-cpp-python's own OpenAI-compatible server
(`python -m llama_cpp.server`) on a free port of 127.0.0.1, serving one of the installed GGUF models."""

from __future__ import annotations

import subprocess
from pathlib import Path

from eval.bench.serve import free_port, model_server_command
from tests.support.worker import wait_for


class ModelServer:
    """The real server process; `url` is what KAIZEN_LLM_URL would be set to."""

    def __init__(self, model: Path, log: Path, *, n_ctx: int = 4096, threads: int = 2, api_key: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = model_server_command(model, self.port, threads, n_ctx)
        if api_key:
            command += ["--api_key", api_key]
        self.proc = subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 120) -> "ModelServer":
        import httpx

        def ready():
            assert self.proc.poll() is None, f"the model server exited:\n{self.output()}"
            try:
                return httpx.get(f"{self.url}/v1/models", timeout=5).status_code in (200, 401)
            except httpx.TransportError:
                return False

        wait_for(ready, timeout, "the model server to listen", every=0.5)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
