"""Does this model's arithmetic depend on the batch layout on this machine? Measured, not assumed.

A reproducible call (the default) must give the same bytes whatever was cached before it and
whichever calls shared its batch. llama.cpp's numbers for a row can depend on the shape of the
ubatch it was computed in: which kernel a matrix product takes (a repacked GEMM for rows in
fours and a GEMV for the rest, tinyBLAS from some sizes, AMX) and how attention is blocked
depend on the number of rows and sequences. Whether they do depends on the weights' types,
the CPU's instructions and the llama.cpp build (bench/runtime/bench_invariance.py: on an AVX2
CPU SmolLM2 Q4_1 gave the same bytes in every layout tried, Gemma 3 270M Q4_K_M did not).

So the first reproducible use of a model runs this probe on the very context the engine will
use: an 80-token text is evaluated in a reference layout (16-row chunks on the single engine,
32 on the batched one) and in the layouts the fast path produces (uneven chunks of 2 to 16
rows, a prefix reused after other cells were removed, a prefix copied from another sequence,
chunks sharing a ubatch with other sequences' chunks of other sizes, decoding rows alone and
together), and the last row's logits and the next decoding step's logits are compared bit for
bit. When every layout gives the reference bytes the model is *exact* on this machine and the
engines drop the fixed grid (the whole cached prefix reused, no padding, decoding rows
batched): reproducible at full speed. When one differs the engines keep the grid, which fixes
every shape. The verdict is stored in $LMPC_CACHE_DIR/layout/ under a key of everything it
depends on (the weights, llama.cpp's version and system info, the thread count and the
context's settings), so it is measured once per machine; `reproducible: "grid"` skips it.

One layout is never used on the fast path, so it does not count: a prompt row evaluated alone.
On this AVX2 CPU SmolLM2 gives such a row other numbers than the same row inside a chunk (the
probe records it under `avoided`), which is what made llama-cpp-python's plain prefix reuse
change about 1 in 6 free-text answers: it evaluates the uncached suffix in 16-row chunks, and
a suffix of 16k+1 tokens ends in a one-row chunk (a fully cached prompt re-evaluates its last
token alone). The engines keep every prompt chunk at 2 rows or more instead (the single engine
evaluates a last token alone exactly where the grid does, when the prompt has 16k+1 tokens,
so its bytes stay the grid's).

A probe is evidence, not a proof: it covers the row and sequence counts where llama.cpp's CPU
kernels switch paths, and the engines' chunks are no larger than the probe's (32 rows a
sequence on the batched engine, 16 on the single one). tests/runtime/test_layout.py checks
the end result on real prompts: the probed model gives the grid's bytes in any order and batch.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROBE_VERSION = 3
PROBE_TEXT = ("The lighthouse keeper counted the ships that passed each night, wrote their names in a "
              "blue notebook, and on Sundays read the whole list aloud to the gulls on the rocks below. "
              "Nobody ever asked him why. In winter the ships were few, and he wrote slowly, adding the "
              "colour of each hull and the weather, so that the list grew no shorter for the season.")
PROBE_TOKENS = 80
OTHER_TEXT = "Write a short poem about the sea and the wind, and the boats that come home at night."
UNEVEN = (2, 3, 4, 5, 7, 8, 13, 16, 2, 5, 15)  # chunk sizes summing to PROBE_TOKENS: kernel switches, 2 to 16 rows
assert sum(UNEVEN) == PROBE_TOKENS

log = logging.getLogger("lmpc.llama_cpp")

_memo: dict[str, "Verdict"] = {}
_memo_lock = threading.Lock()


@dataclass
class Verdict:
    exact: bool  # every layout gave the reference bytes
    differs: list[str] = field(default_factory=list)  # the layouts that did not
    seconds: float = 0.0  # what the probe took (0: read from the store)
    key: str = ""
    avoided: list[str] = field(default_factory=list)  # layouts that differ but the engines never use


def store_dir() -> Path:
    from lmpc.runtime.cache import default_cache_dir

    return default_cache_dir() / "layout"


def probe_key(identity: str, setting: dict[str, Any]) -> str:
    import llama_cpp

    blob = json.dumps({"probe": PROBE_VERSION, "model": identity, "llama_cpp": llama_cpp.__version__,
                       "system": llama_cpp.llama_print_system_info().decode("utf-8", "replace"),
                       **setting}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def verdict(identity: str, setting: dict[str, Any], run: Any) -> Verdict:
    """The stored verdict for (identity, setting), or run() (-> Verdict) measured and stored.
    A store that cannot be read or written only costs a new measurement."""
    key = probe_key(identity, setting)
    with _memo_lock:
        if key in _memo:
            return _memo[key]
    path = store_dir() / f"{key}.json"
    try:
        data = json.loads(path.read_text())
        found = Verdict(bool(data["exact"]), [str(d) for d in data.get("differs", [])], 0.0, key,
                        [str(d) for d in data.get("avoided", [])])
    except (OSError, ValueError, KeyError, TypeError):
        found = run()
        found.key = key
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"exact": found.exact, "differs": found.differs, "avoided": found.avoided,
                                       "seconds": round(found.seconds, 2),
                                       "model": identity, **setting}, indent=1))
            os.replace(tmp, path)
        except OSError as e:
            log.info("lmpc: could not store the layout verdict in %s (%s)", path, e)
    with _memo_lock:
        _memo[key] = found
    return found


class _Probe:
    """Layouts on one context (raw pointer) whose sequences 0..seqs-1 are free."""

    def __init__(self, ctx: Any, model: Any, seqs: int, max_rows: int) -> None:
        import llama_cpp as L

        self.L, self.ctx, self.seqs = L, ctx, seqs
        self.mem = L.llama_get_memory(ctx)
        vocab = L.llama_model_get_vocab(model)
        self.n_vocab = L.llama_vocab_n_tokens(vocab)
        self.batch = L.llama_batch_init(max_rows, 0, 1)
        self.max_rows = max_rows
        self.target = self.tokenize(vocab, PROBE_TEXT)[:PROBE_TOKENS]
        self.other = self.tokenize(vocab, OTHER_TEXT)
        if len(self.target) < PROBE_TOKENS:  # a tokenizer with very long tokens: repeat the text
            self.target = (self.target * PROBE_TOKENS)[:PROBE_TOKENS]
        self.other = (self.other * 8)[:96]

    @staticmethod
    def tokenize(vocab: Any, text: str) -> list[int]:
        import llama_cpp as L

        raw = text.encode("utf-8")
        buf = (L.llama_token * (len(raw) + 8))()
        n = L.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, False)
        return list(buf[:max(n, 0)])

    def close(self) -> None:
        self.L.llama_batch_free(self.batch)
        self.L.llama_memory_clear(self.mem, True)

    def decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        from lmpc.runtime.models.batch_engine import decode_rows

        assert len(rows) <= self.max_rows
        rc = decode_rows(self.ctx, self.batch, rows)
        if rc != 0:
            raise RuntimeError(f"llama_decode: {rc}")

    def logits(self, row: int) -> bytes:
        return ctypes.string_at(self.L.llama_get_logits_ith(self.ctx, row), 4 * self.n_vocab)

    def chunks(self, seq: int, tokens: list[int], sizes: list[int], start: int = 0) -> bytes:
        """Evaluate tokens (from position start) on seq in chunks of the given sizes; the last
        token's logits."""
        pos = start
        fitted = [min(self.max_rows, n - i) for n in sizes for i in range(0, n, self.max_rows)]
        for n in fitted:
            part = tokens[pos - start:pos - start + n]
            self.decode([(t, pos + i, seq, pos + i == start + len(tokens) - 1) for i, t in enumerate(part)])
            pos += len(part)
        return self.logits(len(part) - 1)

    def step(self, seqs: list[int], at: dict[int, int]) -> bytes:
        """One decoding row per sequence in one llama_decode; sequence seqs[0]'s logits."""
        self.decode([(self.target[0], at[s], s, True) for s in seqs])
        return self.logits(0)

    def clear(self) -> None:
        self.L.llama_memory_clear(self.mem, True)

    def sizes(self, total: int) -> list[int]:
        """total rows in chunks of at most max_rows, none of one row (as the engines chunk)."""
        out = [min(self.max_rows, total - i) for i in range(0, total, self.max_rows)]
        if len(out) > 1 and out[-1] == 1:
            out[-2:] = [out[-2] - 1, 2]
        return out

    def run(self, ref_chunk: int) -> tuple[list[str], list[str]]:
        """(the layouts whose bytes differ from the reference, the avoided ones that do: the
        engines never use those)."""
        T, n = self.target, PROBE_TOKENS
        whole = [min(ref_chunk, n - i) for i in range(0, n, ref_chunk)]
        self.clear()
        ref = self.chunks(0, T, whole)
        ref_step = self.step([0], {0: n})
        differs: list[str] = []
        avoided: list[str] = []

        def check(name: str, got: bytes, got_step: bytes | None = None, into: list[str] = differs) -> None:
            if got != ref or (got_step is not None and got_step != ref_step):
                into.append(name)

        self.clear()
        check("prompt in uneven chunks (2 to 16 rows)", self.chunks(0, T, list(UNEVEN)), self.step([0], {0: n}))
        # a cached prefix reused after other cells were removed (the single engine's reuse)
        self.clear()
        self.chunks(0, T[:37] + self.other[:10], self.sizes(47))
        self.L.llama_memory_seq_rm(self.mem, 0, 37, -1)
        check("cached prefix reused", self.chunks(0, T[37:], self.sizes(n - 37), start=37), self.step([0], {0: n}))
        if self.seqs == 1:
            # a prompt row alone (the engines never do this on the layout-free path; measured on the
            # single engine's probe, for the record)
            self.clear()
            self.chunks(0, T[:n - 18], self.sizes(n - 18))
            self.chunks(0, T[n - 18:n - 17], [1], start=n - 18)
            check("a prompt row evaluated alone", self.chunks(0, T[n - 17:], self.sizes(17), start=n - 17), into=avoided)
        if self.seqs > 1:
            # a prefix copied from another sequence (the batched engine's sharing)
            self.clear()
            self.chunks(1, T[:21], self.sizes(21))
            self.L.llama_memory_seq_cp(self.mem, 1, 0, -1, -1)
            self.L.llama_memory_seq_rm(self.mem, 0, 21, -1)
            check("prefix copied from another sequence", self.chunks(0, T[21:], self.sizes(n - 21), start=21))
            # chunks sharing a ubatch with other sequences' chunks of the same size (the engine
            # sends chunks of one size per llama_decode), the size changing from round to round,
            # then decoding rows together
            self.clear()
            others = list(range(1, self.seqs))
            done = {s: 0 for s in [0] + others}
            round_sizes = (16, 5, 11, 32, 3, 13)
            want_row, r = 0, 0
            while done[0] < n:
                size = min(round_sizes[r % len(round_sizes)], self.max_rows // self.seqs, n - done[0])
                if n - done[0] - size == 1:
                    size -= 1
                r += 1
                rows: list[tuple[int, int, int, bool]] = []
                for s in [0] + others:  # slot order, as the engine sends them
                    seq_tokens = T if s == 0 else self.other
                    if len(seq_tokens) - done[s] < size:
                        continue  # this one has no chunk of this size left
                    part = seq_tokens[done[s]:done[s] + size]
                    last = s == 0 and done[0] + len(part) == n
                    if last:
                        want_row = len(rows) + len(part) - 1
                    rows += [(t, done[s] + i, s, last and i == len(part) - 1) for i, t in enumerate(part)]
                    done[s] += len(part)
                self.decode(rows)
            check("prompt sharing a ubatch with other sequences", self.logits(want_row))
            at = {0: n, **{s: done[s] for s in others}}
            check("decoding row with other sequences' rows", ref, self.step([0] + others, at))
        self.clear()
        return differs, avoided


def probe(ctx: Any, model: Any, seqs: int, max_rows: int, ref_chunk: int) -> Verdict:
    """Run the layouts on ctx (its memory is cleared before and after)."""
    t0 = time.perf_counter()
    p = _Probe(ctx, model, seqs, max_rows)
    avoided: list[str] = []
    try:
        differs, avoided = p.run(ref_chunk)
    except (RuntimeError, AssertionError) as e:  # a layout llama.cpp refuses: keep the grid
        differs = [f"probe failed ({e})"]
    finally:
        p.close()
    return Verdict(not differs, differs, time.perf_counter() - t0, avoided=avoided)
