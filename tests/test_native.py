"""The native encoders (`otel_rai.codec._native`) write byte for byte what the pure-Python code writes:
the chain's canonical form and the OTLP attributes, on generated records of every kind of value an
attribute can hold. What a native pass leaves to Python is still written, the same way, with the same
errors and warnings. A v1 record hashes as it did, and the encoding tests pass in pure Python too."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sqlite3
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import KEY
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import semconv, store
from otel_rai.audit import hashing, local_rows
from otel_rai.chain import canonical
from otel_rai.codec import compact, otlpproto, reasons
from otel_rai.codec import native as native_codec
from otel_rai.codec.records import SpanRecord

NATIVE = native_codec.module
native = pytest.mark.skipif(NATIVE is None, reason="the native module was not built")

_KEYS = [
    "ml.model.name", "ml.outputs", "ml.input.hashes", "ml.audit.seq", "ml.batch.size", "ml.decision.ids",
    "ml.output.scores.0", "ml.output.scores.é", "ml.x\u2028", "ml.\U0001f600", "ml.\x00nul", "ml.q\"uote",
    "ml.back\\slash", "ml.Z", "ml.a", "ml.", semconv.AUDIT_RECORD_HASH, semconv.CHECKPOINT_SIGNATURE,
    semconv.INPUT_VALUE_PREFIX + "income", "service.name", "http.route", "", "ML.upper", "ml.\x7f",
]
_TEXT_ALPHABET = ["a", "Z", "0", " ", "~", "\x7f", "\x00", "\x1f", "\b", "\f", "\n", "\r", "\t", "\"", "\\",
                  "/", "é", "\u2028", "\uffff", "\ud800", "\udfff", "\U0001f600", "[", "]", ","]


class _Odd:
    def __str__(self) -> str:
        return "odd"


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_TEXT_ALPHABET) for _ in range(rng.randrange(0, 12)))


def _number(rng: random.Random):
    return rng.choice([
        0, -0.0, 1, -1, 7, 2**53 + 1, -(2**63), 2**64, 10**400, True, False,
        0.1, 1e300, -1e-300, 5e-324, float("nan"), float("inf"), -float("inf"), rng.uniform(-1e6, 1e6),
        rng.randrange(-10**9, 10**9), 1e16, 1e22, 123456789.0,
    ])


def _scalar(rng: random.Random):
    kind = rng.randrange(7)
    if kind == 0:
        return _text(rng)
    if kind == 1:
        return "[" + ",".join(str(rng.randrange(9)) for _ in range(rng.randrange(3))) + rng.choice(["]", "", "x"])
    if kind in (2, 3):
        return _number(rng)
    if kind == 4:
        return None
    if kind == 5:
        return rng.choice([np.float64(0.5), np.int64(3), np.bool_(True), np.str_("s")])
    return rng.choice([b"bytes", {"k": 1}, {1: [2.5, "x"]}, _Odd()])


def _array(rng: random.Random):
    n = rng.randrange(0, 5)
    kind = rng.randrange(6)
    if kind == 0:
        items = [_text(rng) for _ in range(n)]
    elif kind == 1:
        items = [rng.random() < 0.5 for _ in range(n)]
    elif kind == 2:
        items = [_number(rng) for _ in range(n)]
    elif kind == 3:
        items = [rng.uniform(-1, 1) for _ in range(n)]
    elif kind == 4:
        items = [rng.randrange(-5, 5) for _ in range(n)]
    else:
        items = [_scalar(rng) if rng.random() < 0.7 else _array(rng) for _ in range(n)]
    return rng.choice([list, list, tuple])(items)


def _attributes(rng: random.Random) -> dict:
    return {rng.choice(_KEYS + [_text(rng)]): (_scalar(rng) if rng.random() < 0.5 else _array(rng))
            for _ in range(rng.randrange(0, 12))}


def _written(fields: tuple, attributes: dict, native_pass: bool):
    """The canonical body, or the type of what writing it raised."""
    try:
        if native_pass:
            return canonical.canonical_body(*fields, attributes)
        return canonical._body((fields[0], fields[1].lower(), fields[2].lower(), (fields[3] or "").lower(),
                                int(fields[4]), fields[5] or ""), attributes)
    except Exception as exc:  # both forms must fail alike
        return type(exc)


@native
def test_the_native_body_is_the_pure_body_for_every_generated_record():
    rng = random.Random(20)
    written = declined = 0
    for _ in range(6000):
        fields = (
            rng.choice(["ml.decision predict lr", _text(rng), "ü"]),
            rng.choice(["0af7651916cd43dd8448eb211c80319c", "0AF7651916CD43DD8448EB211C80319C"]),
            rng.choice(["b7ad6b7169203331", "B7AD6B7169203331"]),
            rng.choice([None, "", "00f067aa0ba902b7", "00F067AA0BA902B7"]),
            rng.choice([0, 1, 2]),
            rng.choice(["", None, _text(rng)]),
        )
        attributes = _attributes(rng)
        native_body = _written(fields, attributes, True)
        assert native_body == _written(fields, attributes, False), (fields, attributes)
        if isinstance(native_body, bytes):
            lowered = (fields[0], fields[1].lower(), fields[2].lower(), (fields[3] or "").lower(), fields[4],
                       fields[5] or "")
            if NATIVE.canonical_body(*lowered, attributes, {}, canonical.hashed_attribute, 10) is None:
                declined += 1
            else:
                written += 1
    # Both paths were exercised: most records natively, the rest handed to Python.
    assert written > 2000 and declined > 500, (written, declined)


def _plain(rng: random.Random):
    """A value the native body writes itself (most of an audit span's), or now and then one it leaves to Python."""
    kind = rng.randrange(12)
    if kind == 0:
        return _scalar(rng)
    if kind in (1, 2):
        return "t" + _text(rng)
    if kind in (3, 4):
        return _number(rng)
    if kind == 5:
        return rng.choice([None, True, False])
    if kind in (6, 7):
        return ["t" + _text(rng) for _ in range(rng.randrange(4))]
    if kind in (8, 9):
        return [_number(rng) for _ in range(rng.randrange(4))]
    return rng.choice([list, tuple])(rng.random() < 0.5 for _ in range(rng.randrange(3)))


@native
def test_a_record_with_the_last_record_s_names_is_written_as_python_writes_it():
    """The native body remembers the sorted order of the last record's names (`last_record` in
    `_native.c`). Generated runs of records that share name objects, mostly in the same order and
    sometimes not (reordered, one name more or less, a name replaced by an equal string, a dict changed
    after the last body, another classifier): every body is still the pure one."""
    rng = random.Random(41)
    pool = [*_KEYS, *(f"ml.attr.{i}" for i in range(30))]
    ascii_pool = [name for name in pool if name.isascii()]
    fields = ("predict_proba lr", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", None, 0, "")
    lowered = (fields[0], fields[1], fields[2], "", 0, "")
    every_name: dict = {}  # the memory of a classifier that hashes every name
    written = 0
    for run in range(400):
        names = rng.sample(ascii_pool if run % 4 else pool, rng.randrange(1, 30)) if run % 50 else pool + ascii_pool
        for i in range(rng.randrange(1, 12)):
            change = rng.randrange(12)
            if change == 0:
                rng.shuffle(names)
            elif change == 1 and len(names) > 1:
                names = names[:-1]
            elif change == 2:
                names = names + [rng.choice(pool)]
            elif change == 3:
                j = rng.randrange(len(names))
                names = names[:j] + ["".join(names[j])] + names[j + 1 :]  # equal, not the same object
            attributes = {name: _plain(rng) for name in names}
            if change == 4:
                NATIVE.canonical_body(*lowered, attributes, canonical._HASHED, canonical.hashed_attribute,
                                      canonical._MAX_HASHED_NAMES)
                attributes[rng.choice(names)] = _plain(rng)  # changed after its body was written
                attributes[names[0]] = attributes.pop(names[0])  # the same names, another order
            if change == 5:  # another classifier, on the very names whose order was remembered
                body = NATIVE.canonical_body(*lowered, attributes, every_name, lambda name: True, 10_000)
                try:
                    everything = json.dumps([*lowered, {k: canonical._value(v) for k, v in attributes.items()}],
                                            sort_keys=True, separators=(",", ":")).encode()
                except OverflowError:  # an int beyond float: Python's to refuse, and the native body declined it
                    everything = None
                assert body in (everything, None), (run, i)
                continue
            body = _written(fields, attributes, True)
            assert body == _written(fields, attributes, False), (run, i)
            written += NATIVE.canonical_body(*lowered, attributes, canonical._HASHED, canonical.hashed_attribute,
                                             canonical._MAX_HASHED_NAMES) is not None
    assert written > 500, written  # most bodies were native: the remembered order was used and checked


@native
def test_text_of_every_code_point_class_is_escaped_as_json_escapes_it():
    rng = random.Random(7)
    samples = [chr(c) for c in range(0, 0x300)] + ["\ud800", "\udbff\udc00", "\U0010ffff", "\u2028", "\ufeff"]
    samples += ["".join(rng.choice(samples) for _ in range(rng.randrange(1, 40))) for _ in range(2000)]
    for text in samples:
        attributes = {"ml.t": text, "ml.list": [text, text], text if text.isascii() else "ml.k": 1}
        fields = (text, "ab", "cd", None, 0, text)
        assert _written(fields, attributes, True) == _written(fields, attributes, False), repr(text)


@native
def test_floats_are_written_as_python_writes_them():
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2**64, size=20000, dtype=np.uint64).view(np.float64).tolist()
    ints = [int(x) for x in rng.integers(-(2**62), 2**62, size=2000)] + [2**53 + k for k in range(-3, 4)]
    for chunk in range(0, len(bits), 100):
        attributes = {"ml.f": bits[chunk:chunk + 100], "ml.one": bits[chunk], "ml.i": ints[chunk // 10]}
        fields = ("n", "ab", "cd", None, 0, "")
        assert _written(fields, attributes, True) == _written(fields, attributes, False)
    # Whole numbers, which the native writer formats on its own below 1e16, at and around every boundary.
    whole = [float(k) for k in range(-1100, 1100)] + [0.0, -0.0, 1e15, 1e16, -1e16, 1e17, 9999999999999998.0,
                                                     -9999999999999998.0, 999999999999999.9, 2.0**53, -(2.0**53)]
    whole += [float(k * 10**e) for k in (1, 7, -3) for e in range(20)] + [2.0**63, -(2.0**63), 2.0**64]
    whole += [float(x) + d for x in rng.integers(-(2**53), 2**53, size=2000) for d in (0.0, 0.5)]
    for chunk in range(0, len(whole), 50):
        attributes = {"ml.f": whole[chunk:chunk + 50], "ml.one": whole[chunk]}
        fields = ("n", "ab", "cd", None, 0, "")
        assert _written(fields, attributes, True) == _written(fields, attributes, False)


@native
def test_records_of_any_size_sort_as_python_sorts_and_remembered_floats_never_change_a_byte():
    """The native sort of a record's names (ASCII names in C up to a limit, the rest by Python's sort) on
    records of 0-150 attributes whose names are prefixes of each other, differ in one byte or are not
    ASCII; and the floats written from memory (each float twice, in the canonical body and in the row
    JSON, many more floats than slots) are each float's own repr."""
    oracle = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
    rng = random.Random(41)
    stems = ["ml.a", "ml.ab", "ml.a.b", "ml.a~", "ml.a\x7f", "ml.b", "ml.output.scores.", "ml.", "ml.aé", "ml.\u2028"]
    floats = np.random.default_rng(5).integers(0, 2**64, size=6000, dtype=np.uint64).view(np.float64).tolist()
    fields = ("n", "ab", "cd", None, 0, "")
    natively = 0
    for _ in range(1500):
        size = rng.choice([0, 1, 2, 63, 64, 65, 150, rng.randrange(150)])
        names = {rng.choice(stems) + str(rng.randrange(300)) * rng.randrange(2) for _ in range(size)}
        attributes = {name: rng.choice(floats) if rng.random() < 0.7 else [rng.choice(floats), rng.uniform(-1, 1)]
                      for name in rng.sample(sorted(names), len(names))}
        native_body = _written(fields, attributes, True)
        assert native_body == _written(fields, attributes, False), attributes
        natively += NATIVE.canonical_body(*fields[:3], "", 0, "", attributes, {}, canonical.hashed_attribute,
                                          10) is not None
        assert NATIVE.compact_json(attributes) == oracle(attributes)
        assert NATIVE.compact_json(attributes) == oracle(attributes)  # the second time from memory
    assert natively > 1000, natively


@native
def test_a_decision_span_is_written_natively_and_its_chain_verifies(tmp_path):
    """The values of a real decision span (explained, with its chain attributes) are all ones the native
    pass writes, none handed back; the bytes are Python's, and each stored record matches its hash."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    db = tmp_path / "audit.db"
    otel_rai.instrument(store=db, hash_key=KEY, explain=True)
    for i in range(20):
        model.predict_proba(X[i : i + 1])
    otel_rai.uninstrument()
    records = list(store.Store(db).spans())
    decisions = [r for r in records if semconv.DECISION_IDS in r.attributes]
    assert len(decisions) == 20
    for r in decisions:
        body = NATIVE.canonical_body(r.name, r.trace_id, r.span_id, r.parent_span_id or "", r.status_code,
                                         r.status_message, r.attributes, {}, canonical.hashed_attribute, 10)
        assert body is not None
        assert body == canonical._body((r.name, r.trace_id, r.span_id, r.parent_span_id or "", r.status_code,
                                        r.status_message), r.attributes)
        assert canonical.matches(r)


def test_the_native_module_is_built_where_the_suite_installs_it():
    """CI installs with a compiler: a native module missing there would leave its tests skipped."""
    if NATIVE is None and not os.environ.get("OTEL_RAI_TEST_STRICT"):
        pytest.skip("the native module was not built here (scripts/test.sh builds it)")
    assert NATIVE is not None


def _encoded(tag: int, attributes: dict, native_pass: bool, caplog):
    """The OTLP attributes and the warnings logged, or the type of what encoding raised."""
    caplog.clear()
    try:
        encoded = (otlpproto._attributes if native_pass else otlpproto._python_attributes)(tag, attributes)
    except Exception as exc:
        return type(exc), []
    return encoded, [r.getMessage() for r in caplog.records]


@native
def test_the_native_otlp_attributes_are_the_python_ones_for_every_generated_record(caplog):
    caplog.set_level(logging.WARNING, logger=otlpproto.__name__)
    rng = random.Random(21)
    written = declined = 0
    for _ in range(6000):
        attributes = _attributes(rng)
        tag = rng.choice([0x4A, 0x1A, 0x22, 0x0A])
        encoded = _encoded(tag, attributes, True, caplog)
        assert encoded == _encoded(tag, attributes, False, caplog), attributes
        if NATIVE.otlp_attributes(tag, attributes) is None:
            declined += 1
        else:
            written += 1
    assert written > 1000 and declined > 1000, (written, declined)


@native
def test_otlp_lengths_and_numbers_at_every_boundary():
    """Varint lengths and values where they grow a byte, negative and extreme int64s, every float."""
    sizes = [0, 1, 125, 126, 127, 128, 129, 16383, 16384, 2**21 + 3]
    ints = [0, 1, 127, 128, -1, -(2**63), 2**63 - 1, 2**31, -(2**31) - 1, 300, 2**56]
    floats = np.random.default_rng(5).integers(0, 2**64, size=2000, dtype=np.uint64).view(np.float64).tolist()
    cases = [{"k": "x" * n} for n in sizes] + [{"x" * n: 1} for n in sizes[:-1]]
    cases += [{"ml.list": ["y" * n] * 3} for n in sizes[:-2]] + [{"ml.many": list(range(n))} for n in sizes[:-1]]
    cases += [{"i": i, "l": [i, i], "t": (i,)} for i in ints] + [{"f": floats, "one": floats[0]}]
    cases += [{"": "empty key"}, {"e": []}, {"n": None, "nl": [None, 1.5]}, {"b": [True, False], "bb": True}]
    cases += [{"deep": [[[[["x"]]]]]}, {"mixed": ["a", 1, 2.5, True, None, [1]]}]
    for attributes in cases:
        encoded = NATIVE.otlp_attributes(0x4A, attributes)
        assert encoded is not None, attributes
        assert encoded == otlpproto._python_attributes(0x4A, attributes), attributes


def _json(encode, value):
    try:
        return encode(value)
    except Exception as exc:
        return type(exc)


@native
def test_the_native_compact_json_is_python_s_json_for_every_generated_dict():
    """The store's row JSON against Python's own `json` (the oracle), on the generated attributes and on
    dicts with keys json turns into text."""
    oracle = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
    encode = compact.encoder()
    rng = random.Random(22)
    written = declined = 0
    for i in range(6000):
        value = _attributes(rng)
        if i % 10 == 0:
            value[rng.choice([1, 2.5, True, None])] = "a key that is not text"
        assert _json(encode, value) == _json(oracle, value), value
        if NATIVE.compact_json(value) is None:
            declined += 1
        else:
            written += 1
    assert written > 1000 and declined > 1000, (written, declined)


def _entries(names, values, k, resolution, native_pass, monkeypatch):
    monkeypatch.setattr(native_codec, "module", NATIVE if native_pass else None)
    try:
        return reasons.encode_top(names, values, k, resolution)
    except Exception as exc:
        return type(exc)


@native
def test_the_native_explanation_entries_are_the_python_ones_for_every_generated_row(monkeypatch):
    """`ml.explanation.top` entries: ties, zeros, signed zeros, infinities, NaN, rounding at every kind
    of resolution (none, exact, a step, one too small to divide by), any k, awkward names."""
    rng = np.random.default_rng(23)
    pool = ["income", "debt=ratio", "a,b", "50%", "é", "\x00", "\ud800", "x" * 40, "", "=", "\U0001f600"]
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e308, -1e-320, 0.5, -0.5, 1.0, 123456789.0]
    written = declined = 0
    for _ in range(3000):
        n = int(rng.integers(0, 12))
        rows = int(rng.integers(1, 4))
        values = rng.normal(size=(rows, n)) * 10.0 ** rng.integers(-8, 8)
        mask = rng.random(values.shape) < 0.3
        values[mask] = rng.choice(specials, size=int(mask.sum()))
        with np.errstate(over="ignore", invalid="ignore"):
            if rng.random() < 0.3:
                values = np.round(values, 1)  # ties
            if rng.random() < 0.1:
                values = values.astype(rng.choice([np.float32, np.int64]))
        names = [pool[int(i)] if rng.random() < 0.5 else f"f{j}" for j, i in enumerate(rng.integers(len(pool), size=n))]
        if rng.random() < 0.05:
            names = names[:-1]
        if rng.random() < 0.05 and names:
            names[0] = 7
        k = int(rng.integers(-2, 14))
        resolution = [None, 0.0, 1e-3, 0.25, 2.0, 1e-320, -1.0, np.inf, 1][int(rng.integers(9))]
        got = _entries(names, values, k, resolution, True, monkeypatch)
        assert got == _entries(names, values, k, resolution, False, monkeypatch), (names, values, k, resolution)
        monkeypatch.setattr(native_codec, "module", NATIVE)
        try:
            escaped = [reasons._name(x) for x in names]
            native_entries = NATIVE.top_entries(escaped, values.tolist(), k, resolution)
        except Exception:
            native_entries = None
        if native_entries is None:
            declined += 1
        else:
            written += 1
    assert written > 1000 and declined > 300, (written, declined)


def test_the_encoding_tests_pass_in_pure_python():
    """``OTEL_RAI_PURE_PYTHON=1``: the fallback, checked against the oracles (the SDK's encoder, stored
    chains) by the same tests, in a process that never loads the native module."""
    root = Path(__file__).parent
    env = {**os.environ, "OTEL_RAI_PURE_PYTHON": "1"}
    probe = subprocess.run([sys.executable, "-c", "from otel_rai.codec import native; print(native.module)"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "None"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not stack",
                           str(root / "test_otlpproto.py"), str(root / "test_chain.py"), str(root / "test_store.py"),
                           str(root / "test_explanation_spans.py")],
                          env=env, capture_output=True, text=True, cwd=root.parent, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout


@pytest.mark.slow
def test_the_wheel_built_here_carries_the_native_module_for_this_platform(tmp_path):
    """What `pip wheel .` builds on CI's platform: a wheel tagged for it, holding the compiled module."""
    import zipfile

    root = Path(__file__).parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(root)],
                   check=True, timeout=600, capture_output=True)
    (wheel,) = tmp_path.glob("otel_rai-*.whl")
    assert not wheel.name.endswith("-none-any.whl"), wheel.name  # a platform wheel, not a pure one
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("otel_rai/codec/_native.") and n.endswith((".so", ".pyd")) for n in names), names
    assert "otel_rai/codec/native.py" in names and "otel_rai/chain/canonical.py" in names


def _blake2b(message: bytes, key: bytes, person: bytes, size: int) -> str:
    return hashlib.blake2b(message, key=key, person=person, digest_size=size).hexdigest()


@native
def test_the_native_keyed_blake2b_is_hashlib_s_for_every_generated_message():
    """hashlib is the oracle: keys, personalisations and digest sizes of every allowed length, and
    messages on each side of the 128-byte block (the key block alone, when the message is empty)."""
    rng = random.Random(7693)
    lengths = [0, 1, 8, 9, 119, 120, 127, 128, 129, 255, 256, 257, 1000]
    for _ in range(1500):
        key = rng.randbytes(rng.choice([0, 1, 16, 32, 63, 64]))
        person = rng.randbytes(rng.choice([0, 1, 15, 16]))
        size = rng.choice([1, 8, 16, 32, 63, 64])
        width, n = rng.choice(lengths), rng.randint(0, 4)
        data = rng.randbytes(width * n)
        assert NATIVE.blake2b_rows(key, person, size, data, n, width) == [
            _blake2b(data[i * width : (i + 1) * width], key, person, size) for i in range(n)]
        texts = ["".join(rng.choice(string.hexdigits) for _ in range(rng.choice(lengths[:9]))) for _ in range(n)]
        tails = [rng.randbytes(rng.choice(lengths)) for _ in range(n)]
        assert NATIVE.blake2b_fields(key, person, size, texts, tails) == [
            _blake2b(len(t).to_bytes(8, "little") + t.encode() + tail, key, person, size)
            for t, tail in zip(texts, tails)]


@native
def test_the_native_blake2b_refuses_what_hashlib_refuses_and_declines_text_python_must_encode():
    for key, person, size in [(bytes(65), b"", 16), (b"k", bytes(17), 16), (b"k", b"", 0), (b"k", b"", 65)]:
        with pytest.raises(ValueError):
            hashlib.blake2b(key=key, person=person, digest_size=size)
        with pytest.raises(ValueError):
            NATIVE.blake2b_rows(key, person, size, b"", 0, 0)
    with pytest.raises(ValueError):  # fewer bytes than the rows need
        NATIVE.blake2b_rows(b"k", b"", 16, bytes(17), 2, 9)
    for text in ["é", "\udc80", "\U0001f600"]:
        assert NATIVE.blake2b_fields(b"k", b"", 8, ["ab", text], [b"", b""]) is None
    assert NATIVE.blake2b_fields(b"k", b"", 8, ["ab"], [bytearray(b"")]) is None


@pytest.mark.parametrize("native_pass", [True, False])
def test_input_and_group_digests_are_the_same_natively_and_in_python(native_pass, monkeypatch):
    """Both callers of the native digests, on each path, against their plain definitions: a row's
    hash by the spec's bytes (hashlib over `canonical_rows`), and each decision's `groups_digest`."""
    if native_pass and NATIVE is None:
        pytest.skip("the native module was not built")
    monkeypatch.setattr(native_codec, "module", NATIVE if native_pass else None)
    rng = np.random.default_rng(11)
    key = hashing.HashKey.from_material(KEY)
    for rows, width in [(0, 3), (1, 0), (1, 20), (7, 5), (300, 14)]:
        X = rng.normal(size=(rows, width))
        X[rng.random(X.shape) < 0.1] = np.nan
        step = width * 9
        data = hashing.canonical_rows(X)
        assert hashing.hash_rows(X, key) == [
            _blake2b(data[i * step : (i + 1) * step], key.secret, b"otel-rai.row.v1", 16) for i in range(rows)]
    texts = random.Random(5)
    for _ in range(300):
        n = texts.randint(0, 5)
        ids = ["".join(texts.choice("0123456789abcdefé\udc80") for _ in range(texts.randint(0, 40))) for _ in range(n)]
        groups = {a: [texts.choice(["f", "m", "é", ""]) for _ in range(n)]
                  for a in texts.sample(["sex", "age", "ß"], 2)}
        key = texts.randbytes(32)
        expected = [local_rows.groups_digest(key, d, {a: v[i] for a, v in groups.items()}) for i, d in enumerate(ids)]
        assert local_rows.groups_digests(key, ids, groups) == expected


#: Names of attributes that `Store.append` does not read.
_OTHER_KEYS = [k for k in _KEYS if k not in (semconv.DECISION_IDS, semconv.INPUT_HASHES, semconv.OUTPUTS)]


class _Ids(list):
    """A list subclass: the native rows leave records holding one to Python."""


def _store_record(rng: random.Random, resources: list[dict], declined: bool) -> SpanRecord:
    """A record as the store may receive it: usual audit spans, and every odd part `Store.append` reads;
    if `declined`, maybe also a part the native rows leave to Python, or one JSON cannot hold."""
    n = rng.choice([0, 1, 1, 1, 2, 3])
    hexes = "0123456789abcdefABCDEF"
    hashes = [rng.choice([
        "".join(rng.choice(hexes) for _ in range(32)), "".join(rng.choice(hexes) for _ in range(rng.randrange(0, 16))),
        "0x1f", " 1f", "1_f", "+1f", "\u0661\u0662", "zz", "é", None, 7,
    ]) for _ in range(n)]
    ids = [f"{rng.randrange(16**12):012x}{rng.randrange(16**20):020x}" for _ in range(n)]
    a: dict = {}
    for key, value in [(semconv.MODEL_NAME, rng.choice(["lr", "é", 3])), (semconv.MODEL_VERSION, "1"),
                       (semconv.MODEL_FINGERPRINT, "f" * 16), (semconv.OPERATION, "predict_proba"),
                       (semconv.DECISION_IDS, rng.choice([ids, tuple(ids), None] + ([_Ids(ids)] if declined else []))),
                       (semconv.INPUT_HASHES, rng.choice([hashes, tuple(hashes), hashes + ["x"], None, "ab"])),
                       (semconv.OUTPUTS, rng.choice([[rng.random() for _ in range(n)], ["yes"] * n, None,
                                                     [1] * (n + 1)]))]:
        if rng.random() < 0.85:
            a[key] = value
    for _ in range(rng.randrange(3)):  # text to escape, numbers JSON writes its own way, arrays
        a[rng.choice(_KEYS if declined else _OTHER_KEYS)] = rng.choice([
            _text(rng), _number(rng), [_text(rng), _text(rng)], [_number(rng) for _ in range(3)], [True, False], None])
    if declined and rng.random() < 0.1:
        a["ml.odd"] = {1, 2}  # JSON cannot hold it: both paths fail alike
    return SpanRecord(
        trace_id=f"{rng.randrange(16**32):032x}", span_id=f"{rng.randrange(16**16):016x}", name="predict_proba lr",
        start_ns=rng.randrange(2**62), end_ns=rng.randrange(2**62), attributes=a,
        parent_span_id=rng.choice([None, f"{rng.randrange(16**16):016x}"]),
        parent_is_remote=rng.random() < 0.05, status_code=rng.choice([0, 0, 2]), status_message=rng.choice(["", "E"]),
        trace_state=rng.choice([""] * 19 + ["k=v"]),
        events=rng.choice([[]] * 19 + [[{"name": "exception", "time_ns": 1, "attributes": {"k": "v"}}]]),
        links=rng.choice([[]] * 19 + [[{"trace_id": "1" * 32, "span_id": "2" * 16, "trace_state": "",
                                        "attributes": {}}]]),
        resource=rng.choice(resources), scope_name=rng.choice(["otel-rai", "otel-rai", "other"]),
        scope_version=rng.choice(["1", "1", "2"]))


def _store_rows(path: Path, records: list) -> object:
    """Every row `Store.append` wrote of `records`, or the type of what it raised."""
    s = store.Store(path, create=True)
    try:
        s.append(records)
    except Exception as exc:  # both paths must fail alike
        return type(exc)
    conn = sqlite3.connect(path)
    try:
        return [conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                for table in ("spans", "decisions", "origins")]
    finally:
        conn.close()
        s.close()


@native
def test_the_native_store_rows_are_the_python_ones_for_every_generated_write(tmp_path, monkeypatch):
    """`Store.append` writes the same rows (every column, in type and value) whether the native module
    builds them or Python does: on generated writes of usual and odd records, from several resources
    and scopes, and of one, several or no decisions each."""
    rng = random.Random(31)
    resources = [{"service.name": "svc"}, {"service.name": "svc"}, {"service.name": "other", "k": 1}]
    for case in range(200):
        declined = case % 10 == 0  # else every record is one the native rows build
        records = [_store_record(rng, resources, declined) for _ in range(rng.randrange(1, 40))]
        monkeypatch.setattr(native_codec, "module", NATIVE)
        natively = _store_rows(tmp_path / f"n{case}.db", records)
        monkeypatch.setattr(native_codec, "module", None)
        in_python = _store_rows(tmp_path / f"p{case}.db", records)
        assert natively == in_python, case
