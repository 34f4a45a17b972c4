"""The settings of the command line's own parts, declared once like the packages' (see store.settings): only
`kaizen serve`'s so far. Each is an environment variable `KAIZEN_<NAME>`, read where the command starts."""

from __future__ import annotations

from pydantic import Field

from store.settings import KaizenSettings


class ServeSettings(KaizenSettings):
    """`kaizen serve`, the OpenAI-compatible HTTP API."""

    api_key: str | None = Field(None, repr=False, description="when set, every route of `kaizen serve` but /health "
                                "needs the header `Authorization: Bearer <this key>`")
    serve_queue_size: int = Field(4, ge=0, description="questions `kaizen serve` lets wait while the model answers; "
                                  "more at once are refused with 429")
    serve_concurrency: int | None = Field(None, ge=1, json_schema_extra={
        "doc_default": "1 with the in-process model, 4 with a model server (KAIZEN_LLM_URL)"},
        description="questions `kaizen serve` answers at once")

    def concurrency(self, llm_url: str | None) -> int:
        """How many questions are answered at once: the in-process model answers one at a time (it has one KV
        cache, behind a lock); a model server schedules concurrent requests itself."""
        if self.serve_concurrency is not None:
            return self.serve_concurrency
        return 4 if llm_url else 1


__all__ = ["ServeSettings"]
