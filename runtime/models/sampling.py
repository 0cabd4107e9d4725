"""The sampler chain of a local call: grammar, repetition guard (DRY), then the choice.

One definition for both local engines: the one-sequence path (local.py, which replaces
llama-cpp-python's own chain so it can add DRY, an option its high-level API lacks) and the
batched engine (batch_engine.py, one chain per sequence).

DRY ("don't repeat yourself", llama.cpp's llama_sampler_init_dry): a token that would extend a
sequence already generated is penalized by multiplier * base ** (length - allowed_length).
SmolLM2 otherwise loops inside a free-text string ("I love to eat delicious food, I love to
eat delicious food, ...") until its character bound, about 50 times the tokens of a normal
answer. `"` and `:` are sequence breakers, so a repeat never spans a JSON string's quotes or a
key: keys, labels and field values repeated across fields are not penalized, only a repeat
inside one string (or inside free text). The chain only sees generated tokens (the prompt is
never accepted into it), so copying words from the prompt is not penalized either.

Field scope: the breakers alone do not protect a multi-token value that one field repeats
from another field of the same call (SmolLM2 writes numbers a digit a token). A react
action's args restate its thought, a chain_of_thought's answer restates the end of its
reasoning, and with a call-wide history the agent example miscopied them (thought "Compute
829 + 306.", expression "829 + 309"; 2 of 4 dev rows right against 4 of 4 without DRY). So
DRY's history is restarted after every generated token that holds a `"` (ScopedChain): it
only ever holds the tokens of the current JSON string (or of the structure between two
strings), and a repeat is penalized only inside one field. Free text without JSON keeps the
whole generation as its history.

Greedy choice under a grammar, fast (GreedyFirst): applying a grammar to every token of the
vocabulary is most of a step's sampling time (7 to 9 ms for SmolLM2's 49,152 tokens on this
CPU). At temperature 0 the chain's choice is the highest-scoring token (after DRY) that the
grammar allows, so the grammar first judges only the 64 best, best first; the first one it
allows is the answer when it scores above every token outside them (ties go to the lowest id,
as greedy takes the first best), and only otherwise does the whole chain run on the whole
vocabulary. The same token either way (llama.cpp's own common sampler checks the single best
token first in the same spirit); 0.9 ms a token, and the fallback ran for 2 of 316 tokens on
the sentiment prompts.
"""

from __future__ import annotations

import ctypes
import weakref
from typing import Any

DRY_MULTIPLIER = 0.8  # on by default, its history scoped to one field (module docstring)
DRY_SUGGESTED = 0.8  # llama.cpp's suggested strength, for `dry_multiplier: 0.8`
DRY_BASE = 1.75
DRY_ALLOWED_LENGTH = 2  # repeats of up to 2 tokens ("of the") are free
DRY_LAST_N = 4096  # look back over everything generated in one call (at most 2048 tokens)
DRY_BREAKERS = ("\n", ":", '"', "*")  # llama.cpp's defaults; `"` and `:` cover JSON structure
GREEDY_FIRST = True  # the fast greedy choice under a grammar (GreedyFirst); False: the whole chain each token
# The non-greedy tail, as llama-cpp-python's create_completion defaults set it.
TOP_K, TOP_P, MIN_P, TYPICAL_P = 40, 0.95, 0.05, 1.0


def add_chain(sampler: Any, model: Any, grammar: Any | None, temperature: float, seed: int,
              dry_multiplier: float) -> Any:
    """Fill an llama_cpp._internals.LlamaSampler: grammar (a LlamaGrammar), DRY, then greedy
    at temperature 0 or the top-k/typical/top-p/min-p/temperature/dist tail above it.

    The grammar comes first: DRY then only lowers tokens the grammar allows, and when every
    way to continue a string is penalized, its closing quote wins."""
    if grammar is not None:
        sampler.add_grammar(model, grammar)
    if dry_multiplier > 0:
        sampler.add_dry(model, dry_multiplier, DRY_BASE, DRY_ALLOWED_LENGTH, DRY_LAST_N, list(DRY_BREAKERS))
    if temperature == 0:
        sampler.add_greedy()
    elif temperature < 0:
        sampler.add_dist(seed)
    else:
        sampler.add_top_k(TOP_K)
        sampler.add_typical(TYPICAL_P, 1)
        sampler.add_top_p(TOP_P, 1)
        sampler.add_min_p(MIN_P, 1)
        sampler.add_temp(temperature)
        sampler.add_dist(seed)
    return sampler


class ScopedChain:
    """Mixed into llama_cpp._internals.LlamaSampler: after each sampled token that holds a
    `"` (a JSON string opened or closed), DRY's history is restarted (module docstring)."""

    dry_index: int | None = None
    quotes: Any = None  # token -> whether its text holds an unescaped `"` (cached per model)
    model: Any = None

    greedy_first: "GreedyFirst | None" = None

    def sample(self, ctx: Any, idx: int = -1) -> int:  # the one-sequence path (llama.py)
        return self.sample_raw(ctx.ctx, idx)

    def sample_raw(self, ctx: Any, idx: int) -> int:  # the batched engine (a raw context pointer)
        import llama_cpp

        token = self.greedy_first.sample(self.sampler, ctx, idx) if self.greedy_first is not None else None
        if token is None:
            token = llama_cpp.llama_sampler_sample(self.sampler, ctx, idx)
        self.after(token)
        return token

    def after(self, token: int) -> None:
        if self.dry_index is None:
            return
        has = self.quotes.get(token)
        if has is None:
            piece = self.model.token_to_piece(token, special=False) if token >= 0 else b""
            has = self.quotes[token] = b'"' in piece.replace(b'\\"', b"")
        if has:
            import llama_cpp

            llama_cpp.llama_sampler_reset(llama_cpp.llama_sampler_chain_get(self.sampler, self.dry_index))


_quotes: "weakref.WeakKeyDictionary[Any, dict[int, bool]]" = weakref.WeakKeyDictionary()  # model -> its quote table


_greedy: "weakref.WeakKeyDictionary[Any, GreedyFirst]" = weakref.WeakKeyDictionary()  # model -> its buffer


class GreedyFirst:
    """The fast greedy choice of a chain [grammar, (DRY,) greedy] (module docstring)."""

    TOP = 64  # candidates the grammar checks before the whole vocabulary

    def __init__(self, n_vocab: int) -> None:
        import llama_cpp
        import numpy as np

        self.np, self.n_vocab = np, n_vocab
        self.cells = np.zeros(n_vocab, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
        assert self.cells.dtype.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)
        self.ids = np.arange(n_vocab, dtype="<i4")
        self.array = llama_cpp.llama_token_data_array(
            data=self.cells.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), size=n_vocab,
            selected=-1, sorted=False)
        self.top = np.zeros(self.TOP, dtype=self.cells.dtype)
        self.top_array = llama_cpp.llama_token_data_array(
            data=self.top.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), size=self.TOP,
            selected=-1, sorted=False)
        self.hits = self.misses = 0  # choices made from the top candidates / by the whole chain

    def sample(self, chain: Any, ctx: Any, idx: int) -> int | None:
        """The chain's token, accepted into the chain, or None when the top candidates cannot
        decide it (the caller then runs the whole chain on the whole vocabulary).

        The samplers between the grammar and greedy (DRY) score every token as the chain
        would; then the grammar judges only the TOP best, best first. The best one it allows
        is the chain's choice when it scores above every token outside them (a tie goes to
        the lowest id, as llama.cpp's greedy takes the first best)."""
        import llama_cpp as L

        np, n, k = self.np, self.n_vocab, self.TOP
        if n <= k:
            return None
        cells = self.cells
        cells["id"] = self.ids
        cells["logit"] = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, idx), shape=(n,))
        self.array.size, self.array.selected, self.array.sorted = n, -1, False
        for i in range(1, L.llama_sampler_chain_n(chain) - 1):  # between the grammar and greedy: DRY
            L.llama_sampler_apply(L.llama_sampler_chain_get(chain, i), ctypes.byref(self.array))
        logit = cells["logit"]
        part = np.argpartition(-logit, k)
        top, outside = part[:k], logit[part[k]]  # the k best; no token outside scores above `outside`
        top = top[np.lexsort((top, -logit[top]))]  # best first, ties by id
        self.top["id"], self.top["logit"], self.top["p"] = top, logit[top], 0.0
        self.top_array.size, self.top_array.selected, self.top_array.sorted = k, -1, False
        L.llama_sampler_apply(L.llama_sampler_chain_get(chain, 0), ctypes.byref(self.top_array))
        allowed = np.flatnonzero(self.top["logit"] != -np.inf)
        if not len(allowed) or not logit[top[allowed[0]]] > outside:
            self.misses += 1
            return None
        self.hits += 1
        token = int(top[allowed[0]])
        L.llama_sampler_accept(chain, token)
        return token


def new_chain(model: Any, grammar: Any | None, temperature: float, seed: int, dry_multiplier: float) -> Any:
    from llama_cpp._internals import LlamaSampler

    class Chain(ScopedChain, LlamaSampler):
        pass

    chain = add_chain(Chain(), model, grammar, temperature, seed, dry_multiplier)
    if dry_multiplier > 0:
        chain.dry_index = 1 if grammar is not None else 0  # add_chain's order
        chain.model, chain.quotes = model, _quotes.setdefault(model, {})
    if grammar is not None and temperature == 0 and GREEDY_FIRST:
        # one buffer per model: a model's chains sample one at a time, on its owner thread
        chain.greedy_first = _greedy.get(model) or _greedy.setdefault(model, GreedyFirst(model.n_vocab()))
    return chain


def install(llm: Any, dry_multiplier: float) -> None:
    """Make llm (a llama_cpp.Llama) build lmpc's chain for each generation.

    Its generate() calls self._init_sampler(...) with the call's settings (create_completion
    has set self._seed from the call's seed); lmpc passes no logits processors and neutral
    penalties (repeat 1, frequency and presence 0), so those arguments are not needed."""

    def init_sampler(*, temp: float = 0.8, grammar: Any = None, **_: Any) -> Any:
        return new_chain(llm._model, grammar, temp, llm._seed, dry_multiplier)

    llm._init_sampler = init_sampler
