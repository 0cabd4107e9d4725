"""The batched local engine (`engine: "batched"`): many calls decoded together in one context.

The model's owner thread (local.py's _Worker) hands every queued call to serve(): each call
takes a free slot (a llama.cpp sequence with its own KV stream and its own sampler chain:
grammar, DRY, greedy or dist), its prompt is evaluated, and then every step decodes one token
for each active sequence in one llama_decode (matrix-matrix work instead of one
matrix-vector pass per call). A sequence finishes on its own (end of generation: the grammar
closed, a stop string, its token bound) and frees its slot; calls that arrived meanwhile are
admitted at once (continuous batching, as llama.cpp's server does with --parallel).

Reproducibility (a call's output must not depend on its neighbours or on what ran before):
- the KV cache is not unified (kv_unified = false): each slot has its own stream whose cells
  start at position 0, so where a sequence's keys sit, and the attention sums over them, do
  not depend on the other sequences;
- prompts are evaluated alone (one sequence per llama_decode), on the same fixed grid of
  PREFIX_CHUNK tokens as the single engine, and a slot reuses its cached prompt only up to a
  grid boundary;
- decoding steps are padded to a constant number of rows (one per slot: a free slot decodes a
  throw-away token that is removed after the step), so every step has the same matrix shapes
  whatever the number of active calls.
tests/runtime/test_batch_engine.py checks byte-identical outputs alone, in batches and in
other orders.
"""

from __future__ import annotations

import queue
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from lmpc.runtime.errors import LmpcRuntimeError
from lmpc.runtime.models import sampling

DEFAULT_SLOTS = 4


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
    engine: Callable[[], "BatchEngine"]  # the worker's engine, made on first use


@dataclass
class _Seq:
    slot: int
    prep: Prepared
    fut: Future
    chain: Any
    generated: list[int] = field(default_factory=list)
    text: str = ""


class BatchEngine:
    """One llama.cpp context with `slots` sequences over an already loaded model."""

    def __init__(self, llm: Any, slots: int, n_ctx_per_slot: int, n_threads: int, chunk: int,
                 dry_multiplier: float) -> None:
        import llama_cpp as L

        self.L, self.llm, self.slots, self.chunk = L, llm, slots, chunk
        self.n_ctx_per_slot, self.dry = n_ctx_per_slot, dry_multiplier
        p = L.llama_context_default_params()
        p.n_ctx = n_ctx_per_slot * slots
        p.n_batch = p.n_ubatch = max(chunk, slots)
        p.n_seq_max = slots
        p.kv_unified = False
        p.n_threads = p.n_threads_batch = n_threads
        p.no_perf = False
        # the model llm was loaded with (load_llama: the extra-buffer decision applies to it)
        self.ctx = L.llama_init_from_model(llm._model.model, p)
        if not self.ctx:
            raise LmpcRuntimeError(f"llama.cpp could not make a context of {slots} sequences of "
                                   f"{n_ctx_per_slot} tokens (lower slots or n_ctx)")
        self.mem = L.llama_get_memory(self.ctx)
        self.vocab = llm._model.vocab
        self.batch = L.llama_batch_init(max(chunk, slots), 0, 1)
        self.cached: list[list[int]] = [[] for _ in range(slots)]  # prompt tokens in each slot's KV
        self.active: dict[int, _Seq] = {}
        self.prompt_tokens_evaluated = 0
        self.prompt_tokens_copied = 0  # shared prefix cells copied from another slot
        self.pad = True  # decode steps padded to one row per slot (see the module's docstring)
        self.steps = 0  # decoding steps, and the most sequences one of them decoded together
        self.widest = 0

    def close(self) -> None:
        if self.ctx:
            self.L.llama_batch_free(self.batch)
            self.L.llama_free(self.ctx)
            self.ctx = None

    # -- llama.cpp calls ------------------------------------------------------------------
    def _decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, position, sequence, wants logits) rows."""
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
            b.seq_id[i][0] = seq
        b.n_tokens = len(rows)
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            raise LmpcRuntimeError(f"llama.cpp could not decode a batch of {len(rows)} tokens (llama_decode: {rc})")

    # -- calls ----------------------------------------------------------------------------
    def free_slots(self) -> list[int]:
        return [s for s in range(self.slots) if s not in self.active]

    def _reusable(self, cached: list[int], tokens: list[int]) -> int:
        """How many of tokens' cached KV cells a fresh evaluation would compute identically:
        the common prefix cut to the grid, less the last chunk when all is cached (its logits
        are needed)."""
        common = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            common += 1
        aligned = common // self.chunk * self.chunk
        if aligned >= len(tokens):
            aligned -= self.chunk
        return max(aligned, 0)

    def admit(self, prep: Prepared, fut: Future) -> None:
        """Take the free slot whose cached prompt shares the longest grid-aligned prefix (or
        copy a longer one from another slot), evaluate the rest of the prompt alone on the
        grid, and sample the first token."""
        tokens = prep.tokens
        if len(tokens) >= self.n_ctx_per_slot:
            raise LmpcRuntimeError(
                f"the prompt has {len(tokens)} tokens and does not fit a slot's context of "
                f"{self.n_ctx_per_slot}; raise the model's n_ctx option or shorten the prompt")
        best, keep = None, -1
        for s in self.free_slots():
            aligned = self._reusable(self.cached[s], tokens)
            if aligned > keep:
                best, keep = s, aligned
        assert best is not None
        # A shared prefix (instructions, demos) another slot holds, active or not, is copied
        # instead of evaluated: its cells are the same numbers a fresh evaluation would give
        # (evaluated alone on the same grid). Across streams llama.cpp copies whole streams;
        # the copy's cells past the prefix are dropped below.
        donor, donor_keep = None, keep + self.chunk - 1
        for t in range(self.slots):
            if t != best:
                aligned = self._reusable(self.cached[t], tokens)
                if aligned > donor_keep:
                    donor, donor_keep = t, aligned
        if donor is not None:
            self.L.llama_memory_seq_cp(self.mem, donor, best, -1, -1)
            self.prompt_tokens_copied += donor_keep - keep
            keep = donor_keep
        self.L.llama_memory_seq_rm(self.mem, best, keep, -1)
        self.cached[best] = []  # until the prompt is fully evaluated
        for start in range(keep, len(tokens), self.chunk):
            part = tokens[start:start + self.chunk]
            last = start + len(part) == len(tokens)
            self._decode([(t, start + i, best, last and i == len(part) - 1) for i, t in enumerate(part)])
            self.prompt_tokens_evaluated += len(part)
        self.cached[best] = list(tokens)
        chain = sampling.new_chain(self.llm._model, prep.grammar, prep.temperature, prep.seed, self.dry)
        seq = _Seq(best, prep, fut, chain)
        self.active[best] = seq
        last_row = (len(tokens) - 1) % self.chunk  # the last chunk starts on the grid
        self._take(seq, self.L.llama_sampler_sample(chain.sampler, self.ctx, last_row))

    def step(self) -> None:
        """Decode one token for every active sequence (and a throw-away one per free slot)."""
        rows, order = [], []
        for s in range(self.slots):
            seq = self.active.get(s)
            if seq is not None:
                order.append((len(rows), seq))
                rows.append((seq.generated[-1], len(seq.prep.tokens) + len(seq.generated) - 1, s, True))
            elif self.pad:  # padding: the same shape every step; its cell is removed below
                rows.append((0, len(self.cached[s]), s, False))
        self._decode(rows)
        self.steps += 1
        self.widest = max(self.widest, len(order))
        if self.pad:
            for s in range(self.slots):
                if s not in self.active:
                    self.L.llama_memory_seq_rm(self.mem, s, len(self.cached[s]), -1)
        for row, seq in order:
            self._take(seq, self.L.llama_sampler_sample(seq.chain.sampler, self.ctx, row))

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
        for seq in list(self.active.values()):
            del self.active[seq.slot]
            seq.chain.close()
            seq.fut.set_exception(error)
        self.L.llama_memory_clear(self.mem, True)
        self.cached = [[] for _ in range(self.slots)]


def serve(q: "queue.SimpleQueue", first: tuple[Job, Future], run_other: Callable[[Any], None]) -> bool:
    """Decode `first` and every call that arrives while others decode, until none is left.

    Runs on the owner thread. Other work found in the queue (a callable item) runs between
    steps through run_other. Returns False when the close sentinel was taken from the queue
    (the worker must then stop after this)."""
    pending: deque[tuple[Job, Future]] = deque([first])
    try:
        engine = first[0].engine()
    except BaseException as e:  # noqa: BLE001 - e.g. the model or the context does not load
        if first[1].set_running_or_notify_cancel():
            first[1].set_exception(e)
        return True
    open_ = True
    while pending or engine.active:
        while pending and engine.free_slots():
            job, fut = pending.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                engine.admit(job.prepare(), fut)
            except BaseException as e:  # noqa: BLE001 - this call's error, delivered to its caller
                if not fut.done():
                    fut.set_exception(e)
        if engine.active:
            try:
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
