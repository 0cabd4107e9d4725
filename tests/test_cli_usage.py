"""Usage errors of every subcommand exit 2 with an `error:` line and no traceback (docs/cli.md),
and `lmpc --version` prints the version. In-process: an exception would fail the test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmpc import __version__
from lmpc.cli import main

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = '''
type Label = "positive" | "negative"
signature Sentiment = text -> label: Label
pipeline classify(text: str) -> (label: Label) {
    s = predict Sentiment(text: text)
    return label: s.label
}
'''
OPTIMIZE = '''
optimize classify {
    train "rows.jsonl"
    dev "rows.jsonl"
    metric exact_match(label)
    strategy labeled_few_shot(k: 2)
}
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "p.lmp").write_text(PROGRAM + OPTIMIZE)
    (tmp_path / "bare.lmp").write_text(PROGRAM)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"text": "ok", "label": "positive"}) + "\n")
    return tmp_path


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own usage errors and --version
        rc = e.code if isinstance(e.code, int) else 2
    out, err = capsys.readouterr()
    return rc, out, err


# (subcommand arguments, text the error must contain); {d} is the project folder
USAGE_ERRORS = [
    ([], "usage:"),
    (["frobnicate"], "invalid choice"),
    (["check"], "the following arguments are required"),
    (["check", "{d}/missing.lmp"], "no such file"),
    (["graph", "{d}/p.lmp", "--pipeline", "nope"], "nope"),
    (["graph", "{d}/p.lmp", "--format", "xml"], "invalid choice"),
    (["run", "{d}/p.lmp", "-i"], "expected one argument"),
    (["run", "{d}/p.lmp", "-i", "novalue"], "--input takes NAME=VALUE"),
    (["run", "{d}/p.lmp", "-i", "txt=hi"], "no input `txt`"),
    (["run", "{d}/p.lmp", "--input-file", "{d}/missing.jsonl"], "missing.jsonl"),
    (["run", "{d}/p.lmp", "-i", "text=hi", "--input-file", "{d}/rows.jsonl"], "not both"),
    (["run", "{d}/p.lmp", "--model", "nope", "-i", "text=hi"], "no model named `nope`"),
    (["run", "{d}/p.lmp", "--pipeline", "nope", "-i", "text=hi"], "nope"),
    (["run", "{d}/p.lmpc.json", "--model-option", "big.timeout=1e308"], "`timeout` must be between 0.001 and"),
    (["run", "{d}/p.lmpc.json", "--model-option", "big.max_retries=-1"], "`max_retries` must be between 0 and"),
    (["inspect", "-n", "many"], "invalid int value"),
    (["inspect", "-n", "0"], "must be 1 or more, not 0"),
    (["eval", "{d}/p.lmp", "--data", "{d}/missing.jsonl"], "missing.jsonl"),
    (["eval", "{d}/p.lmp", "--metric", "exact_mach(label)"], "did you mean `exact_match`"),
    (["eval", "{d}/p.lmp", "--metric", "exact_match(label"], "syntax-error"),
    (["eval", "{d}/p.lmp", "--map", "text"], "--map takes FIELD=COLUMN"),
    (["eval", "{d}/p.lmp", "--limit", "ten"], "invalid int value"),
    (["eval", "{d}/p.lmp", "--limit", "-1"], "must be 1 or more, not -1"),
    (["eval", "{d}/p.lmp", "--sample", "-1"], "must be 1 or more, not -1"),
    (["eval", "{d}/p.lmp", "--max-errors", "0"], "must be 1 or more, not 0"),
    (["eval", "{d}/p.lmp", "--worst", "-1"], "must be 0 or more, not -1"),
    (["eval", "{d}/p.lmp", "--sample", "2", "--seed", "-3"], "must be between 0 and 2147483647, not -3"),
    (["eval", "{d}/bare.lmp"], "no data"),
    (["build", "{d}/p.lmp", "--strategy", "labeled_few_shot(k: "], "syntax-error"),
    (["build", "{d}/p.lmp", "--strategy", 'labeled_few_shot(k: "two")'], "`k` takes an integer"),
    (["build", "{d}/p.lmp", "--strategy", "labeled_few_shot(k: -2)"], "`k` must be 0 or more"),
    (["build", "{d}/p.lmp", "--strategy", "bootstrap_few_shot(seed: 1.5)"], "`seed` takes an integer"),
    (["build", "{d}/p.lmp", "--strategy", "bootstrap_few_shot(teacher: nope)"], "no declared model `nope`"),
    (["build", "{d}/p.lmp", "--strategy", "bootstrap(max_demos: 2)"], "did you mean `bootstrap_few_shot`"),
    (["build", "{d}/p.lmp", "--strategy", "labeled_few_shot then ensemble"], "ensemble needs a search"),
    (["build", "{d}/p.lmp", "--metric", "exact_mach(label)"], "did you mean `exact_match`"),
    (["build", "{d}/p.lmp", "--seed", "x"], "invalid int value"),
    (["build", "{d}/p.lmp", "--seed", "-1"], "must be between 0 and 2147483647, not -1"),
    (["build", "{d}/p.lmp", "--max-calls", "-1"], "--max-calls: must be between 0 and"),
    (["build", "{d}/p.lmp", "--max-prompt-tokens", "-5"], "must be between 0 and"),
    (["build", "{d}/p.lmp", "--train", "{d}/missing.jsonl"], "no such file"),
    (["build", "{d}/bare.lmp"], "the build needs train, dev, metric, strategy"),
]


@pytest.mark.parametrize("argv,expected", USAGE_ERRORS, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_usage_errors_exit_2_with_an_error_line(project, capsys, argv, expected):
    rc, out, err = run([a.format(d=project) for a in argv], capsys)
    assert rc == 2, (out, err)
    assert expected in (err if argv else out), err  # no command: the help, on stdout
    assert "Traceback" not in err
    assert argv == [] or re.search(r"(^|\n)(lmpc( \w+)?: error: |\S+:\d+:\d+: error\[)", err), err


def test_version(capsys):
    rc, out, err = run(["--version"], capsys)
    assert (rc, out, err) == (0, f"lmpc {__version__}\n", "")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{__version__}"' in pyproject  # one version, wherever it is read
