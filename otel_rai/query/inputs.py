""""Which decision was this input?": hash input rows with the key and find the decisions they match.

Input files: ``.json`` (an array of rows, or JSON lines: one row a line), ``.jsonl``, or ``.csv``
(a header row of feature names). A row is an object of feature name → value, or an array of values in
column order. A model's input is hashed in its column order, so an object (and a CSV row) is put in the
column order each model of the query recorded (``ml.input.features``) whose columns it has, whatever
the order of its keys; keys that are no model's column are left out. An object that matches no recorded
order is hashed in the order it is written.

CSV cells are typed per column as ``pandas.read_csv`` does by default: a column whose every cell is
a number (or missing) holds numbers, one whose every cell is true/false holds booleans, any other
column holds strings; pandas' missing markers (empty, NA, NaN, null, …) are missing values. JSON
keeps its own types, so it is the exact choice.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from otel_rai import semconv
from otel_rai.audit.hashing import HashKey, hash_rows
from otel_rai.errors import InputError
from otel_rai.query import Backend, Decision, Query, decisions

#: pandas' default missing-value markers (``pandas.read_csv(na_values=None)``).
_NA = frozenset([
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
])
_NUMBER = re.compile(r"^\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|inf|infinity)\s*$", re.IGNORECASE)
_TRUE, _FALSE = frozenset({"True", "TRUE", "true"}), frozenset({"False", "FALSE", "false"})


@dataclass(frozen=True)
class Match:
    """One input row, its keyed hash (under the key that found it, else the first key), and the
    decisions whose input it was."""

    row: int
    input_hash: str
    decisions: tuple[Decision, ...]
    key_id: str | None = None


def _csv_column(cells: list[str]) -> list[Any]:
    present = [c for c in cells if c not in _NA]
    if present and all(_NUMBER.match(c) for c in present):
        return [None if c in _NA else float(c) for c in cells]
    if present and all(c in _TRUE or c in _FALSE for c in present):
        return [None if c in _NA else c in _TRUE for c in cells]
    return [None if c in _NA else c for c in cells]


#: One input row: an object of feature name -> value, or the values in column order.
Row = Union[Mapping[str, Any], Sequence[Any]]


def _read_csv(path: Path, text: str) -> list[Row]:
    table = list(csv.reader(io.StringIO(text, newline="")))
    names, body = table[0], table[1:]
    if any(len(r) != len(names) for r in body):
        raise InputError(f"{path}: every CSV row must have as many cells as the header ({len(names)})")
    columns = [_csv_column([r[j] for r in body]) for j in range(len(names))]
    return [dict(zip(names, cells)) for cells in zip(*columns)] if columns else [{} for _ in body]


def _read_json(path: Path, text: str) -> list[Row]:
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise InputError(f"{path}: neither a JSON array of rows nor JSON lines ({exc})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, (dict, list)) for r in data):
        raise InputError(f"{path}: rows must be JSON objects (feature: value) or arrays of values")
    return data


def read_rows(path: str | Path) -> list[Row]:
    """The rows of an input file (see the module docstring): objects (a CSV row is one) or arrays. A file
    that cannot be read, is not UTF-8, or holds no row is an `InputError` naming it."""
    path = Path(path)
    readers = {".csv": _read_csv, ".json": _read_json, ".jsonl": _read_json, ".ndjson": _read_json}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise InputError(f"{path}: give a .json, .jsonl or .csv file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    if not text.strip():
        raise InputError(f"{path} is empty: no input rows to verify")
    rows = reader(path, text)
    if not rows:
        raise InputError(f"{path} holds no input rows")
    return rows


def candidates(row: Row, orders: Sequence[Sequence[str]]) -> list[list[Any]]:
    """The cell lists a row may have been hashed as: an array as it is; an object in each recorded column
    order whose every column it has (else in the order it is written)."""
    if not isinstance(row, Mapping):
        return [list(row)]
    cells = [[row[f] for f in order] for order in dict.fromkeys(map(tuple, orders)) if all(f in row for f in order)]
    return cells or [list(row.values())]


def match(rows: Sequence[Row], keys: HashKey | Sequence[HashKey], query: Query, backend: Backend,
          orders: Sequence[Sequence[str]] = ()) -> list[Match]:
    """Hash each row with each key (objects in every column order of `orders` they fit, see `candidates`)
    and find the decisions (within `query`'s other filters) it matches.

    Several keys verify a trail across key rotations: a decision matches a row's hash under the key
    whose id it recorded (``ml.input.hash.key_id``).
    """
    keys = [keys] if isinstance(keys, HashKey) else list(keys)
    cells = [candidates(r, orders) for r in rows]
    # Rows of one width are hashed together: {width: [(row, candidate), ...]}.
    by_width: dict[int, list[tuple[int, int]]] = {}
    for i, options in enumerate(cells):
        for j, option in enumerate(options):
            by_width.setdefault(len(option), []).append((i, j))
    hashed: dict[tuple[str, int, int], str] = {}
    for width, where in by_width.items():
        table = _object_rows([cells[i][j] for i, j in where], width)
        for k in keys:
            hashed.update(((k.key_id, i, j), h) for (i, j), h in zip(where, hash_rows(table, k)))
    found: dict[tuple[str | None, str | None], list[Decision]] = {}
    for d in decisions(replace(query, input_hashes=frozenset(hashed.values())), backend):
        found.setdefault((d.attributes.get(semconv.INPUT_HASH_KEY_ID), d.input_hash), []).append(d)
    out = []
    for i, options in enumerate(cells):
        hits: dict[tuple[str, str], list[Decision]] = {}
        for k in keys:
            for j in range(len(options)):
                h = hashed[(k.key_id, i, j)]
                ds = found.get((k.key_id, h), []) + found.get((None, h), [])
                if ds:
                    hits[(k.key_id, h)] = ds
        key_id, input_hash = next(iter(hits), (keys[0].key_id, hashed[(keys[0].key_id, i, 0)]))
        out.append(Match(i, input_hash, tuple(d for ds in hits.values() for d in ds), key_id))
    return out


def _object_rows(rows: Sequence[Sequence[Any]], width: int) -> np.ndarray:
    """Rows as a 2-D object array: each cell keeps its Python type, as in a DataFrame of mixed columns."""
    table = np.empty((len(rows), width), dtype=object)
    for i, r in enumerate(rows):
        table[i, :] = list(r)
    return table
