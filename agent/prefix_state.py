"""The shared prompt prefix's KV cache, saved to disk once and loaded by every later process.

Every call of the graph starts with the same messages (agent.prompts.shared_prefix: the rules and a worked example,
about 250 tokens). On two cores the model reads them in several seconds, and a new process (`kaizen ask`, a
worker, `kaizen serve`) pays that before its first token. llama.cpp can copy one sequence's KV cache out
(`llama_state_seq_get_data`) and back in (`llama_state_seq_set_data`), so the first process to evaluate the prefix
writes it to a file and the others read it back in milliseconds.

The file's name is a hash of everything the cache depends on: the model file (name, size and modification time),
the llama.cpp build, the context size and the prefix's tokens, so a changed prompt or another model never loads a
stale cache. A file that is cut short, corrupt or refused by llama.cpp is ignored and written anew: the prefix is
then evaluated as if there were no file, and the answer is the same either way.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

MAGIC = b"KAIZEN-PREFIX-STATE 1\n"
SEQ = 0  # llama-cpp-python keeps its one conversation in sequence 0


def state_path(directory: Path, model_path: Path, n_ctx: int, tokens: Sequence[int]) -> Path:
    """Where the KV cache of `tokens` on this model, llama.cpp build and context size is kept."""
    import llama_cpp

    stat = Path(model_path).stat()
    identity = [Path(model_path).name, stat.st_size, stat.st_mtime_ns, llama_cpp.__version__, n_ctx, list(tokens)]
    digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
    return Path(directory) / f"prefix-{digest}.kv"


def save(model, tokens: Sequence[int], path: Path) -> bool:
    """Write sequence 0's KV cache (which must hold exactly `tokens`) to `path`, atomically. False when it
    cannot (no room, no permission): the cache is an optimisation, never a reason to fail."""
    import llama_cpp

    ctx = model._ctx.ctx
    size = llama_cpp.llama_state_seq_get_size(ctx, SEQ)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, SEQ)
    if not written:
        return False
    data = memoryview(buffer)[:written]
    header = json.dumps({"tokens": len(tokens), "bytes": int(written),
                         "sha256": hashlib.sha256(data).hexdigest()}).encode() + b"\n"
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + header)
            f.write(data)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.info("the prompt prefix's KV cache was not saved to %s: %s", path, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return False


def load(model, tokens: Sequence[int], path: Path) -> bool:
    """Fill sequence 0's KV cache with `tokens` from `path` and tell llama-cpp-python it holds them. False, with
    the cache left empty, when there is no usable file."""
    import llama_cpp

    try:
        raw = path.read_bytes()
    except OSError:
        return False
    data = _verified(raw, len(tokens))
    if data is None:
        log.info("ignoring the unusable prompt-prefix cache %s", path)
        return False
    model.reset()
    model._ctx.kv_cache_clear()
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    if llama_cpp.llama_state_seq_set_data(model._ctx.ctx, buffer, len(data), SEQ) != len(data):
        model._ctx.kv_cache_clear()
        log.info("llama.cpp refused the prompt-prefix cache %s", path)
        return False
    model.input_ids[: len(tokens)] = list(tokens)
    model.n_tokens = len(tokens)
    return True


def _verified(raw: bytes, n_tokens: int) -> bytes | None:
    """The KV data of a well-formed file for `n_tokens` tokens whose bytes match their hash, else None."""
    if not raw.startswith(MAGIC):
        return None
    end = raw.find(b"\n", len(MAGIC))
    try:
        header = json.loads(raw[len(MAGIC):end])
    except ValueError:
        return None
    data = raw[end + 1:]
    if not isinstance(header, dict) or header.get("tokens") != n_tokens or header.get("bytes") != len(data):
        return None
    return data if hashlib.sha256(data).hexdigest() == header.get("sha256") else None
