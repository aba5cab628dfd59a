"""Bad input: the instrumented call returns or raises exactly what bare scikit-learn does, and the
audit adds no failure of its own."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import bare
from opentelemetry.trace import StatusCode
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

import otel_rai
from otel_rai import semconv
from otel_rai.query import local, trail

rng = np.random.RandomState(0)
X = rng.randn(60, 4)
y = (X[:, 0] > 0).astype(int)
LR = LogisticRegression().fit(X, y)
HGB = HistGradientBoostingClassifier(max_iter=5).fit(X, y)
FRAME = pd.DataFrame({"n": rng.randn(60), "c": rng.choice(["a", "b"], 60)})
PIPE = make_pipeline(ColumnTransformer([("oh", OneHotEncoder(), ["c"])], remainder="passthrough"),
                     LogisticRegression()).fit(FRAME, y)

with_nan = X[:3].copy()
with_nan[0, 1] = np.nan
with_inf = X[:3].copy()
with_inf[1, 2] = np.inf
strings = X[:3].astype(object)
strings[0, 0] = "abc"
numeric_strings = X[:3].astype(str)
readonly = X[:3].copy()
readonly.flags.writeable = False
categorical_frame = FRAME.head(4).assign(c=pd.Categorical(FRAME.c.head(4)))
unknown_category = FRAME.head(2).assign(c=["a", "zzz"])
nullable = pd.DataFrame(X[:3], columns=list("abcd")).astype("Float64")
nullable.iloc[0, 0] = pd.NA
nullable_int = pd.DataFrame((X[:3] * 10).round(), columns=list("abcd")).astype("Int64")
nullable_int.iloc[1, 2] = pd.NA
nullable_bool = pd.DataFrame(X[:3] > 0, columns=list("abcd")).astype("boolean")
named = pd.DataFrame(X[:3], columns=list("abcd"))
LR_NAMED = LogisticRegression().fit(pd.DataFrame(X, columns=list("abcd")), y)
string_dtype = FRAME.head(3).assign(c=FRAME.c.head(3).astype("string"))
with_none = X[:3].astype(object)
with_none[2, 1] = None
readonly_frame = pd.DataFrame(readonly, columns=list("abcd"))

CASES = {
    "nan-lr": (LR, with_nan),
    "nan-hgb": (HGB, with_nan),
    "inf": (LR, with_inf),
    "string-in-numeric": (LR, strings),
    "numeric-strings": (LR, numeric_strings),
    "object-array": (LR, X[:3].astype(object)),
    "csr": (LR, sp.csr_matrix(X[:5])),
    "csc": (LR, sp.csc_matrix(X[:5])),
    "empty": (LR, X[:0]),
    "one-dimensional": (LR, X[0]),
    "three-dimensional": (LR, X[:2].reshape(2, 2, 2)),
    "wrong-width": (LR, X[:3, :3]),
    "non-contiguous": (LR, X[::3, ::1][:, [3, 2, 1, 0]][:, ::-1]),
    "fortran-order": (LR, np.asfortranarray(X[:5])),
    "read-only": (LR, readonly),
    "list-of-lists": (LR, X[:3].tolist()),
    "nullable-with-na": (HGB, nullable.to_numpy(dtype=float, na_value=np.nan)),
    "nullable-frame-lr": (LR, nullable),
    "categorical-frame": (PIPE, categorical_frame),
    "unknown-category": (PIPE, unknown_category),
    "none": (LR, None),
    "nullable-int-with-na": (LR, nullable_int),
    "nullable-int-hgb": (HGB, nullable_int),
    "nullable-boolean": (LR, nullable_bool),
    "string-dtype-column": (PIPE, string_dtype),
    "none-in-object-array": (LR, with_none),
    "none-in-object-array-hgb": (HGB, with_none),
    "renamed-columns": (LR_NAMED, named.rename(columns={"a": "z"})),
    "reordered-columns": (LR_NAMED, named[list("dcba")]),
    "read-only-frame": (LR_NAMED, readonly_frame),
    "empty-frame": (LR_NAMED, named.head(0)),
    "csr-empty": (LR, sp.csr_matrix((0, 4))),
    "scalar": (LR, 3.0),
    "dict": (LR, {"a": [1.0]}),
}


def _outcome(method, data):
    try:
        return "ok", method(data)
    except Exception as exc:
        return "raised", (type(exc), str(exc))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_same_result_or_same_exception(audit, case, method):
    model, data = CASES[case]
    expected = _outcome(lambda d: bare(getattr(model, method), d), data)
    audit.clear()
    got = _outcome(getattr(model, method), data)
    assert got[0] == expected[0]
    if got[0] == "ok":
        assert np.array_equal(got[1], expected[1], equal_nan=True) and got[1].dtype == expected[1].dtype
    else:
        assert got[1] == expected[1]
    (span,) = audit.spans()
    if got[0] == "raised":
        assert span.status.status_code == StatusCode.ERROR
    else:
        assert span.status.status_code == StatusCode.UNSET
        assert len(span.attributes[semconv.OUTPUTS]) == len(got[1]) == span.attributes[semconv.BATCH_SIZE]
        # otel-rai added no failure: every row of a successful call is hashed
        assert semconv.AUDIT_ERROR not in span.attributes, span.attributes[semconv.AUDIT_ERROR]
        assert len(span.attributes[semconv.INPUT_HASHES]) == len(got[1])
    assert otel_rai.flush().failures == {}


@pytest.mark.slow
def test_a_million_row_batch_is_identical_and_fully_audited(tmp_path):
    big = np.tile(X, (1_000_000 // len(X) + 1, 1))[:1_000_000]
    expected = bare(LR.predict_proba, big)
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key="big-key-0123456789abcdef")
    got = LR.predict_proba(big)
    result = otel_rai.flush(600)
    otel_rai.uninstrument()
    assert np.array_equal(got, expected) and got.dtype == expected.dtype
    assert result.complete and result.failures == {} and result.decisions == 1_000_000
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT decision_id), count(input_hash) FROM decisions"
                            ).fetchone() == (1_000_000, 1_000_000, 1_000_000)


def test_eight_threads_of_single_row_decisions_are_each_recorded_once(tmp_path):
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key="threads-key-0123456789abcdef")

    def work(t: int) -> None:
        for i in range(5000):
            with otel_rai.decisions(ids=[f"t{t}-{i}"]):
                LR.predict(X[i % 60 : i % 60 + 1])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert otel_rai.flush(300).complete
    otel_rai.uninstrument()
    with sqlite3.connect(path) as conn:
        ids = [r[0] for r in conn.execute("SELECT decision_id FROM decisions")]
    assert len(ids) == len(set(ids)) == 40_000
    assert set(ids) == {f"t{t}-{i}" for t in range(8) for i in range(5000)}
    report = trail.verify(local.connect(str(path)))
    assert report.ok and [s.decisions for s in report.streams.values()] == [40_000]
