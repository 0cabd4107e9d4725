"""The coverage rule: how a node's demo slots are shared among the labels of its enum and bool
outputs. Every strategy that chooses demo sets (bootstrap_few_shot, random_search's candidates,
bayesian's demo sets, knn_few_shot's pools) goes through `choose`; labeled_few_shot's
round-robin (demos.cover_labels) is this rule with no bootstrapped demos.

Why: a small model that answers one label for everything passes, on the teacher run, only the
rows of that label; demos drawn from those runs all carry it, and the compiled program keeps
answering it (issue 12; DSPy's BootstrapFewShot collapses the same way). So:

1. The labels are the values the training data's gold gives the node's label fields, plus any
   label a bootstrapped candidate carries. A label is *missing* when no bootstrapped candidate
   carries it.
2. Slots are filled round-robin over the labels (labels with bootstrapped candidates first, in
   the order their first candidate appears, then the missing ones in the order of their first
   labeled candidate). At its turn a label takes its next bootstrapped demo (while the node has
   fewer than `max_boot` of them), else its next labeled demo when one may be used: always for
   a missing label (where the node can take labeled demos at all), otherwise only as the
   strategy's labeled top-up (`fill_to`, `max_topup`).
3. No label takes more than its fair share, ceil(slots / labels), while another label still has
   a demo to give; the slots left after that go round-robin to the labels that still have
   demos ("unless the data has nothing else").

Everything is deterministic for a seed: candidates come in seeded orders (demos.seeded_order,
sorted by source before the shuffle), so the training file's row order does not matter.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from typing import Any, Sequence

from lmpc.optimizers.demos import cover_labels, dedupe, label_fields, label_of, seeded_order

Demo = dict[str, Any]


def label_name(node: dict, outputs: dict[str, Any]) -> str:
    """A label as reports show it: `positive`, `true`, `spam/high` for two label fields."""
    return "/".join(v if isinstance(v, str) else json.dumps(v) for v in (outputs.get(f) for f in label_fields(node)))


def label_counts(node: dict, demos: Sequence[Demo]) -> dict[str, int]:
    """How many demos carry each label (sorted by label); {} for a node without label fields."""
    if not label_fields(node):
        return {}
    return dict(sorted(Counter(label_name(node, d["outputs"]) for d in demos).items()))


def _inputs_key(demo: Demo) -> str:
    return json.dumps(demo["inputs"], sort_keys=True, default=str)


def _groups(node: dict, demos: Sequence[Demo]) -> dict[str, list[Demo]]:
    out: dict[str, list[Demo]] = {}
    for d in demos:
        out.setdefault(label_of(node, d["outputs"]), []).append(d)
    return out


def _plan(order: list[str], boot_n: dict[str, int], lab_n: dict[str, int], missing: set[str], slots: int,
          max_boot: int, fill_to: int, max_topup: int | None) -> list[tuple[str, str]]:
    """The sequence of (label, "boot" | "labeled") picks, on counts only."""
    cap = math.ceil(slots / len(order))
    taken = dict.fromkeys(order, 0)
    boot_used = dict.fromkeys(order, 0)
    lab_used = dict.fromkeys(order, 0)
    seq: list[tuple[str, str]] = []

    def pick(label: str) -> str | None:
        if boot_used[label] < boot_n.get(label, 0) and sum(boot_used.values()) < max_boot:
            return "boot"
        if lab_used[label] >= lab_n.get(label, 0):
            return None
        if label in missing:
            return "labeled"
        topup = sum(lab_used[x] for x in order if x not in missing)
        if len(seq) < fill_to and (max_topup is None or topup < max_topup):
            return "labeled"
        return None

    for capped in (True, False):
        progress = True
        while progress and len(seq) < slots:
            progress = False
            for label in order:
                if len(seq) >= slots or (capped and taken[label] >= cap):
                    continue
                kind = pick(label)
                if kind is None:
                    continue
                (boot_used if kind == "boot" else lab_used)[label] += 1
                taken[label] += 1
                seq.append((label, kind))
                progress = True
    return seq


def fill_slots(node: dict, boot: Sequence[Demo], labeled: Sequence[Demo], *, slots: int, max_boot: int,
               labeled_rng: random.Random, fill_to: int = 0, max_topup: int | None = None) -> list[Demo]:
    """Up to `slots` demos for a node with label fields, by the coverage rule (module docstring).

    boot: bootstrapped candidates in their seeded order, one per distinct input (at most
    max_boot are used); labeled: the node's labeled candidates from every usable training row,
    in any order (empty when the node cannot take labeled demos). Rows whose bootstrapped demo
    is chosen are left out of the labeled ones, which are then put in labeled_rng's seeded
    order. fill_to / max_topup: labeled demos of labels that bootstrapped candidates carry are
    used only while the node has fewer than fill_to demos in all and fewer than max_topup such
    demos (None: no limit). The result is in pick order (labels interleaved)."""
    if slots <= 0:
        return []
    boot_groups = _groups(node, boot)
    lab_groups = _groups(node, dedupe(sorted(labeled, key=lambda d: (d["source"], _inputs_key(d)))))
    order = list(boot_groups)
    # the missing labels in a seeded order (from a copy of labeled_rng, which stays as it is)
    probe = random.Random()
    probe.setstate(labeled_rng.getstate())
    for d in seeded_order(labeled, probe):
        label = label_of(node, d["outputs"])
        if label not in order:
            order.append(label)
    if not order:
        return []
    missing = set(order) - set(boot_groups)
    seq = _plan(order, {k: len(v) for k, v in boot_groups.items()}, {k: len(v) for k, v in lab_groups.items()},
                missing, slots, max_boot, fill_to, max_topup)
    # bootstrapped picks first, so that the labeled ones can leave out the rows they came from
    boot_next = dict.fromkeys(order, 0)
    picks: list[Demo | None] = []
    for label, kind in seq:
        if kind == "boot":
            picks.append(boot_groups[label][boot_next[label]])
            boot_next[label] += 1
        else:
            picks.append(None)
    chosen = [d for d in picks if d is not None]
    rest = _groups(node, _labeled_rest(labeled, chosen, labeled_rng))
    lab_next = dict.fromkeys(order, 0)
    out: list[Demo] = []
    for (label, _), d in zip(seq, picks):
        if d is None:  # a labeled pick; short only when a chosen bootstrapped row took its row
            group = rest.get(label, [])
            if lab_next[label] >= len(group):
                continue
            d = group[lab_next[label]]
            lab_next[label] += 1
        out.append(d)
    return out


def _labeled_rest(labeled: Sequence[Demo], chosen: Sequence[Demo], rng: random.Random) -> list[Demo]:
    """Labeled candidates from rows the chosen demos did not come from, with other inputs, seeded."""
    sources = {d["source"] for d in chosen}
    inputs = {_inputs_key(d) for d in chosen}
    rest = dedupe(seeded_order([d for d in labeled if d["source"] not in sources], rng))
    return [d for d in rest if _inputs_key(d) not in inputs]


def choose(node: dict, boot_candidates: Sequence[Demo], labeled: Sequence[Demo], *, balance: bool,
           boot_rng: random.Random, labeled_rng: random.Random, max_boot: int, fill_to: int,
           max_topup: int | None = None, slots: int | None = None) -> list[Demo]:
    """One node's demos from its bootstrapped candidates (any order, repeats allowed) and its
    labeled candidates: the coverage rule for a node with label fields and `balance`, else the
    rule before it (up to max_boot bootstrapped demos round-robin over their own labels, then
    labeled demos round-robin up to fill_to demos in all, at most max_topup of them).

    slots: how many demos the node may have (default: max(max_boot, fill_to))."""
    boot = dedupe(seeded_order(boot_candidates, boot_rng))
    if balance and label_fields(node):
        slots = max(max_boot, fill_to) if slots is None else slots
        return fill_slots(node, boot, labeled, slots=slots, max_boot=max_boot, labeled_rng=labeled_rng,
                          fill_to=fill_to, max_topup=max_topup)
    chosen = cover_labels(node, boot, max_boot)
    room = fill_to - len(chosen) if max_topup is None else min(fill_to - len(chosen), max_topup)
    if room <= 0:
        return chosen
    return chosen + cover_labels(node, _labeled_rest(labeled, chosen, labeled_rng), room)
