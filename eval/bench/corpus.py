"""The database a benchmark runs in: its own embedded server, never the user's knowledge base.

`bench_store(home, prefix, overrides)` yields (store, embedder, home), the store's settings with `overrides`
(settings fields, for a benchmark's misconfigured start): with `home` the data is kept there (a second run
reuses it), without it a temporary KAIZEN_HOME is made, and deleted with its server when the benchmark ends,
however it ends (an error, Ctrl-C, SIGTERM: cli.main turns SIGTERM into an exception so this `finally` runs).
`ingest_corpus` ingests and refuses to benchmark a corpus that did not load cleanly. The corpus is a .jsonl file
(../shared/data format: a question's gold ids are the lines' ids) or a folder of files, each file one document
named, as `kaizen ingest --sample` names it, by its path relative to the folder's parent: with `--corpus docs`,
docs/cli.md is the id gold_passage_ids give (eval/bench/docs-questions.jsonl).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def bench_store(home: str | Path | None, prefix: str, overrides: dict | None = None) -> Iterator[tuple]:
    from store.database import Store
    from store.embeddings import store_embedder
    from store.settings import StoreSettings

    home_dir = Path(home or tempfile.mkdtemp(prefix=prefix))
    try:
        settings = StoreSettings(home=home_dir, database_url=None, **(overrides or {}))
        store = Store(settings, ephemeral=home is None)
        try:
            yield store, store_embedder(settings), home_dir
        finally:
            store.close()  # an ephemeral server stops and deletes its data directory here
    finally:
        # (a server another process still uses, such as a benchmark's worker, keeps running, and its files stay)
        if home is None and not (home_dir / "pgdata" / "postmaster.pid").exists():
            shutil.rmtree(home_dir, ignore_errors=True)


def ingest_corpus(store, embedder, path: str | Path):
    from store.ingest import ingest

    path = Path(path)
    relative_to = path.resolve().parent if path.is_dir() else None
    report = ingest(store, embedder, [str(path)], relative_to=relative_to)
    if report.errors:
        raise RuntimeError(f"ingestion failed: {report.errors[:3]}")
    return report


def load_average() -> float | None:
    """The 1-minute load average, recorded beside timings (two cores shared with other jobs skew them)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def article_file(corpus: str | Path, title: str, directory: str | Path) -> Path:
    """One long document as a person would add it: every passage of the corpus article `title`, in corpus order,
    joined with blank lines into `<directory>/<title>.txt`."""
    rows = [json.loads(line) for line in Path(corpus).read_text(encoding="utf-8").splitlines() if line.strip()]
    passages = [r["text"] for r in rows if r.get("title") == title]
    if not passages:
        raise ValueError(f"no article titled {title!r} in {corpus}")
    path = Path(directory) / f"{title}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(passages) + "\n", encoding="utf-8")
    return path
