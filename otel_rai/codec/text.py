"""Untrusted text made safe to record: the one rule for every string otel-rai did not produce itself.

Column names, category values, caller attributes, decision ids, model names and versions, class labels
and group values come from the application or from its users. Each is recorded through `safe` (a
string) or `text_of` (any object), so that the audit chain, the local store and OTLP all receive the
same, valid text and a crafted value can neither fail a write nor bloat every span:

* **Invalid Unicode**: a lone UTF-16 surrogate (``"\\ud800"``, which no UTF-8 encoder accepts) becomes
  the six ASCII characters of its escape, ``\\ud800`` (Python's ``backslashreplace``). Every other
  character is kept, NUL and control characters included (JSON and protobuf carry them).
* **Length**: a text longer than `MAX_CHARS` characters becomes its first `MAX_CHARS` − 18
  characters, ``…#`` and 16 hex digits of the BLAKE2b-64 digest of the whole (escaped) text as UTF-8:
  `MAX_CHARS` in all, and two long values that differ anywhere stay different.

Applying the rule twice changes nothing.
* **Objects**: `text_of` is ``str(value)``; when ``__str__`` raises, ``<unprintable TYPE>``.

Imports nothing of otel-rai.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

#: The longest untrusted text recorded as it is; longer ones are cut and tagged with a digest.
MAX_CHARS = 1024
_DIGEST_BYTES = 8
#: Sets of column labels `column_names` remembers.
_LABEL_SETS = 64


def _escaped(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: the only str that UTF-8 cannot encode
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def safe(text: str, limit: int = MAX_CHARS) -> str:
    """`text` as it may be recorded: valid Unicode, at most about `limit` characters (module docstring)."""
    if len(text) <= limit and text.isascii():  # the common case: nothing to do
        return text
    text = _escaped(text)
    if len(text) <= limit:
        return text
    suffix = "…#" + hashlib.blake2b(text.encode("utf-8"), digest_size=_DIGEST_BYTES).hexdigest()
    return text[: limit - len(suffix)] + suffix


def text_of(value: Any, limit: int = MAX_CHARS) -> str:
    """``str(value)`` made `safe`; ``<unprintable TYPE>`` when converting it raises."""
    if type(value) is str:
        return safe(value, limit)
    try:
        text = str(value)
    except Exception:
        return f"<unprintable {safe(type(value).__qualname__, limit)}>"
    return safe(text, limit)


def printable(text: str) -> str:
    """`text` for a log line or a terminal: as it is when printable, else with Python's escapes, so that
    a newline or a terminal control sequence in a name cannot forge a line or drive the terminal."""
    return text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode("ascii")


def texts(values: Any, limit: int = MAX_CHARS) -> list[str]:
    """`text_of` of each of `values`."""
    return [text_of(v, limit) for v in values]


@functools.lru_cache(maxsize=_LABEL_SETS)
def _safe_labels(kinds: tuple, labels: tuple) -> tuple[str, ...]:
    return tuple(texts(labels))


def column_names(columns: Any) -> list[str]:
    """`texts` of a frame's column labels. A model's inputs bring the same labels call after call, and
    iterating a pandas index costs about half a µs a label, so each set of labels is read with ``tolist``
    and made safe once; keyed by the labels' types too (``1``, ``1.0`` and ``True`` are equal keys but
    different names), and not remembered with a float among them (``0.0`` and ``-0.0`` neither)."""
    labels = columns.tolist() if hasattr(columns, "tolist") else list(columns)
    kinds = tuple(map(type, labels))
    if float in kinds:
        return texts(labels)
    try:
        return list(_safe_labels(kinds, tuple(labels)))
    except TypeError:  # a label that cannot be a key
        return texts(labels)
