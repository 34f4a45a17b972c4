"""Turn files into source documents, one clear error per file (or per .jsonl line) instead of an exception.

Supported: .md, .markdown, .txt, .html, .htm, .pdf, and .jsonl corpora of {"id", "title", "text"} lines (each
line one document whose id is kept as the source id).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

TEXT_SUFFIXES = {".md", ".markdown", ".txt"}
HTML_SUFFIXES = {".html", ".htm"}
SUPPORTED = TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".jsonl"}
DEFAULT_MAX_MB = 20  # the default of KAIZEN_MAX_FILE_MB (store.settings); this module needs only the standard library
DEFAULT_MAX_BYTES = DEFAULT_MAX_MB * 1024 * 1024


@dataclass
class SourceDocument:
    source_uri: str
    source_path: str
    title: str
    text: str
    source_id: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class LoadError:
    source: str
    message: str


@dataclass
class LoadedFile:
    """Everything one file produced. `complete` is False when part of it failed to load: then the documents
    it used to hold must not be marked missing, since we cannot tell which of them the failed part was."""

    path: str
    documents: list[SourceDocument]
    errors: list[LoadError]

    @property
    def complete(self) -> bool:
        return not self.errors


def discover(paths: list[str]) -> tuple[list[Path], list[LoadError]]:
    """Expand folders (recursively, skipping hidden entries) into supported files."""
    files: list[Path] = []
    errors: list[LoadError] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            errors.append(LoadError(raw, "no such file or directory"))
        elif path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                errors.append(LoadError(raw, "cannot read this folder: permission denied"))
                continue
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    candidate = Path(root) / name
                    if not name.startswith(".") and candidate.suffix.lower() in SUPPORTED:
                        files.append(candidate.resolve())
        elif path.suffix.lower() not in SUPPORTED:
            errors.append(
                LoadError(
                    raw, f"unsupported file type {path.suffix or '(none)'}: use one of {', '.join(sorted(SUPPORTED))}"
                )
            )
        else:
            files.append(path.resolve())
    return list(dict.fromkeys(files)), errors


def _read_bytes(path: Path, limit: int) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror.lower() if exc.strerror else exc}") from None
    if size > limit:
        raise ValueError(
            f"file is {size / 1048576:.1f} MB, over the {limit / 1048576:.0f} MB limit "
            "(split it, or raise KAIZEN_MAX_FILE_MB)"
        )
    if size == 0:
        raise ValueError("file is empty")
    try:
        return path.read_bytes()
    except PermissionError:
        raise ValueError("cannot read: permission denied") from None
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror.lower() if exc.strerror else exc}") from None


def _decode_text(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise ValueError("looks like a binary file (it contains NUL bytes), not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (bad byte at offset {exc.start}); convert it to UTF-8 first") from None
    if not text.strip():
        raise ValueError("file has no text (only white space)")
    return text


def _markdown_title(text: str, fallback: str) -> str:
    for line in text.splitlines()[:50]:
        stripped = line.strip()
        if stripped.startswith("# "):
            return stripped[2:].strip()
    return fallback


def _load_text(path: Path, limit: int) -> SourceDocument:
    text = _decode_text(_read_bytes(path, limit))
    title = _markdown_title(text, path.stem) if path.suffix.lower() != ".txt" else path.stem
    return SourceDocument(path.as_uri(), str(path), title, text, metadata={"format": path.suffix.lower()[1:]})


def _load_html(path: Path, limit: int) -> SourceDocument:
    from bs4 import BeautifulSoup

    data = _read_bytes(path, limit)
    if b"\x00" in data[:8192]:
        raise ValueError("looks like a binary file (it contains NUL bytes), not HTML")
    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else path.stem
    body = soup.body or soup
    text = "\n\n".join(part.strip() for part in body.get_text("\n").split("\n\n") if part.strip())
    if not text.strip():
        raise ValueError("HTML page has no visible text")
    return SourceDocument(path.as_uri(), str(path), title or path.stem, text, metadata={"format": "html"})


def _load_pdf(path: Path, limit: int) -> SourceDocument:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    data = _read_bytes(path, limit)
    if not data.startswith(b"%PDF"):
        raise ValueError("not a PDF file (no %PDF header)")
    import io

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ValueError("PDF is encrypted; decrypt it first")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or path.stem
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, ValueError) and "encrypted" in str(exc):
            raise
        raise ValueError(f"not a readable PDF: {exc}") from None
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise ValueError("PDF has no extractable text (scanned images need OCR first)")
    return SourceDocument(
        path.as_uri(), str(path), str(meta_title), text, metadata={"format": "pdf", "pages": len(pages)}
    )


def _load_jsonl(path: Path, limit: int) -> LoadedFile:
    raw = _read_bytes(path, limit)
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (bad byte at offset {exc.start})") from None
    docs: list[SourceDocument] = []
    errors: list[LoadError] = []
    seen: set[str] = set()
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(LoadError(where, f"line is not JSON ({exc.msg})"))
            continue
        if not isinstance(row, dict):
            errors.append(LoadError(where, 'line is not a JSON object like {"id", "title", "text"}'))
            continue
        text, doc_id = row.get("text"), row.get("id")
        if not isinstance(text, str) or not text.strip():
            errors.append(LoadError(where, 'line has no "text" string'))
            continue
        doc_id = str(doc_id) if doc_id not in (None, "") else f"line-{number}"
        if doc_id in seen:
            errors.append(LoadError(where, f"duplicate id {doc_id!r} in this file"))
            continue
        seen.add(doc_id)
        meta = {k: v for k, v in row.items() if k not in ("id", "title", "text")}
        meta["format"] = "jsonl"
        docs.append(
            SourceDocument(
                f"{path.as_uri()}#{doc_id}", str(path), str(row.get("title") or doc_id), text, doc_id, meta
            )
        )
    if not docs and not errors:
        raise ValueError("file has no JSON lines")
    return LoadedFile(str(path), docs, errors)


def load_file(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> LoadedFile:
    """One file's documents; a file over `max_bytes` (the store's KAIZEN_MAX_FILE_MB) is refused."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _load_jsonl(path, max_bytes)
        if suffix in HTML_SUFFIXES:
            doc = _load_html(path, max_bytes)
        elif suffix == ".pdf":
            doc = _load_pdf(path, max_bytes)
        else:
            doc = _load_text(path, max_bytes)
    except ValueError as exc:
        return LoadedFile(str(path), [], [LoadError(str(path), str(exc))])
    return LoadedFile(str(path), [doc], [])


def load_paths(paths: list[str], max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[LoadedFile | LoadError]:
    files, errors = discover(paths)
    yield from errors
    for path in files:
        yield load_file(path, max_bytes)
