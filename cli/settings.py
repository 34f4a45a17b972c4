"""The settings of the command line's own parts, declared once like the packages' (see store.settings): only
`kaizen serve`'s so far. Each is an environment variable `KAIZEN_<NAME>`, read where the command starts."""

from __future__ import annotations

from pydantic import Field

from store.settings import KaizenSettings


class ServeSettings(KaizenSettings):
    """`kaizen serve`, the OpenAI-compatible HTTP API."""

    api_key: str | None = Field(None, repr=False, description="when set, every route of `kaizen serve` but /health "
                                "needs the header `Authorization: Bearer <this key>`")
    serve_queue_size: int = Field(4, ge=0, description="questions `kaizen serve` lets wait while the model answers "
                                  "one; more at once are refused with 429")


__all__ = ["ServeSettings"]
