"""Keyed, canonical hashes of input rows (``ml.input.hashes``).

A plain SHA-256 of a feature row can be reversed by trying every plausible row, so every hash is keyed:
BLAKE2b with a 16-byte digest, the secret key, and the personalization ``otel-rai.row.v1``. The key is
what `derive` makes of the key material (scheme ``blake2b-128/v2``): scrypt stretches it, so that
guessing a human-chosen key from a span (its key id, or a hash of a row one knows) costs tens of
milliseconds a guess; the key id is an HMAC under the stretched key and says nothing else about it.
Scheme ``blake2b-128/v1`` (earlier versions) used the material itself; `HashKey.variants` gives both,
to verify old decisions.

The bytes hashed for a row are its cells, in column order, each encoded as

* a real number (bool, int, float, numpy numeric, pandas nullable): ``b"n"`` + the value as a
  little-endian IEEE-754 float64. ``-0.0`` is hashed as ``0.0``. float32 and float16 values are first
  rounded to the shortest decimal that round-trips in their own precision (``float32(0.1)`` hashes
  like ``0.1``), so the number an applicant typed matches whatever width the pipeline used.
* missing (NaN of any payload, ``None``, ``pandas.NA``, ``NaT``): ``b"m"`` + 8 zero bytes.
* a string: ``b"s"`` + the UTF-8 length as little-endian uint64 + the UTF-8 bytes (a lone surrogate,
  which UTF-8 cannot encode, as its three bytes of generalised UTF-8: ``"\ud800"`` is ``ED A0 80``).
* bytes: ``b"b"`` + length + the bytes.
* anything else: ``b"o"`` + length + the UTF-8 of ``str(value)``.

Pandas categoricals are hashed by their label, sparse rows as their dense equivalent, and 1-D batch input
(for example a list of texts) as rows of one cell. Column names are not hashed, so a numpy row, a
DataFrame row and a list of the same values give the same hash. See ``docs/hashing.md``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
import struct
import sys
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from otel_rai import settings
from otel_rai.codec import native
from otel_rai.errors import InputError

_log = logging.getLogger(__name__)

SCHEME = "blake2b-128/v2"
#: Decisions recorded before key stretching: the raw material was the key, and its id a plain digest.
LEGACY_SCHEME = "blake2b-128/v1"
#: scrypt's cost: about 40 ms and 16 MiB once per key and process (2 cores, 2024), per guess for an attacker.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1
_SCRYPT_MAXMEM = 64 << 20
#: Key material otel-rai refuses to record with: too short, or too few distinct bytes to be random.
MIN_KEY_BYTES = 16
MIN_DISTINCT_BYTES = 8
_PERSON = b"otel-rai.row.v1"
_DIGEST_SIZE = 16
_CELL = np.dtype([("tag", "u1"), ("value", "<f8")])  # packed: 9 bytes a cell
_MISSING_CELL = b"m" + bytes(8)
_FAST_TYPES = frozenset({float, int, bool, np.float64, np.int64, np.int32, np.bool_})
#: Sparse input is made dense this many rows at a time (bounds the memory of one dense chunk).
_SPARSE_CHUNK = 4096
#: A DataFrame of at most this many cells is converted to objects in one go (see `_hash_frame`).
_SMALL_FRAME_CELLS = 4096
#: A frame of at most this many rows is encoded cell by cell: vectorising a column costs a few µs, a
#: cell a few tenths, so a request's row or few is cheaper cell by cell.
_CELLWISE_ROWS = 8
_PACK_F64 = struct.Struct("<d").pack
#: How text becomes bytes: UTF-8, a lone surrogate (which UTF-8 cannot encode) as its 3-byte generalised
#: UTF-8 form (WTF-8), so that any Python string hashes, and no valid string hashes like it.
_WTF8 = "surrogatepass"


def material_bytes(material: str | bytes) -> bytes:
    """Key material as bytes (a string as UTF-8); empty material is refused."""
    raw = material.encode("utf-8", _WTF8) if isinstance(material, str) else bytes(material)
    if not raw:
        raise InputError("the hash key is empty")
    return raw


@functools.lru_cache(maxsize=64)
def derive(raw: bytes, purpose: bytes) -> tuple[bytes, str]:
    """(a 32-byte key, its 16-hex-digit id) from key material, for `purpose` (a label that keeps the
    keys of different uses apart). scrypt with a fixed salt, the label: the material alone names the
    key, as it must for a key given by a variable; the cost makes each guess dear."""
    key = hashlib.scrypt(raw, salt=b"otel-rai.key.v2:" + purpose, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                         maxmem=_SCRYPT_MAXMEM, dklen=32)
    return key, hmac.new(key, b"otel-rai.key-id", hashlib.sha256).hexdigest()[:16]


def check_strength(raw: bytes, what: str = "hash key") -> None:
    """Refuse key material that a guess could find: fewer than `MIN_KEY_BYTES` bytes or
    `MIN_DISTINCT_BYTES` distinct ones (the value is never shown)."""
    if len(raw) < MIN_KEY_BYTES or len(set(raw)) < MIN_DISTINCT_BYTES:
        raise InputError(
            f"the {what} is too weak to keep what it protects secret: {len(raw)} bytes, {len(set(raw))} "
            f"distinct (at least {MIN_KEY_BYTES} and {MIN_DISTINCT_BYTES}); use a random one, e.g. "
            "python -c 'import secrets; print(secrets.token_hex(32))'")

#: Random bytes of a generated key (written to the key file as hex).
_GENERATED_KEY_BYTES = 32


@dataclass(frozen=True)
class HashKey:
    """A secret row-hashing key. Only `key_id` is ever exported; `repr` never shows the secret."""

    secret: bytes = field(repr=False)
    key_id: str
    scheme: str = SCHEME

    @classmethod
    def from_material(cls, material: str | bytes, scheme: str = SCHEME) -> HashKey:
        """The key of `material` under `scheme` (`SCHEME`, or `LEGACY_SCHEME` to verify old decisions)."""
        raw = material_bytes(material)
        if scheme == LEGACY_SCHEME:
            if len(raw) > 64:  # BLAKE2b takes at most 64 key bytes
                raw = hashlib.blake2b(raw, digest_size=64, person=b"otel-rai.longkey").digest()
            return cls(raw, hashlib.blake2b(raw, digest_size=8, person=b"otel-rai.keyid").hexdigest(), scheme)
        if scheme != SCHEME:
            raise InputError(f"unknown input hash scheme {scheme!r}")
        return cls(*derive(raw, b"input-hash"), scheme)

    @classmethod
    def variants(cls, material: str | bytes) -> list[HashKey]:
        """The key of `material` under every scheme: a verifier matches each decision by its key id."""
        return [cls.from_material(material, SCHEME), cls.from_material(material, LEGACY_SCHEME)]



def resolve_key(hash_key: str | bytes | HashKey | None = None, *, recording: bool = False) -> HashKey:
    """The key from `hash_key`, else ``OTEL_RAI_HASH_KEY``, else the generated key file. `recording`
    (a session that hashes decisions) refuses weak material (`check_strength`)."""
    if isinstance(hash_key, HashKey):
        return hash_key
    material = hash_key if hash_key is not None else settings.from_env("hash_key")
    if material is not None and recording:
        check_strength(material_bytes(material))
    if material is None:
        path, created = _generated_key_file()
        material = path.read_text().strip()
        if created:  # said once, by the process that made it: every later process reads the same key
            _log.warning(
                "otel-rai: no hash key configured (hash_key= or OTEL_RAI_HASH_KEY); generated the key file %s. "
                "Keep it: without it no input hash can be verified.",
                path,
            )
    return HashKey.from_material(material)


def _generated_key_file() -> tuple[Path, bool]:
    """The generated key file: outside the data directory (`settings.hash_key_file`); one left in the
    data directory by an earlier version is still used, with a warning to move it."""
    path = settings.hash_key_file()
    if path.exists():
        return path, False
    legacy = settings.legacy_hash_key_file()
    if legacy.exists():
        _log.warning("otel-rai: the hash key file %s is in the data directory, next to the audit store; "
                     "move it to %s", legacy, path)
        return legacy, False
    settings.private_directory(path.parent)
    try:
        # O_EXCL: two processes starting at once must not each write their own key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path, False
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(_GENERATED_KEY_BYTES) + "\n")
    return path, True


# --- canonical cells ---------------------------------------------------------------------------


def _canonical_f64(a: np.ndarray) -> np.ndarray:
    """float64 values under the width rule (narrow floats via their shortest decimal)."""
    if a.dtype.kind == "f" and a.dtype.itemsize < 8:
        return a.astype(str).astype(np.float64)
    return a.astype(np.float64, copy=False)


def _numeric_cells(a: np.ndarray) -> np.ndarray:
    """Encode a 2-D numeric array as packed cells (vectorised twin of `_encode_cell`)."""
    a = _canonical_f64(a)
    missing = np.isnan(a)
    cells = np.empty(a.shape, _CELL)
    if missing.any():
        cells["tag"] = np.where(missing, ord("m"), ord("n"))
        a = np.where(missing, 0.0, a)
    else:  # the usual input, with no missing value: nothing to pick between
        cells["tag"] = ord("n")
    cells["value"] = a + 0.0  # + 0.0 turns -0.0 into 0.0
    return cells


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        try:
            return bool(pandas.isna(v))
        except (TypeError, ValueError):
            return False
    return isinstance(v, (float, np.floating)) and v != v


def _cell(v: Any) -> bytes:
    """`_encode_cell`, the commonest cells first."""
    kind = type(v)
    if kind is float:
        return _MISSING_CELL if v != v else b"n" + _PACK_F64(v + 0.0)
    if kind is str:
        return _tagged(b"s", v.encode("utf-8", _WTF8))
    return _encode_cell(v)


def _tagged(tag: bytes, data: bytes) -> bytes:
    return tag + struct.pack("<Q", len(data)) + data


def _encode_cell(v: Any) -> bytes:
    """Canonical bytes of one cell (see the module docstring)."""
    if isinstance(v, (str, np.str_)):
        return _tagged(b"s", str(v).encode("utf-8", _WTF8))
    if isinstance(v, (bytes, np.bytes_)):
        return _tagged(b"b", bytes(v))
    if _is_missing(v):
        return _MISSING_CELL
    if isinstance(v, (Real, np.bool_)):
        try:
            f = float(str(v)) if isinstance(v, (np.float32, np.float16)) else float(v)
        except OverflowError:  # an int beyond float64's range
            return _tagged(b"o", str(v).encode("utf-8", _WTF8))
        return b"n" + struct.pack("<d", f + 0.0)
    return _tagged(b"o", str(v).encode("utf-8", _WTF8))


# --- rows --------------------------------------------------------------------------------------


def _digests(rows: Iterable[bytes | memoryview], key: HashKey) -> list[str]:
    base = hashlib.blake2b(key=key.secret, digest_size=_DIGEST_SIZE, person=_PERSON)
    out = []
    for row in rows:
        h = base.copy()  # copying the keyed state skips re-absorbing the key block per row
        h.update(row)
        out.append(h.hexdigest())
    return out


def _hash_numeric(a: np.ndarray, key: HashKey) -> list[str]:
    n, d = a.shape
    cells = _numeric_cells(a)
    w = d * _CELL.itemsize
    if native.module is not None:  # the same digests, each row's without a Python step
        return native.module.blake2b_rows(key.secret, _PERSON, _DIGEST_SIZE, cells.view(np.uint8), n, w)
    buf = memoryview(cells.tobytes())
    return _digests((buf[i * w : (i + 1) * w] for i in range(n)), key)


def _column_cells(col: np.ndarray) -> list[bytes]:
    """Encoded cells of one column, vectorised when every value is a plain number."""
    if col.dtype.kind in "biuf":
        buf = _numeric_cells(col.reshape(-1, 1)).tobytes()
        return [buf[i : i + 9] for i in range(0, len(buf), 9)]
    if col.dtype == object and all(type(v) in _FAST_TYPES for v in col):
        try:
            return _column_cells(col.astype(np.float64))
        except OverflowError:  # an int beyond float64: `_encode_cell` records it as text
            pass
    return [_encode_cell(v) for v in col]


def _hash_columns(columns: Sequence[Sequence[bytes]], key: HashKey) -> list[str]:
    return _digests((b"".join(cells) for cells in zip(*columns)), key)


def _frame_column(col: Any) -> np.ndarray | list[bytes]:
    """A DataFrame column as a numeric array, or as encoded cells."""
    dtype = col.dtype
    if getattr(dtype, "name", "") == "category":
        labels = [_encode_cell(c) for c in dtype.categories]
        return [labels[c] if c >= 0 else _MISSING_CELL for c in col.cat.codes.to_numpy()]
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return _canonical_f64(col.to_numpy())
    if getattr(dtype, "kind", "O") in "biuf":  # pandas nullable Int64 / Float32 / Float64 / boolean
        narrow = dtype.kind == "f" and dtype.itemsize < 8
        return _canonical_f64(col.to_numpy(dtype=np.float32 if narrow else np.float64, na_value=np.nan))
    return [_encode_cell(v) for v in col.to_numpy(dtype=object)]


def _wide_number(dtype: Any) -> bool:
    """A numpy numeric dtype that converts to float64 without the narrow-float rule."""
    return isinstance(dtype, np.dtype) and dtype.kind in "biuf" and not (dtype.kind == "f" and dtype.itemsize < 8)


def _hash_frame(df: Any, key: HashKey) -> list[str]:
    dtypes = list(df.dtypes)
    if dtypes and all(map(_wide_number, dtypes)):
        return _hash_numeric(df.to_numpy(dtype=np.float64), key)
    if df.size <= _SMALL_FRAME_CELLS and not any(getattr(d, "kind", "") == "f" for d in dtypes if not _wide_number(d)):
        # A request-sized frame: one conversion to objects costs less than a Series per column, and
        # categoricals, nullable NA and strings come out as the values `_encode_cell` expects.
        cells = df.to_numpy(dtype=object)
        if len(cells) <= _CELLWISE_ROWS:
            return _digests([b"".join(map(_cell, row)) for row in cells.tolist()], key)
        return _hash_columns([_column_cells(cells[:, j]) for j in range(cells.shape[1])], key)
    cols = [_frame_column(column) for _, column in df.items()]
    if all(isinstance(c, np.ndarray) for c in cols):
        if not cols:
            return _hash_numeric(np.empty((len(df), 0)), key)
        return _hash_numeric(np.column_stack(cols), key)
    return _hash_columns([_column_cells(c) if isinstance(c, np.ndarray) else c for c in cols], key)


def hash_rows(X: Any, key: HashKey) -> list[str]:
    """One hex digest per row of a batch, for any input sklearn accepts (see module docstring)."""
    if hasattr(X, "iloc") and hasattr(X, "columns"):
        return _hash_frame(X, key)
    if hasattr(X, "iloc"):  # a Series batch: one cell a row
        return _hash_frame(X.to_frame(), key)
    sparse = sys.modules.get("scipy.sparse")
    if sparse is not None and sparse.issparse(X):
        X = X.tocsr()
        out: list[str] = []
        for start in range(0, X.shape[0], _SPARSE_CHUNK):
            out += _hash_numeric(X[start : start + _SPARSE_CHUNK].toarray(), key)
        return out
    a = np.asarray(X) if isinstance(X, np.ndarray) else np.array(X, dtype=object)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2:
        raise ValueError(f"otel-rai: cannot hash a {a.ndim}-D input; rows must be 1-D")
    if a.dtype.kind in "biuf":
        return _hash_numeric(a, key)
    return _hash_columns([_column_cells(a[:, j]) for j in range(a.shape[1])], key)


#: Inputs of at most this many rows are worth joining with others: a one-row input costs mostly the
#: per-call setup of `hash_rows`, which a joined pass pays once.
_JOIN_ROWS = 64


def hash_rows_many(inputs: Sequence[Any], key: HashKey) -> list[list[str] | None]:
    """`hash_rows` of each of `inputs`, where the small 2-D numeric arrays of one dtype and width are
    hashed in one vectorised pass (the same digests: a row's hash does not depend on its neighbours).
    None for an input left out (any other kind), for `hash_rows` to hash alone."""
    out: list[list[str] | None] = [None] * len(inputs)
    groups: dict[tuple[np.dtype, int], list[int]] = {}
    for i, X in enumerate(inputs):
        if type(X) is np.ndarray and X.ndim == 2 and X.shape[0] <= _JOIN_ROWS and X.dtype.kind in "biuf":
            groups.setdefault((X.dtype, X.shape[1]), []).append(i)
    for members in groups.values():
        digests = _hash_numeric(np.concatenate([inputs[i] for i in members]), key)
        offset = 0
        for i in members:
            n = inputs[i].shape[0]
            out[i] = digests[offset : offset + n]
            offset += n
    return out


def hash_input(
    row: Any,
    key: str | bytes | HashKey | None = None,
    *,
    feature_names: Sequence[str] | None = None,
) -> str:
    """Recompute the ``ml.input.hashes`` entry of one input row.

    `row` is a list, a 1-D array, a pandas Series, a one-row DataFrame or 2-D array, or a mapping of
    feature name to value (then `feature_names` gives the column order, as recorded in
    ``ml.input.features``). `key` defaults to the configured key, as in `instrument()`.
    """
    k = resolve_key(key)
    if isinstance(row, Mapping):
        if feature_names is None:
            raise ValueError("otel-rai: hash_input(): a mapping row needs feature_names= (the column order)")
        missing = [f for f in feature_names if f not in row]
        if missing:
            raise ValueError(f"otel-rai: hash_input(): the row has no value for {missing}")
        row = [row[f] for f in feature_names]
    if hasattr(row, "iloc") and not hasattr(row, "columns"):  # a Series is one row
        row = row.to_numpy(dtype=object)
    if hasattr(row, "shape") and len(row.shape) == 2:
        if row.shape[0] != 1:
            raise ValueError(f"otel-rai: hash_input() takes one row, got {row.shape[0]}")
        return hash_rows(row, k)[0]
    values = np.asarray(row) if isinstance(row, np.ndarray) else np.array(list(row), dtype=object)
    if values.ndim != 1:
        raise ValueError(f"otel-rai: hash_input() takes one row (a 1-D sequence of cells), got a {values.ndim}-D input")
    return hash_rows(values.reshape(1, -1), k)[0]


# --- many rows at once: the training data (docs/hashing.md) --------------------------------------


def canonical_rows(X: Any) -> bytes:
    """The bytes `hash_rows` hashes for each row of `X`, concatenated row after row: the stream that the
    training-data hash reads a chunk of rows at a time."""
    if hasattr(X, "iloc"):
        frame = X if hasattr(X, "columns") else X.to_frame()
        if all(map(_wide_number, frame.dtypes)):
            return _numeric_cells(frame.to_numpy(dtype=np.float64)).tobytes()
        columns = [_frame_column(column) for _, column in frame.items()]
        return b"".join(b"".join(row) for row in zip(*(
            _column_cells(c) if isinstance(c, np.ndarray) else c for c in columns)))
    sparse = sys.modules.get("scipy.sparse")
    if sparse is not None and sparse.issparse(X):
        return _numeric_cells(X.toarray()).tobytes()
    a = np.asarray(X) if isinstance(X, np.ndarray) else np.array(X, dtype=object)
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2:
        raise ValueError(f"cannot hash a {a.ndim}-D input; rows must be 1-D")
    if a.dtype.kind in "biuf":
        return _numeric_cells(a).tobytes()
    return b"".join(b"".join(row) for row in zip(*(_column_cells(a[:, j]) for j in range(a.shape[1]))))


def row_digest(data: bytes, key: HashKey) -> str:
    """The ``ml.input.hashes`` digest of one row's canonical bytes (`canonical_rows` of that row)."""
    return _digests([data], key)[0]
