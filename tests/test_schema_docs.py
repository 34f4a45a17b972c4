from pathlib import Path

from store.sql_console import schema_markdown
from tests.schema_docs import readme_section

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_schema_matches_the_database(store):
    documented = readme_section(README.read_text(encoding="utf-8"))
    assert documented == schema_markdown(store), "README schema drifted: run `make schema-docs`"
