"""One error root: every error lmpc raises for a user's mistake is an lmpc.LmpcError, each class
declares the exit code the CLI ends with (mapped in one place, lmpc/cli.py main), and Program
and the ensemble program implement one declared protocol. No model is loaded here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lmpc
from lmpc.compiler.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, LmpcError
from lmpc.errors import ERRORS, STAGES

PROGRAM = '''
type Label = "positive" | "negative"
signature Sentiment = text -> label: Label
pipeline classify(text: str) -> (label: Label) {
    s = predict Sentiment(text: text)
    return label: s.label
}
'''
REMOTE = '''
model big = openai(model: "m", base_url: "http://127.0.0.1:9/v1", api_key_env: "LMPC_TEST_ERRORS_UNSET_KEY")
''' + PROGRAM


def _all_subclasses(cls: type) -> set[type]:
    out: set[type] = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def _import_every_lmpc_module() -> None:
    """A class is a subclass only once its module is imported: import them all, so the check
    does not depend on which tests ran before (FinetuneNotInstalled slipped past that way)."""
    import importlib
    import pkgutil

    names = []
    for top in ("lmpc", "lmpc.compiler", "lmpc.runtime", "lmpc.optimizers"):  # pyproject's package-dir
        package = importlib.import_module(top)
        names += [info.name for info in pkgutil.walk_packages(package.__path__, top + ".")]
    assert "lmpc.optimizers.finetune_train" in names and "lmpc.runtime.models.local" in names
    for name in names:
        if name.endswith("__main__"):
            continue  # runs the CLI
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:  # an optional extra missing (ray, fastapi): not lmpc's
            assert e.name and not e.name.startswith("lmpc"), e


def test_the_registry_holds_every_lmpc_error_class():
    _import_every_lmpc_module()
    assert set(ERRORS) == _all_subclasses(LmpcError)
    assert len(ERRORS) == len(set(ERRORS))


EXPECTED_EXIT = {  # the exit codes docs/cli.md and docs/runtime.md state
    "CompileError": EXIT_ERROR, "ArgumentCompileError": EXIT_USAGE, "PipelineChoiceError": EXIT_USAGE,
    "SourceFileError": EXIT_USAGE, "SourceNotFoundError": EXIT_USAGE, "ArtifactError": EXIT_USAGE, "ArtifactTrustError": EXIT_USAGE,
    "LmpcRuntimeError": EXIT_ERROR, "ConfigurationError": EXIT_ERROR, "InvalidArgumentError": EXIT_USAGE,
    "Interrupted": EXIT_INTERRUPTED, "ModelNotFoundError": EXIT_ERROR, "ModelConfigError": EXIT_ERROR,
    "ServerUnreachableError": EXIT_ERROR, "ServerError": EXIT_ERROR, "AuthenticationError": EXIT_ERROR,
    "EndpointNotFoundError": EXIT_ERROR, "OutputError": EXIT_ERROR, "StepError": EXIT_ERROR,
    "EmbedderError": EXIT_ERROR, "RetrievalError": EXIT_ERROR, "AdapterError": EXIT_ERROR, "DataError": EXIT_USAGE, "MetricError": EXIT_USAGE,
    "BudgetExceededError": EXIT_ERROR, "OptimizerConfigError": EXIT_USAGE, "TeacherBrokenError": EXIT_ERROR, "FinetuneNotInstalled": EXIT_USAGE,
    "UsageError": EXIT_USAGE, "CommandInterrupted": EXIT_INTERRUPTED,
}


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_class_is_an_lmpc_error_with_its_exit_code(cls):
    assert issubclass(cls, LmpcError)
    assert cls.exit_code == EXPECTED_EXIT[cls.__name__]


def test_stages_keep_their_bases():
    from lmpc.runtime.errors import LmpcRuntimeError

    for cls in STAGES["runtime"] + STAGES["data"] + STAGES["metrics"] + STAGES["budget"]:
        assert issubclass(cls, LmpcRuntimeError), cls
    # a build's configuration is not a run-time failure
    assert not issubclass(lmpc.OptimizerConfigError, LmpcRuntimeError)
    assert not issubclass(lmpc.CompileError, LmpcRuntimeError)
    assert issubclass(lmpc.ArtifactTrustError, lmpc.ArtifactError)
    assert lmpc.LmpcError is LmpcError


def test_public_names_are_importable():
    for name in ("LmpcError", "CompileError", "ArtifactError", "ArtifactTrustError", "LmpcRuntimeError",
                 "OutputError", "DataError", "MetricError", "ConfigurationError", "OptimizerConfigError",
                 "PipelineChoiceError", "RunnableProgram", "EnsembleProgram"):
        assert getattr(lmpc, name).__name__ == name
    from lmpc.cli import UsageError  # noqa: F401  (as before lmpc/cli_common.py)
    from lmpc.optimizers.ensemble import EnsembleProgram

    assert EnsembleProgram is lmpc.EnsembleProgram


# -- real triggers through the public API -----------------------------------------------------


def _raises(fn) -> LmpcError:
    with pytest.raises(Exception) as info:
        fn()
    assert isinstance(info.value, LmpcError), repr(info.value)
    return info.value


def test_a_bad_lmp_is_a_compile_error():
    e = _raises(lambda: lmpc.compile_source("pipeline p(text: str) -> (x: Nope) {", file="bad.lmp"))
    assert type(e).__name__ == "CompileError" and "bad.lmp:1:" in str(e) and e.exit_code == 1


def test_a_missing_lmp_file_is_a_source_file_error(tmp_path: Path):
    e = _raises(lambda: lmpc.compile_file(tmp_path / "missing.lmp"))
    assert isinstance(e, FileNotFoundError) and str(e) == f"no such file: {tmp_path / 'missing.lmp'}" and e.exit_code == 2


def test_a_bad_artifact_is_an_artifact_error(tmp_path: Path):
    path = tmp_path / "x.lmpc.json"
    path.write_text(json.dumps({"format": "something-else"}))
    e = _raises(lambda: lmpc.load(path))
    assert isinstance(e, lmpc.ArtifactError) and e.exit_code == 2


def test_an_unknown_pipeline_is_one_error_raised_once():
    e = _raises(lambda: lmpc.compile_source(PROGRAM, file="p.lmp", pipeline="nope"))
    assert type(e) is lmpc.PipelineChoiceError and e.exit_code == 2
    assert str(e) == "p.lmp has no pipeline `nope` (it has: classify)"  # not wrapped: no cause, no prefix
    assert e.__cause__ is None and e.__context__ is None


def test_an_unknown_model_is_an_invalid_argument():
    e = _raises(lambda: lmpc.compile_source(PROGRAM, model="nope", cache=False, trace_log=False))
    assert type(e).__name__ == "InvalidArgumentError" and "no model named `nope`" in str(e) and e.exit_code == 2


def test_bad_data_bad_metric_and_no_metric_through_evaluate(tmp_path: Path):
    prog = lmpc.compile_source(PROGRAM, cache=False, trace_log=False)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "ok", "label": "positive"}\n{"text": \n')
    e = _raises(lambda: lmpc.evaluate(prog, rows, "exact_match(label)"))
    assert isinstance(e, lmpc.DataError) and "rows.jsonl:2" in str(e)
    e = _raises(lambda: lmpc.evaluate(prog, [{"text": "x", "label": "positive"}], "exact_mach(label)"))
    assert isinstance(e, lmpc.CompileError) and "did you mean `exact_match`" in str(e) and e.exit_code == 2
    e = _raises(lambda: lmpc.evaluate(prog, [{"text": "x", "label": "positive"}]))
    assert str(e).startswith("no metric") and e.exit_code == 2
    e = _raises(lambda: lmpc.evaluate(prog, [{"text": "x", "label": "positive"}], "judge"))
    assert e.exit_code == 2  # a judge pipeline the program does not have
    prog.close()


def test_a_negative_limit_is_an_invalid_argument_and_still_a_value_error(tmp_path: Path):
    prog = lmpc.compile_source(PROGRAM, cache=False, trace_log=False)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "ok", "label": "positive"}\n')
    e = _raises(lambda: lmpc.api.load_data(prog, rows, limit=-1))
    assert isinstance(e, ValueError) and type(e).__name__ == "InvalidArgumentError"
    prog.close()


def test_an_unset_api_key_variable_is_a_configuration_error(monkeypatch):
    monkeypatch.delenv("LMPC_TEST_ERRORS_UNSET_KEY", raising=False)
    with lmpc.compile_source(REMOTE, cache=False, trace_log=False) as prog:
        e = _raises(lambda: prog(text="hi"))
    assert isinstance(e, lmpc.ConfigurationError) and "LMPC_TEST_ERRORS_UNSET_KEY" in str(e) and e.exit_code == 1


def test_ensemble_misuse_is_a_runtime_error():
    e = _raises(lambda: lmpc.ensemble([]))
    assert isinstance(e, lmpc.LmpcRuntimeError)


# -- the CLI maps errors to exit codes in one place ---------------------------------------------


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_the_cli_maps_each_error_class_to_its_exit_code(cls, monkeypatch, capsys):
    from lmpc import cli

    if issubclass(cls, lmpc.CompileError):
        from lmpc.compiler.diagnostics import Diagnostic, Span

        error = cls([Diagnostic("syntax-error", Span("f.lmp", 1, 1, 1, 2), "boom \x1b[31m")], {})
    elif cls.__name__ == "StepError":
        error = cls("boom \x1b[31m", "s")
    else:
        error = cls("boom \x1b[31m")

    def fail(args):
        raise error

    monkeypatch.setattr(cli, "cmd_check", fail)
    rc = cli.main(["check", "x.lmp"])
    err = capsys.readouterr().err
    assert rc == cls.exit_code
    assert "boom" in err and "\x1b" not in err and "Traceback" not in err
    if issubclass(cls, lmpc.CompileError):
        assert err.startswith("f.lmp:1:1: error[syntax-error]: boom")
    elif cls.exit_code == EXIT_INTERRUPTED:
        assert err.startswith("lmpc: interrupted; boom")
    else:
        assert err.startswith("lmpc: error: boom")


def test_ctrl_c_in_a_command_exits_130(monkeypatch, capsys):
    import signal

    from lmpc import cli

    def fail(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_check", fail)
    handler = signal.getsignal(signal.SIGINT)
    try:
        assert cli.main(["check", "x.lmp"]) == 130
    finally:
        signal.signal(signal.SIGINT, handler)
    assert capsys.readouterr().err == "lmpc: interrupted\n"


def test_cli_modules_import_no_circle():
    """Each command module imports lmpc/cli_common.py, never lmpc/cli.py (nor run <-> eval)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "lmpc"
    edges = {}
    for path in root.glob("cli*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmpc.cli"):
                names.add(node.module.removeprefix("lmpc."))
        edges[path.stem] = names - {path.stem}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges.get(start, ()))

    assert [m for m in edges if reaches(m, m, set())] == []


# -- one protocol for runnable programs ------------------------------------------------------


def test_program_and_ensemble_satisfy_the_protocol():
    from lmpc.runtime.protocol import RunnableProgram

    a = lmpc.compile_source(PROGRAM, cache=False, trace_log=False)
    b = lmpc.compile_source(PROGRAM, cache=False, trace_log=False)
    ens = lmpc.ensemble([a, b])
    for prog in (a, ens):
        assert isinstance(prog, RunnableProgram)
        assert prog.graphs == {"classify": a.graph} and prog.optimize_settings == {} and prog.artifact is None
    assert not isinstance("a program", RunnableProgram)
    assert a.checked is not None and a.checked.pipelines.keys() == {"classify"}
    ens.close()


def test_nothing_is_attached_to_a_program_after_construction():
    """Everything lmpc.api gives a Program is a constructor argument: building one records the
    same attributes as the constructor sets (no setattr from outside)."""
    from lmpc.runtime.program import Program

    prog = lmpc.compile_source(PROGRAM + 'optimize classify { metric exact_match(label) }',
                               cache=False, trace_log=False)
    bare = Program(prog.graph, cache=False, trace_log=False)
    assert set(vars(prog)) == set(vars(bare))
    assert prog.optimize_settings["metric"]["name"] == "exact_match"
    prog.close()
    bare.close()
