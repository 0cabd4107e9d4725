"""What every kind of step declares, in one place: the StepKind base class and the requests
a step's execution yields to the runtime.

A kind's `execute(node, inputs)` is a generator: it yields requests (a model generation, a
Python function call, a run of its body over items) and receives each one's result, then
returns the node's outputs. The runtime gathers the pending requests of all rows for a node
and issues them together (one prompt node's calls back to back per model lane), so a kind
that loops (several calls per row) is scheduled like one that calls once. The compiler does
not import the runtime: requests are plain dataclasses declared here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generator

if TYPE_CHECKING:  # the checker's context and the AST: only for annotations
    from lmpc.compiler import ast
    from lmpc.compiler.check import Context
    from lmpc.compiler.types import Type


# -- requests (yielded by execute; the runtime answers them) ----------------------------------
@dataclass
class Generate:
    """One model call for prompt node `node` on `inputs`; answered with the parsed outputs."""

    node: dict
    inputs: dict[str, Any]


@dataclass
class CallFunction:
    """One call of the Python function `node["fn"]`; answered with its outputs (validated)."""

    node: dict
    inputs: dict[str, Any]


@dataclass
class RunBody:
    """One run of the node's body graph per row in `rows` (the body's inputs); answered with
    one outputs dict per row, in order. A failing item fails the node for this row."""

    node: dict
    rows: list[dict[str, Any]]
    first: int = 0  # the first row's item number in traces (best_of judges its samples one by one)


@dataclass
class Retrieve:
    """A search of the retriever `node["retriever"]` for `query`; answered with the k best
    passages, best first, as [{"id", "text", "score"}] (runtime/retrieval.py)."""

    node: dict
    query: str
    k: int

    @property
    def inputs(self) -> dict[str, Any]:  # what a trace event shows
        return {"query": self.query, "k": self.k}


@dataclass
class Act(Generate):
    """One action of a react loop: a model call on the node's inputs and the `trajectory` so
    far ({thought, tool, args, observation} per step); answered with the parsed action
    {"thought", "tool", "args"} (runtime/react_prompt.py renders and decodes it)."""

    trajectory: list[dict] = field(default_factory=list)


@dataclass
class ToolCall:
    """One call of the tool `tool` of a react node with the model's `args`; answered with
    {"observation": str, "error": str | None}: a tool's exception or timeout is an
    observation, not a failure of the row (runtime/tools.py)."""

    node: dict
    tool: str
    args: dict[str, Any]

    @property
    def inputs(self) -> dict[str, Any]:  # what a trace event shows
        return {"tool": self.tool, "args": self.args}


Request = Generate | CallFunction | RunBody | Retrieve | ToolCall
Execution = Generator[Request, Any, dict[str, Any]]


@dataclass
class Annotated:
    """What `execute` may return instead of bare outputs: the outputs, and fields to add to the
    `extra` of the trace events of its requests, by their order (0: the first request that made
    an event; RunBody makes none). best_of marks each sample's reward and the one it kept."""

    outputs: dict[str, Any]
    notes: dict[int, dict[str, Any]]


@dataclass(frozen=True)
class Target:
    """What a step names: a signature or a pipeline, with its typed interface."""

    kind: str  # "signature" | "pipeline"
    name: str
    inputs: dict[str, "Type"]
    outputs: dict[str, "Type"]


class StepKind:
    """One kind of step. Subclasses set the class attributes and override what differs."""

    name: str = ""
    doc: str = ""  # one line: what the kind does (hints, docs)
    prompt: bool = False  # a prompt node: a parameter site optimizers rewrite
    accepts_feedback: bool = False  # a `check` may retry it with feedback in its prompt (runtime/checks.py)
    tunable: tuple[str, ...] = ()  # node attributes optimizers may set
    targets: tuple[str, ...] = ("signature",)  # what the step may name
    loops: bool = False  # written `... for x in list`
    takes_tools: bool = False  # written `... tools [a, b] max_steps N` (react)
    # artifact: the node attributes this kind stores (in this order), and those it must have
    artifact_keys: tuple[str, ...] = ()
    artifact_required: tuple[str, ...] = ()

    # -- checker --------------------------------------------------------------------------
    def check(self, ctx: "Context", s: "ast.Step") -> None:
        """Checks of the step's form that do not depend on its target (reported on ctx)."""
        if s.ref is not None:
            ctx.report("bad-function-ref", s.module_span, f"`{self.name}` takes no function reference",
                       "only `call` steps name a Python function")
        if s.loop is not None and not self.loops:
            ctx.report("bad-loop", s.loop.span, f"a `{self.name}` step does not loop over a list",
                       f"write `{s.name} = map {s.target}(...) for x in list` to run it per item")
        self.check_no_tools(ctx, s)

    def check_no_tools(self, ctx: "Context", s: "ast.Step") -> None:
        """`tools [...]` and `max_steps N` belong to react steps only."""
        if self.takes_tools:
            return
        if getattr(s, "tools_span", None) is not None:
            ctx.report("bad-tools", s.tools_span, f"a `{self.name}` step calls no tools",
                       f"write `{s.name} = react {s.target}(...) tools [...]` for a tool-using loop")
        for option in ("max_steps", "min_steps"):
            if getattr(s, option, None) is not None:
                ctx.report("bad-max-steps", getattr(s, option).span, f"a `{self.name}` step takes no `{option}`",
                           "only react steps loop over model calls")

    def interface(self, ctx: "Context", s: "ast.Step", target: Target) -> tuple[dict, dict]:
        """The step's (inputs, outputs) types, from its target's."""
        return dict(target.inputs), dict(target.outputs)

    # -- lowering -------------------------------------------------------------------------
    def lower(self, s: "ast.Step", target: Any, lowering: Any) -> dict[str, Any]:
        """The node attributes besides kind, step, bindings, model and span. `target` is the
        checker's SignatureInfo (or PipelineInfo); `lowering` gives field helpers."""
        raise NotImplementedError

    # -- runtime --------------------------------------------------------------------------
    def execute(self, node: dict, inputs: dict[str, Any]) -> Execution:
        raise NotImplementedError
        yield  # pragma: no cover

    def max_calls(self, node: dict) -> int:
        """The most model calls one run of the node makes (--dry-run plans; ir.calls_per_row)."""
        return 1

    def generated_outputs(self, node: dict) -> tuple[str, ...]:
        """Outputs the kind adds itself (a labeled demo need not supply them)."""
        return ()

    def demo(self, inputs: dict, parsed: dict, extra: dict) -> dict | None:
        """The demo a bootstrap run makes from one successful trace event of this kind (None:
        the event makes none; react: only a finish action, with its trajectory)."""
        return {"inputs": inputs, "outputs": parsed}

    def text_limit(self, field: str) -> int | None:
        """A decoding bound for a free-text output this kind adds (None: the default)."""
        return None

    # -- artifact -------------------------------------------------------------------------
    def load(self, n: dict, d: dict, where: str, io: Any) -> None:
        """Check this kind's attributes of artifact node `n` and copy them into `d`; `io` is
        compiler/artifact_graph (its checks raise GraphFormatError)."""

    # -- lmpc graph -----------------------------------------------------------------------
    def label(self, nid: str, d: dict) -> str:
        outs = ", ".join(f"{n}: {f['type']}" for n, f in d.get("outputs", {}).items())
        model = f" using {d['model']}" if d.get("model") else ""
        demos = f" [{len(d['demos'])} demos]" if d.get("demos") else ""
        return f"{nid} = {self.name} {d.get('signature')}{model}{demos} -> ({outs})"
