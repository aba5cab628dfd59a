"""The training-data fingerprint: a keyed hash of what a fit under ``instrument()`` trained on.

`TrainingHash` reads X, y and the sample weights a chunk of `CHUNK_ROWS` rows at a time, so a large
training set is never copied whole; each part is ``tag + rows + columns`` (little-endian uint64) and then
the canonical cells of its rows, exactly the cells the input hashes use (``docs/hashing.md``). It is keyed
like them: without the key, the hash cannot be tested against guessed training sets. A ``partial_fit``
continues the stream of the model's earlier fit and batches, so the hash covers all of them in order.

`TrainingLog` is the fit observer (`otel_rai.capture.patching.FitObserver`): on the fitting thread, after
each outermost successful fit, it hashes the data and remembers the result by the fitted model's
fingerprint, for the model record.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import inspect
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from otel_rai.audit.hashing import HashKey, canonical_rows, resolve_key

SCHEME = "blake2b-128/train.v1"
_PERSON = b"otel-rai.train.1"
_DIGEST_SIZE = 16
#: Rows hashed at a time: bounded memory for the encoded cells, few enough Python calls per row.
CHUNK_ROWS = 4096
#: Fitted models whose training is remembered (the oldest forgotten first).
MAX_REMEMBERED = 1024
_PARTS = ((b"X", "X"), (b"y", "y"), (b"w", "sample_weight"))


def _shape(part: Any) -> tuple[Any, int, int]:
    """(the part as something sliceable by rows, rows, columns)."""
    if hasattr(part, "iloc"):
        return part, len(part), (part.shape[1] if part.ndim == 2 else 1)
    if not hasattr(part, "shape") or not hasattr(part, "__getitem__"):
        part = np.asarray(part) if _numeric_list(part) else np.array(part, dtype=object)
    shape = part.shape
    return part, int(shape[0]), int(shape[1]) if len(shape) == 2 else 1


def _numeric_list(part: Any) -> bool:
    try:
        return np.asarray(part).dtype.kind in "biuf"
    except (ValueError, TypeError):  # ragged, or cells numpy cannot hold
        return False


class TrainingHash:
    """The keyed hash of training data, fed one fit (or one ``partial_fit`` batch) at a time."""

    def __init__(self, key: HashKey) -> None:
        self._h = hashlib.blake2b(key=key.secret, digest_size=_DIGEST_SIZE, person=_PERSON)
        self.key_id = key.key_id
        self.rows = 0
        self.batches = 0

    def update(self, X: Any, y: Any = None, sample_weight: Any = None) -> None:
        """Hash one fit's (or one ``partial_fit`` batch's) data, continuing the stream."""
        parts = {"X": X, "y": y, "sample_weight": sample_weight}
        rows = None
        for tag, name in _PARTS:
            if parts[name] is None:
                continue
            part, n, columns = _shape(parts[name])
            rows = n if rows is None else rows
            self._h.update(tag + struct.pack("<QQ", n, columns))
            rows_of = part.iloc if hasattr(part, "iloc") else part
            for start in range(0, n, CHUNK_ROWS):
                self._h.update(canonical_rows(rows_of[start : start + CHUNK_ROWS]))
        self.rows += rows or 0
        self.batches += 1

    def copy(self) -> TrainingHash:
        """An independent copy of the stream so far."""
        other = TrainingHash.__new__(TrainingHash)
        other._h, other.key_id, other.rows, other.batches = self._h.copy(), self.key_id, self.rows, self.batches
        return other

    def hexdigest(self) -> str:
        """The hash of everything fed so far: 32 hex digits."""
        return self._h.hexdigest()


def hash_training(X: Any, y: Any = None, *, sample_weight: Any = None, key: str | bytes | HashKey | None = None) -> str:
    """The ``ml.model.training.hash`` of a fit on (X, y, sample_weight): 32 hex digits.

    `key` defaults to the configured input hash key, as in `instrument()`. For ``partial_fit`` batches,
    feed them in order to one `TrainingHash`.
    """
    h = TrainingHash(resolve_key(key))
    h.update(X, y, sample_weight)
    return h.hexdigest()


@dataclass(frozen=True)
class Training:
    """What one model was trained on, as its record says it."""

    hash: str
    key_id: str
    rows: int
    method: str
    batches: int
    end_ns: int
    duration_ns: int
    #: The training input as the model saw it: container type, column names, dtypes.
    container: str
    features: tuple[str, ...] | None
    dtypes: tuple[str, ...]
    scheme: str = SCHEME


def container_of(X: Any) -> str:
    """``library.Type`` of an input: ``pandas.DataFrame``, ``numpy.ndarray``, ``builtins.list``..."""
    cls = type(X)
    return f"{cls.__module__.split('.')[0]}.{cls.__name__}"


def columns_of(X: Any) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(column names or None, one dtype name per column) of an input."""
    if hasattr(X, "dtypes") and hasattr(X, "columns"):
        return tuple(str(c) for c in X.columns), tuple(str(d) for d in X.dtypes)
    if hasattr(X, "iloc"):  # a Series: one column
        return None, (str(X.dtype),)
    dtype = getattr(X, "dtype", None)
    shape = getattr(X, "shape", None)
    if dtype is None or shape is None:
        a = np.asarray(X) if _numeric_list(X) else np.array(X, dtype=object)
        dtype, shape = a.dtype, a.shape
    columns = int(shape[1]) if len(shape) == 2 else 1
    return None, (str(dtype),) * columns


@functools.lru_cache(maxsize=512)
def _third_is_sample_weight(cls: type, method: str) -> bool:
    """Whether the third positional argument of ``cls.method`` (after X and y) is ``sample_weight``."""
    try:
        names = list(inspect.signature(getattr(cls, method)).parameters)
    except (TypeError, ValueError):
        return False
    return len(names) > 3 and names[3] == "sample_weight"


class TrainingLog:
    """The fit observer that hashes training data; `get(fingerprint)` answers for the model record.
    `fingerprint_of` computes the fitted model's fingerprint."""

    def __init__(self, key: HashKey, fingerprint_of: Callable[[Any], str],
                 max_remembered: int = MAX_REMEMBERED) -> None:
        self._key = key
        self._fingerprint_of = fingerprint_of
        self._max = max_remembered
        self._lock = threading.Lock()
        self._by_fingerprint: collections.OrderedDict[str, Training] = collections.OrderedDict()
        self._streams: dict[int, tuple[weakref.ref, TrainingHash]] = {}  # partial_fit: per model object

    def observe(self, model: Any, method: str, args: tuple, kwargs: dict, elapsed_ns: int) -> None:
        """The fit observer: hash the fit's X, y and sample weights, and file the result by fingerprint."""
        X = args[0] if args else kwargs.get("X")
        if X is None:
            return
        y = args[1] if len(args) > 1 else kwargs.get("y", kwargs.get("Y"))
        weight = kwargs.get("sample_weight")
        if weight is None and len(args) > 2 and _third_is_sample_weight(type(model), method):
            weight = args[2]
        stream = self._stream(model) if method == "partial_fit" else None
        hasher = stream.copy() if stream is not None else TrainingHash(self._key)
        hasher.update(X, y, weight)
        self._keep_stream(model, hasher)  # a later partial_fit goes on from here; a fit starts anew
        features, dtypes = columns_of(X)
        training = Training(
            hash=hasher.hexdigest(), key_id=hasher.key_id, rows=hasher.rows, method=method,
            batches=hasher.batches, end_ns=time.time_ns(), duration_ns=int(elapsed_ns),
            container=container_of(X), features=features, dtypes=dtypes,
        )
        fingerprint = self._fingerprint_of(model)
        with self._lock:
            self._by_fingerprint[fingerprint] = training
            self._by_fingerprint.move_to_end(fingerprint)
            while len(self._by_fingerprint) > self._max:
                self._by_fingerprint.popitem(last=False)

    def get(self, fingerprint: str) -> Training | None:
        """What the fit that produced `fingerprint` trained on, if it was seen."""
        with self._lock:
            return self._by_fingerprint.get(fingerprint)

    def _stream(self, model: Any) -> TrainingHash | None:
        entry = self._streams.get(id(model))
        return entry[1] if entry is not None and entry[0]() is model else None

    def _keep_stream(self, model: Any, hasher: TrainingHash) -> None:
        key = id(model)
        streams = self._streams
        try:
            ref = weakref.ref(model, lambda _, key=key: streams.pop(key, None))
        except TypeError:  # not weak-referenceable: the next batch starts a new stream
            return
        streams[key] = (ref, hasher)
