"""The embedded server's handle file: pids of killed processes must not keep the server alive for ever."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from store.embedded_server import _prune_stale_handles


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_pids_are_pruned(tmp_path):
    dead = _dead_pid()
    handle = tmp_path / ".handle_pids.json"
    handle.write_text(json.dumps([dead, os.getppid()]))
    assert _prune_stale_handles(tmp_path) == [dead]
    assert json.loads(handle.read_text()) == [os.getppid()]


@pytest.mark.slow
def test_a_second_process_attaches_to_the_running_server(store):
    """A REPL and a worker share one server: a child process reaches the same database and sees our data."""
    import sqlalchemy as sa

    with store.session() as s:
        s.execute(sa.text("CREATE TABLE IF NOT EXISTS attach_probe (x int)"))
        s.execute(sa.text("TRUNCATE attach_probe"))
        s.execute(sa.text("INSERT INTO attach_probe VALUES (42)"))
    code = ("import warnings; warnings.simplefilter('ignore'); import sqlalchemy as sa; "
            "from store.database import Store; "
            "s = Store(); print(s.engine.connect().execute(sa.text('SELECT x FROM attach_probe')).scalar())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ),
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    with store.session() as s:
        s.execute(sa.text("DROP TABLE attach_probe"))
    assert result.stdout.strip() == "42", result.stderr


@pytest.mark.slow
def test_the_last_user_stops_the_server_even_after_another_user_was_killed(tmp_path):
    """A worker killed with SIGKILL beside a benchmark must not leave the benchmark's server running."""
    import signal
    import time

    home = tmp_path / "home"
    code = ("import sys, time, warnings; warnings.simplefilter('ignore'); from store.database import Store; "
            "from store.settings import StoreSettings; "
            "s = Store(StoreSettings(home=sys.argv[1])); s.engine.connect().close(); print('up', flush=True); "
            "time.sleep(float(sys.argv[2]))")
    repo = os.path.dirname(os.path.dirname(__file__))
    first = subprocess.Popen([sys.executable, "-c", code, str(home), "8"], stdout=subprocess.PIPE, text=True,
                             cwd=repo)
    assert first.stdout.readline().strip() == "up"
    postmaster = int((home / "pgdata" / "postmaster.pid").read_text().split()[0])
    second = subprocess.Popen([sys.executable, "-c", code, str(home), "60"], stdout=subprocess.PIPE, text=True,
                              cwd=repo)
    assert second.stdout.readline().strip() == "up"
    second.send_signal(signal.SIGKILL)
    second.wait()
    assert first.wait(timeout=60) == 0
    import psutil

    deadline = time.monotonic() + 20
    while psutil.pid_exists(postmaster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not psutil.pid_exists(postmaster), "the server outlived its last user"


@pytest.mark.slow
def test_a_second_store_in_the_same_process_keeps_its_handle(store):
    """Opening another Store on the running server (an Agent made without one, say) must not take this
    process out of the handle file: the next child to exit would think it was the last user and stop the
    server under us."""
    from store.database import Store

    handle = store.settings.pgdata / ".handle_pids.json"
    assert os.getpid() in json.loads(handle.read_text())
    second = Store(store.settings)
    try:
        assert os.getpid() in json.loads(handle.read_text())
    finally:
        second.close()
    assert os.getpid() in json.loads(handle.read_text())


@pytest.mark.slow
def test_shared_buffers_are_set_for_the_next_start(tmp_path, caplog):
    """KAIZEN_PG_SHARED_BUFFERS_MB is written into the server's own configuration and taken at its next start;
    once it runs with it, nothing is rewritten and nothing is said."""
    import logging

    import sqlalchemy as sa

    from store.database import Store
    from store.embedded_server import restart
    from store.settings import StoreSettings

    settings = StoreSettings(home=tmp_path / "home", pg_shared_buffers_mb=144)
    with caplog.at_level(logging.INFO, logger="store.database"):
        first = Store(settings, migrate=False, ephemeral=True)
    try:
        assert "144MB from its next start" in caplog.text
        auto = settings.pgdata / "postgresql.auto.conf"
        assert "shared_buffers = '144MB'" in auto.read_text()
        restart(settings.pgdata)
        with first.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW shared_buffers")).scalar_one() == "144MB"
        written = auto.stat().st_mtime_ns
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="store.database"):
            Store(settings, migrate=False).engine.dispose()
        assert "shared buffers" not in caplog.text and auto.stat().st_mtime_ns == written
        # left unset, the size stays what the server was given (by this setting before, or by hand)
        Store(StoreSettings(home=tmp_path / "home"), migrate=False).engine.dispose()
        assert "shared_buffers = '144MB'" in auto.read_text()
    finally:
        first.close()
