"""Which group each decision belongs to, for every sensitive attribute.

Group values come from the columns of the input named by ``instrument(sensitive_features=[...])``
(the model may ignore those columns: the captured input still has them), or from
``otel_rai.decisions(groups={...})``, which wins when both name the same attribute. An intersection,
given as a tuple such as ``("sex", "race")``, is one combined attribute ``sex&race`` whose groups are
``female&black`` and so on.

Group values become strings of at most 128 characters; a missing value (None, NaN, NA) is the group
``(missing)``. Each attribute keeps at most ``max_groups`` of them, and a process at most
`MAX_AD_HOC_ATTRIBUTES` attributes named only per call; beyond, ``(other)`` and a warning. They are
metric attributes and rows of the local store; a span carries only a keyed digest of them
(``ml.fairness.groups_digest``), and their values only for names allowlisted with ``capture_features``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from otel_rai import semconv
from otel_rai.capture.recorder import DecisionCall
from otel_rai.capture.scope import given_labels, labels
from otel_rai.codec.text import printable

_log = logging.getLogger(__name__)

#: Attributes named only by ``decisions(groups=...)`` (not configured) that one process tracks; each is a
#: metric label value and a set of series, so a caller cannot create them without bound.
MAX_AD_HOC_ATTRIBUTES = 16


@dataclass(frozen=True)
class SensitiveAttribute:
    """One sensitive attribute: a single column, or the intersection of several."""

    parts: tuple[str, ...]

    @property
    def name(self) -> str:
        """The attribute's name: its parts joined with ``&`` (``sex&race``)."""
        return semconv.INTERSECTION.join(self.parts)


def parse(specs: Iterable[str | Sequence[str]]) -> tuple[SensitiveAttribute, ...]:
    """``["sex", ("sex", "race")]`` (or ``"sex&race"``, the environment-variable form) as attributes."""
    attributes: list[SensitiveAttribute] = []
    for spec in specs:
        parts = tuple(spec.split(semconv.INTERSECTION)) if isinstance(spec, str) else tuple(spec)
        if not parts or not all(isinstance(p, str) and p for p in parts) or len(set(parts)) != len(parts):
            raise ValueError(f"otel-rai: sensitive feature {spec!r} must be a name or a tuple of distinct names")
        attribute = SensitiveAttribute(parts)
        if attribute not in attributes:
            attributes.append(attribute)
    return tuple(attributes)


#: Up to this many rows, reading cells one by one beats building a pandas column (a Series costs ~10 µs).
_FEW_ROWS = 8


def _input_values(call: DecisionCall, name: str) -> list[Any] | None:
    """Column `name` of the captured input: a DataFrame column, else by the model's feature names."""
    X = call.X
    columns = getattr(X, "columns", None)
    if columns is not None:
        j = columns.get_loc(name) if name in columns else None
        if not isinstance(j, int):  # absent, or a duplicated name that names no single column
            return None
        n = len(X)
        return [X.iat[i, j] for i in range(n)] if n <= _FEW_ROWS else X.iloc[:, j].tolist()
    names = call.info.feature_names
    if names is not None and name in names and getattr(X, "ndim", 0) == 2:
        return np.asarray(X)[:, names.index(name)].tolist()
    return None


class GroupResolver:
    """Per call, the group label of every row for every sensitive attribute that the call can answer.

    At most `max_groups` distinct groups per attribute: later ones become ``(other)``, because every
    group is a metric series (a continuous column named as sensitive would otherwise flood the backend).
    ``warn=False`` for a second resolver of the same calls, so that each warning is said once.
    """

    def __init__(self, attributes: Sequence[SensitiveAttribute], max_groups: int, *, warn: bool = True) -> None:
        self._attributes = tuple(attributes)
        self._max_groups = max_groups
        self._seen: dict[str, set[str]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._warn = warn
        self._ad_hoc: set[SensitiveAttribute] = set()
        #: The last resolution of groups all given by ``decisions(groups=...)``: (its groups, rows, result).
        self._last_given: tuple[Mapping[str, Any], int, dict[str, list[str]]] | None = None

    @property
    def active(self) -> bool:
        """Whether any sensitive attribute is configured."""
        return bool(self._attributes)

    def _attributes_of(self, names: Iterable[str]) -> list[SensitiveAttribute]:
        """The configured attributes, plus a single attribute for each name only given per call (at most
        `MAX_AD_HOC_ATTRIBUTES` of those in a process; a further one is ignored, with one warning)."""
        extra = []
        for name in names:
            attribute = SensitiveAttribute((name,))
            if attribute in self._attributes:
                continue
            if attribute not in self._ad_hoc and len(self._ad_hoc) >= MAX_AD_HOC_ATTRIBUTES:
                self._warn_cap("", ad_hoc=True)
                continue
            self._ad_hoc.add(attribute)
            extra.append(attribute)
        return [*self._attributes, *extra]

    def resolve(self, call: DecisionCall) -> dict[str, list[str]]:
        """{attribute name: one group label per row}. Not to be modified: calls of the same rows given
        the same groups (one ``decisions(groups=...)`` block's) share it."""
        given_groups, n = call.groups, len(call.ids)
        last = self._last_given
        if last is not None and last[0] is given_groups and last[1] == n:
            return last[2]
        columns: dict[str, list[str] | None] = {}
        out = {}
        read_input = False
        for attribute in self._attributes_of(given_groups or ()):
            parts = []
            for part in attribute.parts:
                if part not in columns:
                    given = given_labels(call, part)
                    column = None
                    if given is None:
                        read_input = True
                        column = _input_values(call, part)
                    columns[part] = given if column is None else labels(column)
                parts.append(columns[part])
            if any(p is None for p in parts):
                self._warn_missing(call.info.name, attribute.name)
                continue
            joined = parts[0] if len(parts) == 1 else [semconv.INTERSECTION.join(t) for t in zip(*parts)]
            out[attribute.name] = self._capped(attribute.name, joined)
        if given_groups is not None and not read_input:
            # Every group given, none read from the input: the next call of the block has the same ones.
            # (A block's groups are one dict, snapshotted when the block began.)
            self._last_given = (given_groups, n, out)
        return out

    def from_mapping(self, groups: Mapping[str, Any]) -> dict[str, str]:
        """{attribute name: group label} of one decision whose group values are given by name."""
        values = dict(zip(groups, labels(groups.values())))
        out = {}
        for attribute in self._attributes_of(groups):
            if all(p in values for p in attribute.parts):
                label = semconv.INTERSECTION.join(values[p] for p in attribute.parts)
                out[attribute.name] = self._capped(attribute.name, [label])[0]
        return out

    def _capped(self, attribute: str, values: list[str]) -> list[str]:
        seen = self._seen.setdefault(attribute, set())
        if seen.issuperset(values):
            return values
        capped = []
        for value in values:
            if value not in seen:
                if len(seen) >= self._max_groups:
                    self._warn_cap(attribute)
                    value = semconv.OTHER_GROUP
                seen.add(value)
            capped.append(value)
        return capped

    def _warn_missing(self, model: str, attribute: str) -> None:
        if self._warn and (model, attribute) not in self._warned:
            self._warned.add((model, attribute))
            _log.warning(
                "otel-rai: the input of model %s has no column %r and no decisions(groups=...) gives it; "
                "its decisions are not counted for that sensitive attribute", printable(model), attribute,
            )

    def _warn_cap(self, attribute: str, *, ad_hoc: bool = False) -> None:
        if self._warn and ("", attribute) not in self._warned:
            self._warned.add(("", attribute))
            if ad_hoc:
                _log.warning("otel-rai: more than %d sensitive attributes are named only per call; further "
                             "ones are not counted", MAX_AD_HOC_ATTRIBUTES)
                return
            _log.warning("otel-rai: sensitive attribute %r has more than %d groups; further ones count as %s",
                         attribute, self._max_groups, semconv.OTHER_GROUP)
