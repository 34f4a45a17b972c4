"""Query-time retrieval parameters of a KB version: the settings are the starting point, a version's tuned values
(`kb_versions.search_params`, written by the planner's tune_search) override them, and a person's pins
(`kb_pins`, `kaizen kb pin`) override both and are never varied by the tuner.

Parameters are named as their settings are, without the KAIZEN_ prefix (fusion_alpha is KAIZEN_FUSION_ALPHA), and
validated with the settings' own bounds. None of them needs re-embedding: a tuned version shares its chunks'
vectors with the version it was derived from.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .settings import ConfigError, StoreSettings, env_name

# settings fields a KB version may carry its own value of
FIELDS = ("vector_alpha", "cjk_vector_alpha", "sentence_weight", "candidates")


def public_name(field: str) -> str:
    return env_name(StoreSettings, field).removeprefix("KAIZEN_").lower()


NAMES = {public_name(f): f for f in FIELDS}
# the chunk size is tuned too (a candidate version re-chunked at another size), so a person can pin it as well
PINNABLE = {**NAMES, "chunk_tokens": "chunk_tokens"}


def field_of(name: str, names: dict = PINNABLE) -> str:
    """The settings field of a parameter named `fusion_alpha` or `KAIZEN_FUSION_ALPHA`; ConfigError otherwise."""
    key = name.strip().lower().removeprefix("kaizen_")
    if key not in names:
        raise ConfigError(f"{name!r} is not a tunable retrieval parameter: use one of {', '.join(sorted(names))}")
    return names[key]


def validate(values: dict) -> dict:
    """`values` by public name, checked against the settings' types and bounds; returns them parsed."""
    fields = {field_of(name): value for name, value in values.items()}
    parsed = StoreSettings.defaults(**fields)  # ConfigError naming the variable on a bad value
    return {public_name(f): getattr(parsed, f) for f in fields}


def overrides(version) -> dict:
    """The version's tuned values with the pins over them, by settings field."""
    merged = {**(getattr(version, "search_params", None) or {}), **(getattr(version, "pins", None) or {})}
    return {NAMES[k]: v for k, v in merged.items() if k in NAMES}


def apply(settings: StoreSettings, version) -> StoreSettings:
    """The settings a search of `version` runs with."""
    update = overrides(version)
    return settings.model_copy(update=update) if update else settings


def describe(settings: StoreSettings, version) -> list[dict]:
    """Every tunable parameter's value for `version` and where it comes from (settings, tuned, pinned; the chunk
    size is the version's own: a pin on it only keeps the tuner from re-chunking)."""
    tuned = getattr(version, "search_params", None) or {}
    pins = getattr(version, "pins", None) or {}
    rows = []
    for name, field in sorted(PINNABLE.items()):
        if field == "chunk_tokens":  # the version's own; a pin keeps the tuner from re-chunking
            rows.append({"name": name, "value": version.chunk_tokens, "origin": "pinned" if name in pins else
                         "version", "setting": env_name(StoreSettings, field)})
            continue
        origin = "pinned" if name in pins else "tuned" if name in tuned else "settings"
        value = pins.get(name, tuned.get(name, getattr(settings, field)))
        rows.append({"name": name, "value": value, "origin": origin, "setting": env_name(StoreSettings, field)})
    return rows


def pin(session: Session, name: str, value, actor: str) -> dict:
    from .kb_versions import record_change

    parsed = validate({name: value})
    key, val = next(iter(parsed.items()))
    previous = session.execute(sa.text("SELECT value FROM kb_pins WHERE name = :n"), {"n": key}).scalar()
    session.execute(sa.text(
        "INSERT INTO kb_pins (name, value, actor) VALUES (:n, CAST(:v AS jsonb), :a) ON CONFLICT (name) DO UPDATE "
        "SET value = EXCLUDED.value, actor = EXCLUDED.actor, pinned_at = now()"),
        {"n": key, "v": json.dumps(val), "a": actor})
    record_change(session, kind="pin", target=f"param:{key}", before={"pinned": previous},
                  after={"pinned": val}, actor=actor)
    return {"name": key, "value": val, "previous": previous}


def unpin(session: Session, name: str, actor: str) -> dict | None:
    from .kb_versions import record_change

    key = public_name(field_of(name))
    previous = session.execute(sa.text("DELETE FROM kb_pins WHERE name = :n RETURNING value"), {"n": key}).scalar()
    if previous is None:
        return None
    record_change(session, kind="unpin", target=f"param:{key}", before={"pinned": previous}, after={"pinned": None},
                  actor=actor)
    return {"name": key, "previous": previous}


__all__ = ["FIELDS", "NAMES", "PINNABLE", "apply", "describe", "field_of", "overrides", "pin", "public_name", "unpin",
           "validate"]
