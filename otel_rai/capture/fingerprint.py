"""`ml.model.fingerprint`: a stable hash of a fitted model's state.

The same fitted model gives the same fingerprint in every process (nothing memory-address or
order-of-insertion dependent is hashed); a refit on other data changes it. Everything in the estimator's
``__dict__`` is covered, recursively (nested estimators, trees, boosters), except parameters that only
control threads or logging, and random-number state (`IGNORED`): serving a model with another
``n_jobs`` keeps its fingerprint, and two fits that learned the same thing share one even when their
seeds differ. Learned randomness (a forest's trees) is in the learned state and counts.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import numpy as np
from numpy.lib.recfunctions import repack_fields

#: Estimator attributes that are not learned state: threads, logging, caching, and seeds.
IGNORED = frozenset(
    {"n_jobs", "nthread", "verbose", "verbosity", "silent", "memory", "random_state", "_random_seed"}
)


def fingerprint(model: Any) -> str:
    """Hex BLAKE2b-128 of the model's state."""
    h = hashlib.blake2b(digest_size=16, person=b"otel-rai.model")
    _Feeder(h).feed(model)
    return h.hexdigest()


def feed(h: Any, obj: Any) -> None:
    """Write `obj`'s canonical byte stream (the one the fingerprint hashes) into the hash object `h`."""
    _Feeder(h).feed(obj)


class _Feeder:
    """Writes a canonical, tagged byte stream of an object graph into a hash."""

    def __init__(self, h: Any) -> None:
        self._h = h
        self._visiting: set[int] = set()  # breaks reference cycles

    def _write(self, tag: bytes, data: bytes = b"") -> None:
        self._h.update(tag + struct.pack("<Q", len(data)) + data)

    def feed(self, obj: Any) -> None:
        if obj is None or isinstance(obj, (bool, np.bool_)):
            self._write(b"k", repr(None if obj is None else bool(obj)).encode())
        elif isinstance(obj, (int, np.integer)):
            self._write(b"i", str(int(obj)).encode())
        elif isinstance(obj, (float, np.floating)):
            self._write(b"f", struct.pack("<d", float(obj)))
        elif isinstance(obj, str):
            self._write(b"s", obj.encode("utf-8", "surrogatepass"))
        elif isinstance(obj, (bytes, bytearray, memoryview)):
            self._write(b"y", bytes(obj))
        elif isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__"):
            self._write(b"c", f"{getattr(obj, '__module__', '')}.{obj.__qualname__}".encode())
        elif id(obj) in self._visiting:
            self._write(b"r")
        else:
            self._visiting.add(id(obj))
            try:
                self._feed_container(obj)
            finally:
                self._visiting.discard(id(obj))

    def _feed_container(self, obj: Any) -> None:
        if isinstance(obj, np.ndarray):
            self._write(b"a", f"{obj.dtype!r}{obj.shape}".encode())
            if obj.dtype.hasobject:
                for item in obj.flat:
                    self.feed(item)
            elif obj.dtype.names is not None:
                # A record array's padding bytes are uninitialised memory (a tree's node array has 7
                # of every 64): they differ between a model and its unpickled copy, so only fields count.
                self._h.update(np.ascontiguousarray(repack_fields(obj, align=False)).data)
            else:
                self._h.update(np.ascontiguousarray(obj).data)
        elif isinstance(obj, (list, tuple)):
            self._write(b"l", str(len(obj)).encode())
            for item in obj:
                self.feed(item)
        elif isinstance(obj, dict):
            self._feed_items(b"d", obj.items())
        elif isinstance(obj, (set, frozenset)):
            self._write(b"t", str(len(obj)).encode())
            for item in sorted(obj, key=repr):
                self.feed(item)
        elif isinstance(obj, (np.random.RandomState, np.random.Generator)):
            self._write(b"g")  # a generator's state is where sampling stands, not what was learned
        elif hasattr(obj, "get_params") and hasattr(obj, "__dict__"):
            self._write(b"e", _qualname(type(obj)).encode())
            self._feed_items(b"d", ((k, v) for k, v in vars(obj).items() if k not in IGNORED))
        else:
            self._feed_reduced(obj)

    def _feed_items(self, tag: bytes, items: Any) -> None:
        pairs = sorted(items, key=lambda kv: repr(kv[0]))
        self._write(tag, str(len(pairs)).encode())
        for k, v in pairs:
            self.feed(k)
            self.feed(v)

    def _feed_reduced(self, obj: Any) -> None:
        """Anything else (Cython trees, boosters, plain objects): what pickling would save."""
        self._write(b"o", _qualname(type(obj)).encode())
        try:
            reduced = obj.__reduce_ex__(4)
        except Exception:  # locks, handles: nothing learned lives there
            return
        if isinstance(reduced, str):
            return
        for part in reduced[1:]:
            self.feed(list(part) if part is not None and hasattr(part, "__next__") else part)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
