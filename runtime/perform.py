"""Answer the requests a step's execution yields (compiler/kinds/base.py): a model
generation (rendered, cached, budgeted, parsed) and a Python function call. One Performer
serves an executor and the executors of the bodies it runs, so kNN choosers and the model
resolution are shared; runs (RunBody) are the executor's own business."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from lmpc.runtime.budget import CallBudget
from lmpc.runtime.cache import CallCache, call_key
from lmpc.runtime.calls import load_function, run_function
from lmpc.runtime.embed import KnnDemos
from lmpc.runtime.errors import Interrupted, LmpcRuntimeError
from lmpc.runtime.models import GenerationRequest
from lmpc.runtime.outputs import parse_output
from lmpc.runtime.pool import ModelPool
from lmpc.runtime.prompt import MAX_DECODING_TOKENS, decoding_budget, decoding_schema, output_schema, render_messages
from lmpc.runtime.redact import redact_known
from lmpc.runtime.trace import TraceEvent
from lmpc.runtime.values import validation_error


def cap_strings(schema: Any, limit: int | None) -> Any:
    """The decoding schema with no free-text string longer than `limit` characters (a model's
    text_max_chars option); strings the prompt bounds left unbounded (enums) stay as they are."""
    if not limit or not isinstance(schema, dict):
        return schema
    out = {k: ([cap_strings(s, limit) for s in v] if k == "anyOf" else v) for k, v in schema.items()}
    if "maxLength" in out:
        out["maxLength"] = min(out["maxLength"], limit)
    if isinstance(out.get("items"), dict):
        out["items"] = cap_strings(out["items"], limit)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: cap_strings(v, limit) for k, v in out["properties"].items()}
    return out


class Performer:
    def __init__(self, pool: ModelPool, cache: CallCache, base_dir: Path, models: dict, default_model: str,
                 model_override: str | None = None, budget: CallBudget | None = None):
        self.pool, self.cache, self.base_dir = pool, cache, base_dir
        self.models, self.default_model, self.model_override = models, default_model, model_override
        self.budget = budget
        self._knn: dict[str, KnnDemos] = {}  # step -> its kNN demo chooser (knn_few_shot), made on first use
        self._knn_lock = threading.Lock()
        self._indexes: dict[str, Any] = {}  # retriever spec -> its opened RetrievalIndex
        self._prefetched: dict[str, dict] = {}  # call key -> a search done for a whole level
        self._index_lock = threading.Lock()

    def model_name(self, node: dict) -> str:
        return self.model_override or node.get("model") or self.default_model

    def lane(self, node: dict, kind_calls_model: bool) -> str | None:
        """The lane a request runs in: one per local model (its single llama.cpp context, in
        order); None (concurrent) for remote models and Python functions."""
        if not kind_calls_model:
            return None
        name = self.model_name(node)
        try:
            concurrent = self.pool.get(name).supports_concurrency
        except LmpcRuntimeError:
            concurrent = False  # the call itself reports the error, row by row
        return None if concurrent else f"model:{name}"

    def call(self, node: dict, inputs: dict[str, Any]) -> dict[str, Any]:
        fn = load_function(node["fn"], self.base_dir)
        out = run_function(fn, inputs, list(node["outputs"]))
        for name, value in out.items():
            why = validation_error(value, node["outputs"][name]["schema"])
            if why is not None:
                raise LmpcRuntimeError(f"the function's `{name}` should be {node['outputs'][name]['type']}: {why}")
        return out

    def generate(self, node: dict, inputs: dict[str, Any], event: TraceEvent, run: Any) -> dict[str, Any]:
        """One model call of prompt node `node`; `run` holds the batch's sample, temperature and
        cancel token. The cache key is the call's content: identical prompts hit."""
        if node.get("knn"):  # demos chosen per row: the pool entries nearest to this row's inputs
            demos, event.extra["knn"] = self._knn_demos(node).choose(inputs)
            node = {**node, "demos": demos}
        schema = cap_strings(decoding_schema(node), self.pool.options(self.model_name(node)).get("text_max_chars"))
        text = self._complete(node, render_messages(node, inputs), schema, decoding_budget(schema), event, run)
        return parse_output(text, output_schema(node), "the model's output")

    def act(self, node: dict, inputs: dict[str, Any], trajectory: list[dict], event: TraceEvent,
            run: Any) -> dict[str, Any]:
        """One action of a react loop. The messages hold the trajectory so far, so the cache
        key is the trajectory: a re-run (or a resumed build) replays the loop from the cache."""
        from lmpc.runtime import react_prompt

        if node.get("knn"):  # knn_few_shot: the pool's trajectories nearest to this row's inputs
            demos, event.extra["knn"] = self._knn_demos(node).choose(inputs)
            node = {**node, "demos": demos}
        step = len(trajectory) + 1
        schema = cap_strings(react_prompt.decoding_schema(node, step),  # before min_steps: no finish branch
                             self.pool.options(self.model_name(node)).get("text_max_chars"))
        messages = react_prompt.render_messages(node, inputs, trajectory)
        event.extra["react_step"] = step
        text = self._complete(node, messages, schema, react_prompt.decoding_budget(schema), event, run)
        action = parse_output(text, react_prompt.action_schema(node, step), "the model's action")
        if action["tool"] == "finish":  # the demo a bootstrap run makes: the whole trajectory
            event.extra["trajectory"] = trajectory
        return action

    def tool(self, node: dict, tool: str, args: dict[str, Any], event: TraceEvent) -> dict[str, Any]:
        """One tool call of a react node (runtime/tools.py): its exception or timeout is the
        observation (traced as the event's error), never the row's failure. Not cached: a tool
        may read the world (a re-run of a cached trajectory calls its tools again)."""
        from lmpc.compiler.kinds.react import TOOL_TIMEOUT_S
        from lmpc.runtime.tools import run_tool

        event.kind = "tool"  # not a model call (bootstrap and call counts look at prompt kinds)
        event.extra["tool"] = tool
        out = run_tool(node["tools"][tool], args, self.base_dir, float(node.get("tool_timeout_s", TOOL_TIMEOUT_S)))
        event.error = out["error"]
        return out

    def _complete(self, node: dict, messages: list[dict], schema: dict, budget: int, event: TraceEvent,
                  run: Any) -> str:
        """The model's text for `messages` under `schema`: cached by content, budgeted, traced."""
        name = self.model_name(node)
        model = self.pool.get(name)
        options = self.pool.options(name)
        # another draw of this call (best_of's samples, a check's later retries): its own seed,
        # maybe its own temperature, and its own cache entry
        draw = node.get("draw") or {}
        request = GenerationRequest(
            messages=messages, json_schema=schema,
            max_tokens=int(options.get("max_tokens", min(budget, MAX_DECODING_TOKENS))),
            temperature=float(draw["temperature"] if draw.get("temperature") is not None
                              else run.temperature if run.temperature is not None
                              else options.get("temperature", 0.0)),
            seed=int(options.get("seed", 0)) + run.sample + draw.get("sample", 0),
            cancel=run.cancel,
        )
        adapter = self._adapter(node, name, model, request)  # part of the model's identity in the key
        key = call_key({"model": model.identity, "messages": messages, "schema": schema,
                        "max_tokens": request.max_tokens, "temperature": request.temperature,
                        "seed": request.seed, "sample": run.sample, **({"draw": draw} if draw else {}),
                        **({"adapter": adapter} if adapter else {})})

        made: list[bool] = []  # whether compute ran here (not in another batch's identical call)
        served: list[str] = []  # the server that answered (remote models): traced, never cached

        def compute() -> dict[str, Any]:
            made.append(True)
            if self.budget is not None:
                self.budget.charge()
            c = model.generate(request)
            if c.endpoint:
                served.append(c.endpoint)
            # a server that puts the key in its answer: masked before the cache, traces and outputs
            return {"text": redact_known(c.text), "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens}

        try:
            value, hit = self.cache.get_or_compute(key, compute)
        except Interrupted:
            if run.cancel.cancelled or made:
                raise
            # we waited on an identical call of another batch, and that batch was interrupted
            value, hit = self.cache.get_or_compute(key, compute)
        event.model, event.messages, event.raw, event.cache_hit = name, messages, value["text"], hit
        if served and not hit:
            event.extra["endpoint"] = served[0]
        event.prompt_tokens, event.completion_tokens = value["prompt_tokens"], value["completion_tokens"]
        return value["text"]

    def _adapter(self, node: dict, name: str, model: Any, request: GenerationRequest) -> str | None:
        """A tuned node's LoRA adapter (optimizers/finetune.py), checked against its hash and put on
        the request; its SHA-256, or None. Not applied when another model (a teacher) runs the node:
        the adapter was trained for the node's own model."""
        from lmpc.runtime.models.adapters import AdapterError, verified

        adapter = node.get("adapter")
        if not adapter or name != (node.get("model") or self.default_model):
            return None
        if not model.supports_adapters:
            raise AdapterError(f"step `{node['step']}` carries a LoRA adapter, which only llama_cpp models apply; "
                               f"model `{name}` is not one")
        request.adapter = (verified(adapter, self.base_dir, node["step"]), adapter["sha256"])
        return adapter["sha256"]

    def _knn_demos(self, node: dict) -> KnnDemos:
        with self._knn_lock:
            chooser = self._knn.get(node["step"])
            if chooser is None:
                chooser = KnnDemos(node, self.models, self.base_dir, self.cache)
                self._knn[node["step"]] = chooser
            return chooser

    # -- retrieval --------------------------------------------------------------------------
    def _index(self, spec: dict) -> Any:
        from lmpc.runtime.retrieval import open_retriever

        key = json.dumps(spec, sort_keys=True)
        with self._index_lock:  # opened (or built) once per run, whatever the number of rows
            index = self._indexes.get(key)
            if index is None:
                index = open_retriever(spec, self.models, self.base_dir, self._index_dir())
                if index.bad:  # said when the index is built (later runs reuse it as built)
                    print(f"lmpc: warning: retriever `{spec['name']}`: skipped {len(index.bad)} bad corpus row(s); "
                          f"first: {index.bad[0]}", file=sys.stderr)
                self._indexes[key] = index
            return index

    def _index_dir(self) -> Path:
        """Beside the call cache (--cache-dir moves both); the default cache dir without one."""
        from lmpc.runtime.cache import default_cache_dir

        path = getattr(self.cache, "path", None)
        return Path(path).parent if path else default_cache_dir()

    def _retrieval_key(self, index: Any, query: str, k: int) -> str:
        return call_key({"retrieval": index.cache_name, "query": query, "k": k})

    def prefetch_retrievals(self, node: dict, searches: list[tuple[str, int]]) -> None:
        """Search all rows' queries of a node together (one embedder call per k), for the
        searches the cache does not hold; retrieve() then uses the results."""
        index = self._index(node["retriever"])
        by_k: dict[int, list[str]] = {}
        for query, k in searches:
            key = self._retrieval_key(index, query, k)
            if key not in self._prefetched and self.cache.get(key) is None and query not in by_k.get(k, []):
                by_k.setdefault(k, []).append(query)
        for k, queries in by_k.items():
            for query, hits in zip(queries, index.search(queries, k)):
                self._prefetched[self._retrieval_key(index, query, k)] = {
                    "hits": [{"id": h.id, "text": h.text, "score": h.score} for h in hits]}

    def retrieve(self, node: dict, query: str, k: int, event: TraceEvent) -> list[dict]:
        """The k best passages for query (cached like a model call, not counted as one)."""
        index = self._index(node["retriever"])
        key = self._retrieval_key(index, query, k)

        def compute() -> dict:
            done = self._prefetched.pop(key, None)
            if done is not None:
                return done
            return {"hits": [{"id": h.id, "text": h.text, "score": h.score} for h in index.search([query], k)[0]]}

        value, hit = self.cache.get_or_compute(key, compute)
        event.cache_hit = hit
        event.extra["retrieval"] = {"retriever": node["retriever"]["name"], "query": query,
                                    "ids": [h["id"] for h in value["hits"]]}
        return value["hits"]
