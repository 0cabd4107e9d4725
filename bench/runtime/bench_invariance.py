"""What makes llama.cpp's numbers depend on batch shape on this CPU (issue 17).

For each builtin model and each (extra buffers, flash attention) setting, one context of 4
non-unified sequences evaluates a target prompt and a first decoding step in several batch
layouts, and compares the target's logits bit for bit with the reference layout (the prompt
alone on the 16-token grid, then one row alone):

  prompt: split   the same prompt in 8-token chunks / in one batch instead of 16-token chunks
  prompt: shared  the target's 16-token chunks in one llama_decode with another sequence's
                  16-token chunks (same rows per sequence: llama.cpp's split_equal)
  prompt: padded  the last partial chunk padded with throw-away tokens to 16 rows
  step: rows=N    the decoding step's row among N rows (other sequences' rows), at index i
  step: long kv   the same, with a neighbour holding 300 cells (n_kv 256 -> 512)

    .venv/bin/python bench/runtime/bench_invariance.py [--models smollm2-135m gemma3-270m]
"""

from __future__ import annotations

import argparse
import ctypes

import llama_cpp as L

from lmpc.runtime.models.resolve import resolve_builtin

TARGET = ("You are a careful assistant. Classify the sentiment of the tweet as positive or negative "
          "and explain briefly.\nTweet: the concert last night was loud, late, and still wonderful.\nAnswer:")
OTHER = "Write a short poem about the sea and the wind, and the boats that come home at night."
LONG = " ".join(f"Fact {i}: the river flows north in spring." for i in range(30))


class Ctx:
    def __init__(self, model, flash: bool, seqs: int = 8) -> None:
        p = L.llama_context_default_params()
        p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq_max = 512 * seqs, 128, 128, seqs
        p.kv_unified = False
        p.n_threads = p.n_threads_batch = 1
        p.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = L.llama_init_from_model(model, p)
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = L.llama_batch_init(128, 0, 1)
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))

    def decode(self, rows):  # rows: (token, pos, seq, logits)
        b = self.batch
        for i, (t, pos, s, lg) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, pos, 1, lg
            b.seq_id[i][0] = s
        b.n_tokens = len(rows)
        assert L.llama_decode(self.ctx, b) == 0

    def logits(self, row: int) -> bytes:
        ptr = L.llama_get_logits_ith(self.ctx, row)
        return ctypes.string_at(ptr, 4 * self.n_vocab)

    def argmax(self, row: int) -> int:
        arr = (ctypes.c_float * self.n_vocab).from_address(ctypes.addressof(L.llama_get_logits_ith(self.ctx, row).contents))
        return max(range(self.n_vocab), key=arr.__getitem__)

    def rm(self, seq: int, p0: int = 0) -> None:
        L.llama_memory_seq_rm(self.mem, seq, p0, -1)


def tokenize(model, text: str) -> list[int]:
    vocab = L.llama_model_get_vocab(model)
    buf = (L.llama_token * 2048)()
    n = L.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, 2048, True, False)
    return list(buf[:n])


def evaluate(c: Ctx, seq: int, toks: list[int], chunk: int, pad_to: int = 0, with_seq: tuple | None = None) -> bytes:
    """Evaluate toks on seq in chunks; return the last token's logits. with_seq=(seq2, toks2):
    co-batch seq2's chunks (same size) in the same llama_decode calls."""
    out = b""
    for start in range(0, len(toks), chunk):
        part = toks[start:start + chunk]
        rows = [(t, start + i, seq, start + i == len(toks) - 1) for i, t in enumerate(part)]
        real = len(rows)
        if pad_to and len(rows) < pad_to:
            rows += [(0, start + i, seq, False) for i in range(len(rows), pad_to)]
        idx = 0
        if with_seq is not None:
            s2, t2 = with_seq
            p2 = t2[start:start + chunk]
            rows2 = [(t, start + i, s2, False) for i, t in enumerate(p2)]
            if len(rows2) == len(rows):
                rows = rows2 + rows
                idx = len(rows2)
        c.decode(rows)
        if start + real >= len(toks):
            out = c.logits(idx + real - 1)
    if pad_to:
        c.rm(seq, len(toks))
    return out


_quiet = None


def run(name: str, extra: bool, flash: bool) -> None:
    mp = L.llama_model_default_params()
    mp.use_extra_bufts = extra
    model = L.llama_model_load_from_file(str(resolve_builtin(name)).encode(), mp)
    c = Ctx(model, flash)
    target, other, long_ = tokenize(model, TARGET), tokenize(model, OTHER), tokenize(model, LONG)
    target = target[:16 * (len(target) // 16)] + target[16 * (len(target) // 16):][:5] or target  # a partial chunk
    results: dict[str, bool] = {}
    ref = evaluate(c, 0, target, 16)
    c.rm(0)
    c.rm(0)
    assert evaluate(c, 0, target[:-1] + [target[0]], 16) != ref  # the check can fail
    c.rm(0)
    results["prompt: split 8"] = evaluate(c, 0, target, 8) == ref
    c.rm(0)
    results["prompt: one batch"] = evaluate(c, 0, target, 128) == ref
    c.rm(0)
    same = tokenize(model, TARGET.replace("concert", "festival"))[:len(target)]
    results["prompt: shared with another seq"] = evaluate(c, 0, target, 16, with_seq=(1, same)) == ref
    c.rm(0), c.rm(1)
    padded = evaluate(c, 0, target, 16, pad_to=16)
    results["prompt: padded to 16 (vs unpadded)"] = padded == ref
    c.rm(0)
    ref_padded = padded
    results["prompt: padded + shared"] = evaluate(c, 0, target, 16, pad_to=16, with_seq=(1, same + [0] * 16)) == ref_padded
    # decoding step: the target at n, its first greedy token, alone vs among other rows
    c.rm(0), c.rm(1)
    evaluate(c, 0, target, 16)
    n = len(target)
    tok = 0  # fixed next token: what matters is the numbers, not the choice
    evaluate(c, 1, other, 16)
    evaluate(c, 2, other[:7], 16)
    evaluate(c, 3, long_, 16)
    others = {1: (other[-1], len(other)), 2: (other[6], 7), 3: (long_[-1], len(long_))}
    for s in range(4, 8):
        evaluate(c, s, other[:s + 3], 16)
        others[s] = (other[s + 2], s + 3)

    def step(layout: list[int]) -> bytes:
        rows = []
        for s in layout:
            rows.append((tok, n, 0, True) if s == 0 else (others[s][0], others[s][1], s, False))
        c.decode(rows)
        out = c.logits(layout.index(0))
        for s in layout:
            c.rm(s, n if s == 0 else others[s][1])
        return out

    alone = step([0])
    results["step: alone twice"] = step([0]) == alone
    results["step: 2 rows, short kv"] = step([0, 1]) == alone
    results["step: 3 rows, index 2"] = step([1, 2, 0]) == alone
    four = step([0, 1, 2, 3])
    results["step: 4 rows, one kv 300 (vs alone)"] = four == alone
    results["step: 4 rows, index 3 (vs index 0)"] = step([1, 2, 3, 0]) == four
    results["step: 5 rows, index 4 (vs alone)"] = step([1, 2, 3, 4, 0]) == alone
    results["step: 8 rows, index 0 (vs alone)"] = step([0, 1, 2, 3, 4, 5, 6, 7]) == alone
    L.llama_batch_free(c.batch)
    L.llama_free(c.ctx)
    L.llama_model_free(model)
    bad = [k for k, v in results.items() if v is False]
    print(f"| {name} | extra buffers {'on' if extra else 'off'} | flash attn {'on' if flash else 'off'} | "
          f"{', '.join(bad) if bad else 'all identical'} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    args = ap.parse_args()
    L.llama_backend_init()
    global _quiet
    _quiet = L.llama_log_callback(lambda *a: None)
    L.llama_log_set(_quiet, ctypes.c_void_p(0))
    print("| model | weights | attention | differs from the reference layout |\n|---|---|---|---|")
    for name in args.models:
        for extra in (True, False):
            for flash in (False, True):
                run(name, extra, flash)


if __name__ == "__main__":
    main()
