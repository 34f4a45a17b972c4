"""The settings are declared once: every KAIZEN_ name the code uses is a field of one of the settings
classes, nothing outside them reads a KAIZEN_ variable from the environment, every field says what it is for,
and a bad value stops with one line naming the variable. No database, no model: this is the fast tier."""

from __future__ import annotations

import ast
import re

import pytest

from agent.settings import AgentSettings
from cli.settings import ServeSettings
from eval.settings import EvalSettings
from store.errors import KaizenError
from store.settings import ConfigError, StoreSettings, env_name
from tests.support.common import REPO

CLASSES = (StoreSettings, AgentSettings, EvalSettings, ServeSettings)
SETTINGS_MODULES = {"store/settings.py", "agent/settings.py", "eval/settings.py", "cli/settings.py"}
SCANNED = ("agent", "store", "eval", "cli")
# KAIZEN_ names that are not settings of the classes (docs/configuration.md lists them under "Outside the settings
# classes"): the Makefile's switch for `make chat`, and the test suite's own knobs (KAIZEN_TEST_*, read by tests/).
OUTSIDE_THE_CLASSES = {"KAIZEN_CHAT_WORKER", "KAIZEN_TEST_DATABASE_URL"}
NAME = re.compile(r"\bKAIZEN_[A-Z0-9_]*[A-Z0-9](?:_\*)?")  # KAIZEN_LLM_* names a family of settings


def declared() -> dict[str, tuple[type, str]]:
    """{environment variable: (class, field name)} over the settings classes."""
    out: dict[str, tuple[type, str]] = {}
    for cls in CLASSES:
        for name in cls.model_fields:
            env = env_name(cls, name)
            assert env not in out, f"{env} is declared by both {out[env][0].__name__} and {cls.__name__}"
            out[env] = (cls, name)
    return out


def sources() -> list:
    files = [p for folder in SCANNED for p in sorted((REPO / folder).rglob("*.py"))]
    return [p for p in files if "__pycache__" not in p.parts]


def test_every_kaizen_name_in_the_code_is_a_declared_setting():
    known = declared()
    used: dict[str, set[str]] = {}
    for path in [*sources(), REPO / "Makefile"]:
        for name in NAME.findall(path.read_text(encoding="utf-8")):
            used.setdefault(name, set()).add(str(path.relative_to(REPO)))

    def is_known(name: str) -> bool:
        if name.endswith("_*"):
            return any(k.startswith(name[:-1]) for k in known)
        return name in known or name in OUTSIDE_THE_CLASSES

    missing = {name: sorted(where) for name, where in used.items() if not is_known(name)}
    assert not missing, f"KAIZEN_ names used but declared by no settings class: {missing}"
    assert "KAIZEN_FUSION_ALPHA" in known and "KAIZEN_HOME" in known  # the scan and the aliases both work
    # KAIZEN_CHAT_WORKER is the Makefile's own switch: Python code never reads it
    readers = [w for w in used.get("KAIZEN_CHAT_WORKER", ()) if w.endswith(".py") and w != "cli/docs.py"]
    assert not readers, readers


def _reads_of_kaizen_variables(path) -> list[str]:
    """`os.environ.get("KAIZEN_X")`, `os.environ["KAIZEN_X"]` (read), `os.getenv("KAIZEN_X")`, `"KAIZEN_X" in
    os.environ`: one line per read (writing one, as the worker does for its children, is not reading it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def is_environ(node) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or \
            (isinstance(node, ast.Name) and node.id == "environ")

    def kaizen(node) -> bool:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value.startswith("KAIZEN_")
        if isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            return isinstance(first, ast.Constant) and str(first.value).startswith("KAIZEN_")
        return False

    found = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and is_environ(func.value):
                key = node.args[0]
            elif (isinstance(func, ast.Attribute) and func.attr == "getenv") or \
                    (isinstance(func, ast.Name) and func.id == "getenv"):
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and is_environ(node.value):
            key = node.slice
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                and any(is_environ(c) for c in node.comparators):
            key = node.left
        if key is not None and kaizen(key):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_nothing_outside_the_settings_modules_reads_a_kaizen_variable():
    reads = [line for path in sources() if str(path.relative_to(REPO)) not in SETTINGS_MODULES
             for line in _reads_of_kaizen_variables(path)]
    assert not reads, "read the settings object instead (passed in from where the command starts):\n" + \
        "\n".join(reads)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_setting_is_described_typed_and_has_a_default(cls):
    assert cls.model_config.get("env_prefix") == "KAIZEN_"
    for name, field in cls.model_fields.items():
        where = f"{cls.__name__}.{name} ({env_name(cls, name)})"
        assert field.description and field.description.strip(), f"{where} has no description"
        assert "\n" not in field.description, f"{where}: the description is one line"
        assert field.annotation is not None, f"{where} has no type"
        assert not field.is_required(), f"{where} has no default (every setting needs none to be set)"
        if field.validation_alias is None:
            assert env_name(cls, name) == f"KAIZEN_{name.upper()}"


def test_defaults_are_the_documented_ones(monkeypatch):
    for env in declared():
        monkeypatch.delenv(env, raising=False)
    store, agent, evaluation = StoreSettings(), AgentSettings(), EvalSettings()
    assert (store.vector_alpha, store.cjk_vector_alpha, store.fusion, store.chunk_tokens, store.chunk_overlap,
            store.candidates, store.embedder, store.database_url) == (0.6, 0.35, "convex", 320, 48, 50, "numpy", None)
    assert store.pgdata == store.home / "pgdata" and store.max_file_bytes == 20 * 1024 * 1024
    assert (agent.top_k, agent.llm_ctx, agent.llm_max_tokens, agent.grade_min_yes, agent.llm_grade) == \
        (4, 4096, 256, None, True)
    assert (evaluation.drift_window, evaluation.trust_auc, evaluation.repair_max_rounds, evaluation.judge_model) == \
        (50, 0.75, 5, None)


def test_the_environment_is_read_where_settings_are_made_and_only_there(monkeypatch):
    monkeypatch.setenv("KAIZEN_FUSION_ALPHA", "0.4")  # an alias: the field is vector_alpha
    monkeypatch.setenv("KAIZEN_LLM_GRADE", "off")
    monkeypatch.setenv("KAIZEN_DRIFT_WINDOW", "")  # empty means the default
    monkeypatch.setenv("KAIZEN_FUSION", " RRF ")
    assert StoreSettings().vector_alpha == 0.4 and StoreSettings().fusion == "rrf"
    assert AgentSettings().llm_grade is False and EvalSettings().drift_window == 50
    assert StoreSettings(vector_alpha=0.2).vector_alpha == 0.2  # arguments win over the environment
    assert StoreSettings.defaults().vector_alpha == 0.6 and AgentSettings.defaults().llm_grade is True
    for word, value in (("on", True), ("1", True), ("yes", True), ("0", False), ("false", False)):
        monkeypatch.setenv("KAIZEN_LLM_CHECK", word)
        assert AgentSettings().llm_check is value


@pytest.mark.parametrize("cls, env, value, message", [
    (StoreSettings, "KAIZEN_CHUNK_TOKENS", "abc", "KAIZEN_CHUNK_TOKENS='abc' is not a whole number"),
    (EvalSettings, "KAIZEN_DRIFT_TOLERANCE", "lots", "KAIZEN_DRIFT_TOLERANCE='lots' is not a number"),
    (AgentSettings, "KAIZEN_TOP_K", "0", "KAIZEN_TOP_K=0 must be at least 1"),
    (EvalSettings, "KAIZEN_DRIFT_TOLERANCE", "-1", "KAIZEN_DRIFT_TOLERANCE=-1 must be at least 0"),
    (StoreSettings, "KAIZEN_FUSION_ALPHA", "1.5", "KAIZEN_FUSION_ALPHA=1.5 must be between 0 and 1"),
    (StoreSettings, "KAIZEN_CHUNK_TOKENS", "600",
     "KAIZEN_CHUNK_TOKENS=600: the embedding model reads at most 510 tokens"),
    (AgentSettings, "KAIZEN_LLM_GRADE", "maybe", "KAIZEN_LLM_GRADE='maybe': use on or off"),
    (StoreSettings, "KAIZEN_FUSION", "borda", "KAIZEN_FUSION='borda': use convex or rrf"),
    (StoreSettings, "KAIZEN_CHUNK_OVERLAP", "400",  # the cross-field checks
     "KAIZEN_CHUNK_OVERLAP=400 must be smaller than KAIZEN_CHUNK_TOKENS=320"),
    (AgentSettings, "KAIZEN_LLM_MAX_TOKENS", "4000",
     "KAIZEN_LLM_MAX_TOKENS=4000 must be at most half of KAIZEN_LLM_CTX=4096"),
    (EvalSettings, "KAIZEN_INTERACTION_EVALUATOR", "nocolon",
     "KAIZEN_INTERACTION_EVALUATOR='nocolon': use module:function"),
])
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, cls, env, value, message):
    for name in ("KAIZEN_CHUNK_TOKENS", "KAIZEN_LLM_CTX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        cls()
    assert str(info.value) == message
    assert "\n" not in str(info.value)
    assert isinstance(info.value, KaizenError) and isinstance(info.value, ValueError)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no pydantic traceback to read


def test_a_bad_argument_is_reported_the_same_way():
    with pytest.raises(ConfigError, match=r"^KAIZEN_GRADE_MIN_YES=1.5 must be between 0 and 1$"):
        AgentSettings(grade_min_yes=1.5)
    with pytest.raises(ConfigError, match="KAIZEN_CHUNK_OVERLAP=100 must be smaller than KAIZEN_CHUNK_TOKENS=64"):
        StoreSettings.defaults(chunk_tokens=64, chunk_overlap=100)
