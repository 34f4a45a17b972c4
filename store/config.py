"""Settings read from the environment (every one has a zero-setup default)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
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


def env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} must be at least {minimum}")
    return value


def env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: use on or off")


@dataclass(frozen=True)
class StoreSettings:
    home: Path
    database_url: str | None
    embed_threads: int
    chunk_tokens: int
    chunk_overlap: int
    text_search_config: str
    rrf_k: int
    vector_weight: float
    text_weight: float
    cjk_text_weight: float
    candidates: int
    fusion: str = "convex"
    vector_alpha: float = 0.6
    cjk_vector_alpha: float = 0.35
    sentence_weight: float = 0.8
    extra: dict = field(default_factory=dict)

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @classmethod
    def from_env(cls) -> "StoreSettings":
        home = Path(os.environ.get("KAIZEN_HOME") or default_home()).expanduser()
        chunk_tokens = env_int("KAIZEN_CHUNK_TOKENS", 320, minimum=32)
        overlap = env_int("KAIZEN_CHUNK_OVERLAP", 48, minimum=0)
        if overlap >= chunk_tokens:
            raise ConfigError(
                f"KAIZEN_CHUNK_OVERLAP={overlap} must be smaller than KAIZEN_CHUNK_TOKENS={chunk_tokens}"
            )
        if chunk_tokens > 510:
            raise ConfigError(f"KAIZEN_CHUNK_TOKENS={chunk_tokens}: the embedding model reads at most 510 tokens")
        return cls(
            home=home,
            database_url=os.environ.get("KAIZEN_DATABASE_URL") or None,
            embed_threads=env_int("KAIZEN_EMBED_THREADS", os.cpu_count() or 1),
            chunk_tokens=chunk_tokens,
            chunk_overlap=overlap,
            text_search_config=os.environ.get("KAIZEN_TEXT_SEARCH_CONFIG", "english"),
            rrf_k=env_int("KAIZEN_RRF_K", 60),
            vector_weight=env_float("KAIZEN_VECTOR_WEIGHT", 1.0),
            text_weight=env_float("KAIZEN_TEXT_WEIGHT", 1.0),
            # Character-bigram BM25 ranks Japanese better than the small multilingual embedder does (recall@1
            # 0.90 vs 0.83 on JSQuAD dev), so queries written mostly in CJK lean on the full-text ranking.
            cjk_text_weight=env_float("KAIZEN_CJK_TEXT_WEIGHT", 2.0),
            candidates=env_int("KAIZEN_SEARCH_CANDIDATES", 50),
            fusion=_fusion(),
            # Convex fusion: alpha * min-max-normalised cosine + (1 - alpha) * max-normalised BM25 over the
            # candidates. Tuned on the ../shared/data dev sets (alternate halves agreed): 0.6 for English (0.5
            # before sentence vectors made the vector side stronger; on ClapNQ dev the difference is one question
            # of 208, 0.6-0.7 alike); 0.35 for CJK queries, where bigram-and-word BM25 ranks better than the small
            # multilingual embedder.
            vector_alpha=_alpha("KAIZEN_FUSION_ALPHA", 0.6),
            cjk_vector_alpha=_alpha("KAIZEN_CJK_FUSION_ALPHA", 0.35),
            # A chunk's vector score: (1 - w) * cosine with the chunk + w * cosine with its best sentence. On
            # JSQuAD dev (alternate halves) 0.5-0.8 all lift hybrid recall@1 from 0.929 to 0.933-0.935, and the
            # vector side alone from 0.83 to 0.86-0.88; 0 is the chunk vector alone.
            sentence_weight=_alpha("KAIZEN_SENTENCE_WEIGHT", 0.8),
        )


def _fusion() -> str:
    value = os.environ.get("KAIZEN_FUSION", "convex").strip().lower() or "convex"
    if value not in ("convex", "rrf"):
        raise ConfigError(f"KAIZEN_FUSION={value!r}: use convex or rrf")
    return value


def _alpha(name: str, default: float) -> float:
    value = env_float(name, default, minimum=0.0)
    if value > 1.0:
        raise ConfigError(f"{name}={value} must be between 0 and 1")
    return value
