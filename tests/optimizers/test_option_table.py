"""One table of strategy options (compiler/options.py): the optimizers take it as their spec,
and `lmpc check` / `--strategy` accept exactly the values the optimizers accept."""

from __future__ import annotations

import json

import pytest

from lmpc.compiler.api import strategy_from_text
from lmpc.compiler.diagnostics import CompileError
from lmpc.compiler.options import BUILTIN_MODELS, STRATEGY_OPTIONS
from lmpc.optimizers import REGISTRY, OptimizerConfigError

VALUES = [-1, 0, 1, 3, 2**31, 1.5, 1e308, "two", "majority", "m", True]


def test_the_optimizers_read_the_compilers_table():
    assert set(REGISTRY) == set(STRATEGY_OPTIONS)
    for name, cls in REGISTRY.items():
        assert cls.options_spec is STRATEGY_OPTIONS[name]
        assert cls().options == {k: o.default for k, o in STRATEGY_OPTIONS[name].items()}


def test_knn_default_embedder_is_the_runtimes():
    from lmpc.runtime.embed import DEFAULT_EMBEDDER

    assert STRATEGY_OPTIONS["knn_few_shot"]["embedder"].default == DEFAULT_EMBEDDER


def test_builtin_model_names_are_one_table():
    from lmpc.runtime.models import BUILTIN_MODELS as runtime_table

    assert runtime_table is BUILTIN_MODELS


def _literal(value) -> str:
    return str(value).lower() if isinstance(value, bool) else json.dumps(value)


@pytest.mark.parametrize("name", sorted(STRATEGY_OPTIONS))
def test_checker_and_optimizer_agree_on_every_option_value(name):
    for option in STRATEGY_OPTIONS[name]:
        for value in VALUES:
            text = f"{name}({option}: {_literal(value)})"
            try:
                chain = strategy_from_text(text, models=["m"])
                checked = True
            except CompileError as e:
                checked = False
                (d,) = e.diagnostics
                assert d.code == "bad-optimize-option" and d.span.col > len(name), text
            try:
                REGISTRY[name](**{option: value})
                built = True
            except OptimizerConfigError:
                built = False
            assert checked == built or (not checked and option in ("teacher", "proposer")), text
            if checked:  # what the checker returns is what the build constructs
                assert REGISTRY[name](**chain[0]["options"]).options[option] == value


def test_model_option_problems_are_the_checkers():
    from lmpc.compiler.options import model_option_problems

    assert model_option_problems("big", {"timeout": 30, "max_retries": 2, "api_key_env": "K", "seed": {"env": "S"}}) == []
    assert model_option_problems("big", {"timeout": 1e308, "builtin": "smollm2-1.7b", "temperature": True}) == [
        "model `big`: `timeout` must be between 0.001 and 86400 seconds, not 1e+308",
        "model `big`: no builtin model named 'smollm2-1.7b' (the builtin models are smollm2-135m, gemma3-270m)",
        "model `big`: `temperature` takes a number, not true",
    ]
