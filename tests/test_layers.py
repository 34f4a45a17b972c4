"""The house rule: imports point one way, eval -> agent -> store, and only the CLI sees all three.

Every import counts, the lazy ones inside functions too, and so does a module named by string to `__import__` or
`importlib.import_module`. The benchmarks (eval/bench/) are leaves: no library module imports them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.common import REPO

# package -> the packages it may not import
FORBIDDEN = {
    "store": {"agent", "eval", "cli"},
    "agent": {"eval", "cli"},
    "eval": {"cli"},
    "migrations": {"agent", "eval", "cli"},
}
PACKAGES = ("store", "agent", "eval", "cli", "migrations")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}".lstrip(".")) for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("__import__", "import_module"):
                found.append((node.lineno, node.args[0].value))
    return found


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def violations() -> list[str]:
    problems = []
    for path in source_files():
        owner = module_name(path).split(".")[0]
        own = module_name(path)
        for line, target in imported_modules(path):
            top = target.split(".")[0]
            where = f"{path.relative_to(REPO)}:{line} imports {target}"
            if top in FORBIDDEN.get(owner, ()):
                problems.append(where)
            elif (target == "eval.bench" or target.startswith("eval.bench.")) and owner != "cli" \
                    and not own.startswith("eval.bench"):
                problems.append(where + " (benchmarks are leaves)")
    return sorted(set(problems))


def test_imports_point_one_way():
    assert violations() == []


def test_the_check_sees_lazy_and_string_imports(tmp_path, monkeypatch):
    """The scan must catch what the old CLI did: a lazy import and `__import__("eval....")` inside agent/."""
    fake = tmp_path / "agent"
    fake.mkdir()
    (fake / "sneaky.py").write_text(
        "def f():\n    from eval.judging import judge\n    return __import__('eval.bench.answer')\n"
        "from .. import cli\n")
    import tests.test_layers as layers

    monkeypatch.setattr(layers, "REPO", tmp_path)
    monkeypatch.setattr(layers, "PACKAGES", ("agent",))
    found = layers.violations()
    assert any("imports eval.judging" in v for v in found)
    assert any("imports eval.bench.answer" in v for v in found)
    assert any("imports cli" in v for v in found)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_has_files(package):
    assert list((REPO / package).rglob("*.py")), package
