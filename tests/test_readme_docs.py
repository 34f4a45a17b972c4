from pathlib import Path

from store.sql_console import schema_markdown
from tests.readme_docs import graph_markdown, readme_section

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_schema_matches_the_database(store):
    documented = readme_section(README.read_text(encoding="utf-8"), "schema")
    assert documented == schema_markdown(store), "README schema drifted: run `make docs`"


def test_readme_graph_matches_the_compiled_graph():
    documented = readme_section(README.read_text(encoding="utf-8"), "graph")
    assert documented == graph_markdown(), "README graph drifted: run `make docs`"
