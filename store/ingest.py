"""`kaizen ingest`: incremental, one transaction per document, a per-source error report.

Unchanged documents (same content hash) are skipped, changed ones replaced, and documents whose source
vanished from a scanned file or folder are marked `missing` and leave the active version. A crash or Ctrl-C
loses at most the document being written: its transaction rolls back and its previous chunks stay.

A file's document is named by its absolute `file://` URI. With `relative_to` (`kaizen ingest --sample`, a folder
corpus in `kaizen bench`) the files are named by their path inside that folder instead, `kaizen://sample/docs/cli.md`
with the source id `docs/cli.md`, so every clone of a repository refreshes the same documents; such a run is the
whole sample, and sample documents it no longer lists are marked `missing`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import quote, unquote

import sqlalchemy as sa

from .chunking import Chunker
from .database import Store
from .embeddings import Embedder
from .indexing import content_hash, prepare, write_chunks
from .kb_versions import KBVersion, ensure_active_version, record_change
from .loaders import LoadedFile, LoadError, SourceDocument, load_paths

ACTOR = "kaizen ingest"
SAMPLE_URI_PREFIX = "kaizen://sample/"
# The pages `make chat` loaded before Kaizen's own docs became the sample: replaced by them, never the user's own.
LEGACY_SAMPLE_DIR = "/store/sample_kb/"
LEGACY_SAMPLE_URI_PATTERN = "file://%" + LEGACY_SAMPLE_DIR.replace("_", "\\_") + "%"  # the same, as a LIKE pattern


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    missing: int = 0
    failed: int = 0
    chunks: int = 0
    errors: list[LoadError] = field(default_factory=list)
    seconds: float = 0.0
    kb_version: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "missing": self.missing,
            "failed": self.failed,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 2),
            "chunks_per_second": round(self.chunks / self.seconds, 2) if self.seconds else None,
            "kb_version": self.kb_version,
            "errors": [{"source": e.source, "message": e.message} for e in self.errors],
        }


Progress = Callable[[int, int, str], None]


def _known_documents(store: Store) -> dict[str, tuple[int, str, str]]:
    with store.session() as s:
        rows = s.execute(sa.text("SELECT source_uri, id, content_hash, status FROM documents")).all()
    return {uri: (doc_id, digest, status) for uri, doc_id, digest, status in rows}


def _write_document(store: Store, version: KBVersion, doc: SourceDocument, digest: str, chunks) -> tuple[bool, int]:
    """Replace one document's chunks in the active version, atomically. Returns (was_new, document id)."""
    with store.session() as s:
        # Asynchronous commit: the transaction stays atomic and the database consistent, but the commit does not
        # wait for its WAL flush (~4 ms a document here). An OS crash can lose the last fraction of a second of
        # committed documents; their hashes then no longer match and the next `kaizen ingest` writes them again.
        s.execute(sa.text("SET LOCAL synchronous_commit = off"))
        # The previous row and the upsert in one statement: `previous` reads the statement's snapshot, the row as
        # it was before the upsert (which takes the row lock; a FOR UPDATE here would skip the row it changes).
        doc_id, previous_hash = s.execute(
            sa.text(
                """
                WITH previous AS (
                    SELECT id, content_hash FROM documents WHERE source_uri = :uri
                ), upserted AS (
                    INSERT INTO documents (source_uri, source_path, source_id, title, content_hash, body, metadata,
                                           status)
                    VALUES (:uri, :path, :sid, :title, :hash, :body, CAST(:meta AS jsonb), 'active')
                    ON CONFLICT (source_uri) DO UPDATE SET
                        source_path = EXCLUDED.source_path, source_id = EXCLUDED.source_id, title = EXCLUDED.title,
                        content_hash = EXCLUDED.content_hash, body = EXCLUDED.body, metadata = EXCLUDED.metadata,
                        status = 'active', updated_at = now()
                    RETURNING id
                )
                SELECT upserted.id, previous.content_hash FROM upserted LEFT JOIN previous ON true
                """
            ),
            {
                "uri": doc.source_uri,
                "path": doc.source_path,
                "sid": doc.source_id,
                "title": doc.title,
                "hash": digest,
                "body": doc.text,
                "meta": json.dumps(doc.metadata, ensure_ascii=False),
            },
        ).one()
        removed = s.execute(
            sa.text("DELETE FROM chunks WHERE document_id = :id AND kb_version = :v"), {"id": doc_id, "v": version.id}
        ).rowcount
        write_chunks(s, document_id=doc_id, kb_version=version.id, text_search_config=version.text_search_config,
                     lexical_scheme=version.lexical_scheme, chunks=chunks)
        record_change(
            s,
            kind="document_added" if previous_hash is None else "document_updated",
            kb_version=version.id,
            document_id=doc_id,
            target=doc.source_uri,
            before=None if previous_hash is None else {"content_hash": previous_hash, "chunks": removed},
            after={"content_hash": digest, "chunks": len(chunks)},
            actor=ACTOR,
        )
    return previous_hash is None, doc_id


def _mark_missing(store: Store, version: KBVersion, uris: list[str]) -> int:
    marked = 0
    for uri in uris:
        with store.session() as s:
            doc_id = s.execute(
                sa.text("UPDATE documents SET status = 'missing', updated_at = now() "
                        "WHERE source_uri = :uri AND status = 'active' RETURNING id"),
                {"uri": uri},
            ).scalar()
            if doc_id is None:
                continue
            removed = s.execute(
                sa.text("DELETE FROM chunks WHERE document_id = :id AND kb_version = :v"),
                {"id": doc_id, "v": version.id}
            ).rowcount
            record_change(s, kind="document_missing", kb_version=version.id, document_id=doc_id, target=uri,
                          before={"status": "active", "chunks": removed}, after={"status": "missing"}, actor=ACTOR)
            marked += 1
    return marked


def _relative_name(path: str, root: Path) -> str | None:
    """`path` inside `root` as a POSIX relative path, or None when it lies outside."""
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return None


def _as_sample(file: LoadedFile, name: str) -> None:
    """Name the file's documents by `name`, its path inside the sample's folder (a .jsonl line keeps its id)."""
    for doc in file.documents:
        doc.source_uri = SAMPLE_URI_PREFIX + quote(name) + (f"#{quote(doc.source_id)}" if doc.source_id else "")
        doc.source_id = doc.source_id or name


def _vanished_from_sample(known: dict, seen: set[str], failed_names: set[str]) -> list[str]:
    """Active sample documents this run (the whole sample) no longer lists, and the pages of the older sample."""
    gone = []
    for uri, (_, _, status) in known.items():
        if status != "active" or uri in seen:
            continue
        if uri.startswith(SAMPLE_URI_PREFIX):
            if unquote(uri[len(SAMPLE_URI_PREFIX):].split("#", 1)[0]) not in failed_names:
                gone.append(uri)
        elif uri.startswith("file://") and LEGACY_SAMPLE_DIR in uri:
            gone.append(uri)
    return gone


def _vanished(known: dict, loaded: list[LoadedFile], roots: list[str], seen: set[str]) -> list[str]:
    """Active documents that used to come from a scanned place and no longer do."""
    complete_files = {f.path for f in loaded if f.complete}
    failed_files = {f.path for f in loaded if not f.complete}
    dir_roots = [os.path.realpath(r) + os.sep for r in roots if os.path.isdir(r)]
    gone = []
    for uri, (_, _, status) in known.items():
        if status != "active" or uri in seen:
            continue
        path = uri[len("file://"):].split("#", 1)[0] if uri.startswith("file://") else None
        if path is None:
            continue
        path = unquote(path)
        if path in failed_files:
            continue  # part of that file could not be read: we cannot tell what vanished
        if path in complete_files or (any(path.startswith(r) for r in dir_roots) and not os.path.exists(path)):
            gone.append(uri)
    return gone


def ingest(store: Store, embedder: Embedder, paths: list[str], progress: Progress | None = None,
           relative_to: str | Path | None = None) -> IngestReport:
    """Ingest `paths`; with `relative_to` they are the whole sample, named by their path inside that folder."""
    started = time.perf_counter()
    report = IngestReport()
    settings = store.settings
    with store.session() as s:
        version = ensure_active_version(s, embedder.name, embedder.dim, settings)
        run_id = s.execute(
            sa.text("INSERT INTO ingest_runs (kb_version, paths) VALUES (:v, :paths) RETURNING id"),
            {"v": version.id, "paths": list(paths)},
        ).scalar_one()
    report.kb_version = version.id
    chunker = Chunker(embedder.count_tokens, version.chunk_tokens, version.chunk_overlap)

    root = Path(relative_to).resolve() if relative_to is not None else None
    loaded: list[LoadedFile] = []
    failed_names: set[str] = set()
    path_errors = False  # a path that could not be scanned at all: the sample's extent is unknown
    for item in load_paths(paths, settings.max_file_bytes):
        if isinstance(item, LoadError):
            report.errors.append(item)
            path_errors = True
            continue
        if root is not None:
            name = _relative_name(item.path, root)
            if name is None:
                report.errors.append(LoadError(item.path, f"outside {root}, which the sample's names are relative to"))
                continue
            _as_sample(item, name)
            if not item.complete:
                failed_names.add(name)
        loaded.append(item)
        report.errors.extend(item.errors)
    report.failed = len(report.errors)

    known = _known_documents(store)
    todo: list[tuple[SourceDocument, str]] = []
    seen: set[str] = set()
    for file in loaded:
        for doc in file.documents:
            seen.add(doc.source_uri)
            digest = content_hash(doc.title, doc.text)
            previous = known.get(doc.source_uri)
            if previous and previous[1] == digest and previous[2] == "active":
                report.unchanged += 1
            else:
                todo.append((doc, digest))

    done = 0
    if progress:
        progress(0, len(todo), "")
    try:
        for (doc, digest), chunks in prepare(((item, item[0]) for item in todo), chunker, embedder):
            try:
                was_new, _ = _write_document(store, version, doc, digest, chunks)
            except sa.exc.DBAPIError as exc:
                if isinstance(exc, sa.exc.OperationalError):
                    raise  # the database went away: stop, do not report every later document as broken
                reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
                report.errors.append(LoadError(doc.source_uri, f"could not be stored: {reason}"))
                report.failed += 1
            else:
                report.added += was_new
                report.updated += not was_new
                report.chunks += len(chunks)
            done += 1
            if progress:
                progress(done, len(todo), doc.title)
        gone = _vanished(known, loaded, paths, seen)
        if root is not None and not path_errors:
            gone += [uri for uri in _vanished_from_sample(known, seen, failed_names) if uri not in gone]
        report.missing = _mark_missing(store, version, gone)
    finally:
        report.seconds = time.perf_counter() - started
        try:
            with store.session() as s:
                s.execute(
                    sa.text(
                        "UPDATE ingest_runs SET added = :a, updated = :u, unchanged = :n, missing = :m, failed = :f, "
                        "chunks = :c, errors = CAST(:e AS jsonb), finished_at = now() WHERE id = :id"
                    ),
                    {"a": report.added, "u": report.updated, "n": report.unchanged, "m": report.missing,
                     "f": report.failed, "c": report.chunks, "id": run_id,
                     "e": json.dumps(report.as_dict()["errors"], ensure_ascii=False)},
                )
        except sa.exc.DBAPIError:
            pass  # the run log is best effort when the database itself is what failed
    return report
