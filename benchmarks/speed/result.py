"""The one JSON shape every speed benchmark's ``--json`` writes, its writer and its reader.

    {"benchmark": "mask_step", "schema": 1,
     "config": {...the resolved options...},
     "rows": [{"name": "2 layers", "kind": "depth",
               "fields": {"plain_ms": {"value": 6.1, "unit": "ms/step"}, ...}}, ...],
     "summary": ["the key lines the benchmark printed"],
     "provenance": {...subind.provenance.provenance()...}}

A row is one measured (or projected) thing: a path, a depth, a setting. ``kind`` says which of
its benchmark's kinds of row it is, ``name`` tells it from the other rows (names are unique).
A field's value is a number, a list of numbers (the samples behind a median), a string, a
boolean or null. Every number and list of numbers carries its unit; strings and booleans have
the unit ""; a null keeps the unit its number would have had.

Standard library only at import time: tools/gpu_check_table.py reads these files where torch
may not import; the writer imports subind (which imports torch) only when it is called.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1
_TOP_KEYS = ("benchmark", "schema", "config", "rows", "summary", "provenance")
_ROW_KEYS = ("name", "kind", "fields")
_FIELD_KEYS = ("value", "unit")

Value = int | float | str | bool | list[float] | None


@dataclass(frozen=True)
class Field:
    """One named value of a row and its unit ("" for strings and booleans)."""

    value: Value
    unit: str = ""


@dataclass(frozen=True)
class Row:
    """One measured or projected thing: its unique name, its kind, its fields."""

    name: str
    kind: str
    fields: Mapping[str, Field] = field(default_factory=dict)

    def value(self, key: str) -> Value:
        """The value of field ``key``; None when the row has no such field."""
        f = self.fields.get(key)
        return None if f is None else f.value


@dataclass(frozen=True)
class Result:
    """A benchmark's output as read back: what ran, with which options, and its rows."""

    benchmark: str
    config: Mapping[str, Any]
    rows: tuple[Row, ...]
    summary: tuple[str, ...] = ()
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def rows_of(self, kind: str) -> list[Row]:
        """The rows of one kind, in the order they were written."""
        return [r for r in self.rows if r.kind == kind]

    def row(self, name: str) -> Row | None:
        """The row named ``name``, or None."""
        return next((r for r in self.rows if r.name == name), None)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_field(where: str, obj: Any) -> Field:
    if not isinstance(obj, dict) or sorted(obj) != sorted(_FIELD_KEYS):
        raise ValueError(f"{where}: a field is {{'value': ..., 'unit': ...}}, got {obj!r:.80}")
    value, unit = obj["value"], obj["unit"]
    if not isinstance(unit, str):
        raise ValueError(f"{where}: the unit must be a string, got {unit!r:.40}")
    samples = isinstance(value, list | tuple) and all(_is_number(v) for v in value)
    if _is_number(value) or samples:
        if not unit:
            raise ValueError(f"{where}: the number {value!r:.40} has no unit")
    elif isinstance(value, str | bool):
        if unit:
            raise ValueError(f"{where}: {value!r:.40} is not a number but has the unit {unit!r}")
    elif value is not None:
        raise ValueError(
            f"{where}: a value is a number, a list of numbers, a string, a boolean or null, "
            f"got {type(value).__name__}"
        )
    return Field(list(value) if samples else value, unit)


def _check_row(where: str, obj: Any) -> Row:
    if not isinstance(obj, dict) or sorted(obj) != sorted(_ROW_KEYS):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{where}: a row has exactly the keys name, kind, fields; got {keys}")
    name, kind, fields = obj["name"], obj["kind"], obj["fields"]
    for key, text in (("name", name), ("kind", kind)):
        if not isinstance(text, str) or not text:
            raise ValueError(f"{where}.{key}: a non-empty string, got {text!r:.40}")
    if not isinstance(fields, dict) or not all(isinstance(k, str) and k for k in fields):
        raise ValueError(f"{where}.fields: a mapping of non-empty names to fields")
    return Row(name, kind, {k: _check_field(f"{where}.fields.{k}", v) for k, v in fields.items()})


def parse_result(obj: Any, benchmark: str | None = None) -> Result:
    """The :class:`Result` that ``obj`` (parsed JSON) holds; ValueError with a one-line message
    naming the first thing of the wrong shape. ``benchmark``: the benchmark it must be from."""
    if not isinstance(obj, dict) or sorted(obj) != sorted(_TOP_KEYS):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"not a speed benchmark result: expected the keys {_TOP_KEYS}, got {keys}")
    if obj["schema"] != SCHEMA or isinstance(obj["schema"], bool):
        raise ValueError(f"schema {obj['schema']!r:.20}: this reader knows schema {SCHEMA}")
    name = obj["benchmark"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"benchmark: a non-empty string, got {name!r:.40}")
    if benchmark is not None and name != benchmark:
        raise ValueError(f"benchmark {name!r}, expected {benchmark!r}")
    for key in ("config", "provenance"):
        if not isinstance(obj[key], dict):
            raise ValueError(f"{key}: a mapping, got {type(obj[key]).__name__}")
    if not isinstance(obj["rows"], list | tuple):
        raise ValueError(f"rows: a list, got {type(obj['rows']).__name__}")
    rows = tuple(_check_row(f"rows[{i}]", r) for i, r in enumerate(obj["rows"]))
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"rows: the name {twice!r} is used twice (names tell rows apart)")
    summary = obj["summary"]
    if not isinstance(summary, list | tuple) or not all(isinstance(s, str) for s in summary):
        raise ValueError("summary: a list of strings")
    if any("\n" in s for s in summary):
        raise ValueError("summary: each entry is one line")
    return Result(name, obj["config"], rows, tuple(summary), obj["provenance"])


def read_result(path: str | os.PathLike, benchmark: str | None = None) -> Result:
    """The result in the JSON file ``path``; ValueError (one line, naming the file) when the
    file is not JSON or not of the shape (or not from ``benchmark``, when given)."""
    try:
        return parse_result(json.loads(Path(path).read_text()), benchmark)
    except ValueError as e:  # json's errors are ValueErrors too, and one line
        raise ValueError(f"{path}: {e}") from None


def to_json(result: Result) -> dict[str, Any]:
    """The JSON object of ``result`` (what :func:`write_result` writes)."""
    rows = [
        {
            "name": r.name,
            "kind": r.kind,
            "fields": {k: {"value": f.value, "unit": f.unit} for k, f in r.fields.items()},
        }
        for r in result.rows
    ]
    return {
        "benchmark": result.benchmark,
        "schema": SCHEMA,
        "config": dict(result.config),
        "rows": rows,
        "summary": list(result.summary),
        "provenance": dict(result.provenance),
    }


def write_result(
    path: str | os.PathLike,
    benchmark: str,
    config: Mapping[str, Any],
    rows: Sequence[Row],
    summary: Sequence[str] = (),
    provenance: Mapping[str, Any] | None = None,
) -> Result:
    """Check the result and write it to ``path`` atomically (a reader never sees half a file);
    ValueError before writing anything when it is not of the shape. ``provenance``: computed
    here when None (a benchmark that rewrites its file often passes its own, computed once)."""
    from subind.io import write_json_atomic  # imports torch: only where results are written

    if provenance is None:
        from subind.provenance import provenance as current

        provenance = current()
    result = Result(benchmark, dict(config), tuple(rows), tuple(summary), dict(provenance))
    obj = to_json(result)
    checked = parse_result(obj)
    write_json_atomic(path, obj)
    return checked
