"""The hot path's fast forms against their plain definitions, on generated cases (issue 20): each fast
path must give exactly what the definition gives."""

from __future__ import annotations

import random
import string

from otel_rai.audit import local_rows

_ALPHABET = string.printable + "éß\u202e\U0001f600\udc80\x00"


def _text(rng: random.Random, longest: int = 12) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, longest)))


def test_groups_digests_equal_the_digest_of_each_decision():
    rng = random.Random(20)
    for _ in range(3000):
        n = rng.randint(0, 6)
        ids = [_text(rng, 40) for _ in range(n)]
        groups = {_text(rng) or "a": [rng.choice(["f", "m", _text(rng)]) for _ in range(n)]
                  for _ in range(rng.randint(1, 3))}
        key = rng.randbytes(32)
        expected = [local_rows.groups_digest(key, d, {a: v[i] for a, v in groups.items()}) for i, d in enumerate(ids)]
        assert local_rows.groups_digests(key, ids, groups) == expected
        assert local_rows.groups_digests(key, ids, groups) == expected  # again, from the caches
