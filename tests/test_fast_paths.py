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


def test_ids_drawn_ahead_are_well_formed_unique_and_not_inherited_by_a_forked_child():
    import os
    import re

    from otel_rai.capture import scope

    scope.draw_ids(5000)
    ids = [i for _ in range(6000) for i in scope.new_ids(1)] + scope.new_ids(3) + scope.new_ids(0)
    assert len(ids) == 6003 == len(set(ids))  # past the drawn ones too
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids)
    scope.draw_ids(100)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write, "".join(i[12:] for _ in range(100) for i in scope.new_ids(1)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        child = f.read()
    os.waitpid(pid, 0)
    parent = [i[12:] for _ in range(100) for i in scope.new_ids(1)]
    assert len(child) == 2000
    assert not set(parent) & {child[i : i + 20] for i in range(0, 2000, 20)}
