"""Evaluate a program on examples with a metric: the inner loop of every optimizer.

An example whose run (or scoring) fails scores 0 and is counted as an error; the run goes on
unless `max_errors` is reached. A ConfigurationError (every example would fail alike: an unset
key variable, a model that cannot load, a server refusing the key) and Ctrl-C end the run at
once; the results already passed to on_result stay with the caller. Examples run in chunks
through Program.batch, so calls of one prompt node are issued back to back (KV-cache reuse)
and progress is reported per chunk.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from lmpc.runtime.checks import summarize
from lmpc.runtime.data import Example
from lmpc.runtime.errors import ConfigurationError, LmpcRuntimeError
from lmpc.runtime.labels import field_stats, label_fields
from lmpc.runtime.metrics import Metric
from lmpc.runtime.program import Program
from lmpc.runtime.progress import Progress
from lmpc.runtime.trace import start_meter


@dataclass
class ExampleResult:
    index: int
    source: str
    inputs: dict[str, Any]
    gold: dict[str, Any]
    prediction: dict[str, Any] | None
    score: float
    error: str | None
    trace_ids: list[str] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)  # outcomes of the pipeline's checks (runtime/checks.py)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalReport:
    results: list[ExampleResult]
    total: int  # examples asked for (more than len(results) when stopped early)
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    stopped_early: str | None = None  # why, when --max-errors stopped the run
    program_prompt_tokens: int = 0  # the program's own prompts (calls and tokens above include a judge's)
    label_fields: dict[str, list[str]] = field(default_factory=dict)  # enum/bool outputs -> declared labels

    @property
    def labels(self) -> dict[str, dict[str, Any]]:
        """Per enum or bool output: predicted and gold counts, the confusion table, per-label
        precision/recall/F1 and `collapsed` (runtime/labels.py)."""
        return {name: field_stats(name, declared, ((r.gold, r.prediction, r.error is not None) for r in self.results))
                for name, declared in self.label_fields.items()}

    @property
    def checks(self) -> dict[str, dict[str, Any]]:
        """Per `check` of the program: runs, failures, repaired by a retry, still failing."""
        return summarize([r.checks for r in self.results])

    @property
    def score(self) -> float:
        """Mean score over the examples run; errors count as 0."""
        return sum(r.score for r in self.results) / len(self.results) if self.results else 0.0

    @property
    def prompt_tokens_per_example(self) -> float:
        """Mean prompt tokens per example run (the program's prompt nodes summed, not a judge's;
        cached calls count too)."""
        return round(self.program_prompt_tokens / len(self.results), 1) if self.results else 0.0

    @property
    def errors(self) -> int:
        return sum(r.error is not None for r in self.results)

    def worst(self, k: int) -> list[ExampleResult]:
        return sorted(self.results, key=lambda r: (r.error is None, r.score, r.index))[:k]

    def summary(self) -> dict[str, Any]:
        return {"score": round(self.score, 4), "examples": len(self.results), "of": self.total,
                "errors": self.errors, "calls": self.calls, "cache_hits": self.cache_hits,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "wall_s": round(self.wall_s, 2), "stopped_early": self.stopped_early,
                **({"labels": self.labels} if self.label_fields else {}),
                **({"checks": self.checks} if any(r.checks for r in self.results) else {})}


def evaluate(program: Program, examples: list[Example], metric: Metric, *, max_errors: int | None = None,
             chunk_size: int = 16, progress: Progress | bool | None = None, sample: int = 0,
             on_result: Callable[[ExampleResult], None] | None = None, runner: Any = None) -> EvalReport:
    """Run `program` on `examples` and score each with `metric`.

    progress: a Progress, True (make one), or None/False (quiet). on_result is called with
    each result as soon as it is scored (e.g. to write results.jsonl incrementally).
    runner: where the chunks run (lmpc/ray_executor.RayRunner: on a Ray cluster, results back
    in order); None runs each chunk here with program.batch, one after the other. Scoring
    (a judge metric's calls too) stays in this process either way.
    """
    report = EvalReport([], total=len(examples), label_fields=label_fields(program.output_fields))
    bar = Progress(len(examples)) if progress is True else (progress or None)
    t0 = time.perf_counter()
    usage = start_meter()  # every model call from here on: the program's and a judge metric's
    if runner is not None:
        chunk_size = runner.chunk_size(len(examples), chunk_size)
    chunks = [examples[start:start + chunk_size] for start in range(0, len(examples), chunk_size)]
    batches = (runner.run_chunks(program, [[ex.inputs for ex in chunk] for chunk in chunks], sample=sample)
               if runner is not None else (program.batch([ex.inputs for ex in chunk], sample=sample) for chunk in chunks))
    try:
        for n, (chunk, runs) in enumerate(zip(chunks, batches)):
            start = n * chunk_size
            for offset, (ex, run) in enumerate(zip(chunk, runs)):
                error, score = None, 0.0
                if run.error is not None:
                    error = str(run.error)
                else:
                    try:
                        score = float(metric(ex, run.values or {}))
                    except ConfigurationError:
                        raise  # a judge pipeline's model cannot run: no example could be scored
                    except LmpcRuntimeError as e:
                        error = f"metric: {e}"
                    except Exception as e:  # a user's Python metric raised: isolate it
                        error = f"metric raised {type(e).__name__}: {e}"
                report.program_prompt_tokens += sum(e.prompt_tokens for e in run.trace if e.model is not None)
                result = ExampleResult(start + offset, ex.source, ex.inputs, ex.gold, run.values, score, error,
                                       [e.trace_id for e in run.trace], list(getattr(run, "checks", ())))
                report.results.append(result)
                if on_result is not None:
                    on_result(result)
                if max_errors is not None and report.errors >= max_errors:
                    report.stopped_early = f"stopped after {report.errors} errors (max_errors {max_errors})"
                    break
            if bar is not None:
                bar.update(len(report.results), report.score, report.errors)
            if report.stopped_early:
                break
    finally:
        batches.close()  # a runner stops its chunks still queued (stopped early, Ctrl-C)
        report.wall_s = time.perf_counter() - t0
        usage.stop()
        report.calls, report.cache_hits = usage.calls, usage.cache_hits
        report.prompt_tokens, report.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        if bar is not None:
            bar.close()
    return report
