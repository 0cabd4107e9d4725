"""Option tables are defined once (compiler/options.py) and read by the checker and the runtime:
a provider option the checker accepts is one the model class accepts, and no other."""

from __future__ import annotations

import pytest

from lmpc.compiler import check, options


def test_the_checker_reads_the_one_provider_table():
    assert check.PROVIDER_OPTIONS is options.PROVIDER_OPTIONS
    assert check.STRUCTURED_OUTPUT_MODES is options.STRUCTURED_OUTPUT_MODES


@pytest.mark.parametrize("provider,module", [("llama_cpp", "local"), ("openai", "remote")])
def test_each_model_class_takes_the_tables_options(provider, module):
    import importlib

    models = importlib.import_module(f"lmpc.runtime.models.{module}")
    assert models.OPTIONS == tuple(options.PROVIDER_OPTIONS[provider])


def test_the_runtime_knows_the_tables_providers():
    from lmpc.runtime.models import base, remote

    assert base.PROVIDERS == tuple(options.PROVIDER_OPTIONS)
    assert remote.STRUCTURED_OUTPUT_MODES is options.STRUCTURED_OUTPUT_MODES


def test_every_ranged_model_option_belongs_to_a_provider():
    named = {name for table in options.PROVIDER_OPTIONS.values() for name in table}
    assert set(options.MODEL_OPTION_VALUES) <= named
