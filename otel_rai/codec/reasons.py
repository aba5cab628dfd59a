"""The explanation on a span, and back: ``ml.explanation.top`` entries and ranked reason lines.

One ``ml.explanation.top`` entry per row lists its k largest attributions by magnitude, for example
``income=-0.8,debt_ratio=+0.4,age=-0.1``: feature names and attribution values only, never feature
values. In a name, ``%``, ``,``, ``=`` and non-printable characters are percent-encoded (as in W3C
baggage), so ``split(",")`` then ``rpartition("=")`` parses any entry (`parse_top`). Attributions of
exactly zero are not reasons and are left out.

How a value is written depends on the resolution (``ml.explanation.resolution``): rounded away from
zero to a multiple of the model's grid step (by default; `otel_rai.explanations.resolution`), exactly to
six significant digits (resolution 0, ``explain_exact_values=True``), or, when no step is known, as
its sign alone (``income=-``), which `parse_top` reads as an infinity of that sign. The order is always
that of the exact values. `encode_top` is written natively where the native encoders were built
(`native`): the same entries.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence
from urllib.parse import quote, unquote

from otel_rai import semconv
from otel_rai.codec import native
from otel_rai.codec.text import safe

_RESERVED = "%,="
#: Values written as a sign alone (no resolution known), as `parse_top` reads them.
_SIGN_ONLY = {"+": math.inf, "-": -math.inf}
#: Feature names whose escaped form is remembered.
_NAMES_CACHED = 4096
#: Models' sets of feature names whose escaped forms are remembered together.
_NAME_SETS = 64


@functools.lru_cache(maxsize=_NAMES_CACHED)
def _name(name: str) -> str:
    return "".join(c if c.isprintable() and c not in _RESERVED else quote(c, safe="") for c in safe(name))


@functools.lru_cache(maxsize=_NAME_SETS)
def _names(names: tuple[str, ...]) -> list[str] | None:
    """`_name` of each of a model's feature names (a list, as the native encoder takes them; not changed),
    or None unless all are str (Python's path then fails, or not, as it always did)."""
    return [_name(name) for name in names] if all(type(name) is str for name in names) else None


def encode_top(names: Sequence[str], values: Any, k: int, resolution: float | None = 0.0) -> list[str]:
    """One ``name=value,...`` string per row of `values` (rows × features, a numpy array): the `k`
    largest nonzero attributions by magnitude (ties: the earlier feature first), each written at
    `resolution`: 0 exactly, a step > 0 rounded away from zero to a multiple of it, None as a sign."""
    rows = values.tolist()
    if native.module is not None:  # the same entries, written natively (codec/native.py)
        try:
            escaped = _names(tuple(names))
        except TypeError:  # a name that cannot be a key
            escaped = None
        entries = None if escaped is None else native.module.top_entries(escaped, rows, k, resolution)
        if entries is not None:
            return entries
    entries = []
    for row in rows:
        magnitude = list(map(abs, row))
        ranked = sorted(range(len(row)), key=magnitude.__getitem__, reverse=True)[:k]  # stable, also reversed
        entries.append(",".join([f"{_name(names[j])}={_value(row[j], resolution)}" for j in ranked if row[j] != 0.0]))
    return entries


def _value(v: float, resolution: float | None) -> str:
    if resolution is None:
        return "+" if v > 0 else "-"
    if resolution > 0 and math.isfinite(v):
        v = math.copysign(math.ceil(abs(v) / resolution) * resolution, v)
    return "%+.6g" % v


def parse_top(entry: str) -> list[tuple[str, float]]:
    """The (feature name, attribution) pairs of one ``ml.explanation.top`` entry, in rank order."""
    pairs = []
    for item in filter(None, entry.split(",")):
        name, _, value = item.rpartition("=")
        pairs.append((unquote(name), _SIGN_ONLY[value] if value in _SIGN_ONLY else float(value)))
    return pairs


def format_reasons(attributes: Mapping[str, Any], row: int = 0) -> list[str]:
    """Ranked reason lines for `otel-rai show`, from a decision's stored span attributes.

    Per-row attributes may be the whole span's arrays (pick `row`) or already the decision's entry.
    Returns no lines when the decision carries no explanation.
    """
    error = attributes.get(semconv.EXPLANATION_ERROR)
    if error is not None:
        return [f"Explanation: not available ({error})"]
    top = _entry(attributes.get(semconv.EXPLANATION_TOP), row)
    if top is None:
        return []
    output = attributes.get(semconv.EXPLANATION_OUTPUT, "output")
    label = attributes.get(semconv.EXPLANATION_CLASS)
    target = f"{output} of class {label}" if label is not None else str(output)
    base = _entry(attributes.get(semconv.EXPLANATION_BASE_VALUES), row)
    method = attributes.get(semconv.EXPLANATION_METHOD, "unknown method")
    header = f"Reasons ({target}, {method}"
    header += f", base value {float(base):.4g}):" if base is not None else "):"
    pairs = parse_top(str(top))
    if not pairs:
        return [header, "  (no feature moved the output)"]
    width = max(len(name) for name, _ in pairs)
    return [header] + [
        f"  {rank}. {name:<{width}}  {_shown(value)}  ({'raises' if value > 0 else 'lowers'} {target})"
        for rank, (name, value) in enumerate(pairs, start=1)
    ]


def _shown(value: float) -> str:
    return "(size withheld)" if math.isinf(value) else f"{value:+.4g}"


def _entry(value: Any, row: int) -> Any:
    if isinstance(value, (list, tuple)):
        return value[row] if row < len(value) else None
    return value
