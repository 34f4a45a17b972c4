"""`kaizen serve`: the OpenAI-compatible HTTP API (the app is cli/server.py)."""

from __future__ import annotations

import ipaddress
import sys

import click


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register_commands(cli: click.Group) -> None:
    @cli.command(name="serve")
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="the address to listen on (0.0.0.0: every interface; set KAIZEN_API_KEY then)")
    @click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True,
                  help="the port to listen on")
    def serve_command(host: str, port: int) -> int:
        """an OpenAI-compatible HTTP API over the knowledge base

        POST /v1/chat/completions (streamed or not) and GET /v1/models, for the openai client and chat UIs
        such as Open WebUI (base URL http://HOST:PORT/v1); POST /v1/kaizen/search, POST /v1/kaizen/feedback,
        GET /v1/kaizen/status; GET /health. The in-process model answers one question at a time, a
        model server (KAIZEN_LLM_URL) KAIZEN_SERVE_CONCURRENCY at once: up to KAIZEN_SERVE_QUEUE_SIZE more wait,
        further ones are refused with 429. With KAIZEN_API_KEY set, every
        route but /health needs `Authorization: Bearer KEY`. Answers are recorded and queued for evaluation by
        `kaizen worker`, as in the REPL. docs/serve.md has the details."""
        import uvicorn

        from agent.llm import LLMSettings
        from agent.settings import AgentSettings
        from store.settings import StoreSettings

        from .server import SHUTDOWN_GRACE, create_app
        from .settings import ServeSettings

        settings = ServeSettings()
        StoreSettings()  # a bad setting or a missing model file stops the command now, not at the first question
        LLMSettings.from_settings(AgentSettings())
        if not settings.api_key and not _loopback(host):
            print(f"kaizen serve: warning: listening on {host} without KAIZEN_API_KEY: anyone who reaches this "
                  "port can ask questions and read the knowledge base", file=sys.stderr)
        app = create_app(settings=settings)
        print(f"kaizen serve: OpenAI-compatible API at http://{host}:{port}/v1 (model id kaizen)", file=sys.stderr)
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=SHUTDOWN_GRACE)
        return 0
