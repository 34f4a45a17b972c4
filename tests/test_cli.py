"""The `kaizen` command line itself, through click's CliRunner (fast: no database, no model)."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from cli.main import build_cli, cli, main
from cli.output import JSON_OPTION
from store.errors import KaizenError
from tests.support.common import REPO


def walk(group: click.Group, path: tuple[str, ...] = ()):
    """(path, command) of every command and group under `group`, depth first."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from walk(command, (*path, name))


COMMANDS = list(walk(cli))


def test_every_command_is_there():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert names >= {
        "ingest", "reindex", "search", "sql", "status", "schema", "chat", "ask", "serve", "graph", "models",
        "models list", "models path", "models install", "eval", "eval import", "eval probes", "eval run",
        "eval answer", "eval report", "eval calibrate", "eval score", "eval trusted", "worker", "improve", "gaps",
        "kb", "kb log", "kb revert", "kb prune", "export", "export qa", "bench", "bench retrieval", "bench scale",
        "bench answer", "bench judge", "bench recovery",
    }


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_help(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: kaizen {' '.join(path)} ")


def test_root_help_lists_whole_summaries():
    result = CliRunner().invoke(cli, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    # click would cut a summary at ~45 characters; the list shows each command's whole first line
    assert "add files and folders (.md .txt .html .pdf .jsonl) to the knowledge base" in result.stdout
    assert "-v, --verbose" in result.stdout


def test_every_command_and_option_is_explained():
    for path, command in COMMANDS:
        assert command.help and command.help.strip(), path
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, (path, param.name)


def test_json_is_one_shared_option():
    with_json = []
    for path, command in COMMANDS:
        flags = [p for p in command.params if "--json" in getattr(p, "opts", ())]
        if flags:
            assert flags == [JSON_OPTION], path
            with_json.append(" ".join(path))
    assert len(with_json) >= 25 and "ask" in with_json and "bench scale" in with_json


def test_unknown_command_is_a_usage_error(capsys):
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2 and "No such command 'no-such-command'" in result.stderr
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err
    assert main(["search"]) == 2  # a missing argument
    assert main(["search", "x", "-k", "many"]) == 2  # not a number
    assert main(["--help"]) == 0


def _tiny_cli():
    app = build_cli()

    @app.command(name="boom")
    def boom():
        """raise a known failure"""
        raise KaizenError("the lighthouse is closed")

    @app.command(name="three")
    def three():
        """return 3"""
        return 3

    return app


def test_known_failure_is_one_line():
    result = CliRunner().invoke(_tiny_cli(), ["boom"])
    assert result.exit_code == 2
    assert result.stderr == "kaizen: the lighthouse is closed\n" and result.stdout == ""


def test_verbose_keeps_the_traceback():
    result = CliRunner().invoke(_tiny_cli(), ["-v", "boom"])
    assert isinstance(result.exception, KaizenError) and result.exit_code == 1


def test_return_value_is_the_exit_code():
    assert CliRunner().invoke(_tiny_cli(), ["three"]).exit_code == 3


def test_the_copy_leaves_the_cli_alone():
    _tiny_cli()
    assert "boom" not in cli.commands


def test_library_failure_through_main(monkeypatch, capsys):
    def unreachable():
        raise KaizenError("cannot reach the database at nowhere")

    monkeypatch.setattr("cli.store_commands.open_store", unreachable)
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err == "kaizen: cannot reach the database at nowhere\n"
    with pytest.raises(KaizenError):
        main(["-v", "status", "--json"])


def test_interrupt(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("cli.store_commands.open_store", interrupted)
    assert main(["status"]) == 130
    assert capsys.readouterr().err == "kaizen: interrupted\n"


def test_optional_log_file():
    worker = cli.commands["worker"]
    assert worker.make_context("worker", []).params["log"] is None
    assert worker.make_context("worker", ["--log"]).params["log"] == ""
    assert worker.make_context("worker", ["--log", "--once"]).params == {"log": "", "once": True, "concurrency": 1}
    assert worker.make_context("worker", ["--log", "w.log"]).params["log"] == "w.log"


def test_help_loads_no_package():
    code = ("import sys; from cli.main import main; main(['--help']); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'store', 'agent', 'eval', 'sqlalchemy', "
            "'numpy', 'llama_cpp', 'ragas', 'langgraph'}), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == "[]", done.stderr
    assert "Usage: kaizen" in done.stdout


def test_models_path_prints_the_installed_file_or_one_line_why_not():
    from agent.model_files import chat_model_path

    ok = CliRunner().invoke(cli, ["models", "path", "smollm2"])
    assert ok.exit_code == 0 and ok.stdout.strip() == str(chat_model_path("smollm2"))
    missing = CliRunner().invoke(cli, ["models", "path", "/nowhere/model.gguf"])
    assert missing.exit_code == 2 and "no such file" in missing.stderr and "\n" not in missing.stderr.strip()
