"""Keyed input hashes: canonical across containers, equal to the documented spec, never the key."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import KEY
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import semconv
from otel_rai.audit import hashing
from otel_rai.audit.hashing import HashKey, hash_rows, resolve_key


@functools.lru_cache(maxsize=None)
def spec_key(material: str) -> bytes:
    """The key of scheme blake2b-128/v2 (docs/hashing.md): scrypt of the material."""
    return hashlib.scrypt(material.encode(), salt=b"otel-rai.key.v2:input-hash", n=16384, r=8, p=1,
                          maxmem=64 << 20, dklen=32)


def spec_hash(cells, key: str, *, legacy: bool = False) -> str:
    """docs/hashing.md, written out independently of otel_rai.hashing: the oracle."""
    out = b""
    for v in cells:
        if v is None or (isinstance(v, float) and v != v):
            out += b"m" + bytes(8)
        elif isinstance(v, str):
            data = v.encode()
            out += b"s" + struct.pack("<Q", len(data)) + data
        else:
            out += b"n" + struct.pack("<d", float(v) + 0.0)
    secret = key.encode() if legacy else spec_key(key)
    return hashlib.blake2b(out, key=secret, digest_size=16, person=b"otel-rai.row.v1").hexdigest()


K = HashKey.from_material(KEY)


def test_numeric_rows_match_the_spec():
    rows = np.array([[1.0, -2.5, 0.1], [np.nan, -0.0, 1e300], [np.inf, -np.inf, 3.0]])
    assert hash_rows(rows, K) == [spec_hash(list(r), KEY) for r in rows]
    legacy = HashKey.from_material(KEY, hashing.LEGACY_SCHEME)  # decisions recorded by earlier versions
    assert hash_rows(rows, legacy) == [spec_hash(list(r), KEY, legacy=True) for r in rows]
    assert K.key_id == hmac.new(spec_key(KEY), b"otel-rai.key-id", hashlib.sha256).hexdigest()[:16]


def test_same_row_same_hash_in_every_container():
    values = [3, 0.1, -0.0, float("nan"), 7]
    expected = spec_hash(values, KEY)
    as_float64 = np.array([values], dtype=np.float64)
    as_float32 = as_float64.astype(np.float32)  # float32(0.1) hashes like 0.1: the shortest-decimal rule
    frame = pd.DataFrame({"a": [3], "b": [0.1], "c": [-0.0], "d": [None], "e": [7]})
    frame["d"] = frame["d"].astype(float)
    nullable = frame.astype({"a": "Int64", "e": "Int64"})
    nullable["d"] = pd.array([pd.NA], dtype="Float64")
    containers = {
        "list": [values],
        "float64": as_float64,
        "float32": as_float32,
        "fortran-order": np.asfortranarray(as_float64),
        "frame": frame,
        "nullable-frame": nullable,
        "object-array": np.array([[3, 0.1, -0.0, None, 7]], dtype=object),
        "csr": sp.csr_matrix(np.nan_to_num(as_float64, nan=0.0)),  # sparse: implicit zeros
    }
    for name, X in containers.items():
        want = spec_hash([3, 0.1, 0.0, 0.0, 7], KEY) if name == "csr" else expected
        assert hash_rows(X, K) == [want], name
    assert otel_rai.hash_input(values, K) == expected
    assert otel_rai.hash_input(frame.iloc[0], K) == expected
    assert otel_rai.hash_input(dict(zip("abcde", values)), K, feature_names=list("abcde")) == expected


def test_strings_categoricals_and_missing_values():
    frame = pd.DataFrame(
        {
            "region": pd.Categorical(["north", None, "east"]),
            "name": pd.array(["ann", "bob", None], dtype="string"),
            "income": [1.5, 2.0, np.nan],
        }
    )
    expected = [
        spec_hash(["north", "ann", 1.5], KEY),
        spec_hash([None, "bob", 2.0], KEY),
        spec_hash(["east", None, None], KEY),
    ]
    assert hash_rows(frame, K) == expected
    assert hash_rows(frame.astype(object).to_numpy(), K) == expected
    assert hash_rows([["north", "ann", 1.5], [None, "bob", 2.0], ["east", None, None]], K) == expected
    # a number and the string of that number are different cells
    assert hash_rows([["1.5"]], K) != hash_rows([[1.5]], K)


def test_one_dimensional_batches_are_rows_of_one_cell():
    texts = ["approve me", "deny me"]
    assert hash_rows(texts, K) == [spec_hash([t], KEY) for t in texts]
    assert hash_rows(pd.Series(texts), K) == hash_rows(texts, K)


def test_large_sparse_matches_dense():
    dense = np.random.RandomState(0).binomial(1, 0.1, size=(5000, 7)).astype(float)
    assert hash_rows(sp.csc_matrix(dense), K) == hash_rows(dense, K)


def test_hash_depends_on_key_and_cell_order():
    row = [1.0, 2.0]
    assert otel_rai.hash_input(row, K) != otel_rai.hash_input(row, "another key of good length!")
    assert otel_rai.hash_input(row, K) != otel_rai.hash_input([2.0, 1.0], K)


def test_hash_input_rejects_ambiguous_rows():
    with pytest.raises(ValueError, match="feature_names"):
        otel_rai.hash_input({"a": 1}, K)
    with pytest.raises(ValueError, match="no value for"):
        otel_rai.hash_input({"a": 1}, K, feature_names=["a", "b"])
    with pytest.raises(ValueError, match="one row"):
        otel_rai.hash_input(np.zeros((2, 3)), K)


def test_key_id_identifies_without_revealing():
    key = HashKey.from_material(KEY)
    assert len(key.key_id) == 16 and KEY not in repr(key) and key.key_id in repr(key)
    assert key.key_id == HashKey.from_material(KEY.encode()).key_id
    assert key.key_id != HashKey.from_material(KEY + "x").key_id
    with pytest.raises(ValueError):
        HashKey.from_material("")


def test_key_from_environment(monkeypatch):
    monkeypatch.setenv("OTEL_RAI_HASH_KEY", KEY)
    assert resolve_key().key_id == K.key_id


def _resolve_in_a_new_process(home) -> tuple[str, str]:
    """(key id, stderr) of a fresh interpreter resolving the key with no key configured."""
    env = {k: v for k, v in os.environ.items() if k != "OTEL_RAI_HASH_KEY"}
    env.update(OTEL_RAI_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
               PYTHONPATH=str(Path(__file__).parents[1]))
    code = "from otel_rai.audit.hashing import resolve_key; print(resolve_key().key_id)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip(), done.stderr


def test_generated_key_is_persisted_private_and_announced_once_when_created(tmp_path):
    home = tmp_path / "fresh-home"
    path = home / "config" / "otel-rai" / "hash.key"  # $XDG_CONFIG_HOME, not the data directory
    first, said = _resolve_in_a_new_process(home)
    assert path.exists() and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700 and not (home / "data").exists()
    assert said.count(str(path)) == 1 and "generated" in said
    # Every later process (a worker, a CLI, the next start) reads the same key and says nothing.
    for _ in range(3):
        again, said = _resolve_in_a_new_process(home)
        assert again == first and said == ""
    assert HashKey.from_material(path.read_text().strip()).key_id == first  # usable as OTEL_RAI_HASH_KEY


def test_generated_key_is_announced_once_in_a_process(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="otel_rai"):
        assert resolve_key() == resolve_key()
    path = tmp_path / "config" / "otel-rai" / "hash.key"
    assert [r.getMessage().count(str(path)) for r in caplog.records] == [1]


def test_span_hashes_are_recomputable_by_an_auditor(audit):
    frame = pd.DataFrame({"income": [52000.0, 61000.0], "debt": [0.2, 0.35]})
    model = LogisticRegression().fit(frame, [0, 1])
    with otel_rai.decisions(ids=["A-1", "A-2"]):
        model.predict(frame)
    (span,) = audit.spans()
    features = list(span.attributes[semconv.INPUT_FEATURES])
    applicant = {"debt": 0.35, "income": 61000}  # as an auditor holds it: a form, any order, ints
    h = otel_rai.hash_input(applicant, KEY, feature_names=features)
    assert span.attributes[semconv.DECISION_IDS][span.attributes[semconv.INPUT_HASHES].index(h)] == "A-2"
    assert KEY not in str(span.attributes) and KEY not in str(span.resource.attributes)


def test_small_and_large_frames_take_different_paths_to_the_same_hashes():
    rng = np.random.default_rng(0)
    n = 3000  # 3000 rows x 4 columns is past the small-frame path
    frame = pd.DataFrame({
        "x": rng.normal(size=n),
        "k": rng.integers(0, 5, n),
        "region": pd.Categorical(rng.choice(["n", "s"], n)),
        "score": pd.array(rng.normal(size=n).astype(np.float32), dtype="Float32"),
    })
    frame.loc[3, "score"] = pd.NA
    rows = [[x, k, r, None if pd.isna(s) else float(str(np.float32(s)))]
            for x, k, r, s in frame.itertuples(index=False)]
    expected = [spec_hash(r, KEY) for r in rows]
    assert hash_rows(frame, K) == expected  # per-column path
    assert hash_rows(frame.head(5), K) == expected[:5]  # one object conversion
    assert hash_rows(frame.drop(columns="score").head(5), K) == [spec_hash(r[:3], KEY) for r in rows[:5]]


def _random_frame(rng: np.random.Generator, n: int) -> tuple[pd.DataFrame, bool]:
    """A frame of `n` rows with a random choice of the column kinds a request may bring; and whether the
    test's spec covers all its cells (it has no lone surrogate, int beyond float64 or float32 object)."""
    kinds = {
        "float": lambda: pd.Series(rng.choice([0.5, -0.0, np.nan, np.inf, -1e300, 2.0**53 + 2, 3.0], n)),
        "int": lambda: pd.Series(rng.integers(-(2**62), 2**62, n)),
        "bool": lambda: pd.Series(rng.integers(0, 2, n).astype(bool)),
        "str": lambda: pd.Series(rng.choice(["a", "", "é", "long " * 40], n).tolist(), dtype=object),
        "string": lambda: pd.Series(rng.choice(["north", "south"], n).tolist(), dtype="string"),
        "category": lambda: pd.Series(pd.Categorical(rng.choice(["x", "y", None], n))),
        "Int64": lambda: pd.Series([None if v == 0 else int(v) for v in rng.integers(0, 4, n)], dtype="Int64"),
        "mixed": lambda: pd.Series([[1, 2.5, "z", None, True, 10**400, np.float32(0.1), "\ud800"][i]
                                    for i in rng.integers(0, 8, n)], dtype=object),
    }
    names = rng.choice(list(kinds), size=int(rng.integers(1, 7)))
    return pd.DataFrame({f"{kind}{j}": kinds[kind]() for j, kind in enumerate(names)}), "mixed" not in names


def test_request_sized_frames_hash_the_same_by_every_path(monkeypatch):
    """A frame of a few rows is encoded cell by cell; the same rows by whole columns of objects, and by
    one Series per column, must give the same digests, for every kind of column, and as the spec says."""
    rng = np.random.default_rng(21)
    for _ in range(300):
        frame, in_spec = _random_frame(rng, int(rng.integers(1, hashing._CELLWISE_ROWS + 1)))
        cellwise = hash_rows(frame, K)
        with monkeypatch.context() as m:
            m.setattr(hashing, "_CELLWISE_ROWS", 0)
            by_columns = hash_rows(frame, K)
            m.setattr(hashing, "_SMALL_FRAME_CELLS", 0)
            by_series = hash_rows(frame, K)
        assert cellwise == by_columns == by_series, frame.dtypes.tolist()
        if in_spec:
            rows = [[None if v is pd.NA else v for v in row] for row in frame.astype(object).itertuples(index=False)]
            assert cellwise == [spec_hash(row, KEY) for row in rows], frame.dtypes.tolist()


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.uint64, np.int8, bool])
def test_a_single_row_hashes_as_the_same_row_in_a_batch(dtype):
    """A row hashes the same alone as in a batch, and as the spec says, at the edges of each dtype."""
    rng = np.random.default_rng(7)
    if dtype is np.float64:
        batch = rng.normal(size=(6, 7)) * 1e6
        batch[0, :4] = [np.nan, -0.0, np.inf, -np.inf]
        batch[1, :3] = [2.0**53 + 2, 5e-324, -1.7976931348623157e308]
    elif dtype is bool:
        batch = rng.integers(0, 2, size=(6, 7)).astype(bool)
    else:
        info = np.iinfo(dtype)
        batch = rng.integers(info.min, info.max, size=(6, 7), dtype=dtype, endpoint=True)
        batch[0, :2] = [info.min, info.max]
    batch = batch.astype(dtype)
    expected = hash_rows(batch, K)
    assert expected == [spec_hash(row, KEY) for row in batch.tolist()]
    assert [hash_rows(batch[i : i + 1], K)[0] for i in range(len(batch))] == expected
    assert len(set(expected)) == len(expected)


def test_inputs_hashed_together_hash_as_each_alone():
    """The audit worker hashes a cycle's small numeric inputs in one pass (`hash_rows_many`): by dtype
    and width, so that float32 keeps its own rounding rule, and never what it cannot join."""
    rng = np.random.default_rng(3)
    wide = rng.normal(size=(200, 5))
    inputs = [
        wide[:1], wide[1:4], wide[4:5].astype(np.float32), wide[5:7, :3], wide[7:8].astype(np.int64),
        wide[8:9].astype(np.float32), np.asfortranarray(wide[9:12]), wide[12:13, ::2], wide[13:13],
        wide[13:13 + 65],  # more rows than are worth joining
        pd.DataFrame(wide[:2]), [[1.0, 2.0]], np.array([["a", "b"]], dtype=object), wide[0],
    ]
    joined = hashing.hash_rows_many(inputs, K)
    assert all(h is not None for h in joined[:9]) and joined[8] == []
    assert joined[9:] == [None] * 5  # left to hash_rows, one input at a time
    for X, hashes in zip(inputs[:9], joined):
        assert hashes == hash_rows(X, K)


@pytest.mark.parametrize("material", ["short-key", "a" * 40, "abababababababababab", "0123456" * 3, b"\x00" * 32])
def test_weak_keys_are_refused_for_recording_never_shown(material):
    with pytest.raises(ValueError, match="too weak") as raised:
        otel_rai.instrument(hash_key=material, store=False)
    text = material if isinstance(material, str) else material.decode("latin-1")
    assert text not in str(raised.value)
    assert HashKey.from_material(material).key_id  # a verifier still reads what such a key recorded


def test_a_key_id_costs_an_attacker_a_stretch_per_guess():
    """The issue's attack: a human-chosen key guessed from its id. Each guess now costs scrypt."""
    import time

    human = "correct-horse-battery-1"
    target = HashKey.from_material(human).key_id
    guesses = ["password-1234567890", "correct-horse-battery-0", human]
    start = time.process_time()
    found = [g for g in guesses if hashing.derive.__wrapped__(g.encode(), b"input-hash")[1] == target]
    per_guess = (time.process_time() - start) / len(guesses)
    assert found == [human]  # the id does identify the key (that is its job) ...
    assert per_guess > 0.005  # ... at a cost per guess a thousand times the old unkeyed digest's
    legacy = HashKey.from_material(human, hashing.LEGACY_SCHEME)
    assert legacy.key_id == hashlib.blake2b(human.encode(), digest_size=8, person=b"otel-rai.keyid").hexdigest()
    assert target != legacy.key_id


def test_a_key_left_in_the_data_directory_is_still_used(tmp_path, caplog, monkeypatch):
    old = tmp_path / "otel-rai-home" / "hash.key"
    old.parent.mkdir()
    old.write_text("0123456789abcdef" * 4 + "\n")
    with caplog.at_level(logging.WARNING):
        key = resolve_key()
    assert key == HashKey.from_material("0123456789abcdef" * 4)
    assert any("move it to" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "config" / "otel-rai" / "hash.key").exists()
