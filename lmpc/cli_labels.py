"""Printing the shape of a classifier's answers (runtime/labels.py) for `lmpc eval` and
`lmpc build`: per enum or bool output, a table of labels (gold and predicted counts,
precision, recall, F1) and a confusion table, as rich tables in a terminal and plain aligned
text otherwise. Labels can be model text: they are escaped before printing."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from lmpc.compiler.diagnostics import printable
from lmpc.runtime.labels import ERROR, collapse_warning


def _rows(stats: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str], list[list[str]]]:
    """(label table header, its rows, confusion header, its rows) as text cells."""
    predicted, gold, per = stats["predicted"], stats["gold"], stats["per_label"]
    total = sum(predicted.values()) + stats["errors"]
    labels = list(per)
    head = ["label", "gold", "predicted", "share", "precision", "recall", "f1"]
    rows = []
    for lab in labels:
        p = per[lab]
        n = predicted.get(lab, 0)
        rows.append([printable(lab), str(gold.get(lab, 0)), str(n), f"{n / total:.0%}" if total else "-",
                     f"{p['precision']:.2f}", f"{p['recall']:.2f}" if p["support"] else "-",
                     f"{p['f1']:.2f}" if p["support"] else "-"])
    if stats["errors"]:
        rows.append([ERROR, "-", str(stats["errors"]), f"{stats['errors'] / total:.0%}", "", "", ""])
    # confusion: columns numbered as the rows, so 7 long label names still fit a terminal
    columns = labels + [ERROR]
    chead = ["gold \\ predicted"] + [str(i + 1) for i in range(len(labels))] + [ERROR]
    crows = []
    for i, lab in enumerate(labels):
        if lab not in stats["confusion"]:
            continue
        line = stats["confusion"][lab]
        crows.append([f"{i + 1} {printable(lab)}"] + [str(line.get(c, 0)) for c in columns])
    crows.append(["predicted"] + [str(predicted.get(c, 0)) for c in labels] + [str(stats["errors"])])
    return head, rows, chead, crows


def _plain(head: list[str], rows: list[list[str]], stream: TextIO, indent: str = "  ") -> None:
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return indent + "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()

    print(line(head), file=stream)
    for r in rows:
        print(line(r), file=stream)


def _rich(title: str, head: list[str], rows: list[list[str]], stream: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), title_justify="left")
    for i, h in enumerate(head):
        table.add_column(Text(h), justify="left" if i == 0 else "right", no_wrap=i == 0)
    for r in rows:
        table.add_row(*(Text(c) for c in r))  # Text: no markup in labels is interpreted
    Console(file=stream, highlight=False).print(table)


def print_labels(labels: dict[str, dict[str, Any]], stream: TextIO | None = None, live: bool | None = None,
                 title: str = "") -> list[str]:
    """Print each field's tables; returns the collapse warnings (escaped), for the caller to show."""
    stream = stream or sys.stdout
    live = stream.isatty() if live is None else live
    for name, stats in labels.items():
        field = printable(name)
        head, rows, chead, crows = _rows(stats)
        n = sum(stats["predicted"].values()) + stats["errors"]
        label_title = f"{title}`{field}`: labels ({n} rows, macro-F1 {stats['macro_f1']:.3f})"
        confusion_title = f"{title}`{field}`: confusion (rows: gold, columns: predicted, numbered as the rows)"
        if live:
            _rich(label_title, head, rows, stream)
            _rich(confusion_title, chead, crows, stream)
        else:
            print(label_title, file=stream)
            _plain(head, rows, stream)
            print(confusion_title, file=stream)
            _plain(chead, crows, stream)
    return collapse_warnings(labels)


def collapse_warnings(labels: dict[str, dict[str, Any]]) -> list[str]:
    """The collapse warning of each field that collapsed, escaped for a terminal."""
    found = (collapse_warning(name, stats) for name, stats in labels.items())
    return [printable(w) for w in found if w is not None]
