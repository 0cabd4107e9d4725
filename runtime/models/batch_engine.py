"""The batched local engine (`engine: "batched"`): many calls decoded together in one context.

The model's owner thread (local.py's _Worker) hands every queued call to serve(): each call
takes a free slot (a llama.cpp sequence with its own KV stream and its own sampler chain:
grammar, DRY, greedy or dist). Each round of the loop then
- evaluates the next 16-token prompt chunk of *every* call still reading its prompt in ONE
  llama_decode (chunked prefill, as llama.cpp's server does with --parallel), and
- decodes one token for every generating call (one llama_decode per call: DECODE_GROUP; all
  in one on the layout-free path, below).
A sequence finishes on its own (end of generation: the grammar closed, a stop string, its token
bound) and frees its slot; calls that arrived meanwhile are admitted at once (continuous
batching). A prompt prefix (instructions, demos) that another slot holds is copied
(llama_memory_seq_cp) instead of evaluated, and calls admitted together that share a prefix
evaluate it once: one leads, the others wait and copy its cells.

Reproducibility (a call's output must not depend on its neighbours, the batch, the order or
what ran before). Measured on this CPU (AVX2, bench/runtime/bench_invariance.py; SmolLM2 Q4_1
and Gemma 3 270M Q4_K_M/Q5_0/Q8_0), a row's numbers depend on the *shape of its ubatch*, not on
the other sequences' contents:
- Gemma: a ubatch of 8 or more one-row sequences gives other numbers than one row alone (with
  flash attention already from 4), and in this engine even groups of 4 did (DECODE_GROUP). A
  sequence's prompt chunk of 5 rows gives other numbers than the same rows padded to 16
  (extra buffers off). A 16-row chunk per sequence gives the same bytes with 1 to 8 sequences
  in the ubatch.
- SmolLM2 (Q4_1, no repacked or tinyBLAS kernel on AVX2): the same bytes in every layout tried.
So every shape is fixed: the KV cache is not unified (a stream per slot, cells from position
0; llama.cpp then splits a batch into ubatches of consecutive streams with the same number of
rows each), flash attention is off, every prompt chunk is PREFIX_CHUNK rows on the grid (the
last one padded with throw-away tokens that are removed after), prompt cells are reused or
copied only up to a grid boundary, and each decoding row is its own llama_decode. A call
decoded alone then has the same shapes as in any batch, with no padding.
tests/runtime/test_batch_engine.py checks byte-identical outputs alone, in batches, in other
orders and on other slot counts.

All that is for a model whose numbers depend on the layout. layout_probe.py measures it once per
machine on this very context; for a model it finds layout-exact (SmolLM2 here) use_exact()
switches to the layout-free path: no grid, no padding, the whole common prefix reused or
copied, EXACT_CHUNK-row prompt chunks and every generating row in one llama_decode. The same
bytes as the grid (tests/runtime/test_layout.py), without its cost. `reproducible: false`
takes that path without the probe, giving the guarantee up.
"""

from __future__ import annotations

import queue
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from lmpc.runtime.errors import LmpcRuntimeError
from lmpc.runtime.models import sampling

DEFAULT_SLOTS = 4  # the most slots `slots` sizes to (a 2-core CPU gains little from more)
# Sequences per decoding llama_decode. One: decoding rows are not batched. Measured: Gemma 3
# 270M in this engine gave other answers with groups of 4 than alone (2 of 6 free-text calls;
# bench_invariance.py --engine), although its logits matched for 2 to 7 one-row sequences in
# the bench's layouts (8 differ) and the cause is not isolated; with groups of one, 8 of 8
# matched. A LoRA adapter (F32 tensors) changes a row's numbers from 2 rows on (SmolLM2).
# On this CPU batched decoding rows bring SmolLM2 nothing (52 vs 44 tokens/s for 1 vs 4 rows)
# and Gemma 1.65x: the cost of the guarantee.
DECODE_GROUP = 1
ADAPTER_DECODE_GROUP = 1
# `reproducible: false` gives the guarantee up for speed: every generating row in one
# llama_decode (local.py passes the slot count), where models whose kernels gain from rows
# (Gemma 3: 8 free-text calls on 8 slots 10.0 s against 12.8 s, load 0.3) decode faster and answers may depend on neighbours.
# Rows per call in one prompt llama_decode on the layout-free path (use_exact): larger chunks,
# fewer llama_decodes; layout_probe.py measures every shape up to it.
EXACT_CHUNK = 32
KV_MEMORY_SHARE = 0.25  # the part of available memory the engine's KV cache may take


def kv_bytes_per_token(model: Any) -> int:
    """An estimate of one token's K and V cells (f16) over all layers."""
    import llama_cpp as L

    n_head = max(L.llama_model_n_head(model), 1)
    head_dim = L.llama_model_n_embd(model) // n_head
    return 2 * 2 * L.llama_model_n_layer(model) * L.llama_model_n_head_kv(model) * max(head_dim, 1)


def available_memory() -> int | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def plan_slots(model: Any, n_ctx: int, slots: int | None, avail: int | None = None) -> tuple[int, int]:
    """(slots, tokens per slot): the option's slots, or as many as DEFAULT_SLOTS that fit
    KV_MEMORY_SHARE of the available memory (avail bytes; None: MemAvailable); a slot holds
    n_ctx tokens, at most the model's training context."""
    import llama_cpp as L

    train = L.llama_model_n_ctx_train(model)
    per_slot = min(n_ctx, train) if train > 0 else n_ctx
    if slots is None:
        avail = available_memory() if avail is None else avail
        fit = DEFAULT_SLOTS if avail is None else int(avail * KV_MEMORY_SHARE // (per_slot * kv_bytes_per_token(model)))
        slots = max(1, min(DEFAULT_SLOTS, fit))
    return slots, per_slot


def decode_rows(ctx: Any, batch: Any, rows: list[tuple[int, int, int, bool]]) -> int:
    """Fill batch (a llama_batch) with (token, position, sequence, wants logits) rows and
    llama_decode it on ctx; llama_decode's return code (0: done)."""
    import llama_cpp as L

    for i, (tok, pos, seq, logits) in enumerate(rows):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, pos, 1, logits
        batch.seq_id[i][0] = seq
    batch.n_tokens = len(rows)
    return L.llama_decode(ctx, batch)


@dataclass
class Prepared:
    """A call ready to decode: what local.LlamaCppModel._prepare made of a GenerationRequest."""

    tokens: list[int]
    stop: list[str]
    grammar: Any  # LlamaGrammar or None
    temperature: float
    seed: int
    max_tokens: int
    finish: Callable[[str, int, int, str], Any]  # (text, prompt_tokens, completion_tokens, reason) -> Completion


@dataclass
class Job:
    """A queued call: prepare() runs on the owner thread (it needs the loaded model)."""

    prepare: Callable[[], Prepared]
    engine: Callable[[Hashable], "BatchEngine"]  # the worker's engine for a key, made on first use
    key: Hashable = None  # what needs its own context: the LoRA adapter's SHA-256 (None: none)


@dataclass
class _Seq:
    slot: int
    prep: Prepared
    fut: Future
    chain: Any = None
    done: int = 0  # prompt tokens whose cells this slot holds (while reading the prompt)
    generated: list[int] = field(default_factory=list)
    text: str = ""


class BatchEngine:
    """One llama.cpp context with `slots` sequences over an already loaded model."""

    def __init__(self, llm: Any, slots: int, n_ctx_per_slot: int, n_threads: int, chunk: int,
                 dry_multiplier: float, setup: Callable[[Any], None] | None = None,
                 decode_group: int = DECODE_GROUP, exact_chunk: int = EXACT_CHUNK) -> None:
        import llama_cpp as L

        self.L, self.llm, self.slots, self.chunk = L, llm, slots, chunk
        self.exact_chunk = exact_chunk
        self.exact = False  # use_exact(): the layout-free path
        self.probe: Any = None  # layout_probe.Verdict of this context, when it was probed
        self.decode_group = decode_group
        self.n_ctx_per_slot, self.dry = n_ctx_per_slot, dry_multiplier
        p = L.llama_context_default_params()
        p.n_ctx = n_ctx_per_slot * slots
        # one prompt chunk of every slot in one ubatch (the layout-free path's chunks are larger)
        self.max_rows = max(chunk, exact_chunk) * slots
        p.n_batch = p.n_ubatch = self.max_rows
        p.n_seq_max = slots
        p.kv_unified = False
        p.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED  # measured: shape-dependent from 4 rows
        p.n_threads = p.n_threads_batch = n_threads
        p.no_perf = False
        # the model llm was loaded with (load_llama: the extra-buffer decision applies to it)
        self.ctx = L.llama_init_from_model(llm._model.model, p)
        if not self.ctx:
            raise LmpcRuntimeError(f"llama.cpp could not make a context of {slots} sequences of "
                                   f"{n_ctx_per_slot} tokens (lower slots or n_ctx)")
        self.mem = L.llama_get_memory(self.ctx)
        self.vocab = llm._model.vocab
        self.batch = L.llama_batch_init(self.max_rows, 0, 1)
        if setup is not None:
            setup(self.ctx)  # e.g. the LoRA adapter this engine's calls share
        self.cached: list[list[int]] = [[] for _ in range(slots)]  # prompt tokens in each slot's KV
        self.reading: dict[int, _Seq] = {}  # slot -> a call whose prompt is being evaluated
        self.active: dict[int, _Seq] = {}  # slot -> a generating call
        self.prompt_tokens_evaluated = 0  # real prompt tokens decoded (not the padding)
        self.prompt_tokens_copied = 0  # shared prefix cells copied from another slot
        self.prompt_rounds = 0  # prompt llama_decodes, and the most calls one of them evaluated
        self.widest_prompt = 0
        self.steps = 0  # decoding rounds, and the most sequences one of them decoded
        self.widest = 0
        self.widest_decode = 0  # the most decoding rows one llama_decode held (decode_group bounds it)

    def use_exact(self) -> None:
        """The layout-free path, before the first call: no grid, no padding, the whole common
        prefix reused, prompt chunks of up to exact_chunk rows and every generating row in one
        llama_decode. For a model measured layout-exact on this machine (layout_probe.py), or
        when the model gives byte-identity up (`reproducible: false`). No prompt chunk has one
        row: a prompt row alone takes other kernels than in a chunk (SmolLM2 on AVX2), and the
        probe's verdict covers chunks of 2 rows or more."""
        assert not self.busy
        self.exact, self.chunk, self.decode_group = True, self.exact_chunk, self.slots

    def close(self) -> None:
        if self.ctx:
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)
            self.ctx = None

    @property
    def busy(self) -> bool:
        return bool(self.reading or self.active)

    # -- llama.cpp calls ------------------------------------------------------------------
    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) rows."""
        rc = decode_rows(self.ctx, self.batch, rows)
        if rc != 0:
            raise LmpcRuntimeError(f"llama.cpp could not decode a batch of {len(rows)} tokens (llama_decode: {rc})")

    # -- calls ----------------------------------------------------------------------------
    def free_slots(self) -> list[int]:
        return [s for s in range(self.slots) if s not in self.active and s not in self.reading]

    def _reusable(self, cached: list[int], tokens: list[int]) -> int:
        """How many of tokens' cells a slot holding `cached` has as a fresh evaluation would
        compute them: the common prefix cut to the grid, less the last chunk when all of tokens
        is there (its logits are needed)."""
        common = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            common += 1
        if self.exact:  # the last tokens are evaluated again: no chunk of one row (use_exact)
            return max(min(common, len(tokens) - 2), 0)
        aligned = common // self.chunk * self.chunk
        if aligned >= len(tokens):
            aligned -= self.chunk
        return max(aligned, 0)

    def admit(self, prep: Prepared, fut: Future) -> None:
        """Take the free slot whose cached prompt shares the longest grid-aligned prefix; the
        prompt is then read by prompt_round()."""
        tokens = prep.tokens
        padded = len(tokens) if self.exact else -(-len(tokens) // self.chunk) * self.chunk  # the padded last chunk
        if padded >= self.n_ctx_per_slot:
            raise LmpcRuntimeError(
                f"the prompt has {len(tokens)} tokens and does not fit a slot's context of "
                f"{self.n_ctx_per_slot}; raise the model's n_ctx option or shorten the prompt")
        best, keep = None, -1
        for s in self.free_slots():
            aligned = self._reusable(self.cached[s], tokens)
            if aligned > keep:
                best, keep = s, aligned
        assert best is not None
        self.L.llama_memory_seq_rm(self.mem, best, keep, -1)
        self.cached[best] = tokens[:keep]
        self.reading[best] = _Seq(best, prep, fut, done=keep)

    def _copy_prefix(self, seq: _Seq) -> None:
        """Copy a longer shared prefix from another slot (busy or not), if one holds it: its
        cells are the numbers a fresh evaluation would give (same chunks, same shapes).
        Across streams llama.cpp copies a whole stream; the cells past the prefix are dropped."""
        tokens = seq.prep.tokens
        donor, keep = None, seq.done
        for t in range(self.slots):
            if t != seq.slot:
                aligned = self._reusable(self.cached[t], tokens)
                if aligned > keep:
                    donor, keep = t, aligned
        if donor is not None:
            self.L.llama_memory_seq_cp(self.mem, donor, seq.slot, -1, -1)
            self.L.llama_memory_seq_rm(self.mem, seq.slot, keep, -1)
            self.prompt_tokens_copied += keep - seq.done
            seq.done = keep
            self.cached[seq.slot] = tokens[:keep]

    def prompt_round(self) -> None:
        """Evaluate the next chunk of every call reading its prompt: one llama_decode on the grid,
        one per chunk size on the layout-free path.

        A call whose next chunk (with everything before it) another call evaluates in this
        round waits, and copies the cells next round: a shared prefix is evaluated once."""
        for seq in self.reading.values():
            self._copy_prefix(seq)
        planned: list[tuple[_Seq, int, list]] = []  # (call, tokens in its chunk, its rows)
        leaders: list[list[int]] = []
        for seq in sorted(self.reading.values(), key=lambda q: (-q.done, q.slot)):
            tokens, start = seq.prep.tokens, seq.done
            end = min(start + self.chunk, len(tokens))
            if self.exact and len(tokens) - end == 1:
                end -= 1  # no chunk of one row: leave two for the next round
            if any(len(lead) > start and self._reusable(lead, tokens) > start for lead in leaders):
                continue  # a leader evaluates this chunk now (and maybe more): copy it next round
            part = tokens[start:end]
            last = end == len(tokens)
            chunk_rows = [(t, start + i, seq.slot, last and i == len(part) - 1) for i, t in enumerate(part)]
            if not self.exact:
                # the last chunk is padded to the grid: every chunk has the same rows (see the docstring)
                chunk_rows += [(0, start + i, seq.slot, False) for i in range(len(part), self.chunk)]
            planned.append((seq, len(part), chunk_rows))
            leaders.append(tokens[:end])
        # llama.cpp splits a batch into ubatches of consecutive streams with the same number of
        # rows each: keep them in slot order. On the grid every chunk has the same rows; on the
        # layout-free path chunks of different sizes go to separate llama_decodes, since llama.cpp
        # would otherwise cut each call's rows by its neighbours' counts (16 rows next to 5 and
        # 4 become 4 + 1 + 11: a one-row piece, which changes numbers; measured on SmolLM2).
        planned.sort(key=lambda p: p[0].slot)
        groups: dict[int, list[tuple[_Seq, int, list]]] = {}
        for plan in planned:
            groups.setdefault(len(plan[2]), []).append(plan)
        self.prompt_rounds += 1
        self.widest_prompt = max(self.widest_prompt, max((len(g) for g in groups.values()), default=0))
        for group in groups.values():
            self._prompt_decode(group)

    def _prompt_decode(self, planned: list[tuple[_Seq, int, list]]) -> None:
        """One llama_decode of these calls' chunks (all the same rows), then the calls whose
        prompt is done start generating."""
        rows, ends = [], []
        for _, _, chunk_rows in planned:
            rows += chunk_rows
            ends.append(len(rows))
        self._decode(rows)
        for (seq, n, chunk_rows), end in zip(planned, ends):
            seq.done += n
            self.prompt_tokens_evaluated += n
            tokens = seq.prep.tokens
            self.cached[seq.slot] = tokens[:seq.done]
            if seq.done < len(tokens):
                continue
            self.L.llama_memory_seq_rm(self.mem, seq.slot, len(tokens), -1)  # the padding
            del self.reading[seq.slot]
            seq.chain = sampling.new_chain(self.llm._model, seq.prep.grammar, seq.prep.temperature, seq.prep.seed,
                                           self.dry)
            self.active[seq.slot] = seq
            self._take(seq, seq.chain.sample_raw(self.ctx, end - len(chunk_rows) + n - 1))

    def step(self) -> None:
        """Decode one token for every generating call, decode_group sequences per llama_decode."""
        seqs = [self.active[s] for s in sorted(self.active)]
        self.steps += 1
        self.widest = max(self.widest, len(seqs))
        for g in range(0, len(seqs), self.decode_group):
            group = seqs[g:g + self.decode_group]
            self.widest_decode = max(self.widest_decode, len(group))
            self._decode([(q.generated[-1], len(q.prep.tokens) + len(q.generated) - 1, q.slot, True) for q in group])
            for row, seq in enumerate(group):
                self._take(seq, seq.chain.sample_raw(self.ctx, row))

    def _take(self, seq: _Seq, token: int) -> None:
        """Record a sampled token; finish the sequence if it ended."""
        prep = seq.prep
        if self.L.llama_vocab_is_eog(self.vocab, token):
            return self._finish(seq, "stop")
        seq.generated.append(token)
        seq.text = self.llm.detokenize(seq.generated).decode("utf-8", errors="ignore")
        for stop in prep.stop:
            at = seq.text.find(stop)
            if at >= 0:
                seq.text = seq.text[:at]
                return self._finish(seq, "stop")
        room = self.n_ctx_per_slot - len(prep.tokens)
        if len(seq.generated) >= min(prep.max_tokens, room):
            return self._finish(seq, "length")

    def _finish(self, seq: _Seq, reason: str) -> None:
        del self.active[seq.slot]
        # keep the prompt's cells for the next call's prefix; drop the generated ones
        self.L.llama_memory_seq_rm(self.mem, seq.slot, len(seq.prep.tokens), -1)
        seq.chain.close()
        try:
            seq.fut.set_result(seq.prep.finish(seq.text, len(seq.prep.tokens), len(seq.generated), reason))
        except BaseException as e:  # noqa: BLE001 - delivered to the caller's thread
            seq.fut.set_exception(e)

    def fail_all(self, error: BaseException) -> None:
        for seq in list(self.active.values()) + list(self.reading.values()):
            if seq.chain is not None:
                seq.chain.close()
            if not seq.fut.done():
                seq.fut.set_exception(error)
        self.active.clear()
        self.reading.clear()
        self.L.llama_memory_clear(self.mem, True)
        self.cached = [[] for _ in range(self.slots)]


def serve(q: "queue.SimpleQueue", first: tuple[Job, Future], run_other: Callable[[Any], None]) -> bool:
    """Decode `first` and every call that arrives while others decode, until none is left.

    Runs on the owner thread. Calls with different keys (LoRA adapters) go to different
    engines (contexts), each batched on its own. Other work found in the queue (a callable
    item) runs between rounds through run_other. Returns False when the close sentinel was
    taken from the queue (the worker must then stop after this)."""
    pending: deque[tuple[Job, Future]] = deque([first])
    engines: dict[Hashable, BatchEngine] = {}
    open_ = True
    while pending or any(e.busy for e in engines.values()):
        waiting: deque[tuple[Job, Future]] = deque()
        while pending:
            job, fut = pending.popleft()
            if fut.done():
                continue
            engine = engines.get(job.key)
            if engine is None:
                try:
                    engine = engines[job.key] = job.engine(job.key)
                except BaseException as e:  # noqa: BLE001 - e.g. the model or the context does not load
                    if fut.set_running_or_notify_cancel():
                        fut.set_exception(e)
                    continue
            if not engine.free_slots():
                waiting.append((job, fut))
                continue
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                engine.admit(job.prepare(), fut)
            except BaseException as e:  # noqa: BLE001 - this call's error, delivered to its caller
                if not fut.done():
                    fut.set_exception(e)
        pending = waiting
        for engine in engines.values():
            try:
                if engine.reading:
                    engine.prompt_round()
                if engine.active:
                    engine.step()
            except BaseException as e:  # noqa: BLE001 - a failed decode fails the calls in it
                engine.fail_all(e if isinstance(e, LmpcRuntimeError) else LmpcRuntimeError(str(e)))
        while open_:
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                open_ = False
            elif isinstance(item[0], Job):
                pending.append(item)
            else:
                run_other(item)
    return open_
