"""Bad input to the loaders: each gives one clear message and the rest of the files still load."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from store.loaders import load_file, load_paths


def _only_error(loaded):
    assert loaded.documents == []
    assert len(loaded.errors) == 1
    return loaded.errors[0].message


def test_markdown_title_and_text(tmp_path):
    f = tmp_path / "a.md"
    f.write_text("# Hello\n\nworld", encoding="utf-8")
    loaded = load_file(f)
    assert loaded.complete and loaded.documents[0].title == "Hello"
    assert loaded.documents[0].source_uri == f.resolve().as_uri()


def test_binary_file(tmp_path):
    f = tmp_path / "b.txt"
    f.write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    assert "binary" in _only_error(load_file(f))


def test_empty_file(tmp_path):
    f = tmp_path / "e.md"
    f.write_bytes(b"")
    assert "empty" in _only_error(load_file(f))


def test_invalid_utf8(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes("caf\u00e9 ".encode("latin-1") + b"more text")
    assert "UTF-8" in _only_error(load_file(f))


def test_large_file_is_refused_with_the_setting_named(tmp_path, monkeypatch):
    f = tmp_path / "big.txt"
    with open(f, "wb") as handle:
        handle.write(b"word " * (50 * 1024 * 1024 // 5))
    message = _only_error(load_file(f))
    assert "50.0 MB" in message and "KAIZEN_MAX_FILE_MB" in message
    monkeypatch.setenv("KAIZEN_MAX_FILE_MB", "60")
    from store.settings import StoreSettings

    assert load_file(f, StoreSettings().max_file_bytes).complete


def test_unreadable_file(tmp_path):
    f = tmp_path / "secret.txt"
    f.write_text("hidden", encoding="utf-8")
    f.chmod(0)
    if os.geteuid() != 0:
        assert "permission denied" in _only_error(load_file(f))
        return
    # root reads everything: check the message as an unprivileged user in a child process, with the system
    # Python (the venv's interpreter may live under root's home, which that user cannot enter)
    interpreter = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else None
    if interpreter is None:
        pytest.skip("running as root without a system Python to drop privileges with")
    for parent in [tmp_path, *tmp_path.parents]:
        if parent == parent.parent:
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    code = (
        "import sys; sys.path.insert(0, %r); from pathlib import Path; from store.loaders import load_file; "
        "print(load_file(Path(%r)).errors[0].message)" % (os.getcwd(), str(f))
    )
    result = subprocess.run([interpreter, "-c", code], capture_output=True, text=True,
                            preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    assert "permission denied" in result.stdout, result.stderr


def test_missing_path_and_unsupported_type(tmp_path):
    (tmp_path / "x.docx").write_text("x")
    items = list(load_paths([str(tmp_path / "nope"), str(tmp_path / "x.docx")]))
    messages = [i.message for i in items]
    assert any("no such file" in m for m in messages)
    assert any("unsupported file type .docx" in m for m in messages)


def test_jsonl_bad_line_keeps_the_good_ones(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text(
        json.dumps({"id": "a", "title": "A", "text": "alpha"}) + "\n{not json\n"
        + json.dumps({"id": "b", "title": "B", "text": "beta"}) + "\n" + json.dumps([1, 2]) + "\n",
        encoding="utf-8",
    )
    loaded = load_file(f)
    assert [d.source_id for d in loaded.documents] == ["a", "b"]
    assert [e.source.rsplit(":", 1)[1] for e in loaded.errors] == ["2", "4"]
    assert "not JSON" in loaded.errors[0].message
    assert not loaded.complete


def test_html_and_pdf(tmp_path):
    h = tmp_path / "p.html"
    h.write_text("<html><head><title>T</title><script>x=1</script></head><body><p>Hello <b>there</b></p></body></html>")
    doc = load_file(h).documents[0]
    assert doc.title == "T" and "Hello" in doc.text and "x=1" not in doc.text
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n garbage garbage")
    assert "PDF" in _only_error(load_file(broken))
    notpdf = tmp_path / "fake.pdf"
    notpdf.write_text("hello")
    assert "not a PDF" in _only_error(load_file(notpdf))


def test_pdf_text_is_extracted(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = pypdf.PdfWriter()
    page = writer.add_blank_page(width=300, height=300)
    font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                             NameObject("/BaseFont"): NameObject("/Helvetica")})
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})}
    )
    stream = DecodedStreamObject()
    stream.set_data(b"BT /F1 12 Tf 20 200 Td (Kaizen stores chunks in Postgres) Tj ET")
    page[NameObject("/Contents")] = writer._add_object(stream)
    f = tmp_path / "doc.pdf"
    with open(f, "wb") as handle:
        writer.write(handle)
    loaded = load_file(f)
    assert loaded.complete, loaded.errors
    assert "Kaizen stores chunks" in loaded.documents[0].text
