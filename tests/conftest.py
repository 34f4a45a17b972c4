"""Tests run against a real PostgreSQL (the embedded server in a temporary KAIZEN_HOME, or KAIZEN_TEST_DATABASE_URL)
and the real embedding model."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def kaizen_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("kaizen-home")
    os.environ["KAIZEN_HOME"] = str(home)
    if os.environ.get("KAIZEN_TEST_DATABASE_URL"):
        os.environ["KAIZEN_DATABASE_URL"] = os.environ["KAIZEN_TEST_DATABASE_URL"]
    else:
        os.environ.pop("KAIZEN_DATABASE_URL", None)
    return dict(os.environ)


@pytest.fixture(scope="session")
def store(kaizen_env):
    from store.database import Store

    s = Store()
    yield s
    s.close()


@pytest.fixture(scope="session")
def embedder():
    from store.embeddings import load_embedder

    return load_embedder(threads=2)


def reset(store) -> None:
    with store.session() as s:
        names = s.execute(sa.text("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'chunks_embedding_v%'")).scalars().all()
        for name in names:
            s.execute(sa.text(f'DROP INDEX IF EXISTS "{name}"'))
        s.execute(sa.text("TRUNCATE documents, chunks, kb_versions, kb_changes, ingest_runs RESTART IDENTITY CASCADE"))


@pytest.fixture
def clean_store(store):
    reset(store)
    return store


def run_cli(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `kaizen ...` as a person would, in a child process sharing the test database."""
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
