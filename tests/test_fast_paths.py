"""The hot path's fast forms against their plain definitions, on generated cases (issue 20): each fast
path must give exactly what the definition gives."""

from __future__ import annotations

import random
import string
from types import SimpleNamespace

from otel_rai.audit import local_rows
from otel_rai.capture.recorder import DecisionCall

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


def test_a_cycle_of_calls_digested_at_once_gets_the_digest_of_each_decision():
    """`groups_digests_many` (the worker's one pass over a cycle) against `groups_digest`, one decision at
    a time: cycles of single rows of one attribute (its fast path) mixed with wider and empty calls."""
    rng = random.Random(21)
    for _ in range(400):
        key = rng.randbytes(32)
        attributes = [_text(rng) or "a" for _ in range(3)]
        calls = []
        for _ in range(rng.randint(1, 30)):
            n = rng.choice([1, 1, 1, 0, 2, 5])
            names = attributes[:1] if rng.random() < 0.7 else rng.sample(attributes, rng.randint(1, 3))
            groups = {a: [rng.choice(["f", "m", _text(rng)]) for _ in range(n)] for a in names}
            calls.append(([_text(rng, 40) for _ in range(n)], groups))
        expected = [[local_rows.groups_digest(key, d, {a: v[i] for a, v in groups.items()}) for i, d in enumerate(ids)]
                    for ids, groups in calls]
        assert local_rows.groups_digests_many(key, calls) == expected
        assert local_rows.groups_digests_many(key, calls) == expected  # again, from the caches


def test_input_keys_of_a_block_equal_the_key_of_each_hash():
    """`Store`'s input keys of a many-row call, read as one block, against `input_key` one hash at a time:
    our hashes, and blocks with a missing, short, long, spaced, prefixed, upper-case or foreign one."""
    from otel_rai.store.store import input_key, input_keys

    rng = random.Random(22)

    def odd(h: str):
        spaced = " ".join(h[i : i + 2] for i in range(0, 32, 2))[:32]
        return rng.choice([None, 7, h[:31], h + "0", h.upper(), "0x" + h[2:], spaced, "g" + h[1:], _text(rng, 40),
                           "f" * 32, "0" * 32, "8" + "0" * 31, "7" + "f" * 31])

    for _ in range(2000):
        hashes = [rng.randbytes(16).hex() for _ in range(rng.randint(0, 8))]
        if hashes and rng.random() < 0.5:
            hashes[rng.randrange(len(hashes))] = odd(hashes[0])
        assert input_keys(hashes) == list(map(input_key, hashes)), hashes


def test_a_calls_generated_ids_count_up_in_row_order_and_do_not_meet_another_calls():
    import re

    from otel_rai.capture import scope

    seen: set[str] = set()
    for n in [2, 3, 10, 1000, *range(2, 40)]:
        ids = scope.new_ids(n)
        assert len(ids) == n and all(re.fullmatch("[0-9a-f]{32}", i) for i in ids)
        assert ids == sorted(ids) and len({i[:12] for i in ids}) == 1  # one time stamp
        parts = [int(i[12:], 16) for i in ids]
        assert parts == list(range(parts[0], parts[0] + n))
        assert not seen & set(ids)
        seen.update(ids)


def test_counted_up_ids_are_formatted_each_as_its_number(monkeypatch):
    """`new_ids` writes a call's ids a block of 256 at a time, against formatting each id's number alone:
    starts on, just before and just after a block's edge, at 0 and at the top of the 80 bits."""
    from otel_rai.capture import scope

    rng = random.Random(23)
    for _ in range(400):
        n = rng.choice([2, 3, 255, 256, 257, 511, 1000, rng.randint(2, 3000)])
        start = rng.choice([0, 255, 256, 257, 511, (1 << 80) - n, rng.randrange((1 << 80) - n),
                            rng.randrange(1 << 20) * 256 + rng.choice([0, 1, 254, 255])])
        monkeypatch.setattr(scope.secrets, "randbelow", lambda bound, start=start: start)
        ids = scope.new_ids(n)
        stamp = ids[0][:12]
        assert ids == [f"{stamp}{i:020x}" for i in range(start, start + n)], (n, start)


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


def test_a_window_fed_many_at_once_equals_one_fed_one_by_one():
    from otel_rai.fairness.window import Window

    rng = random.Random(7)
    for _ in range(500):
        kinds = rng.choice([2, 4])
        spec = rng.choice([{"size": rng.randint(1, 30)}, {"seconds": rng.choice([1e-6, 1.0, 100.0])}])
        one, many = Window(kinds, **spec), Window(kinds, **spec)
        t = 0
        for _ in range(rng.randint(1, 8)):
            t += rng.randint(0, 2_000_000)
            n = rng.randint(0, 70)
            groups = [rng.choice("abcde") for _ in range(n)]
            flags = [rng.randrange(kinds) for _ in range(n)]
            times = [t + rng.choice([0, 0, 1, -1]) * rng.randrange(1_000) for _ in range(n)]  # calls' end times
            for g, k, at in zip(groups, flags, times):
                one.add(g, k, at)
            many.add_many(groups, flags, times)
            if rng.random() < 0.3:
                assert one.expire(t) == many.expire(t)
            assert list(one._entries) == list(many._entries)
            assert one.counts == many.counts and one.newest_ns == many.newest_ns and len(one) == len(many)
            recount: dict[str, list[int]] = {}  # the definition: the entries' tallies, and no empty group
            for _, g, k in many._entries:
                recount.setdefault(g, [0] * kinds)[k] += 1
            assert many.counts == recount


def test_the_decision_book_remembers_and_forgets_as_a_plain_ordered_map_would():
    import collections

    from otel_rai.fairness.outcomes import DecisionBook, Positive, Remembered

    rng = random.Random(11)
    for _ in range(300):
        capacity = rng.randint(1, 40)
        book, plain = DecisionBook(capacity), collections.OrderedDict()
        for _ in range(rng.randint(1, 10)):
            n = rng.randint(0, 60)
            ids = [f"d{rng.randrange(120)}" for _ in range(n)]
            names = rng.sample(["sex", "race", "sex&race"], rng.randint(1, 2))
            groups = {a: [rng.choice("fmx") for _ in range(n)] for a in names}
            predicted = [rng.random() < 0.5 for _ in range(n)]
            truth = rng.choice([Positive(label=rng.choice([0, 1, True, 1.0, "yes"])), Positive(threshold=0.5),
                                Positive(label=[1])])  # a list label cannot be hashed
            book.remember(ids, "m", "1", groups, predicted, truth)
            for i, d in enumerate(ids):
                plain[d] = Remembered("m", "1", {a: groups[a][i] for a in names}, predicted[i], truth)
            while len(plain) > capacity:
                plain.popitem(last=False)
            assert len(book) == len(plain)
            for d in rng.sample(sorted(plain), min(3, len(plain))) + ["never"]:
                got, expected = book.pop(d), plain.pop(d, None)
                assert got == expected
                if got is not None:  # the same truth, type and all (1 == True == 1.0)
                    assert type(got.truth.label) is type(expected.truth.label)


def test_book_entries_are_left_untracked_by_the_garbage_collector():
    import gc

    from otel_rai.fairness.outcomes import DecisionBook, Positive

    book = DecisionBook(1000)
    book.remember([f"d{i}" for i in range(500)], "m", "1", {"sex": ["f"] * 500, "race": ["a"] * 500},
                  [True] * 500, Positive(label=1))
    gc.collect()  # untracks the inner tuples (the labels); the entries holding them, at the next pass
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in book._entries.values())


def test_equal_book_entries_are_one_tuple_and_an_unhashable_label_keeps_its_own():
    """A decision adds no entry object of its own when an equal one is in the book: 600 decisions of two
    groups, two predictions and two truths hold 8 tuples (they held 600, and 600 tuples of labels)."""
    from otel_rai.fairness.outcomes import DecisionBook, Positive, Remembered

    book = DecisionBook(1000)
    for k, truth in enumerate((Positive(label=1), Positive(threshold=0.5))):
        ids = [f"d{k}-{i}" for i in range(300)]
        book.remember(ids, "m", "1", {"sex": ["f" if i % 2 else "m" for i in range(300)]},
                      [i % 3 == 0 for i in range(300)], truth)
    assert len(book) == 600 and len({id(entry) for entry in book._entries.values()}) == 8
    assert book.pop("d1-7") == Remembered("m", "1", {"sex": "f"}, False, Positive(threshold=0.5))
    unhashable = Positive(label=[1])
    book.remember(["u1", "u2"], "m", "1", {"sex": ["f", "f"]}, [True, True], unhashable)
    assert book._entries["u1"] is not book._entries["u2"]
    assert book.pop("u2") == Remembered("m", "1", {"sex": "f"}, True, unhashable)


def test_plain_attributes_are_copies_with_tuples_as_lists():
    import collections

    from otel_rai.codec.sdk import plain

    pair = collections.namedtuple("pair", "a b")
    rng = random.Random(3)
    pool = ["s", 1, 2.5, True, [1, 2], ["a"], (1, 2), ("x",), pair(1, 2), (), []]
    for _ in range(2000):
        attributes = {f"k{i}": rng.choice(pool) for i in range(rng.randint(0, 8))}
        expected = {k: list(v) if isinstance(v, tuple) else v for k, v in attributes.items()}
        got = plain(attributes)
        assert got == expected and got is not attributes
        assert all(type(got[k]) is type(expected[k]) for k in got)
        given_up = plain(attributes, copy=False)  # the dict itself, unless it holds a tuple
        assert given_up == expected and all(type(given_up[k]) is type(expected[k]) for k in got)
        tuples = any(isinstance(v, tuple) for v in attributes.values())
        assert (given_up is attributes) == (bool(attributes) and not tuples)
    assert plain(None) == {}


def test_the_compact_encoder_writes_what_json_writes():
    import json
    import math

    from otel_rai.codec import compact

    rng = random.Random(5)

    def value(depth: int = 0):
        kind = rng.randrange(9 if depth < 3 else 6)
        if kind == 0:
            return _text(rng, 30)
        if kind == 1:
            return rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 2**80, True, False, None])
        if kind == 2:
            return rng.choice([0.0, -0.0, 1e-300, 1.5e300, math.pi, float("nan"), float("inf"), -float("inf")])
        if kind in (3, 4, 5):
            return rng.random() * 10 ** rng.randint(-10, 10)
        if kind in (6, 7):
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {_text(rng, 8): value(depth + 1) for _ in range(rng.randint(0, 5))}

    for sort_keys in (False, True):
        fast = compact.encoder(sort_keys=sort_keys)
        plain = json.JSONEncoder(sort_keys=sort_keys, ensure_ascii=True, separators=(",", ":")).encode
        for _ in range(3000):
            v = value()
            assert fast(v) == plain(v)
        for bad in ({"a": object()}, [1, {2, 3}], {(1, 2): 1}):
            try:
                plain(bad)
            except TypeError as exc:
                expected = str(exc)
            try:
                fast(bad)
            except TypeError as exc:
                assert str(exc) == expected
            else:
                raise AssertionError("no TypeError")


def test_groups_given_to_a_block_resolve_as_a_fresh_resolver_resolves_them():
    """`GroupResolver.resolve` reuses its last resolution of groups all given by one `decisions()` block;
    over generated blocks, row counts, inputs with and without the columns, and group caps, every
    resolution must equal a fresh resolver's fed the same calls one after the other without reuse."""
    import numpy as np
    import pandas as pd

    from otel_rai.capture.models import ModelInfo
    from otel_rai.capture.recorder import DecisionCall
    from otel_rai.fairness.groups import GroupResolver, parse

    rng = random.Random(21)
    specs = parse(["sex", ("sex", "race"), "age"])
    reused, plain = GroupResolver(specs, 4, warn=False), GroupResolver(specs, 4, warn=False)
    info = ModelInfo(name="m", qualified_class="M", version="1", fingerprint="0", feature_names=None,
                     classes=None, registration=None)
    blocks = []
    for _ in range(400):
        if not blocks or rng.random() < 0.3:  # a new block, its groups one dict
            names = rng.sample(["sex", "race", "age", "zip"], rng.randint(0, 3))
            blocks.append({name: rng.choice(["f", "m", "x", None, _text(rng, 3)]) for name in names} or None)
        groups = rng.choice(blocks[-3:])
        n = rng.choice([1, 1, 1, 2, 3])
        if groups is not None and rng.random() < 0.2:  # a per-row tuple: a block for this call only
            groups = {**groups, "sex": tuple(rng.choice("fm") for _ in range(n))}
        X = (pd.DataFrame({"race": [rng.choice("ab") for _ in range(n)], "v": np.zeros(n)})
             if rng.random() < 0.5 else np.zeros((n, 2)))
        call = DecisionCall(model=None, info=info, operation="predict", X=X, n_rows=n,
                            ids=[str(i) for i in range(n)], attributes={}, parent=None, start_ns=0, groups=groups)
        expected = plain.resolve(call)
        plain._last_given = None  # never reused
        assert reused.resolve(call) == expected


def _classes(rng: random.Random, k: int):
    import numpy as np

    kind = rng.choice(["int", "str", "bool", "object", "float", "uint64", "none"])
    if kind == "none":
        return None
    if kind == "str":
        return np.array(sorted({_text(rng, 6) + str(i) for i in range(k)}))
    if kind == "object":  # a mix: its labels become text together
        return np.array([rng.choice([i, _text(rng, 4), 2**70]) for i in range(k)], dtype=object)
    if kind == "bool":
        return np.array([False, True][:k]) if k <= 2 else np.arange(k)
    if kind == "uint64":
        return np.array([2**64 - 1 - i if rng.random() < 0.3 else i for i in range(k)], dtype=np.uint64)
    dtype = np.float64 if kind == "float" else rng.choice([np.int32, np.int64])
    return np.arange(k).astype(dtype) * rng.choice([1, -3])


def test_outputs_encoded_together_equal_each_output_encoded_alone():
    """`encode_many` (a cycle's outputs in one pass) against `encode` of each call, on generated models,
    operations, dtypes and classes: the same values, call by call, or the call left to `encode`."""
    import numpy as np

    from otel_rai.audit import outputs

    class Info:
        def __init__(self, classes):
            self.classes = classes

    rng = random.Random(7)
    gen = np.random.default_rng(7)
    together = 0
    for _ in range(600):
        k = rng.randint(1, 4)
        infos = [Info(_classes(rng, k)) for _ in range(rng.randint(1, 2))]
        calls = []
        usual = None  # most calls of a cycle are alike; some are not
        for _ in range(rng.randint(1, 12)):
            if usual is None or rng.random() < 0.2:
                usual = (rng.choice(["predict", "predict_proba", "decision_function", "predict_log_proba",
                                     "score_samples"]),
                         rng.choice([1, 2, 2]), rng.choice([k, k, k + 1]),
                         rng.choice([np.float64, np.float32, np.int64, np.uint64, np.bool_]))
            operation, ndim, width, dtype = usual
            n = rng.choice([1, 1, 1, 1, 0, 2, 5])
            shape = (n,) if ndim == 1 else (n, width)
            output = (gen.normal(size=shape) * 3).astype(dtype)
            if dtype is np.uint64 and n and rng.random() < 0.3:
                output[..., 0] = np.uint64(2**64 - 1)
            error = ValueError("x") if rng.random() < 0.05 else None
            calls.append(SimpleNamespace(info=rng.choice(infos), operation=operation, output=output, error=error,
                                         encoded_output=None))
        outputs.encode_many(calls)
        for call in calls:
            if call.encoded_output is None:
                continue
            together += 1
            assert call.error is None
            expected = outputs.encode(call.operation, call.output, call.info.classes)
            assert call.encoded_output == expected
            assert [type(v) for v in call.encoded_output[0]] == [type(v) for v in expected[0]]
            assert list(call.encoded_output[1] or ()) == list(expected[1] or ())  # the score columns' order
    assert together > 500  # most calls took the joint pass: the comparison above is not empty


def test_outcome_flags_read_together_equal_each_call_read_alone():
    """`OutcomeRule.predicted_many` (the fairness monitor's flags of a cycle, in one pass) against
    `predicted` of each call, on generated rules, models, operations, dtypes and classes."""
    import numpy as np
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from otel_rai.fairness.outcomes import OutcomeRule

    rng = random.Random(11)
    gen = np.random.default_rng(11)
    X = gen.normal(size=(40, 2))
    estimators = [LogisticRegression().fit(X, X[:, 0] > 0), LinearRegression().fit(X, X[:, 0]), object()]
    together = 0
    for _ in range(500):
        k = rng.randint(1, 4)
        rule = OutcomeRule(positive_label=rng.choice([None, None, 1, "a", True, 2]),
                           score_threshold=rng.choice([None, None, 0.0, 0.5]))
        models = [SimpleNamespace(model=rng.choice(estimators), info=SimpleNamespace(classes=_classes(rng, k)))
                  for _ in range(rng.randint(1, 2))]
        calls = []
        usual = None
        for _ in range(rng.randint(1, 10)):
            if usual is None or rng.random() < 0.2:
                usual = (rng.choice(["predict", "predict_proba", "decision_function", "score_samples"]),
                         rng.choice([1, 2]), rng.choice([k, k + 1]),
                         rng.choice([np.float64, np.float32, np.int64, np.bool_]))
            operation, ndim, width, dtype = usual
            n = rng.choice([1, 1, 2, 4])
            output = (gen.normal(size=(n,) if ndim == 1 else (n, width)) * 2).astype(dtype)
            chosen = rng.choice(models)
            calls.append(DecisionCall(model=chosen.model, info=chosen.info, operation=operation, X=None, n_rows=n,
                                      ids=[], attributes={}, parent=None, start_ns=0, output=output))
        if rng.random() < 0.1:
            calls[0].output = [np.zeros((1, 2)), np.ones((1, 2))]  # multi-output: read alone
        many = rule.predicted_many(calls)
        alone = [rule.predicted(call) for call in calls]
        assert many == alone
        together += sum(flags is not None for flags in many)
    assert together > 500


def test_stored_decision_rows_are_those_of_each_record_for_every_mix_of_sizes(tmp_path):
    """`Store.append` writes a one-decision span's row by a shorter path: the ``decisions`` table must
    hold, for any mix of span sizes and of missing or mismatched per-row arrays, each record's rows by
    the plain definition (`_per_row`)."""
    from otel_rai import semconv
    from otel_rai.codec.records import SpanRecord
    from otel_rai.store import Store
    from otel_rai.store.store import input_key

    rng = random.Random(21)
    store = Store(tmp_path / "s.db", create=True)
    for round_ in range(40):
        records, expected = [], []
        for k in range(rng.randint(1, 12)):
            n = rng.choice([0, 1, 1, 1, 2, 5])
            ids = [f"{round_:04x}{k:04x}{j:024x}" for j in range(n)]
            attributes = {semconv.DECISION_IDS: ids}
            hashes = rng.choice([None, "list", "short", "tuple", "text"])
            if hashes is not None:
                values = [f"{rng.getrandbits(128):032x}" for _ in range(n)]
                attributes[semconv.INPUT_HASHES] = {"list": values, "short": values[:-1], "tuple": tuple(values),
                                                    "text": "".join(values)}[hashes]
            outputs = rng.choice([None, "list", "long"])
            if outputs is not None:
                attributes[semconv.OUTPUTS] = [rng.random() for _ in range(n + (outputs == "long"))]
            records.append(SpanRecord(f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}", "s", 1, 2,
                                      attributes))
            per_row = [
                v if isinstance(v, (list, tuple)) and len(v) == n else [None] * n
                for v in (attributes.get(semconv.INPUT_HASHES), attributes.get(semconv.OUTPUTS))
            ]
            expected.append([(j, ids[j], per_row[0][j], per_row[1][j], input_key(per_row[0][j])) for j in range(n)])
        last, written = store.append(records)
        assert written == sum(map(len, expected))
        first = last - len(records) + 1
        got = store._connection().execute(
            "SELECT span, idx, decision_id, input_hash, output, input_key FROM decisions WHERE span >= ?"
            " ORDER BY span, idx", (first,)).fetchall()
        assert got == [(first + i, *row) for i, rows in enumerate(expected) for row in rows]


def test_a_cycle_holds_few_objects_for_the_garbage_collector_until_its_commit(monkeypatch):
    """Whatever a worker cycle holds until its commit, the collector's young passes find alive and move
    on; once the oldest generation has grown by a quarter, the interpreter collects the whole heap (tens
    of ms, bench/RESULTS.md). So a plain single-row decision, with fairness and drift monitoring on, must
    hold few tracked objects at its cycle's commit: its call and ids, its record, attributes and per-row
    arrays, its window entry and group row. Not an empty list of events and of links a record, nor a copy
    of the model's classes a span, nor its output's encoding once its span has it, nor a decision book
    entry of its own (18 objects a decision, before; 11 now)."""
    import gc

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import otel_rai
    from otel_rai.audit import worker as worker_module
    from otel_rai.session import instrumentor

    monkeypatch.setattr(worker_module, "_INTERVAL", 3600.0)  # one cycle, at the flush
    monkeypatch.setattr(worker_module, "_WAKE_AT", 1 << 30)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 6))
    model = LogisticRegression().fit(X, X[:, 0] > 0)
    otel_rai.register_model(model, name="lr", version="1", reference=X)
    rows = [X[i : i + 1] for i in range(200)]
    otel_rai.instrument(hash_key="test-key-0123456789abcdef-fast-paths", sensitive_features=["sex"], explain=False)
    with otel_rai.decisions(groups={"sex": "f"}):
        for row in rows[:20]:
            model.predict_proba(row)
        otel_rai.flush(30)
        worker = instrumentor._session.worker
        commit, held = worker._commits[0], []

        def counting_commit():
            if not held:
                held.append(len(gc.get_objects(0)))
            return commit()

        worker._commits[0] = counting_commit
        gc.collect()
        gc.disable()  # every object made from here on stays in the young generation, where it is counted
        try:
            before = len(gc.get_objects(0))
            for row in rows:
                model.predict_proba(row)
            assert otel_rai.flush(30)
        finally:
            gc.enable()
            worker._commits[0] = commit
    assert held, "the cycle never reached its commit"
    per_decision = (held[0] - before) / len(rows)
    assert 8 <= per_decision <= 12, per_decision
