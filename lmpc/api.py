"""The public Python API: compile or load a program, evaluate it.

Every error it raises for a user's mistake is an lmpc.LmpcError (compiler/errors.py): a
CompileError, an ArtifactError, a PipelineChoiceError, an LmpcRuntimeError (DataError,
MetricError, ...) or an OptimizerConfigError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmpc.compiler.api import compile_source as _compile_checked
from lmpc.compiler.checked import CheckedProgram
from lmpc.runtime.errors import InvalidArgumentError
from lmpc.runtime.program import Program
from lmpc.runtime.protocol import RunnableProgram


def program_from_checked(checked: CheckedProgram, pipeline: str | None = None, base_dir: str | Path | None = None,
                         **options: Any) -> Program:
    """The Program of one pipeline (PipelineChoiceError when it cannot be chosen)."""
    name = checked.choose_pipeline(pipeline)
    opt = checked.optimize.get(name)
    return Program(checked.graphs[name], base_dir=base_dir, graphs=checked.graphs, checked=checked,
                   optimize_settings=opt.settings if opt is not None else {}, **options)


def compile_source(text: str, file: str = "<string>", pipeline: str | None = None,
                   base_dir: str | Path | None = None, **options: Any) -> Program:
    """Compile .lmp text into a Program (raises CompileError with every diagnostic)."""
    return program_from_checked(_compile_checked(text, file), pipeline, base_dir, **options)


def compile_file(path: str | Path, pipeline: str | None = None, **options: Any) -> Program:
    """Compile a .lmp file into a Program; `call` steps and model paths resolve next to it.

    options: cache (True/False/path or CallCache), trace_log, model (run every step on this
    declared model), max_workers, budget, models (ready-made Model instances by name).
    """
    from lmpc.compiler.api import read_source

    path = Path(path)
    return compile_source(read_source(path), str(path), pipeline, base_dir=path.parent, **options)


def load(path: str | Path, *, trust_code: bool = False, trust_models: bool = False,
         model_options: dict[str, dict[str, Any]] | None = None, **options: Any) -> Program:
    """Load a compiled artifact (`lmpc build`) into a Program.

    Loading never executes code. An artifact that would run Python files (`call` steps) is
    refused unless trust_code=True; one whose models reach a remote endpoint, read environment
    variables (API keys) or load files outside its folder is refused unless trust_models=True
    or model_options supplies those options (e.g. {"big": {"base_url": ..., "api_key_env": ...}}).
    See docs/security.md. Raises ArtifactError (ArtifactTrustError for a refusal)."""
    from lmpc.compiler.artifact import load_artifact
    from lmpc.runtime.trust import apply_model_options, check_code

    artifact = load_artifact(path)
    check_code(artifact, trust_code)
    check_adapters(artifact)  # finetuned nodes: each LoRA file beside it, with its recorded SHA-256
    if trust_code:
        artifact.trusted.add("code")
    apply_model_options(artifact, model_options, trust_models, ready=set(options.get("models") or {}))
    return Program(artifact.graph, base_dir=artifact.folder, graphs=artifact.graphs, artifact=artifact,
                   optimize_settings=artifact.optimize, **options)


def check_adapters(artifact: Any) -> None:
    """Refuse an artifact whose LoRA adapters are missing or changed (ArtifactError, exit 2)."""
    from lmpc.compiler.artifact import ArtifactError
    from lmpc.runtime.models.adapters import AdapterError, check_adapters as check

    try:
        check(artifact.graphs, artifact.folder)
    except AdapterError as e:
        raise ArtifactError(f"{artifact.path}: {e}") from None


def ensemble(programs: Any, reduce: str = "majority"):
    """Programs (e.g. from lmpc.load) run side by side on each row, voting per output field.

    Returns an object with `__call__(**inputs)` and `batch(rows)` giving Results like a
    Program's: the `majority` builtin's vote (a tie goes to the value that reached the top
    count first, members in the order given), with every member's trace. A member that fails
    on a row casts no vote; a row where all fail is an error. Raises LmpcRuntimeError for no
    programs, an unknown reducer, or members whose outputs differ."""
    from lmpc.runtime.ensemble import EnsembleProgram

    return EnsembleProgram(programs, reduce)


def _judge(prog: RunnableProgram, graphs: dict, name: str):
    """A judge pipeline as a function inputs -> outputs, and the inputs it takes."""
    if name not in graphs:
        raise InvalidArgumentError(f"the judge pipeline `{name}` is not part of this program")
    # Same file, same models: share the loaded ones instead of loading them again.
    judge_prog = Program(graphs[name], base_dir=prog.base_dir, cache=prog.cache, trace_log=prog.trace_log,
                         budget=prog.budget, pool=prog.pool)

    def run(inputs: dict[str, Any]) -> dict[str, Any]:
        return judge_prog(**inputs).values

    return run, set(judge_prog.input_fields)


def resolve_metric(prog: RunnableProgram, metric: Any = None):
    """A metric callable from: None (the optimize block's, or the artifact's), text such as
    "exact_match(label)" or "metrics.py:fn", a spec dict, or a callable (example, prediction)."""
    from lmpc.compiler.api import metric_from_text
    from lmpc.runtime.metrics import make_metric

    if callable(metric):
        return metric
    if metric is None:
        metric = prog.optimize_settings.get("metric")
        if metric is None:
            first = next(iter(prog.output_fields), "answer")
            raise InvalidArgumentError(f'no metric: pass one (e.g. --metric "exact_match({first})") '
                                       f"or add `metric ...` to an optimize block for `{prog.name}`")
        artifact = prog.artifact
        if artifact is not None and metric.get("kind") == "python":  # the artifact's own code
            from lmpc.runtime.trust import check_code

            check_code(artifact, "code" in artifact.trusted, include_metric=True)
    graphs = prog.graphs
    if isinstance(metric, str):
        metric = metric_from_text(metric, prog.name, prog.output_fields, [n for n in graphs if n != prog.name])
    judge = judge_inputs = None
    if metric["kind"] == "pipeline":
        judge, judge_inputs = _judge(prog, graphs, metric["name"])
    return make_metric(metric, base_dir=prog.base_dir, judge=judge, judge_inputs=judge_inputs)


def load_data(prog: RunnableProgram, data: Any, *, mapping: dict[str, str] | None = None, skip_bad_rows: bool = False,
              limit: int | None = None):
    """Examples from a path (JSONL/JSON/CSV/TSV/hf://), a list of dicts, or a list of Examples."""
    from lmpc.runtime.data import Example, load_examples

    if isinstance(data, (str, Path)):
        examples, _ = load_examples(data, prog.input_fields, prog.output_fields, mapping=mapping,
                                    skip_bad_rows=skip_bad_rows, limit=limit)
        return examples
    out = []
    for i, item in enumerate(data):
        if isinstance(item, Example):
            out.append(item)
        else:
            inputs = {k: v for k, v in item.items() if k in prog.input_fields}
            gold = {k: v for k, v in item.items() if k in prog.output_fields}
            out.append(Example(inputs, gold, f"row {i}", dict(item)))
    return out[:limit] if limit else out


def evaluate(program: RunnableProgram, data: Any, metric: Any = None, **options: Any):
    """Score `program` on `data` (see load_data) with `metric` (see resolve_metric).

    options: max_errors, chunk_size, progress, sample, on_result. Returns an EvalReport."""
    from lmpc.runtime.evaluate import evaluate as run_evaluation

    return run_evaluation(program, load_data(program, data), resolve_metric(program, metric), **options)
