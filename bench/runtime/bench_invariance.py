"""What makes llama.cpp's numbers depend on batch shape on this CPU (issue 17).

For each builtin model and each (extra buffers, flash attention) setting, one context of 4
non-unified sequences evaluates a target prompt and a first decoding step in several batch
layouts, and compares the target's logits bit for bit with the reference layout (the prompt
alone on the 16-token grid, then one row alone):

  prompt: split   the same prompt in 8-token chunks / in one batch instead of 16-token chunks
  prompt: shared  the target's 16-token chunks in one llama_decode with another sequence's
                  16-token chunks (same rows per sequence: llama.cpp's split_equal)
  prompt: padded  the last partial chunk padded with throw-away tokens to 16 rows
  step: N rows    the decoding step's row in a ubatch of N one-row sequences (one of them
                  holding 300 cells: n_kv 256 -> 512) instead of alone

    .venv/bin/python bench/runtime/bench_invariance.py [--models smollm2-135m gemma3-270m]
    .venv/bin/python bench/runtime/bench_invariance.py --speed   # tokens/s by ubatch shape
    .venv/bin/python bench/runtime/bench_invariance.py --engine 8 --models gemma3-270m
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
        idx = 0  # the target's rows come first
        if with_seq is not None:
            s2, t2 = with_seq
            p2 = t2[start:start + chunk]
            rows2 = [(t, start + i, s2, False) for i, t in enumerate(p2)]
            if pad_to:
                rows2 += [(0, start + i, s2, False) for i in range(len(rows2), pad_to)]
            assert len(rows2) == len(rows)
            rows = rows + rows2  # streams in increasing order: one ubatch (llama.cpp's split_equal)
        c.decode(rows)
        if start + real >= len(toks):
            out = c.logits(idx + real - 1)
    if pad_to:
        c.rm(seq, len(toks))
        if with_seq is not None:
            c.rm(with_seq[0], len(toks))
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
    results["prompt: padded + shared"] = evaluate(c, 0, target, 16, pad_to=16, with_seq=(1, same)) == ref_padded
    # decoding step: the target's next row alone, then among k one-row sequences of one ubatch
    # (llama.cpp puts consecutive streams in one ubatch: the layouts are in stream order)
    for s in range(8):
        c.rm(s)
    evaluate(c, 0, target, 16)
    n = len(target)
    others = {}
    for s in range(1, 8):
        evaluate(c, s, (long_ if s == 3 else other)[:s + 3 if s != 3 else len(long_)], 16)
        others[s] = (0, s + 3 if s != 3 else len(long_))  # seq 3 holds 300+ cells: n_kv 256 -> 512

    def step(k: int) -> bytes:
        rows = [(0, n, 0, True)] + [(0, others[s][1], s, False) for s in range(1, k)]
        c.decode(rows)
        out = c.logits(0)
        c.rm(0, n)
        for s in range(1, k):
            c.rm(s, others[s][1])
        return out

    alone = step(1)
    results["step: alone twice"] = step(1) == alone
    same = [k for k in range(2, 9) if step(k) == alone]
    results["step: 2-3 rows"] = all(k in same for k in (2, 3))
    results["step: 4-7 rows"] = all(k in same for k in (4, 5, 6, 7))
    results["step: 8 rows"] = 8 in same
    L.llama_batch_free(c.batch)
    L.llama_free(c.ctx)
    L.llama_model_free(model)
    bad = [k for k, v in results.items() if v is False]
    print(f"| {name} | extra buffers {'on' if extra else 'off'} | flash attn {'on' if flash else 'off'} | "
          f"{', '.join(bad) if bad else 'all identical'} |", flush=True)


def speed(name: str, repeats: int) -> None:
    """Tokens/s of one thread by ubatch shape: k sequences x r rows (after 96 cached tokens each)."""
    import statistics
    import time

    model = L.llama_model_load_from_file(str(resolve_builtin(name)).encode(), L.llama_model_default_params())
    c = Ctx(model, False)
    toks = tokenize(model, LONG)[:160]
    shapes = [(1, 16), (4, 16), (8, 16), (1, 1), (2, 1), (4, 1), (7, 1)]
    rates: dict[tuple[int, int], list[float]] = {k: [] for k in shapes}
    for _ in range(repeats):  # interleaved, so the machine's load drift hits every shape
        for k, r in shapes:
            for s in range(8):
                c.rm(s)
            for s in range(k):
                for st in range(0, 96, 16):
                    c.decode([(toks[st + i], st + i, s, False) for i in range(16)])
            n = 48 if r > 1 else 16
            t0 = time.perf_counter()
            for start in range(96, 96 + n, r):
                c.decode([(toks[start + i], start + i, s, False) for s in range(k) for i in range(r)])
            rates[(k, r)].append(k * n / (time.perf_counter() - t0))
    for (k, r), v in rates.items():
        print(f"| {name} | {k} x {r} | {statistics.median(v):.0f} | {max(v):.0f} |", flush=True)
    L.llama_free(c.ctx)
    L.llama_model_free(model)


def engine_check(name: str, n: int) -> None:
    """The batched engine itself: n free-text calls decoded one after another, together on 4
    slots, in reverse order on 4 slots and together on 8 slots: byte-identical? and wall times,
    against the single engine one after another."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from lmpc.runtime.models import GenerationRequest, create_model

    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 300}}, "required": ["answer"]}
    topics = ["the sea", "a city at night", "your favourite day", "a forest", "a storm", "a market", "winter",
              "a train journey"]
    reqs = [GenerationRequest(messages=[{"role": "user", "content": f"Describe {t}."}], json_schema=schema,
                              max_tokens=60) for t in topics[:n]]

    def timed(model, order, workers):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            out = dict(zip(order, pool.map(lambda i: model.generate(reqs[i]).text, order)))
        return [out[i] for i in range(len(reqs))], time.perf_counter() - t0

    rows = []
    single = create_model("s", "llama_cpp", {"builtin": name})
    single.generate(reqs[0])  # load
    ref_single, t_single = timed(single, list(range(len(reqs))), 1)
    single.close()
    for slots in (4, 8):
        m = create_model("b", "llama_cpp", {"builtin": name, "engine": "batched", "slots": slots})
        m.generate(reqs[0])
        if slots == 4:
            alone, t_alone = timed(m, list(range(len(reqs))), 1)
            rows.append(("batched, one call at a time", t_alone, True))
            rev, t_rev = timed(m, list(range(len(reqs)))[::-1], len(reqs))
            rows.append(("batched 4 slots, together, reverse order", t_rev, rev == alone))
        together, t_tog = timed(m, list(range(len(reqs))), len(reqs))
        rows.append((f"batched {slots} slots, together", t_tog, together == alone))
        m.close()
    # reproducible: false: every generating row in one llama_decode (speed, no byte-identity)
    m = create_model("f", "llama_cpp", {"builtin": name, "engine": "batched", "slots": 8, "reproducible": False})
    m.generate(reqs[0])
    free, t_free = timed(m, list(range(len(reqs))), len(reqs))
    rows.append(("batched 8 slots, reproducible: false, together", t_free, free == alone))
    m.close()
    print(f"| {name}: {len(reqs)} free-text calls | wall (s) | same bytes as one at a time |\n|---|---:|---|")
    print(f"| single engine, one after another | {t_single:.1f} | (other context: "
          f"{sum(a == b for a, b in zip(ref_single, alone))}/{len(reqs)} equal) |")
    for label, t, same in rows:
        print(f"| {label} | {t:.1f} | {'yes' if same else 'NO'} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    ap.add_argument("--speed", action="store_true", help="tokens/s by ubatch shape instead")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--engine", type=int, default=0, metavar="N",
                    help="check the batched engine itself on N free-text calls instead")
    args = ap.parse_args()
    L.llama_backend_init()
    global _quiet
    _quiet = L.llama_log_callback(lambda *a: None)
    L.llama_log_set(_quiet, ctypes.c_void_p(0))
    if args.engine:
        for name in args.models:
            engine_check(name, args.engine)
        return
    if args.speed:
        print("| model | sequences x rows per ubatch | tokens/s median | best |\n|---|---|---:|---:|")
        for name in args.models:
            speed(name, args.repeats)
        return
    print("| model | weights | attention | differs from the reference layout |\n|---|---|---|---|")
    for name in args.models:
        for extra in (True, False):
            for flash in (False, True):
                run(name, extra, flash)


if __name__ == "__main__":
    main()
