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
