"""Helpers shared by many tests: the repository paths, emptying the knowledge store, and running `kaizen`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def reset(store) -> None:
    with store.session() as s:
        names = s.execute(
            sa.text("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'chunks_embedding_v%'")
        ).scalars().all()
        for name in names:
            s.execute(sa.text(f'DROP INDEX IF EXISTS "{name}"'))
        s.execute(sa.text("TRUNCATE documents, chunks, kb_versions, kb_changes, kb_pins, ingest_runs "
                          "RESTART IDENTITY CASCADE"))


def run_cli(
    *args: str, env: dict | None = None, input: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `kaizen ...` as a person would, in a child process sharing the test database."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
