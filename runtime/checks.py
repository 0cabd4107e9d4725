"""Run-time side of `check` statements (compiler/constraints.py): judge a step's outputs
against the checks on its node, decide whether to retry, and record what happened.

A retry runs the step's kind again on a copy of its node with `feedback` set: the failed
outputs and the failing checks' messages, which runtime/prompt.py adds to the prompt (so
the retry is its own cache entry). Every attempt is traced; the events of an attempt that
failed a check carry `checks_failed` (bootstrapping never takes them as demos).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from lmpc.runtime.values import evaluate


def failing(node: dict, lookup: Callable[[str, list], Any]) -> list[dict]:
    """The checks of `node` that its outputs fail; `lookup(ref, path)` reads the row's values,
    the node's new outputs included. A condition that cannot be evaluated (e.g. len() of a
    null) is not met."""
    bad = []
    for c in node.get("checks", ()):
        try:
            ok = evaluate(c["cond"], lookup) is True
        except Exception:  # noqa: BLE001 - a condition over a value it cannot read: not met
            ok = False
        if not ok:
            bad.append(c)
    return bad


RETRY_TEMPERATURE = 0.7  # from the third attempt on: the second's prompt again would give its answer again


def feedback_node(node: dict, outputs: dict[str, Any], failed: list[dict], attempt: int) -> dict:
    """The node of attempt `attempt` (2, 3, ...): the previous attempt's outputs (traced) and
    what to do differently (in the prompt). The prompt of every retry is the same, so from the
    third attempt on the call is another draw at RETRY_TEMPERATURE (seeded, cached)."""
    retry = {**node, "feedback": {"previous": outputs, "instructions": [c["message"] for c in failed],
                                  "show_previous": any(c.get("show_previous") for c in failed)}}
    if attempt > 2:
        retry["draw"] = {"sample": attempt - 2, "temperature": RETRY_TEMPERATURE}
    return retry


@dataclass
class CheckLog:
    """One step's checks for one row: how many attempts each failed, and the last verdict."""

    node: dict
    attempts: int = 1  # runs of the step so far
    failures: dict[str, int] = field(default_factory=dict)  # check id -> attempts that failed it

    def record(self, failed: list[dict]) -> None:
        for c in failed:
            self.failures[c["id"]] = self.failures.get(c["id"], 0) + 1

    def may_retry(self, failed: list[dict]) -> bool:
        """Retry while a failing check has retries left (each check counts its own)."""
        return any(self.failures.get(c["id"], 0) <= c["retries"] for c in failed)

    def outcome(self, failed: list[dict]) -> list[dict]:
        """Per check of the node: {id, step, text, message, soft, failed (attempts), passed}."""
        still = {c["id"] for c in failed}
        return [{"id": c["id"], "step": self.node["step"], "text": c["text"], "message": c["message"],
                 "soft": c["soft"], "attempts": self.attempts, "failed": self.failures.get(c["id"], 0),
                 "passed": c["id"] not in still}
                for c in self.node.get("checks", ())]


def summarize(outcomes: list[list[dict]]) -> dict[str, dict[str, Any]]:
    """Per check over many rows' outcomes: runs of the checked step (one per row; one per
    item inside a map), runs that failed it at least once, of those repaired by a retry, and
    still failing at the end (hard: the row failed), and the retries made."""
    out: dict[str, dict[str, Any]] = {}
    for row in outcomes:
        for o in row:
            s = out.setdefault(o["id"], {"text": o["text"], "message": o["message"], "soft": o["soft"],
                                         "step": o["step"], "runs": 0, "failures": 0, "repaired": 0,
                                         "still_failing": 0, "retries": 0})
            s["runs"] += 1
            s["retries"] += o["attempts"] - 1
            if o["failed"]:
                s["failures"] += 1
                s["repaired" if o["passed"] else "still_failing"] += 1
    return out
