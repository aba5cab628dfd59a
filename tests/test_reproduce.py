"""Reproducing decisions: every estimator kind reproduces bit for bit from the local store and from the remote
backends; a changed input, a tampered artifact, an untrusted store and a wrong key are refused; a
nondeterministic estimator DIFFERS, by exactly what a bare re-run says."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import KEY, bare
from fake_backends import FakeJaeger, FakeTempo
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

import otel_rai
from otel_rai import semconv, store
from otel_rai.errors import ArtifactError, InputError, InputMismatchError
from otel_rai.provenance.reproduce import REPRODUCED, reproduce
from otel_rai.query import jaeger, tempo

HERE = Path(__file__).parent
RNG = np.random.default_rng(7)
N = 400
X = RNG.normal(size=(N, 6))
Y = (X[:, 0] + 0.5 * X[:, 1] - X[:, 2] > 0).astype(int)
FRAME = pd.DataFrame({"income": RNG.normal(52000, 9000, N).round(2), "age": RNG.integers(18, 80, N),
                      "region": RNG.choice(["north", "south", "east"], N)})
FRAME_Y = np.where((FRAME.income > 52000) ^ (FRAME.region == "east"), "approve", "deny")
LABELS3 = np.arange(N) % 3
SINGLE, BATCH = 3, 20


def _kinds():
    """name -> (a factory of the fitted model, the training inputs, the operation, the background)."""
    import lightgbm
    import xgboost

    pipe = lambda: Pipeline([  # noqa: E731
        ("prep", ColumnTransformer([("num", StandardScaler(), ["income", "age"]),
                                    ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"])])),
        ("clf", LogisticRegression())]).fit(FRAME, FRAME_Y)
    return {
        "pipeline": (pipe, FRAME, "predict_proba", FRAME.iloc[:40]),
        "hgb": (lambda: HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(X, Y), X, "predict_proba",
                None),
        "forest": (lambda: RandomForestClassifier(100, random_state=0).fit(X, Y), X, "predict_proba", None),
        "linear": (lambda: LogisticRegression().fit(X, Y), X, "predict_proba", X[:40]),
        "ridge": (lambda: Ridge(alpha=0.5).fit(X, X[:, 0] * 3 + 1), X, "predict", X[:40]),
        "svc": (lambda: SVC(probability=True, random_state=0).fit(X, Y), X, "predict_proba", X[:20]),
        "kmeans": (lambda: KMeans(3, n_init=3, random_state=0).fit(X), X, "predict", None),
        "xgboost": (lambda: xgboost.XGBClassifier(n_estimators=30, max_depth=3).fit(X, Y), X, "predict_proba", None),
        "lightgbm": (lambda: lightgbm.LGBMClassifier(n_estimators=30, verbose=-1).fit(X, Y), X, "predict_proba",
                     None),
    }


KINDS = list(_kinds())


def _row(data, i):
    """Row i as the applicant's file would hold it: a mapping of feature name to value, or the values."""
    if isinstance(data, pd.DataFrame):
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in data.iloc[i].items()}
    return [float(v) for v in data[i]]


class Trail:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "audit.db"
        self.artifacts = root / "artifacts"
        self.inputs: dict[str, object] = {}
        self.instrumented: dict[str, list] = {}
        self.bare: dict[str, list] = {}
        self.fingerprints: dict[str, set[str]] = {}

    def decide(self, kind, model, data, operation, prefix=None, offset=0):
        prefix = prefix or kind
        method = getattr(model, operation)
        for i in range(SINGLE):
            with otel_rai.decisions(ids=[f"{prefix}-single-{i}"]):
                out = method(data[offset + i : offset + i + 1])
            reference = bare(method, data[offset + i : offset + i + 1])
            self._keep(kind, f"{prefix}-single-{i}", data, offset + i, out, reference)
        ids = [f"{prefix}-batch-{i}" for i in range(BATCH)]
        start = offset + SINGLE
        with otel_rai.decisions(ids=ids):
            out = method(data[start : start + BATCH])
        reference = bare(method, data[start : start + BATCH])
        for i, decision_id in enumerate(ids):
            self._keep(kind, decision_id, data, start + i, out[i : i + 1], reference[i : i + 1])
        self.fingerprints.setdefault(kind, set()).add(_fingerprint(model))

    def _keep(self, kind, decision_id, data, i, out, reference):
        self.inputs[decision_id] = _row(data, i)
        self.instrumented.setdefault(kind, []).append(np.asarray(out))
        self.bare.setdefault(kind, []).append(np.asarray(reference))

    def spans(self):
        s = store.Store(self.path)
        try:
            return list(s.spans())
        finally:
            s.close()

    def window(self):
        starts = [s.start_ns for s in self.spans()]
        return {"start": min(starts) // 1000 * 1000, "end": max(starts) + 1000}


def _fingerprint(model):
    from otel_rai.capture.fingerprint import fingerprint

    return fingerprint(model)


@pytest.fixture(scope="module")
def trail(tmp_path_factory):
    pytest.importorskip("xgboost")
    pytest.importorskip("lightgbm")
    t = Trail(tmp_path_factory.mktemp("reproduce"))
    otel_rai.instrument(store=t.path, hash_key=KEY, artifacts=t.artifacts, service_name="credit")
    try:
        for kind, (make, data, operation, background) in _kinds().items():
            model = otel_rai.register_model(make(), name=kind, version="1", background=background)
            t.decide(kind, model, data, operation)
        # A refit between decisions: the same object, a new fingerprint, a new record.
        model = otel_rai.register_model(LogisticRegression().fit(X[:200], Y[:200]), name="refit", version="1",
                                        background=X[:40])
        t.decide("refit", model, X, "predict_proba", prefix="refit-a")
        model.fit(X[200:], Y[200:])
        t.decide("refit", model, X, "predict_proba", prefix="refit-b", offset=100)
        # Random draws, seeded: each call draws from the seed, so a row's draw depends on its place in the call.
        model = otel_rai.register_model(DummyClassifier(strategy="stratified", random_state=0).fit(X, LABELS3),
                                        name="dummy", version="1")
        t.decide("dummy", model, X, "predict_proba")
        # Random draws, unseeded: a nondeterministic estimator.
        model = otel_rai.register_model(DummyClassifier(strategy="stratified").fit(X, LABELS3),
                                        name="random", version="1")
        t.decide("random", model, X, "predict_proba")
        assert otel_rai.flush(60).complete
    finally:
        otel_rai.uninstrument()
    return t


def _ids(prefix):
    return [f"{prefix}-single-{i}" for i in range(SINGLE)] + [f"{prefix}-batch-{i}" for i in (0, 7, BATCH - 1)]


def test_instrumented_predictions_are_bit_identical_to_bare_ones(trail):
    for kind in [*KINDS, "refit", "dummy"]:
        for got, want in zip(trail.instrumented[kind], trail.bare[kind]):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), kind


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_reproduces_bit_for_bit(trail, kind):
    for decision_id in _ids(kind):
        result = reproduce(decision_id, trail.inputs[decision_id], url=str(trail.path), key=KEY)
        assert result.verdict == REPRODUCED, (decision_id, [c for c in result.comparisons if not c.equal],
                                              result.notes)
        assert result.record is not None and result.warnings == ()
        whats = [c.what for c in result.comparisons]
        assert whats[0] == "output"
        if kind not in ("kmeans", "ridge"):
            assert {"score approve", "score deny"} <= set(whats) if kind == "pipeline" else "score 1" in whats
        if result.decision.values.get(semconv.EXPLANATION_TOP) is not None:
            assert "explanation" in whats and "explanation base value" in whats
    explained = reproduce(_ids(kind)[0], trail.inputs[_ids(kind)[0]], url=str(trail.path), key=KEY)
    if kind != "kmeans":  # KMeans.predict has no explanation method: nothing recorded, so nothing compared
        assert "explanation" in [c.what for c in explained.comparisons], explained.notes


def test_a_refit_between_decisions_has_two_records_and_both_reproduce(trail):
    assert len(trail.fingerprints["refit"]) == 2
    records = [r for r in trail.spans() if r.name == semconv.MODEL_RECORD_SPAN
               and r.attributes[semconv.MODEL_NAME] == "refit"]
    assert {r.attributes[semconv.MODEL_FINGERPRINT] for r in records} == trail.fingerprints["refit"]
    seen = set()
    for prefix in ("refit-a", "refit-b"):
        for decision_id in _ids(prefix):
            result = reproduce(decision_id, trail.inputs[decision_id], url=str(trail.path), key=KEY)
            assert result.reproduced, decision_id
            seen.add(result.record.fingerprint)
    assert seen == trail.fingerprints["refit"]


@pytest.mark.parametrize("kind", ["pipeline", "forest", "xgboost", "svc"])
def test_an_input_with_any_one_value_changed_is_refused(trail, kind):
    decision_id = f"{kind}-batch-3"
    given = trail.inputs[decision_id]
    keys = list(given) if isinstance(given, dict) else range(len(given))
    for k in keys:
        changed = dict(given) if isinstance(given, dict) else list(given)
        value = changed[k]
        changed[k] = value + "x" if isinstance(value, str) else (value + 1 if isinstance(value, int) else
                                                                 np.nextafter(value, np.inf))
        with pytest.raises(InputMismatchError, match="this is not the input the model saw"):
            reproduce(decision_id, changed, url=str(trail.path), key=KEY)


def test_input_files_are_matched_by_feature_name(trail, tmp_path):
    decision_id = "pipeline-batch-5"
    row = trail.inputs[decision_id]
    shuffled = {"applicant": "A-1093", **dict(reversed(list(row.items())))}  # other order, an extra field
    (tmp_path / "a.json").write_text(json.dumps(shuffled))
    (tmp_path / "b.csv").write_text("region,age,income\n" + f"{row['region']},{row['age']},{row['income']!r}\n")
    for name in ("a.json", "b.csv"):
        assert reproduce(decision_id, tmp_path / name, url=str(trail.path), key=KEY).reproduced, name
    (tmp_path / "two.json").write_text(json.dumps([row, row]))
    with pytest.raises(InputError, match="give the one input row"):
        reproduce(decision_id, tmp_path / "two.json", url=str(trail.path), key=KEY)
    with pytest.raises(InputError, match="no value for age"):
        reproduce(decision_id, {"income": row["income"], "region": row["region"]}, url=str(trail.path), key=KEY)


def test_the_wrong_key_is_named_not_mistaken_for_a_changed_input(trail):
    with pytest.raises(InputError, match="hashed with key id"):
        reproduce("forest-single-0", trail.inputs["forest-single-0"], url=str(trail.path),
                  key="another key, long enough to be a key")
    # rotated keys: the one whose id the decision names is used
    assert reproduce("forest-single-0", trail.inputs["forest-single-0"], url=str(trail.path),
                     key=["another key, long enough to be a key", KEY]).reproduced


def _copy(trail, tmp_path) -> tuple[Path, Path]:
    shutil.copytree(trail.root, tmp_path / "copy")
    return tmp_path / "copy" / "audit.db", tmp_path / "copy" / "artifacts"


def test_a_tampered_artifact_is_refused(trail, tmp_path):
    path, artifacts = _copy(trail, tmp_path)
    fingerprint = next(iter(trail.fingerprints["forest"]))
    (model_file,) = (artifacts / fingerprint).glob("model.*")
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="refusing to load .*SHA-256"):
        reproduce("forest-single-0", trail.inputs["forest-single-0"], url=str(path), key=KEY,
                  artifacts_store=artifacts)
    shutil.rmtree(artifacts / fingerprint)
    with pytest.raises(ArtifactError, match="no artifact of model"):
        reproduce("forest-single-0", trail.inputs["forest-single-0"], url=str(path), key=KEY,
                  artifacts_store=artifacts)


def test_library_drift_is_a_warning_that_names_the_library(trail, tmp_path):
    """A record made elsewhere (here: its libraries rewritten in a copy of the store) warns, and still
    compares."""
    path, artifacts = _copy(trail, tmp_path)
    with sqlite3.connect(path) as conn:
        for seq, text in conn.execute("SELECT seq, attributes FROM spans WHERE name = ?",
                                      (semconv.MODEL_RECORD_SPAN,)).fetchall():
            attributes = json.loads(text)
            libraries = json.loads(attributes[semconv.MODEL_LIBRARIES])
            libraries["scikit-learn"] = "1.3.0"
            attributes[semconv.MODEL_LIBRARIES] = json.dumps(libraries)
            conn.execute("UPDATE spans SET attributes = ? WHERE seq = ?", (json.dumps(attributes), seq))
    result = reproduce("hgb-single-1", trail.inputs["hgb-single-1"], url=str(path), key=KEY,
                       artifacts_store=artifacts)
    import sklearn

    assert result.warnings == (f"scikit-learn is {sklearn.__version__} here, 1.3.0 when the model was recorded",)
    assert result.reproduced


def test_a_decision_in_a_batch_is_rerun_in_its_place_in_a_call_of_its_size(trail):
    """A seeded stratified DummyClassifier draws each call's outputs from its seed: row 7 of a 20-row call
    gets the 8th draw. Re-run alone, the row would get the first draw (a bare single-row call says which
    rows that changes); re-run as row 7 of 20 rows, it reproduces. Linear models do the same in their last
    bits (test_every_kind_reproduces_bit_for_bit, batch rows)."""
    model = DummyClassifier(strategy="stratified", random_state=0).fit(X, LABELS3)
    alone_differs = 0
    for i in range(BATCH):
        decision_id = f"dummy-batch-{i}"
        result = reproduce(decision_id, trail.inputs[decision_id], url=str(trail.path), key=KEY)
        assert result.reproduced and f"re-run as row {i} of {BATCH} rows" in " ".join(result.notes)
        alone = bare(model.predict_proba, np.array([trail.inputs[decision_id]]))[0]
        alone_differs += alone.tolist() != trail.bare["dummy"][SINGLE + i][0].tolist()
    assert alone_differs > 0


def test_a_nondeterministic_estimator_differs(trail):
    """Unseeded random draws: the re-run draws again. The chance that all 20 draws of 3 classes come out the
    same again is 3**-20."""
    results = [reproduce(f"random-batch-{i}", trail.inputs[f"random-batch-{i}"], url=str(trail.path), key=KEY)
               for i in range(BATCH)]
    differing = [r for r in results if not r.reproduced]
    assert differing and all(r.verdict == "DIFFERS" and r.largest_difference == 1.0 for r in differing)
    for r in differing:
        scores = [c.reproduced for c in r.comparisons if c.what.startswith("score ")]
        assert sorted(scores) == [0.0, 0.0, 1.0]  # a draw, one-hot


@pytest.mark.parametrize("backend", ["jaeger v3", "jaeger legacy", "jaeger stringified arrays", "tempo"])
def test_reproduce_from_a_remote_backend(trail, backend):
    spans = trail.spans()
    if backend == "tempo":
        server = FakeTempo(spans)
        source = tempo.connect(server.url)
    else:
        server = FakeJaeger(spans, legacy_only="legacy" in backend, stringified_arrays="stringified" in backend)
        source = jaeger.connect(server.url)
    try:
        for decision_id in ("pipeline-batch-2", "forest-single-1", "xgboost-batch-9", "refit-b-single-0"):
            result = reproduce(decision_id, trail.inputs[decision_id], backend=source, key=KEY,
                               artifacts_store=trail.artifacts, **trail.window())
            assert result.reproduced and result.record is not None, (decision_id, result.notes)
    finally:
        server.stop()


# --- the command -----------------------------------------------------------------------------------


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {}),
                   "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "otel_rai", *args], env=environment, capture_output=True,
                          text=True, timeout=300)


def test_the_command_exit_codes(trail, tmp_path):
    source = ["--store", str(trail.path), "--key", KEY]
    (tmp_path / "ok.json").write_text(json.dumps(trail.inputs["pipeline-single-1"]))
    done = cli("reproduce", "pipeline-single-1", "--input", str(tmp_path / "ok.json"), *source)
    assert done.returncode == 0 and done.stdout.rstrip().endswith("REPRODUCED"), done.stderr
    assert "score approve" in done.stdout and "explanation" in done.stdout

    as_json = cli("reproduce", "pipeline-single-1", "--input", str(tmp_path / "ok.json"), *source, "--format", "json")
    report = json.loads(as_json.stdout)
    assert report["verdict"] == "REPRODUCED" and all(c["equal"] for c in report["comparisons"])

    changed = dict(trail.inputs["pipeline-single-1"], age=trail.inputs["pipeline-single-1"]["age"] + 1)
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    refused = cli("reproduce", "pipeline-single-1", "--input", str(tmp_path / "changed.json"), *source)
    assert refused.returncode == 4 and "this is not the input the model saw" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    for i in range(BATCH):  # random draws: at least one differs (all 20 coming out the same: 3**-20)
        (tmp_path / "random.json").write_text(json.dumps(trail.inputs[f"random-batch-{i}"]))
        differs = cli("reproduce", f"random-batch-{i}", "--input", str(tmp_path / "random.json"), *source)
        if differs.returncode != 0:
            break
    assert differs.returncode == 3 and "DIFFERS" in differs.stdout and "largest difference 1" in differs.stdout

    path, artifacts = _copy(trail, tmp_path)
    os.chmod(artifacts, 0o777)
    untrusted = cli("reproduce", "pipeline-single-1", "--input", str(tmp_path / "ok.json"), "--store", str(path),
                    "--key", KEY)
    assert untrusted.returncode == 5 and "others can write it" in untrusted.stderr
    assert "Traceback" not in untrusted.stderr

    missing = cli("reproduce", "no-such-decision", "--input", str(tmp_path / "ok.json"), *source)
    assert missing.returncode == 1 and "no decision 'no-such-decision'" in missing.stderr
