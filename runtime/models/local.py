"""Local GGUF models run in-process through llama-cpp-python.

One llama_cpp.Llama per model, owned by one worker thread: a llama.cpp context is not
thread-safe (two threads decoding on one context corrupt it or crash), so generate() puts
the work on the worker's queue and waits on a Future.

Reusing the one Llama keeps llama-cpp-python's prefix reuse: a prompt that shares its first
tokens with the previous one (same system message and demos) only evaluates the new suffix.
For a model whose numbers depend on how a prompt is split into batches (measured once per
machine by layout_probe.py: Gemma 3 here), reuse is cut back to a multiple of PREFIX_CHUNK
tokens so that every prompt is evaluated in the same chunks whatever was cached before; at
temperature 0 a split-dependent model would otherwise make a call's output depend on the calls
before it. A model measured layout-exact (SmolLM2 here) reuses the whole cached prefix.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import queue
import re
import threading
import weakref
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, TypeVar

from lmpc.compiler.options import ENGINES, MODEL_OPTION_VALUES, PROVIDER_OPTIONS
from lmpc.runtime.errors import LmpcRuntimeError, ModelConfigError, ModelNotFoundError
from lmpc.runtime.models.base import Completion, GenerationRequest, Model, check_options
from lmpc.runtime.models.llama_system import ExtraBuffers, extra_buffers_for, load_llama, parse_setting
from lmpc.runtime.models import sampling
from lmpc.runtime.models.resolve import file_identity, resolve_model_file
from lmpc.runtime.models.batch_engine import DEFAULT_SLOTS
from lmpc.runtime.models.sampling import DRY_MULTIPLIER

T = TypeVar("T")

OPTIONS = tuple(PROVIDER_OPTIONS["llama_cpp"])  # the checker's table: one definition
DEFAULT_N_CTX = 2048
# Prompt evaluation grid. Smaller re-evaluates fewer cached tokens; a batch of 1 is slow.
# Measured on 50 sentiment prompts: 32 -> 25.7 s, 16 -> 19.9 s, 8 -> 20.3 s, 1 -> 29.4 s.
PREFIX_CHUNK = 16
FREE_BATCH = 512  # reproducible: false: llama-cpp-python's default batch

# The converter's whitespace rule, bounded to at most one space: a rule that allows runs of
# newlines/spaces lets small models emit whitespace until max_tokens instead of the JSON.
SPACE_RULE = 'space ::= | " "'
# A JSON string character: anything but a quote, a backslash or a control character, or an
# escape (as in llama.cpp's current converter).
STRICT_CHAR_RULE = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
_SPACE_LINE = re.compile(r"^space ::= .*$", re.MULTILINE)
_ROOT_LINE = re.compile(r"^root ::= ", re.MULTILINE)

# Base models get a plain-text prompt; each answer follows this label.
BASE_ANSWER_LABEL = "Output:"

log = logging.getLogger("lmpc.llama_cpp")
log.addHandler(logging.NullHandler())  # silent unless the application configures logging
_log_sink: Any = None  # the ctypes callback; kept referenced so it is never collected


def _install_log_sink() -> None:
    """Send llama.cpp's C logging to the `lmpc.llama_cpp` logger instead of stderr.

    llama-cpp-python's own callback maps ggml levels off by one (ggml now has DEBUG=1,
    INFO=2, WARN=3, ERROR=4), so with verbose=False it still prints warnings, e.g. about
    the SWA cache. Errors that matter reach the user as Python exceptions anyway.
    """
    global _log_sink
    if _log_sink is not None:
        return
    import llama_cpp

    levels = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}

    @llama_cpp.llama_log_callback
    def sink(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lvl = levels.get(level, logging.DEBUG)
        if log.isEnabledFor(lvl):
            log.log(lvl, "%s", text.decode("utf-8", "replace").rstrip("\n"))

    _log_sink = sink
    llama_cpp.llama_log_set(sink, ctypes.c_void_p(0))


def schema_to_gbnf(schema: dict, *, leading_space: bool = False) -> str:
    """GBNF for a JSON Schema, with whitespace bounded to at most one space.

    leading_space lets the answer start with one space: after a plain-text `Output:` label
    a base model's most likely next token is ` {`, not `{`.
    """
    from llama_cpp.llama_grammar import PRIMITIVE_RULES, json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    # 0.3.36's string character rule admits raw control characters (newlines, tabs): JSON
    # forbids them unescaped, and they are another way for a small model to loop.
    loose_char = " ::= " + PRIMITIVE_RULES["char"].content + "\n"
    gbnf = (gbnf + "\n").replace(loose_char, " ::= " + STRICT_CHAR_RULE + "\n").rstrip("\n")
    if _SPACE_LINE.search(gbnf):
        gbnf = _SPACE_LINE.sub(SPACE_RULE, gbnf)
    else:
        gbnf += "\n" + SPACE_RULE
    if leading_space:
        gbnf = _ROOT_LINE.sub('root ::= " "? lmpc-root\nlmpc-root ::= ', gbnf, count=1)
    return gbnf


def flatten_messages(messages: list[dict]) -> str:
    """A completion-style prompt for base models (no chat template).

    The system text, then each demo as its input lines followed by `Output: <answer>`, then
    this example's input and a bare `Output:` that the model continues with the answer.
    """
    blocks: list[str] = []
    pending: list[str] = []
    for m in messages:
        content = str(m.get("content") or "").strip()
        role = m.get("role")
        if role == "system":
            blocks.append(content)
        elif role == "assistant":
            blocks.append("\n".join(pending + [f"{BASE_ANSWER_LABEL} {content}"]))
            pending = []
        else:
            pending.append(content)
    blocks.append("\n".join(pending + [BASE_ANSWER_LABEL]))
    return "\n\n".join(b for b in blocks if b)


class _Worker:
    """The thread that owns one Llama, and the Llama's per-model state.

    It holds no reference to its LlamaCppModel, so an unclosed model can still be collected;
    a finalizer then stops the thread.
    """

    def __init__(self, name: str) -> None:
        self.queue: queue.SimpleQueue[tuple[Callable[[], Any], Future] | None] = queue.SimpleQueue()
        self.llm: Any = None  # llama_cpp.Llama, touched only on this thread
        self.formatter: Any = None  # Jinja2ChatFormatter of the GGUF's chat template, or None
        self.trusted = 0  # KV positions evaluated as prompt chunks by the last call
        self.exact = False  # the model measured layout-exact on this machine (layout_probe.py)
        self.probe: Any = None  # layout_probe.Verdict of the single engine's context
        self.grammars: dict[str, Any] = {}  # schema key -> LlamaGrammar
        self.engines: dict[Any, Any] = {}  # batch_engine.BatchEngine per adapter (None: none), made on first call
        self.adapters: Any = None  # adapters.LoadedAdapters: LoRA handles (finetune), made on first use
        self.adapter: str | None = None  # the SHA-256 of the adapter set on llm's context (None: none)
        self.thread = threading.Thread(target=self.serve, name=f"lmpc-llama-{name}", daemon=True)
        self.thread.start()

    def serve(self) -> None:
        from lmpc.runtime.models import batch_engine

        while (item := self.queue.get()) is not None:
            if isinstance(item[0], batch_engine.Job):
                if not batch_engine.serve(self.queue, item, self.run):
                    break  # it took the close sentinel: the calls queued before it are done
            else:
                self.run(item)
            item = None  # drop references to the request before waiting again
        for engine in self.engines.values():
            engine.close()
        self.engines.clear()
        if self.llm is not None:
            self.llm.close()  # frees the context on the thread that used it
            self.llm = None

    @staticmethod
    def run(item: tuple[Callable[[], Any], Future]) -> None:
        fn, fut = item
        if fut.set_running_or_notify_cancel():
            try:
                fut.set_result(fn())
            except BaseException as e:  # delivered to the caller's thread
                fut.set_exception(e)


class LlamaCppModel(Model):
    def __init__(self, name: str, options: dict[str, Any], base_dir: Path | None = None) -> None:
        check_options(name, "llama_cpp", options, OPTIONS)
        self.name = name
        self.path = resolve_model_file(name, options, base_dir)
        self.n_ctx = _positive_int(name, options, "n_ctx", DEFAULT_N_CTX)
        self.n_threads = _positive_int(name, options, "n_threads", default_threads())
        self.seed = int(options.get("seed", 0))
        # reproducible (default): a call's output does not depend on what was cached before it
        # or on the calls batched with it. true: the whole cached prefix is reused when the
        # model measures layout-exact on this machine (layout_probe.py), else the grid below;
        # "grid": the grid without the probe (re-evaluating up to PREFIX_CHUNK - 1 cached
        # tokens per call); false: llama-cpp-python's own reuse, no guarantee.
        value = options.get("reproducible", True)
        if not (isinstance(value, bool) or value == "grid"):
            raise ModelConfigError(f'model `{name}`: option reproducible must be true, false or "grid", not {value!r}')
        self.reproducible = value is not False
        self.layout = "free" if value is False else "grid" if value == "grid" else "auto"
        # the repetition guard of free text (sampling.py); 0 turns it off
        self.dry_multiplier = _number(name, options, "dry_multiplier", DRY_MULTIPLIER)
        # auto | True | False; decided against this machine at load (see llama_system.py)
        # single: one call at a time (the default); batched: batch_engine.py, `slots` calls at once
        self.engine = options.get("engine", "single")
        if self.engine not in ENGINES:
            raise ModelConfigError(f"model `{name}`: option engine is one of {', '.join(ENGINES)}, not {self.engine!r}")
        # batched: sequences decoded together; None: sized from the model and memory (batch_engine.plan_slots)
        self.slots = _positive_int(name, options, "slots", DEFAULT_SLOTS) if "slots" in options else None
        self.extra_buffers_option = parse_setting(options.get("extra_buffers", "auto"),
                                                  f"model `{name}`: option extra_buffers")
        self.extra_buffers: ExtraBuffers | None = None  # the decision the load applied
        self._identity: str | None = None
        self._worker: _Worker | None = None  # started on first use
        self._lock = threading.Lock()
        self._closed = False
        self.prompt_tokens_evaluated = 0  # prompt tokens actually decoded (not reused)

    # -- interface -------------------------------------------------------------------
    @property
    def identity(self) -> str:
        if self._identity is None:
            suffix = ""
            if self.dry_multiplier:  # a different decoding: never the answers cached without it
                suffix += f":dry{self.dry_multiplier:g}-field"  # -field: the history restarts at each string
            if self.engine == "batched":  # another context layout (not shown to give the same numbers)
                suffix += ":batched"
            if not self.reproducible:
                suffix += ":free-prefix"
            self._identity = f"llama_cpp:{file_identity(self.path)}{suffix}"
        return self._identity

    @property
    def has_chat_template(self) -> bool:
        return self._submit(self._has_chat_template)

    @property
    def supports_adapters(self) -> bool:
        return True

    @property
    def supports_concurrency(self) -> bool:
        return self.engine == "batched"  # the executor then sends calls at once; the engine batches them

    def generate(self, req: GenerationRequest) -> Completion:
        if self.engine == "batched":
            from lmpc.runtime.models.batch_engine import Job

            # an adapter applies to a whole context: one engine (context) per adapter, each batched
            key = req.adapter[1] if req.adapter is not None else None
            return self._submit_item(Job(prepare=lambda: self._prepare(req), engine=lambda k: self._batch_engine(req),
                                         key=key))
        return self._submit(lambda: self._generate(req))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            worker = self._worker
        if worker is not None:
            worker.queue.put(None)  # after the calls already queued: they still complete
            if threading.current_thread() is not worker.thread:
                worker.thread.join()

    # -- on the worker thread ----------------------------------------------------------
    def _submit(self, fn: Callable[[], T]) -> T:
        return self._submit_item(fn)

    def _submit_item(self, work: Any) -> Any:
        fut: Future = Future()
        with self._lock:
            if self._closed:
                raise LmpcRuntimeError(f"model `{self.name}` was used after it was closed")
            if self._worker is None:
                self._worker = _Worker(self.name)
                weakref.finalize(self, self._worker.queue.put, None)
            self._worker.queue.put((work, fut))
        return fut.result()

    def _has_chat_template(self) -> bool:
        self._load()
        return self._w.formatter is not None

    @property
    def _w(self) -> _Worker:
        assert self._worker is not None
        return self._worker

    def _load(self) -> Any:
        w = self._w
        if w.llm is not None:
            return w.llm
        _install_log_sink()
        decision = extra_buffers_for(self.extra_buffers_option)
        log.info("lmpc: model `%s`: llama.cpp extra buffer types %s (%s)", self.name, decision.word, decision.reason)
        try:
            w.llm = load_llama(
                decision.enabled,
                model_path=str(self.path),
                n_ctx=self.n_ctx if self.engine == "single" else PREFIX_CHUNK * 8,  # batched: its own context
                n_batch=PREFIX_CHUNK if self.reproducible else FREE_BATCH,
                n_ubatch=PREFIX_CHUNK if self.reproducible else FREE_BATCH,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                seed=self.seed,
                verbose=False,
            )
        except LmpcRuntimeError:
            raise
        except Exception as e:
            raise ModelNotFoundError(
                f"llama.cpp could not load the model `{self.name}` from {self.path} ({e}); "
                "is it a complete GGUF file of an architecture this llama.cpp supports?"
            ) from None
        # The model's own template renders chat prompts. Without tokenizer.chat_template
        # llama-cpp-python would fall back to the llama-2 format, which a base model does
        # not know: such models get a plain completion-style prompt instead.
        template = w.llm.metadata.get("tokenizer.chat_template")
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model = w.llm._model
            eos, bos = w.llm.token_eos(), w.llm.token_bos()
            w.formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
                stop_token_ids=[eos],
            )
        sampling.install(w.llm, self.dry_multiplier)
        self.extra_buffers = decision
        if self.engine == "single" and self.layout == "auto":
            w.probe = self._layout_verdict(w.llm.ctx, {"engine": "single", "n_batch": PREFIX_CHUNK,
                                                       "flash_attn": int(w.llm.context_params.flash_attn_type)},
                                           seqs=1, max_rows=PREFIX_CHUNK, ref_chunk=PREFIX_CHUNK)
            w.exact = w.probe.exact
            w.llm.n_tokens = 0  # the probe cleared the context
        return w.llm

    def _layout_verdict(self, ctx: Any, setting: dict[str, Any], seqs: int, max_rows: int, ref_chunk: int) -> Any:
        """Whether this model's numbers are layout-exact on this machine, for a context of
        these settings: measured once (layout_probe.py) and stored."""
        from lmpc.runtime.models import layout_probe

        llm = self._w.llm
        setting = {**setting, "n_threads": self.n_threads, "seqs": seqs, "max_rows": max_rows,
                   "extra_buffers": bool(self.extra_buffers.enabled) if self.extra_buffers else None}
        found = layout_probe.verdict(file_identity(self.path), setting,
                                     lambda: layout_probe.probe(ctx, llm._model.model, seqs, max_rows, ref_chunk))
        log.info("lmpc: model `%s`: %s", self.name,
                 "layout-exact on this machine: the whole cached prefix is reused" if found.exact else
                 f"numbers depend on the batch layout ({'; '.join(found.differs)}): prompts on the 16-token grid")
        return found

    def perf(self) -> dict[str, float]:
        """llama.cpp's counters since load: prompt/generated tokens and their milliseconds."""
        import llama_cpp

        def read() -> dict[str, float]:
            p = llama_cpp.llama_perf_context(self._load().ctx)
            return {"prompt_tokens": p.n_p_eval, "prompt_ms": p.t_p_eval_ms,
                    "generated_tokens": p.n_eval, "generation_ms": p.t_eval_ms, "load_ms": p.t_load_ms}

        return self._submit(read)

    def _grammar(self, schema: dict) -> Any:
        # Cached per schema (and prompt style): the Python converter is the slow part. Key
        # order is part of the key: properties are generated in the schema's order.
        w = self._w
        chat = w.formatter is not None
        key = json.dumps(schema) + ("|chat" if chat else "|base")
        grammar = w.grammars.get(key)
        if grammar is None:
            import llama_cpp
            from llama_cpp import LlamaGrammar

            try:
                gbnf = schema_to_gbnf(schema, leading_space=not chat)
            except Exception as e:
                raise ModelConfigError(
                    f"model `{self.name}`: cannot constrain the output to its JSON Schema "
                    f"({type(e).__name__}: {e}); schema: {json.dumps(schema)[:300]}"
                ) from None
            # llama.cpp parses the GBNF again for each call, and a NULL sampler (bad GBNF)
            # would crash the sampler chain: check that it parses once, here.
            sampler = llama_cpp.llama_sampler_init_grammar(
                w.llm._model.vocab, gbnf.encode("utf-8"), b"root"
            )
            if not sampler:
                raise LmpcRuntimeError(
                    f"model `{self.name}`: llama.cpp rejected the grammar built for the output "
                    f"schema {json.dumps(schema)[:300]}"
                )
            llama_cpp.llama_sampler_free(sampler)
            grammar = w.grammars[key] = LlamaGrammar.from_string(gbnf, verbose=False)
        return grammar

    def _prompt(self, req: GenerationRequest, json_mode: bool) -> tuple[list[int], list[str], Any]:
        """Prompt tokens, stop strings and stopping criteria, as create_chat_completion would."""
        w = self._w
        llm = w.llm
        stop = list(req.stop or [])
        if w.formatter is not None:
            messages = [{"role": m["role"], "content": m["content"]} for m in req.messages]
            try:
                result = w.formatter(messages=messages)
            except Exception as e:  # e.g. a template that rejects a system message
                raise LmpcRuntimeError(
                    f"model `{self.name}`: its chat template cannot render these messages ({e})"
                ) from None
            tokens = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
            extra = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
            return tokens, stop + extra, result.stopping_criteria
        # A base model would go on to invent the next example: stop free text at a blank line.
        # special=False: the inputs are data, never control tokens.
        tokens = llm.tokenize(flatten_messages(req.messages).encode("utf-8"), add_bos=True, special=False)
        return tokens, stop + ([] if json_mode else ["\n\n"]), None

    def _reuse_aligned_prefix(self, tokens: list[int]) -> None:
        """Keep only the cached prefix that a fresh evaluation would compute identically."""
        w = self._w
        if not self.reproducible:
            return  # llama-cpp-python reuses the whole common prefix itself
        llm = w.llm
        # prompt cells only, not generated ones, nor a last prompt token evaluated alone (below)
        limit = min(w.trusted - (w.trusted % PREFIX_CHUNK == 1), llm.n_tokens, len(tokens))
        common = 0
        cached = llm.input_ids
        while common < limit and cached[common] == tokens[common]:
            common += 1
        n = len(tokens)
        if w.exact and w.adapter is None and n % PREFIX_CHUNK != 1:
            # Layout-exact (measured without an adapter): any chunks of 2 rows or more give the
            # grid's numbers, so the whole common prefix is reused, less what keeps every chunk
            # (llama-cpp-python evaluates the rest in PREFIX_CHUNK-row chunks) at 2 rows or more.
            # A prompt row evaluated alone does take other kernels: the grid evaluates the
            # last token alone only when n % PREFIX_CHUNK == 1, and then so does this (below).
            keep = min(common, n - 2)
            if (n - keep) % PREFIX_CHUNK == 1:
                keep -= 1
        else:
            keep = common // PREFIX_CHUNK * PREFIX_CHUNK
            if keep >= n:
                # All cached: llama-cpp-python would re-evaluate the last token alone; make it
                # re-evaluate the last whole chunk instead, as a fresh evaluation does.
                keep -= PREFIX_CHUNK
        if keep < llm.n_tokens:
            llm.n_tokens = max(keep, 0)  # llama-cpp-python matches against input_ids[:n_tokens]

    def _set_adapter(self, adapter: tuple[Path, str] | None) -> None:
        """Put the request's LoRA adapter (None: none) on the context. A change drops the cached
        prompt: its KV cells were computed with other weights."""
        w = self._w
        want = adapter[1] if adapter is not None else None
        if want == w.adapter:
            return
        from lmpc.runtime.models.adapters import LoadedAdapters

        if w.adapters is None:
            w.adapters = LoadedAdapters()
        w.adapters.apply(w.llm.ctx, w.adapters.handle(w.llm, *adapter) if adapter is not None else None)
        w.adapter, w.trusted, w.llm.n_tokens = want, 0, 0

    def training_tokens(self, messages: list[dict], target: str) -> tuple[list[int], list[int]]:
        """The prompt tokens this model evaluates for `messages` (chat template or base layout, as
        generate() renders them) and the tokens of `target` as its answer, end of turn included:
        what optimizers/finetune.py trains on, so training sees exactly the runtime's prompts."""
        def run() -> tuple[list[int], list[int]]:
            llm = self._load()
            prompt, _, _ = self._prompt(GenerationRequest(messages=messages, json_schema={}), True)
            chat = self._w.formatter is not None
            answer = llm.tokenize(((" " if not chat else "") + target).encode("utf-8"), add_bos=False, special=False)
            return prompt, answer + [llm.token_eos()]

        return self._submit(run)

    # -- the batched engine (batch_engine.py), on the worker thread -------------------------
    def _batch_engine(self, req: GenerationRequest | None = None) -> Any:
        """The batched engine of req's adapter (None: the base model's), made on first use."""
        w = self._w
        adapter = req.adapter if req is not None else None
        key = adapter[1] if adapter is not None else None
        if key not in w.engines:
            from lmpc.runtime.models import batch_engine
            from lmpc.runtime.models.batch_engine import BatchEngine, plan_slots

            llm = self._load()
            setup = None
            if adapter is not None:
                from lmpc.runtime.models.adapters import LoadedAdapters

                if w.adapters is None:
                    w.adapters = LoadedAdapters()
                handle = w.adapters.handle(llm, *adapter)
                setup = lambda ctx: w.adapters.apply(ctx, handle)  # noqa: E731
            slots, per_slot = plan_slots(llm._model.model, self.n_ctx, self.slots)
            group = batch_engine.DECODE_GROUP if adapter is None else batch_engine.ADAPTER_DECODE_GROUP
            engine = BatchEngine(llm, slots, per_slot, self.n_threads, PREFIX_CHUNK, self.dry_multiplier, setup, group)
            # the layout-free path: speed over byte-identity (reproducible: false), or a model
            # measured layout-exact here (the probe runs without an adapter: adapters keep the grid)
            if self.layout == "auto" and adapter is None:
                engine.probe = self._layout_verdict(engine.ctx, {"engine": "batched", "chunk": engine.exact_chunk},
                                                    seqs=slots, max_rows=engine.max_rows, ref_chunk=engine.exact_chunk)
            if self.layout == "free" or (engine.probe is not None and engine.probe.exact):
                engine.use_exact()
            w.engines[key] = engine
        return w.engines[key]

    def _prepare(self, req: GenerationRequest) -> Any:
        from lmpc.runtime.models.batch_engine import Prepared

        self._load()
        grammar = self._grammar(req.json_schema) if req.json_schema is not None else None
        tokens, stop, _ = self._prompt(req, grammar is not None)  # end of generation covers the criteria
        chat = self._w.formatter is not None

        def finish(text: str, prompt_tokens: int, completion_tokens: int, reason: str) -> Completion:
            if grammar is not None:
                text = text.strip()  # the grammar's optional spaces around the JSON value
            elif not chat:
                text = text.lstrip(" ")  # the space after a base prompt's `Output:` label
            return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                              finish_reason=reason)

        return Prepared(tokens=tokens, stop=stop, grammar=grammar, temperature=req.temperature, seed=req.seed,
                        max_tokens=req.max_tokens, finish=finish)

    def _generate(self, req: GenerationRequest) -> Completion:
        import llama_cpp

        llm = self._load()
        w = self._w
        grammar = self._grammar(req.json_schema) if req.json_schema is not None else None
        tokens, stop, criteria = self._prompt(req, grammar is not None)
        room = self.n_ctx - len(tokens)
        if room < 1:
            raise LmpcRuntimeError(
                f"model `{self.name}`: the prompt has {len(tokens)} tokens and does not fit the "
                f"context of {self.n_ctx}; raise the model's n_ctx option or shorten the prompt"
            )
        self._set_adapter(req.adapter)
        self._reuse_aligned_prefix(tokens)
        w.trusted = 0  # if decoding fails midway, trust nothing that is cached
        before = llama_cpp.llama_perf_context(llm.ctx).n_p_eval
        out = llm.create_completion(
            prompt=tokens,
            max_tokens=min(req.max_tokens, room),
            temperature=req.temperature,
            seed=req.seed,
            stop=stop,
            stopping_criteria=criteria,
            grammar=grammar,
            repeat_penalty=1.0,  # a penalty would push a small model off repeated JSON tokens
        )
        w.trusted = len(tokens)
        self.prompt_tokens_evaluated += llama_cpp.llama_perf_context(llm.ctx).n_p_eval - before
        choice = out["choices"][0]
        text = choice["text"]
        if grammar is not None:
            text = text.strip()  # the grammar's optional spaces around the JSON value
        elif w.formatter is None:
            text = text.lstrip(" ")  # the space after a base prompt's `Output:` label
        usage = out.get("usage") or {}
        return Completion(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens", len(tokens))),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason"),
        )


def default_threads() -> int:
    """Half the CPUs (at least one), for both prompt evaluation and generation.

    llama.cpp's worker threads spin-wait at each barrier, so one thread per core falls apart
    as soon as anything else wants a core: on a busy 2-core machine a 293-token prompt took
    about 2.9 s with 1 thread but 6-8 s with 2 (and the first call up to 28 s).
    """
    return max(1, (os.cpu_count() or 2) // 2)


def _number(name: str, options: dict[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    why = MODEL_OPTION_VALUES[key].problem(value)
    if why is not None:
        raise ModelConfigError(f"model `{name}`: option {key} {why}")
    return float(value)


def _positive_int(name: str, options: dict[str, Any], key: str, default: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelConfigError(f"model `{name}`: option {key} must be a positive integer, not {value!r}")
    return value
