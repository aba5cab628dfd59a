"""The explanation on a span, and back: ``ml.explanation.top`` entries and ranked reason lines.

One ``ml.explanation.top`` entry per row lists its k largest attributions by magnitude, for example
``income=-0.812345,debt_ratio=+0.42,age=-0.0981``: feature names and attribution values only, never
feature values. In a name, ``%``, ``,``, ``=`` and non-printable characters are percent-encoded (as
in W3C baggage), so ``split(",")`` then ``rpartition("=")`` parses any entry (`parse_top`).
Attributions of exactly zero are not reasons and are left out.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence
from urllib.parse import quote, unquote

from otel_rai import semconv

_RESERVED = "%,="
#: Feature names whose escaped form is remembered.
_NAMES_CACHED = 4096


@functools.lru_cache(maxsize=_NAMES_CACHED)
def _name(name: str) -> str:
    return "".join(c if c.isprintable() and c not in _RESERVED else quote(c, safe="") for c in name)


def encode_top(names: Sequence[str], values: Any, k: int) -> list[str]:
    """One ``name=value,...`` string per row of `values` (rows × features, a numpy array): the `k`
    largest nonzero attributions by magnitude (ties: the earlier feature first)."""
    entries = []
    for row in values.tolist():
        magnitude = list(map(abs, row))
        ranked = sorted(range(len(row)), key=magnitude.__getitem__, reverse=True)[:k]  # stable, also reversed
        entries.append(",".join(["%s=%+.6g" % (_name(names[j]), row[j]) for j in ranked if row[j] != 0.0]))
    return entries


def parse_top(entry: str) -> list[tuple[str, float]]:
    """The (feature name, attribution) pairs of one ``ml.explanation.top`` entry, in rank order."""
    pairs = []
    for item in filter(None, entry.split(",")):
        name, _, value = item.rpartition("=")
        pairs.append((unquote(name), float(value)))
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
        f"  {rank}. {name:<{width}}  {value:+.4g}  ({'raises' if value > 0 else 'lowers'} {target})"
        for rank, (name, value) in enumerate(pairs, start=1)
    ]


def _entry(value: Any, row: int) -> Any:
    if isinstance(value, (list, tuple)):
        return value[row] if row < len(value) else None
    return value
