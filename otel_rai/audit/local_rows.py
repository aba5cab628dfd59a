"""Keyed digests of what the local store keeps beside the spans: so that the chain covers the groups and
outcomes of decisions without carrying them.

* **Groups** (``decision_groups``): each decision span carries ``ml.fairness.groups_digest``, one entry
  per row: `groups_digest` of that decision's (attribute, group) pairs.
* **Outcomes** (``outcomes``): each `record_outcome` ends an outcome span (``ml.audit.outcome``) in the
  chain, carrying the decision id and `outcome_digest` of the ground truth as the store writes it.

The digests are keyed (BLAKE2b under a key derived from the input hash key) because group values and
outcomes are few: an unkeyed digest would give them away to anyone who can read a span. Verifying them
(``otel-rai verify-chain --key``) needs the same key as ``otel-rai verify``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from itertools import islice
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from otel_rai.codec import native

if TYPE_CHECKING:  # a type only: hashing imports numpy, which the readers of the trail do without
    from otel_rai.audit.hashing import HashKey

_DIGEST_BYTES = 8
_GROUPS_PERSON = b"otel-rai.groups"
#: The one JSON form of an outcome, in the store and under its digest.
outcome_json = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode


def local_key(key: HashKey) -> bytes:
    """The key of the local-row digests: derived from the input hash key, for this use only."""
    return hmac.new(key.secret, b"otel-rai.local-rows.v1", hashlib.sha256).digest()


def _field(field: str) -> bytes:
    """One field as it is hashed: length-prefixed, so that no two field lists encode alike."""
    data = field.encode("utf-8", "surrogatepass")
    return len(data).to_bytes(8, "little") + data


def _digest(key: bytes, person: bytes, fields: Sequence[str]) -> str:
    h = hashlib.blake2b(key=key, digest_size=_DIGEST_BYTES, person=person)
    for field in fields:
        h.update(_field(field))
    return h.hexdigest()


def groups_digest(key: bytes, decision_id: str, groups: Mapping[str, str]) -> str:
    """The digest of one decision's groups: its id, then each attribute and group, attributes sorted."""
    fields = [decision_id]
    for attribute in sorted(groups):
        fields += [attribute, groups[attribute]]
    return _digest(key, _GROUPS_PERSON, fields)


#: The keyed hash state before any field, per key: copying it is cheaper than keying a new one.
_GROUPS_STATES: dict[bytes, Any] = {}
#: Entries each cache holds before it is emptied: bounds a pathological caller, not the usual one.
_MAX_CACHED = 4096


class _Tails(dict):
    """The encoded (attribute, group) fields of a decision's groups, per attribute names and per groups
    seen (they are few): looked up in C, encoded on a miss."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = names

    def __missing__(self, groups: tuple[str, ...]) -> bytes:
        if len(self) > _MAX_CACHED:
            self.clear()
        tail = self[groups] = b"".join(_field(a) + _field(g) for a, g in zip(self.names, groups))
        return tail


_TAILS: dict[tuple[str, ...], _Tails] = {}


def groups_digests(key: bytes, ids: Sequence[str], groups: Mapping[str, Sequence[str]]) -> list[str]:
    """`groups_digest` of each decision of a call ({attribute: one group per row}), the same digests,
    with the keyed state and the encoded groups reused across rows and calls, natively where built."""
    return _digests(key, list(ids), _tails(len(ids), groups))


def groups_digests_many(key: bytes, calls: Sequence[tuple[Sequence[str], Mapping[str, Sequence[str]]]]
                        ) -> list[list[str]]:
    """`groups_digests` of many calls' (ids, groups) at once: one pass over all their decisions."""
    ids: list[str] = []
    tails: list[bytes] = []
    single = True
    for call_ids, groups in calls:
        ids += call_ids
        tails += _tails(len(call_ids), groups)
        single = single and len(call_ids) == 1
    found = _digests(key, ids, tails)
    if single:  # the usual cycle
        return [[digest] for digest in found]
    rest = iter(found)
    return [list(islice(rest, len(call_ids))) for call_ids, _ in calls]


def _tails(n: int, groups: Mapping[str, Sequence[str]]) -> list[bytes]:
    """The encoded (attribute, group) fields of each of `n` decisions."""
    if n == 1 and len(groups) == 1:  # one row, one attribute: the usual call, without sorting or zipping
        for name, labels in groups.items():
            tails_of = _TAILS.get((name,))
            if tails_of is not None and len(labels) == 1:
                return [tails_of[(labels[0],)]]
    names = tuple(sorted(groups))
    tails_of = _TAILS.get(names)
    if tails_of is None:
        if len(_TAILS) > _MAX_CACHED:
            _TAILS.clear()
        tails_of = _TAILS[names] = _Tails(names)
    tails = list(map(tails_of.__getitem__, zip(*[groups[a] for a in names]))) if names else [b""] * n
    if len(tails) != n:
        raise ValueError(f"otel-rai: {n} decisions, groups for {len(tails)}")
    return tails


def _digests(key: bytes, ids: list[str], tails: list[bytes]) -> list[str]:
    """The digest of each decision id followed by its tail."""
    if native.module is not None:
        found = native.module.blake2b_fields(key, _GROUPS_PERSON, _DIGEST_BYTES, ids, tails)
        if found is not None:
            return found
    state = _GROUPS_STATES.get(key)
    if state is None:
        if len(_GROUPS_STATES) > _MAX_CACHED:
            _GROUPS_STATES.clear()
        state = _GROUPS_STATES[key] = hashlib.blake2b(key=key, digest_size=_DIGEST_BYTES, person=_GROUPS_PERSON)
    out = []
    for decision_id, tail in zip(ids, tails):
        h = state.copy()
        h.update(_field(decision_id) + tail)
        out.append(h.hexdigest())
    return out


def outcome_value(y_true: Any) -> str:
    """The ground truth as the store keeps it (JSON; a numpy scalar as its Python value)."""
    return outcome_json(y_true.item() if hasattr(y_true, "item") else y_true)


def outcome_digest(key: bytes, decision_id: str, value_json: str) -> str:
    """The digest of one outcome: the decision id and the ground truth's JSON."""
    return _digest(key, b"otel-rai.outcome", [decision_id, value_json])
