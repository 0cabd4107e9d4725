"""Labelled data: read rows from JSONL, JSON, CSV, TSV or a Hugging Face dataset file, and
turn them into Examples whose inputs (and gold outputs) fit the pipeline's JSON Schemas.

Every problem is a DataError located as `path:line:col`, so the user can open the file at the
offending row. Bad rows are found before any model call: a run never stops half-way because
row 900 lacks an input.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lmpc.compiler.jsonsafe import JSONTooDeep, load_json_bounded, too_deep_at
from lmpc.compiler.types import MAX_NESTING
from lmpc.compiler.diagnostics import printable
from lmpc.compiler.errors import EXIT_USAGE
from lmpc.runtime.errors import InvalidArgumentError, LmpcRuntimeError
from lmpc.runtime.values import coerce_text, validation_error

SUPPORTED = (".jsonl", ".json", ".csv", ".tsv")
HF_PREFIX = "hf://"
_HF_FORM = "hf://datasets/ORG/REPO/PATH/IN/REPO.jsonl"
# How deep a row may nest: the row's object, a list of acceptable gold answers, and a value of
# the deepest type the compiler accepts. Deeper rows fit no pipeline; refusing them up front
# also keeps the recursive json parser (and the validation after it) far from the recursion limit.
ROW_MAX_DEPTH = MAX_NESTING + 2


class DataError(LmpcRuntimeError):
    """A data file (or one row of it) that cannot be used; str() is `path:line:col: message`."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 col: int | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.col = col
        where = ":".join(str(p) for p in (path, line, col) if p is not None)
        # Messages quote the file's text (column names, JSON keys): control bytes such as ESC
        # are shown escaped, never sent raw to a terminal.
        super().__init__(printable(f"{where}: {message}" if where else message))


@dataclass
class Example:
    inputs: dict[str, Any]  # the pipeline's inputs, validated against their JSON Schemas
    gold: dict[str, Any]  # gold values for the outputs that the row has (may be empty)
    source: str  # "path:line", to point the user at the row
    row: dict[str, Any]  # the raw row, extra columns included


# --- reading rows ---------------------------------------------------------------------------

Rows = Iterator[tuple[int, "dict[str, Any] | DataError"]]


def read_rows(path: str | Path) -> Rows:
    """(line, row) for each record, or (line, DataError) for a record that is not an object.

    Errors about the whole file (missing, unknown format, not a JSON list, a Hugging Face file
    that cannot be had) are raised by this call itself, not when iterating."""
    return _open(path)[1]


def _open(path: str | Path) -> tuple[bool, Rows]:
    """(whether values are text that needs coercing, the rows)."""
    display = str(path)
    if display.startswith(HF_PREFIX):
        file = _resolve_hf(display)
    else:
        file = Path(path)
        _check_extension(file.name, display)
        if not file.is_file():
            raise DataError("no such file" if not file.exists() else "not a file", display)
    suffix = _suffix(file.name)
    if suffix == ".jsonl":
        return False, _jsonl_rows(file, display)
    if suffix == ".json":
        return False, _json_rows(file, display)
    return True, _csv_rows(file, display, "\t" if suffix == ".tsv" else ",")


def _suffix(name: str) -> str:
    return Path(name).suffix.lower()


def _check_extension(name: str, display: str) -> None:
    if _suffix(name) not in SUPPORTED:
        raise DataError(f"unknown data format `{_suffix(name) or name}`; supported: "
                        f"{', '.join(SUPPORTED)} (or {_HF_FORM})", display)


def _jsonl_rows(file: Path, display: str) -> Rows:
    # Bytes, decoded line by line: one line that is not UTF-8 is then a bad row, not a fatal
    # error half-way through the file.
    with open(file, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a BOM, as Windows tools write
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, DataError("the line is not UTF-8 text", display, number, e.start + 1)
                continue
            if not text.strip():
                continue
            text = text.rstrip("\r\n")  # else an unfinished line's error is at line 2, column 1
            try:
                value = load_json_bounded(text, ROW_MAX_DEPTH)
            except json.JSONDecodeError as e:
                yield number, DataError(_json_message(e), display, number, e.colno)
                continue
            if not isinstance(value, dict):
                yield number, DataError(f"the line is {_json_kind(value)}, not a JSON object "
                                        "(one object per line, keys = field names)", display, number)
                continue
            yield number, value


def _json_message(e: json.JSONDecodeError) -> str:
    if isinstance(e, JSONTooDeep):
        return (f"the JSON nests more than {e.max_depth} levels of `[` and `{{` (a value of an lmpc type "
                f"nests at most {MAX_NESTING})")
    return f"invalid JSON: {e.msg}"


def _json_rows(file: Path, display: str) -> Rows:
    text = _read_text(file, display, encoding="utf-8-sig")  # a BOM, as Windows tools write
    decoder = json.JSONDecoder()
    # Walk the top-level list element by element (raw_decode) to know each row's line; a
    # syntax error anywhere makes the whole file unusable, so it is raised, not yielded.
    try:
        i = _skip_space(text, 0)
        if i == len(text) or text[i] != "[":
            at, _ = too_deep_at(text, ROW_MAX_DEPTH, i, one_value=True)
            if at is not None:
                raise JSONTooDeep(text, at, ROW_MAX_DEPTH)
            value, _ = decoder.raw_decode(text, i)
            raise DataError(f"a .json data file holds a list of objects, not {_json_kind(value)}",
                            display, *_line_col(text, i))
        rows: list[tuple[int, dict[str, Any] | DataError]] = []
        i = _skip_space(text, i + 1)
        while i < len(text) and text[i] != "]":
            line, col = _line_col(text, i)
            # Each element is checked before it is decoded: one element nested too deeply is a
            # bad row (skipped by --skip-bad-rows), the others are still read.
            at, end = too_deep_at(text, ROW_MAX_DEPTH, i, one_value=True)
            if at is not None:
                rows.append((line, DataError(_json_message(JSONTooDeep(text, at, ROW_MAX_DEPTH)), display,
                                             *_line_col(text, at))))
            else:
                value, end = decoder.raw_decode(text, i)
                rows.append((line, value) if isinstance(value, dict) else
                            (line, DataError(f"the element is {_json_kind(value)}, not a JSON object",
                                             display, line, col)))
            i = _skip_space(text, end)
            if i < len(text) and text[i] == ",":
                i = _skip_space(text, i + 1)
            elif i < len(text) and text[i] != "]":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
        if i == len(text):
            raise json.JSONDecodeError("Expecting ']'", text, i)
        if _skip_space(text, i + 1) != len(text):
            raise json.JSONDecodeError("Extra data", text, _skip_space(text, i + 1))
    except json.JSONDecodeError as e:
        raise DataError(_json_message(e), display, e.lineno, e.colno) from None
    return iter(rows)


def _csv_rows(file: Path, display: str, delimiter: str) -> Rows:
    # utf-8-sig: spreadsheet programs often start CSV files with a BOM, which would otherwise
    # become part of the first column's name.
    stream = io.StringIO(_read_text(file, display, encoding="utf-8-sig"), newline="")
    # strict: a quote that is never closed, or text after a closing quote, is an error; the
    # default reads on to the next quote or the end of the file and merges the rows between.
    reader = csv.reader(stream, delimiter=delimiter, strict=True)
    kind = "TSV" if delimiter == "\t" else "CSV"
    first_line = 1
    try:
        header = next(reader, None)
        if header is None:
            return iter(())
        header = [h.strip() for h in header]
        seen: set[str] = set()
        for name in header:
            if name in seen:
                raise DataError(f"the header names column `{name}` twice", display, 1)
            seen.add(name)
        rows: list[tuple[int, dict[str, Any] | DataError]] = []
        while True:
            first_line = reader.line_num + 1  # a quoted field may span lines: cite the first
            record = next(reader, None)
            if record is None:
                break
            if not record or all(not cell.strip() for cell in record):
                continue  # blank line
            if len(record) > len(header):
                rows.append((first_line, DataError(f"the record has {len(record)} fields but the header "
                                                   f"names {len(header)} columns", display, first_line)))
                continue
            rows.append((first_line, dict(zip(header, record))))  # short records lack the last columns
    except csv.Error as e:
        raise _csv_error(e, kind, display, first_line, reader.line_num) from None
    return iter(rows)


def _csv_error(e: csv.Error, kind: str, display: str, first: int, last: int) -> DataError:
    """The bad quoting, at the line where the record (and its quoted field) starts."""
    where = "on this line" if first == last else f"on line {last}"
    if "unexpected end of data" in str(e):
        return DataError(f"invalid {kind}: a quoted field that starts on this line is never closed "
                         f"(it runs to the end of the file, line {last})", display, first)
    if "expected after" in str(e):
        return DataError(f"invalid {kind}: a closing `\"` {where} is followed by text instead of "
                         f"`{'TAB' if kind == 'TSV' else ','}` or the end of the line (inside a quoted field, "
                         'write a quote as `""`)', display, first)
    return DataError(f"invalid {kind}: {e}", display, last)


def _read_text(file: Path, display: str, encoding: str = "utf-8") -> str:
    try:
        return file.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        data = file.read_bytes()
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError("the file is not UTF-8 text", display, line, col) from None


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _line_col(text: str, i: int) -> tuple[int, int]:
    line = text.count("\n", 0, i) + 1
    return line, i - (text.rfind("\n", 0, i) + 1) + 1


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, str):
        return "a JSON string"
    if isinstance(value, bool) or value is None:
        return f"`{json.dumps(value)}`"
    return "a JSON number"


# --- Hugging Face files -----------------------------------------------------------------------


def _env_true(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")


def _hf_cache_dir() -> str | None:
    # huggingface_hub reads these variables once, when it is imported; read them now so a
    # cache chosen later in the process (or by a test) is the one used.
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _resolve_hf(url: str) -> Path:
    """hf://datasets/ORG/REPO[@REVISION]/PATH -> the file in the Hugging Face cache."""
    parts = [p for p in url[len(HF_PREFIX):].split("/") if p]
    if len(parts) < 4 or parts[0] != "datasets":
        raise DataError(f"a Hugging Face data path has the form {_HF_FORM}", url)
    repo, _, revision = parts[2].partition("@")
    repo_id, filename = f"{parts[1]}/{repo}", "/".join(parts[3:])
    _check_extension(filename, url)  # before any download: a .parquet would be fetched for nothing

    from huggingface_hub import constants, hf_hub_download

    options: dict[str, Any] = {"repo_type": "dataset", "cache_dir": _hf_cache_dir(), "revision": revision or None}
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=True, **options))
    except Exception:  # not cached (LocalEntryNotFoundError) or a bad repo id: try the network
        pass
    fetch = (f"download it where there is network access with `hf download {repo_id} {filename} "
             f"--repo-type dataset` (it goes to the Hugging Face cache, {_hf_cache_dir() or constants.HF_HUB_CACHE}), "
             "or download the file yourself and give its local path")
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE") or constants.HF_HUB_OFFLINE:
        raise DataError(f"the file {filename} of the Hugging Face dataset {repo_id} is not in the local "
                        f"cache and HF_HUB_OFFLINE is set, so it cannot be downloaded; {fetch}", url)
    try:
        return Path(hf_hub_download(repo_id, filename, **options))
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise DataError(f"the file {filename} of the Hugging Face dataset {repo_id} is not in the local "
                        f"cache and could not be downloaded ({type(e).__name__}{': ' + reason if reason else ''}); "
                        f"check the repository and file names, or {fetch}", url) from None


# --- rows -> examples -------------------------------------------------------------------------


def _schema_types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a schema admits (looking one level into anyOf, as the IR writes T?)."""
    types: set[str] = set()
    for s in [schema, *schema.get("anyOf", [])]:
        kind = s.get("type")
        types.update([kind] if isinstance(kind, str) else kind or [])
        if "enum" in s:
            types.update(_json_type(v) for v in s["enum"])
    return types


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else "object"


def _describe(field: dict[str, Any]) -> str:
    """The field's type as the user wrote it; an enum spelled out, as its name alone says little."""
    enum = field["schema"].get("enum")
    if enum is not None:
        return " | ".join(json.dumps(v) for v in enum)
    return str(field.get("type") or "the declared type")


def _field_value(row: dict[str, Any], column: str, schema: dict[str, Any], text: bool,
                 is_input: bool) -> tuple[bool, Any]:
    """(present, value) of one field in a row, coerced when the file holds text."""
    if column not in row:
        return False, None
    value = row[column]
    if not text:
        return True, value
    if value == "":
        # An empty cell is a missing value (so None for an optional input; an empty gold cell
        # means "no gold here"), except for a required text input, where "" is a real value.
        types = _schema_types(schema)
        if is_input and "string" in types and "null" not in types:
            return True, ""
        return False, None
    return True, coerce_text(value, schema)


def _gold_error(value: Any, schema: dict[str, Any]) -> str | None:
    reason = validation_error(value, schema)
    # A list of acceptable answers for an output that is not itself a list (["Paris", "paris, France"]).
    if reason is not None and isinstance(value, list) and value and "array" not in _schema_types(schema):
        reasons = [validation_error(v, schema) for v in value]
        return next((f"[{i}]: {r}" for i, r in enumerate(reasons) if r is not None), None)
    return reason


def _make_example(row: dict[str, Any], line: int, display: str, text: bool, inputs: dict[str, dict],
                  outputs: dict[str, dict], mapping: dict[str, str]) -> Example | DataError:
    problems: list[str] = []
    values: dict[str, Any] = {}
    gold: dict[str, Any] = {}

    def column_note(name: str) -> str:
        return f" (column `{mapping[name]}`)" if name in mapping else ""

    for name, field in inputs.items():
        schema = field["schema"]
        present, value = _field_value(row, mapping.get(name, name), schema, text, is_input=True)
        if not present:
            if "null" in _schema_types(schema):  # an optional input may be left out
                values[name] = None
                continue
            problems.append(f"row lacks input `{name}`{column_note(name)}")
            continue
        reason = validation_error(value, schema)
        if reason is not None:
            problems.append(f"`{name}`{column_note(name)} should be {_describe(field)}: {reason}")
        values[name] = value
    for name, field in outputs.items():
        present, value = _field_value(row, mapping.get(name, name), field["schema"], text, is_input=False)
        if not present:
            continue
        reason = _gold_error(value, field["schema"])
        if reason is not None:
            problems.append(f"`{name}`{column_note(name)} should be {_describe(field)}: {reason}")
        gold[name] = value
    if problems:
        return DataError("; ".join(problems), display, line)
    return Example(values, gold, f"{display}:{line}", row)


def load_examples(path: str | Path, inputs: dict[str, dict], outputs: dict[str, dict],
                  mapping: dict[str, str] | None = None, skip_bad_rows: bool = False,
                  limit: int | None = None) -> tuple[list[Example], list[DataError]]:
    """Examples for a pipeline with these inputs and outputs (graph.graph["inputs"/"outputs"]).

    mapping: pipeline field -> column name, for files whose columns are named differently.
    skip_bad_rows: False raises the first bad row's DataError (counting the others); True
    returns the good examples with the bad rows' errors. limit: stop once that many good
    examples are read (rows after that are not read, so they are not checked either)."""
    mapping = dict(mapping or {})
    display = str(path)
    unknown = sorted(set(mapping) - set(inputs) - set(outputs))
    if unknown:
        raise DataError(f"the column mapping names `{unknown[0]}`, which is not a field of the pipeline "
                        f"(inputs: {', '.join(inputs) or 'none'}; outputs: {', '.join(outputs) or 'none'})", display)
    if limit is not None and limit < 0:
        raise InvalidArgumentError("limit must be >= 0")
    text, rows = _open(path)
    examples: list[Example] = []
    bad: list[DataError] = []
    if limit == 0:
        return examples, bad
    for line, row in rows:
        result = row if isinstance(row, DataError) else _make_example(row, line, display, text, inputs,
                                                                      outputs, mapping)
        if isinstance(result, DataError):
            bad.append(result)
            continue
        examples.append(result)
        if limit is not None and len(examples) >= limit:
            break
    if bad and not skip_bad_rows:
        first, more = bad[0], len(bad) - 1
        if more:
            raise DataError(f"{first.message} (and {more} more bad row{'s' if more > 1 else ''}; "
                            "--skip-bad-rows skips them)", first.path, first.line, first.col)
        raise first
    return examples, bad


# --- sampling ---------------------------------------------------------------------------------


def sample(examples: list[Example], n: int, seed: int) -> list[Example]:
    """n examples drawn with this seed; all of them (shuffled) when n >= len(examples).

    The draw is a prefix of one seeded shuffle, so a larger n keeps the smaller draw's examples
    (and their cached model calls)."""
    if n < 0:
        raise InvalidArgumentError("the sample size must be >= 0")
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:n]


def split(examples: list[Example], dev_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, dev): a seeded, disjoint split, each part in the original (file) order."""
    if not 0.0 <= dev_fraction <= 1.0:
        raise InvalidArgumentError("dev_fraction must be between 0 and 1")
    total = len(examples)
    n_dev = round(total * dev_fraction)
    if 0.0 < dev_fraction < 1.0 and total >= 2:
        n_dev = min(max(n_dev, 1), total - 1)  # a fraction strictly between 0 and 1 leaves both parts non-empty
    order = list(range(total))
    random.Random(seed).shuffle(order)
    dev_ids = set(order[:n_dev])
    train = [ex for i, ex in enumerate(examples) if i not in dev_ids]
    dev = [ex for i, ex in enumerate(examples) if i in dev_ids]
    return train, dev
