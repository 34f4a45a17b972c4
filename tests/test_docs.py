"""The docs stay true to the code: every generated page equals what `make docs` would write now, the README stays
short, and every relative link in README.md and docs/ resolves."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from cli import docs

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250


def _assert_current(page: str, expected: str) -> None:
    current = (REPO / page).read_text(encoding="utf-8") if (REPO / page).exists() else None
    assert current is not None, f"{page} is missing: run `make docs`"
    if current != expected:
        changed = next(i for i, (a, b) in enumerate(zip(current.splitlines() + [""], expected.splitlines() + [""]))
                       if a != b)
        pytest.fail(f"{page} has drifted from the code (first difference at line {changed + 1}): run `make docs`",
                    pytrace=False)


@pytest.mark.parametrize("page", [docs.CLI_PAGE, docs.CONFIGURATION_PAGE, docs.HOW_IT_WORKS_PAGE])
def test_generated_page_matches_the_code(page):
    _assert_current(page, docs.render(page))


def test_schema_page_matches_the_migrated_database(store):
    _assert_current(docs.SCHEMA_PAGE, docs.schema_page(store))


def test_readme_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move depth to docs/"


def test_readme_keeps_the_two_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make chat" in readme and "make test" in readme


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _links(text: str) -> list[str]:
    return LINK.findall(FENCE.sub("", text))


def _anchors(markdown: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", markdown), re.M):
        slug = docs.github_anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def _broken_links(path: Path) -> list[str]:
    broken = []
    for target in _links(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, fragment = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved.read_text(encoding="utf-8")):
            broken.append(f"{target} (no such heading)")
    return broken


def test_readme_links_resolve():
    readme = REPO / "README.md"
    assert not _broken_links(readme), f"README.md has broken links: {_broken_links(readme)}"
    for target in _links(readme.read_text(encoding="utf-8")):
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
            assert target.startswith("docs/"), f"README.md links outside docs/: {target}"


@pytest.mark.parametrize("page", sorted(p.name for p in (REPO / "docs").glob("*.md")))
def test_docs_links_resolve(page):
    path = REPO / "docs" / page
    assert not _broken_links(path), f"docs/{page} has broken links: {_broken_links(path)}"


def test_no_help_text_shows_a_path_of_this_machine():
    """docs/cli.md is generated from --help: a default shown as an absolute path would make the page (and how
    click wraps it) depend on where the checkout is, so a clean clone elsewhere would fail the drift test."""
    import click

    from cli.main import cli

    def commands(group, prefix):
        for name, command in getattr(group, "commands", {}).items():
            yield f"{prefix} {name}", command
            yield from commands(command, f"{prefix} {name}")

    shown = [f"{path} --{p.name}" for path, command in commands(cli, "kaizen") for p in command.params
             if isinstance(p, click.Option) and p.show_default and isinstance(p.default, str)
             and Path(p.default).is_absolute()]
    assert not shown, shown
