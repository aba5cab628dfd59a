"""Drift statistics and reference profiles against scipy (and evidently, in its own virtualenv)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from conftest import need, venv_python
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, wasserstein_distance

from otel_rai.monitoring import drift, profile, snapshot
from otel_rai.monitoring.profile import Binner

#: The statistics are the same formulas on the same bins: equal up to floating-point rounding.
TOL = 1e-12


def histograms(seed: int) -> tuple[profile.FeatureProfile, np.ndarray, np.ndarray, np.ndarray]:
    """A numeric profile of a reference sample and the window counts of a (perhaps shifted) sample."""
    rng = np.random.default_rng(seed)
    n_ref, n_cur = int(rng.integers(50, 5000)), int(rng.integers(20, 2000))
    ref = rng.normal(0, 1, n_ref)
    cur = rng.normal(rng.choice([0, 0.2, 1.0]), rng.choice([1, 1.5]), n_cur)
    if rng.random() < 0.3:  # missing values on either side
        ref[rng.random(n_ref) < 0.05] = np.nan
        cur[rng.random(n_cur) < rng.choice([0, 0.2])] = np.nan
    if rng.random() < 0.3:  # a discrete feature: repeated values, merged edges
        ref, cur = np.round(ref * 2), np.round(cur * 2)
    f = profile.numeric("x", ref, int(rng.integers(2, 20)), rng.choice([None, 2, 3]))
    counts = np.bincount(profile.bin_numeric(cur, np.asarray(f.edges)), minlength=f.bins)
    return f, np.asarray(f.counts), counts, ref


@pytest.mark.parametrize("seed", range(60))
def test_numeric_statistics_equal_scipy(seed):
    f, ref, cur, _ = histograms(seed)
    d = drift.figures("x", profile.NUMERIC, ref, cur, f.positions)
    assert d.js_distance == pytest.approx(jensenshannon(ref, cur, base=2), abs=TOL)
    values = np.asarray(f.positions)
    expected = wasserstein_distance(values, values, ref[:-1], cur[:-1]) if cur[:-1].sum() else None
    assert d.wasserstein == pytest.approx(expected, abs=TOL)
    used = (ref > 0) | (cur > 0)
    p = np.where(ref[used] > 0, ref[used] / ref.sum(), drift.PSI_EPSILON)
    q = np.where(cur[used] > 0, cur[used] / cur.sum(), drift.PSI_EPSILON)
    assert d.psi == pytest.approx(float(np.sum((q - p) * np.log(q / p))), abs=TOL)
    assert d.chi2_pvalue is None  # numeric features: no χ² test
    assert d.missing_rate_reference == ref[-1] / ref.sum()


@pytest.mark.parametrize("seed", range(40))
def test_categorical_statistics_equal_scipy(seed):
    rng = np.random.default_rng(1000 + seed)
    k = int(rng.integers(2, 30))
    ref = rng.integers(0, 200, k) * (rng.random(k) < 0.8)
    cur = rng.integers(0, 100, k) * (rng.random(k) < 0.8)
    if ref.sum() == 0 or cur.sum() == 0:
        pytest.skip("an empty side")
    d = drift.figures("c", profile.CATEGORICAL, ref, cur)
    used = (ref > 0) | (cur > 0)
    if used.sum() >= 2:
        statistic, pvalue, dof, _ = chi2_contingency(np.vstack([ref[used], cur[used]]), correction=False)
        assert d.chi2_pvalue == pytest.approx(pvalue, rel=1e-9, abs=TOL)
    else:
        assert d.chi2_pvalue is None
    assert d.js_distance == pytest.approx(jensenshannon(ref, cur, base=2), abs=TOL)
    assert d.wasserstein is None


def test_undefined_statistics():
    assert drift.psi([0, 0], [1, 2]) is None and drift.js_distance([3, 0], [0, 0]) is None
    assert drift.chi2_pvalue([5, 0], [3, 0]) is None  # one bin with data: no test
    assert drift.psi([10, 10], [10, 10]) == 0.0 and drift.js_distance([1, 2], [2, 4]) == pytest.approx(0, abs=1e-9)
    with pytest.raises(ValueError):
        drift.psi([1, 2, 3], [1, 2])


# --- profiles and binning -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_numeric_profile_is_quantile_bins_of_the_reference(seed):
    rng = np.random.default_rng(seed)
    values = rng.lognormal(0, 1, int(rng.integers(30, 3000)))
    values[rng.random(len(values)) < 0.1] = np.nan
    bins, digits = int(rng.integers(2, 15)), rng.choice([None, 1, 3])
    f = profile.numeric("v", values, bins, digits)
    finite = values[np.isfinite(values)]
    expected_edges = np.unique(profile.coarsen(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]), digits))
    assert np.array_equal(f.edges, expected_edges)
    assert f.bins == len(f.edges) + 2 and f.rows == len(values) and f.counts[-1] == np.isnan(values).sum()
    # every value bin holds edges[i-1] <= x < edges[i], and its position is the mean of the values in it
    edges = np.concatenate([[-np.inf], f.edges, [np.inf]])
    for i in range(len(f.edges) + 1):
        inside = finite[(finite >= edges[i]) & (finite < edges[i + 1])]
        assert f.counts[i] == len(inside)
        if len(inside) and digits is None:
            assert f.positions[i] == pytest.approx(inside.mean(), rel=1e-12)
    if digits is not None:  # coarsened edges carry at most `digits` significant digits
        for e in f.edges:
            assert float(f"{e:.{digits - 1}e}") == e


def test_categorical_profile_keeps_the_top_k_by_name():
    values = ["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] + [None, float("nan")]
    f = profile.categorical("c", values, top_k=2)
    assert f.categories == ("a", "b") and f.counts == (5, 3, 4, 2)  # b before c on a tie: text order


@pytest.mark.parametrize("rows", [1, 7, 9, 256, 257, 3000])
def test_binner_agrees_with_the_profile_binning(rows):
    rng = np.random.default_rng(rows)
    ref = pd.DataFrame({"a": rng.normal(size=500), "b": rng.exponential(size=500),
                        "c": rng.choice(["x", "y", "z", "w"], 500)})
    features = [profile.numeric("a", ref.a.to_numpy(), 10, 3), profile.numeric("b", ref.b.to_numpy(), 4, None),
                profile.categorical("c", ref.c, 2)]
    binner = Binner(features)
    live = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.exponential(size=rows),
                         "c": rng.choice(["x", "y", "q", None], rows)})
    live.loc[live.index[:: 3], "a"] = np.nan
    live.loc[live.index[:: 5], "b"] = np.inf
    num, cat = profile.matrices(live, [0, 1], [2])
    flat = binner.bin(num, cat)
    local = [col - off for col, off in zip(flat.T, binner.offsets)]
    assert np.array_equal(local[0], profile.bin_numeric(live.a.to_numpy(), np.asarray(features[0].edges)))
    assert np.array_equal(local[1], profile.bin_numeric(live.b.to_numpy(), np.asarray(features[1].edges)))
    names = features[2].categories
    expected = [3 if profile.is_missing(v) else names.index(v) if v in names else 2 for v in live.c]
    assert local[2].tolist() == expected
    hist = binner.split(binner.histogram(flat))
    assert [h.sum() for h in hist] == [rows] * 3


@pytest.mark.parametrize("rows", [1, 8, 9, 256, 3000])
@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("widest", [11, 40])
def test_a_binner_of_numeric_features_only_agrees_with_the_profile_binning(rows, missing, widest):
    """Numbers only, the layout of an ndarray input: its local bins come straight from the numeric pass, with
    and without missing or infinite values, on each side of the row and edge counts where that pass changes
    method (one comparison, a pass an edge, a search a column); one feature is constant (one edge)."""
    rng = np.random.default_rng(rows + missing + widest)
    ref = rng.normal(size=(500, 5)) * [1, 10, 0.1, 1, 100]
    ref[:, 3] = 2.5
    features = [profile.numeric(f"x{i}", ref[:, i], widest - 2 * i, None if i % 2 else 3) for i in range(5)]
    assert max(len(f.edges) for f in features) in (10, 39)
    binner = Binner(features)
    live = rng.normal(size=(rows, 5)) * [1, 10, 0.1, 1, 100] * 1.5
    for i, feature in enumerate(features):  # values on an edge belong to the bin above it
        live[rng.integers(0, rows, len(feature.edges)), i] = feature.edges
    if missing:
        live[::3, 0], live[1::4, 2], live[::5, 4], live[2::7, 1] = np.nan, np.inf, -np.inf, np.nan
    num, cat = profile.matrices(live, range(5), [])
    local = binner.local(num, cat)
    assert local.shape == (rows, 5)
    for i, feature in enumerate(features):
        assert np.array_equal(local[:, i], profile.bin_numeric(live[:, i], np.asarray(feature.edges)))
    assert np.array_equal(binner.bin(num, cat), local + binner.offsets)


def test_snapshot_attributes_round_trip():
    rng = np.random.default_rng(5)
    subjects = (profile.numeric("a", rng.normal(size=300), 10, 3),
                profile.categorical("c", rng.choice(list("xyz"), 300), 5),
                profile.numeric("b", rng.normal(size=300), 3, None))
    current = [np.arange(s.bins) for s in subjects]
    read = snapshot.read(snapshot.record("m", "1", "fit", subjects, current))
    assert [h.feature for h in read] == ["a", "c", "b"]
    for h, s, c in zip(read, subjects, current):
        assert h.reference == s.counts and h.current == tuple(c) and h.edges == s.edges and h.positions == s.positions
    broken = snapshot.record("m", "1", "fit", subjects, current)
    broken["ml.drift.bins"] = [1, 2, 3]
    with pytest.raises(ValueError):
        snapshot.read(broken)


# --- evidently, in a virtualenv of its own ------------------------------------------------------------

_EVIDENTLY = """
import json, sys
import pandas as pd
from evidently.legacy.calculations.stattests import psi_stat_test
from evidently.legacy.core import ColumnType
out = []
for case in json.load(sys.stdin):
    ref, cur = pd.Series(case["reference"]), pd.Series(case["current"])
    out.append(float(psi_stat_test.func(ref, cur, ColumnType.Categorical, 0.1)[0]))
print(json.dumps(out))
"""


def test_psi_equals_evidently_on_the_same_bins_and_categories():
    """evidently 0.7 (pandas < 3: its own virtualenv) on the bin index of every row, and on the raw
    categories of a categorical feature: the same PSI, ours with its fixed epsilon, evidently's with
    its own, which agree while every proportion that is not zero exceeds 1e-4 (here: < 10,000 rows)."""
    python = venv_python("evidently")
    need("the evidently virtualenv", python is not None)
    cases, ours = [], []
    for seed in range(25):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(100, 5000))
        ref = rng.normal(0, 1, n)
        cur = rng.normal(rng.choice([0.0, 0.3, 1.0]), 1, int(rng.integers(50, 2000)))
        f = profile.numeric("x", ref, 10, 3)
        ref_bins = profile.bin_numeric(ref, np.asarray(f.edges))
        cur_bins = profile.bin_numeric(cur, np.asarray(f.edges))
        cases.append({"reference": ref_bins.tolist(), "current": cur_bins.tolist()})
        ours.append(drift.psi(np.bincount(ref_bins, minlength=f.bins), np.bincount(cur_bins, minlength=f.bins)))
        cats = list("abcdefg")
        ref_c = rng.choice(cats, n, p=rng.dirichlet(np.ones(7)))
        cur_c = rng.choice(cats[: int(rng.integers(3, 8))], int(rng.integers(50, 2000)))
        fc = profile.categorical("c", ref_c, top_k=10)
        binner = Binner([fc])
        hist = binner.histogram(binner.bin(np.empty((len(cur_c), 0)), cur_c.reshape(-1, 1).astype(object)))
        cases.append({"reference": ref_c.tolist(), "current": cur_c.tolist()})
        ours.append(drift.psi(fc.counts, hist))
    run = subprocess.run([python, "-c", _EVIDENTLY], input=json.dumps(cases), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    theirs = json.loads(run.stdout)
    assert ours == pytest.approx(theirs, abs=1e-9)


@pytest.mark.parametrize("seed", range(40))
def test_reading_a_frames_blocks_equals_reading_its_columns(seed):
    """The fast path (pandas' block layout) and the public API read the same values from frames of
    every kind of column, in any order, with missing values."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice([1, 2, 5, 300]))
    makers = {
        "float": lambda: rng.normal(size=n),
        "int": lambda: rng.integers(-5, 5, n),
        "nullable": lambda: pd.array(np.where(rng.random(n) < 0.3, None, rng.integers(0, 9, n)), dtype="Int64"),
        "float32": lambda: rng.normal(size=n).astype(np.float32),
        "str": lambda: pd.Series(rng.choice(["a", "b", None], n), dtype="str"),
        "object": lambda: np.array(rng.choice(["x", "y", None], n), dtype=object),
        "category": lambda: pd.Categorical(rng.choice(["u", "v"], n)),
        "bool": lambda: rng.random(n) < 0.5,
        "numbers_as_objects": lambda: np.array([None if v < 0.2 else v for v in rng.random(n)], dtype=object),
    }
    names = list(rng.permutation(list(makers)))[: int(rng.integers(2, len(makers) + 1))]
    frame = pd.DataFrame({name: makers[name]() for name in names})
    if rng.random() < 0.5:
        frame["float_2"] = rng.normal(size=n)  # a second float column: one block holds two
    names = list(frame.columns)
    kinds = profile.kinds(frame, names)
    numeric_at = [j for j, k in enumerate(kinds) if k == profile.NUMERIC]
    categorical_at = [j for j, k in enumerate(kinds) if k == profile.CATEGORICAL]
    fast = profile._block_matrices(frame, numeric_at, categorical_at)
    assert fast is not None
    slow = profile._column_matrices(frame, numeric_at, categorical_at)
    np.testing.assert_array_equal(fast[0], slow[0])

    def text(matrix):
        return [[None if profile.is_missing(v) else profile.label(v) for v in row] for row in matrix]

    assert text(fast[1]) == text(slow[1])


@pytest.mark.parametrize("seed", range(20))
def test_reading_frames_together_equals_reading_each(seed):
    rng = np.random.default_rng(500 + seed)
    frames = []
    for _ in range(int(rng.integers(2, 30))):
        n = int(rng.choice([1, 1, 3, 9]))
        frames.append(pd.DataFrame({"a": rng.normal(size=n), "s": pd.Series(rng.choice(["x", None], n), dtype="str"),
                                    "i": rng.integers(0, 5, n), "c": pd.Categorical(rng.choice(["u", "v"], n)),
                                    "o": np.array([None if v < 0.3 else v for v in rng.random(n)], dtype=object)}))
    numeric_at, categorical_at = [0, 2, 4], [1, 3]
    joined = profile.read_frames(frames, numeric_at, categorical_at)
    one_by_one = [profile._column_matrices(f, numeric_at, categorical_at) for f in frames]
    np.testing.assert_array_equal(joined[0], np.concatenate([m[0] for m in one_by_one]))
    text = lambda m: [[None if profile.is_missing(v) else profile.label(v) for v in row] for row in m]  # noqa: E731
    assert text(joined[1]) == text(np.concatenate([m[1] for m in one_by_one]))
    # frames whose columns are laid out differently are not joined
    assert profile.read_frames([frames[0], frames[0][["s", "a", "i", "c", "o"]]], numeric_at, categorical_at) is None
