""""Which decision was this input?": hash input rows with the key and find the decisions they match.

Input files: ``.json`` (an array of rows, or JSON lines: one row a line), ``.jsonl``, or ``.csv``
(a header row of feature names). A row is an object of feature name → value, or an array of values in
column order. Objects are put in the column order recorded for the model (``ml.input.features``) when
`features` is given, else in the order they are written.

CSV cells are typed per column as ``pandas.read_csv`` does by default: a column whose every cell is
a number (or missing) holds numbers, one whose every cell is true/false holds booleans, any other
column holds strings; pandas' missing markers (empty, NA, NaN, null, …) are missing values. JSON
keeps its own types, so it is the exact choice.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

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


def _read_csv(path: Path) -> tuple[list[str], list[list[Any]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        table = list(csv.reader(f))
    if not table:
        raise InputError(f"{path}: the CSV file is empty")
    names, body = table[0], table[1:]
    if any(len(r) != len(names) for r in body):
        raise InputError(f"{path}: every CSV row must have as many cells as the header ({len(names)})")
    columns = [_csv_column([r[j] for r in body]) for j in range(len(names))]
    return names, [list(cells) for cells in zip(*columns)] if columns else [[] for _ in body]


def _read_json(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
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


def read_rows(path: str | Path, features: Sequence[str] | None = None) -> list[list[Any]]:
    """The rows of an input file as lists of cells in column order (see the module docstring)."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".csv":
            names, rows = _read_csv(path)
            records: list[Any] = [dict(zip(names, r)) for r in rows] if features else rows
        elif path.suffix.lower() in (".json", ".jsonl", ".ndjson"):
            records = _read_json(path)
        else:
            raise InputError(f"{path}: give a .json, .jsonl or .csv file")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    out = []
    for i, r in enumerate(records):
        if isinstance(r, dict):
            order = list(features) if features else list(r)
            missing = [f for f in order if f not in r]
            if missing:
                raise InputError(f"{path}: row {i} has no value for {', '.join(missing)}")
            r = [r[f] for f in order]
        out.append(r)
    return out


def match(rows: Sequence[Sequence[Any]], keys: HashKey | Sequence[HashKey], query: Query,
          backend: Backend) -> list[Match]:
    """Hash each row with each key and find the decisions (within `query`'s other filters) it matches.

    Several keys verify a trail across key rotations: a decision matches a row's hash under the key
    whose id it recorded (``ml.input.hash.key_id``).
    """
    keys = [keys] if isinstance(keys, HashKey) else list(keys)
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise InputError(f"rows have different numbers of cells: {sorted(widths)}")
    table = _object_rows(rows) if rows else None
    hashed = {k.key_id: hash_rows(table, k) if rows else [] for k in keys}
    wanted = frozenset(h for hashes in hashed.values() for h in hashes)
    found: dict[tuple[str | None, str | None], list[Decision]] = {}
    for d in decisions(replace(query, input_hashes=wanted), backend):
        found.setdefault((d.attributes.get(semconv.INPUT_HASH_KEY_ID), d.input_hash), []).append(d)
    out = []
    for i in range(len(rows)):
        hits = {k.key_id: found.get((k.key_id, hashed[k.key_id][i]), []) + found.get((None, hashed[k.key_id][i]), [])
                for k in keys}
        key_id = next((k for k, ds in hits.items() if ds), keys[0].key_id)
        out.append(Match(i, hashed[key_id][i], tuple(d for ds in hits.values() for d in ds), key_id))
    return out


def _object_rows(rows: Sequence[Sequence[Any]]) -> np.ndarray:
    """Rows as a 2-D object array: each cell keeps its Python type, as in a DataFrame of mixed columns."""
    table = np.empty((len(rows), len(rows[0])), dtype=object)
    for i, r in enumerate(rows):
        table[i, :] = list(r)
    return table
