"""Tests run against a real PostgreSQL (the embedded server in a temporary KAIZEN_HOME, or KAIZEN_TEST_DATABASE_URL)
and the real embedding model."""

from __future__ import annotations

import os
import warnings

import pytest

from tests.support.common import reset

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
# Fixtures shared by several test files live in tests/support/ and are registered here.
pytest_plugins = ["tests.support.repair"]


@pytest.fixture(scope="session")
def kaizen_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("kaizen-home")
    os.environ["KAIZEN_HOME"] = str(home)
    # Plumbing (worker, judge wiring, repairs, probes) runs on the small model; the tests of answering behaviour
    # (tests/test_agent.py, tests/test_repl.py, tests/test_japanese.py) ask the default model by name (DEFAULT_MODEL).
    os.environ["KAIZEN_CHAT_MODEL"] = "smollm2"
    # The repair guard's answer runs are tested where they are the point (tests/test_guard_answers.py); elsewhere
    # the planner judges on retrieval alone, so that every planner test does not answer with a model.
    os.environ["KAIZEN_GUARD_ANSWERS"] = "0"
    os.environ.pop("KAIZEN_JUDGE_MODEL", None)
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


@pytest.fixture
def clean_store(store):
    reset(store)
    return store
