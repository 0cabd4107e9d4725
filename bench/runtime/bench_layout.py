"""The two layouts that change a layout-exact model's numbers, and the rules that avoid them (issue 17).

runtime/models/layout_probe.py finds SmolLM2 Q4_1 layout-exact on this AVX2 CPU for chunks of
2 rows or more. This script shows, bit for bit against the prompt evaluated alone in 16-row
chunks from position 0, the two things the engines' layout-free paths must still avoid:

  splits   the same 80-token prompt evaluated as prefix + suffix (llama-cpp-python's reuse:
           16-row chunks from each start) for every split point: the points whose chunks
           include a one-row chunk after position 0 differ; with the engines' rule (no chunk
           of one row: llama.cpp's suffix ends in 2 rows instead) none do.
  shared   the prompt in 16-row chunks beside 3 other sequences in the same llama_decode:
           with other chunk sizes llama.cpp's split_equal cuts the prompt's rows by its
           neighbours' counts (16 next to 5 and 4 becomes 4 + 1 + 11, a one-row piece); with
           chunks of one size per llama_decode (the batched engine's rule) it does not.

    .venv/bin/python bench/runtime/bench_layout.py [--model smollm2-135m]
"""

from __future__ import annotations

import argparse

import llama_cpp as L

from lmpc.runtime.models.layout_probe import PROBE_TOKENS, _Probe
from lmpc.runtime.models.resolve import resolve_builtin


_QUIET = L.llama_log_callback(lambda *a: None)  # kept alive: llama.cpp holds the pointer


def context(model, seqs: int, rows: int, cells: int):
    p = L.llama_context_default_params()
    p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq_max = cells * seqs, rows, rows, seqs
    p.kv_unified = False
    p.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
    p.n_threads = p.n_threads_batch = 1
    return L.llama_init_from_model(model, p)


def sixteens(n: int, no_single: bool) -> list[int]:
    out = [min(16, n - i) for i in range(0, n, 16)]
    if no_single and len(out) > 1 and out[-1] == 1:
        out[-2:] = [15, 2]
    return out


def splits(model) -> None:
    pr = _Probe(context(model, 1, 16, 512), model, 1, 16)
    T, n = pr.target, PROBE_TOKENS
    pr.clear()
    ref = pr.chunks(0, T, sixteens(n, False))
    for rule in (False, True):
        bad = []
        for s in range(1, n):
            if rule and n - s == 1:
                continue  # the rule never leaves one row: the suffix is at least 2
            pr.clear()
            pr.chunks(0, T[:s], sixteens(s, rule))
            if pr.chunks(0, T[s:], sixteens(n - s, rule), start=s) != ref:
                bad.append(s)
        print(f"| prefix + suffix in 16-row chunks, {'no one-row chunk (the rule)' if rule else 'plain'} "
              f"| {len(bad)} of {n - 1 - rule} split points differ: {bad} |")
    pr.close()


def shared(model) -> None:
    seqs = 4
    pr = _Probe(context(model, seqs, 128, 2048), model, seqs, 128)
    T, n = pr.target, PROBE_TOKENS
    other = (pr.other * 8)[:100]
    pr.clear()
    ref = pr.chunks(0, T, [32, 32, 16])
    for label, sizes, equal in (("other sizes (5, 32, 11) in one llama_decode", (5, 32, 11), False),
                                ("one size per llama_decode (the rule)", (5, 32, 11), True)):
        pr.clear()
        done = {s: 0 for s in range(seqs)}
        want = None
        while done[0] < n:
            rows = []
            groups: dict[int, list] = {}
            for s in range(seqs):
                toks = T if s == 0 else other
                part = toks[done[s]:done[s] + (16 if s == 0 else sizes[s - 1])]
                groups.setdefault(len(part) if equal else 0, []).append((s, part))
            for members in groups.values():
                rows = []
                for s, part in members:
                    last = s == 0 and done[0] + len(part) == n
                    if last:
                        want = len(rows) + len(part) - 1
                    rows += [(t, done[s] + i, s, last and i == len(part) - 1) for i, t in enumerate(part)]
                    done[s] += len(part)
                if rows:
                    pr.decode(rows)
                    if want is not None and done[0] == n and any(s == 0 for s, _ in members):
                        got = pr.logits(want)
        print(f"| prompt beside 3 sequences, {label} | {'same' if got == ref else 'DIFFERS'} |")
    pr.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    args = ap.parse_args()
    L.llama_log_set(_QUIET, None)
    model = L.llama_model_load_from_file(str(resolve_builtin(args.model)).encode(), L.llama_model_default_params())
    print(f"{args.model}: against the prompt alone in 16-row chunks from position 0\n| layout | result |\n|---|---|")
    splits(model)
    shared(model)


if __name__ == "__main__":
    main()
