"""Model records: one chained span per fitted model and process, with the canonical parameters (checked
against scikit-learn's own get_params(deep=True)), library versions, feature schema and training-data
hash (checked against an independent implementation of the documented scheme), and no raw training value."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import struct
import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import KEY, instrumented
from sklearn.base import RegressorMixin
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils import all_estimators

import otel_rai
from otel_rai import _fork, semconv, store
from otel_rai.audit.hashing import HashKey
from otel_rai.chain import keys as chain_keys
from otel_rai.codec.sdk import from_readable
from otel_rai.provenance import build, canonical, params
from otel_rai.provenance.record import ModelRecord
from otel_rai.provenance.training import TrainingHash, hash_training
from otel_rai.query import Query, local
from otel_rai.query import trail as trail_reading

X, y = make_classification(300, 5, random_state=0)
HASH_KEY = HashKey.from_material(KEY)


def _records(audit) -> list[ModelRecord]:
    return [ModelRecord.from_span(from_readable(s)) for s in audit.records()]


# --- one record per fitted model and process ------------------------------------------------------


def test_one_record_per_fitted_model_and_registration_and_a_refit_gets_its_own(tmp_path):
    audit = instrumented(artifacts=tmp_path / "artifacts")
    model = otel_rai.register_model(LogisticRegression().fit(X, y), name="credit", version="1")
    for i in range(5):
        model.predict(X[i : i + 1])
    twin = otel_rai.register_model(LogisticRegression().fit(X, y), name="credit", version="1")
    twin.predict_proba(X[:3])  # another object, the same fitted model: no second record
    assert len(audit.records()) == 1
    otel_rai.register_model(twin, name="credit", version="2")  # the same model promoted: a record of its own
    twin.predict(X[:1])
    model.fit(X[:150], y[:150])  # a refit: a new fingerprint
    model.predict(X[:1])
    found = _records(audit)
    assert [(r.version, r.fingerprint == found[0].fingerprint) for r in found] == [("1", True), ("2", True),
                                                                                   ("1", False)]
    prints = {s.attributes[semconv.MODEL_FINGERPRINT] for s in audit.decision_spans()}
    assert prints == {r.fingerprint for r in found}  # every decision links to a record
    assert len({r.artifact["sha256"] for r in found}) == 2  # saved once per fingerprint


def test_records_are_built_on_the_audit_worker_and_saved_by_the_artifact_thread(tmp_path, monkeypatch):
    threads = {}
    from otel_rai.provenance import artifacts as artifacts_module
    from otel_rai.provenance import emitter

    real_build, real_save = build.attributes, artifacts_module.ArtifactStore.save

    def spy_build(*args, **kwargs):
        threads["build"] = threading.current_thread().name
        return real_build(*args, **kwargs)

    def spy_save(self, *args, **kwargs):
        threads["save"] = threading.current_thread().name
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(emitter.build, "attributes", spy_build)
    monkeypatch.setattr(artifacts_module.ArtifactStore, "save", spy_save)
    audit = instrumented(artifacts=tmp_path / "artifacts")
    LogisticRegression().fit(X, y).predict(X[:2])
    assert len(audit.records()) == 1
    assert threads == {"build": "otel-rai-audit", "save": "otel-rai-artifacts"}


def test_records_and_artifacts_can_be_switched_off(tmp_path):
    audit = instrumented(model_records=False, artifacts=tmp_path / "a")
    LogisticRegression().fit(X, y).predict(X[:2])
    assert audit.records() == [] and not (tmp_path / "a").exists()
    otel_rai.uninstrument()
    audit = instrumented(artifacts=False)
    LogisticRegression().fit(X, y).predict(X[:2])
    (record,) = _records(audit)
    assert record.artifact is None and record.params is not None


def test_records_are_chained_and_an_edited_record_is_found(tmp_path):
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY, checkpoint_key="ckpt-" + KEY)
    for C in (1.0, 0.5):
        LogisticRegression(C=C).fit(X, y).predict(X[:2])
    otel_rai.uninstrument()
    keys = chain_keys.read_keys(["ckpt-" + KEY], [], [])
    report = trail_reading.verify(local.connect(str(path)), Query(), keys, require_signed=True)
    assert report.ok and sum(s.records for s in report.streams.values()) == 2 + 2 + 1
    import sqlite3

    with sqlite3.connect(path) as conn:
        seq, text = conn.execute("SELECT seq, attributes FROM spans WHERE name = ? ORDER BY seq LIMIT 1",
                                 (semconv.MODEL_RECORD_SPAN,)).fetchone()
        attributes = json.loads(text)
        attributes[semconv.MODEL_PARAMS] = attributes[semconv.MODEL_PARAMS].replace('"C":1.0', '"C":2.0')
        conn.execute("UPDATE spans SET attributes = ? WHERE seq = ?", (json.dumps(attributes), seq))
    report = trail_reading.verify(local.connect(str(path)), Query(), keys)
    assert report.counts() == {"edited": 1} and report.problems[0].seq == seq


def _child() -> None:
    LogisticRegression().fit(X, y).predict(X[:1])
    os._exit(0 if otel_rai.flush(30).complete else 1)


def test_a_forked_child_records_the_model_in_its_own_stream(tmp_path):
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY)
    LogisticRegression().fit(X, y).predict(X[:1])
    assert otel_rai.flush(30).complete
    child = multiprocessing.get_context("fork").Process(target=_child)
    child.start()
    child.join(60)
    assert child.exitcode == 0
    otel_rai.uninstrument()
    records = [r for r in store.Store(path).spans() if r.name == semconv.MODEL_RECORD_SPAN]
    assert len(records) == 2 and len({r.attributes[semconv.AUDIT_STREAM] for r in records}) == 2
    assert len({r.attributes[semconv.MODEL_FINGERPRINT] for r in records}) == 1


def test_a_child_forked_while_the_record_thread_imports_can_import(tmp_path, monkeypatch):
    """The record thread imports skops as the application starts (about a second), and Pools fork right
    after ``instrument()``: a child forked mid-import inherited the module's import lock, held by a thread
    it does not have, and its own import of the module waited for ever (its record thread, then its exit
    flush). A module that takes 0.5 s to import stands in for skops; fork waits for the import to end."""
    (tmp_path / "slow_to_import.py").write_text("import time\ntime.sleep(0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    inside = threading.Event()

    def warm() -> None:
        with _fork.importing:  # as the record thread's `_warm` does
            inside.set()
            import slow_to_import  # noqa: F401

    importer = threading.Thread(target=warm)
    importer.start()
    assert inside.wait(10)
    pid = os.fork()
    if pid == 0:
        import slow_to_import  # noqa: F401

        os._exit(0)
    importer.join()
    deadline, status = time.monotonic() + 20, None
    while status is None and time.monotonic() < deadline:
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
        else:
            time.sleep(0.05)
    if status is None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert status is not None, "the forked child never finished importing the module"
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_model_refitted_before_the_worker_built_its_record_says_so(tmp_path):
    """The record is built from the live model on the worker; if it was refitted in between, the record
    says so instead of describing the new fit."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_rai.capture import models
    from otel_rai.capture.recorder import DecisionCall
    from otel_rai.provenance.emitter import ModelRecords
    from otel_rai.settings import Settings

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    model = LogisticRegression().fit(X, y)
    info = models.model_info(model, None)
    model.fit(X[:100], y[:100])
    models.bump_generation()
    failures = []
    records = ModelRecords(provider.get_tracer("t"), Settings(hash_key=HASH_KEY), None, lambda task: task(),
                           lambda stage, exc: failures.append(stage))
    records.observe(DecisionCall(model, info, "predict", X[:1], 1, ["a"], {}, None, 1))
    (span,) = exporter.get_finished_spans()
    assert span.attributes[semconv.AUDIT_ERROR] == "record: ModelChanged"
    assert semconv.MODEL_PARAMS not in span.attributes and failures == []


# --- the canonical parameters ---------------------------------------------------------------------


def _estimators():
    """Every scikit-learn estimator that can be built (meta-estimators with an inner one)."""
    for name, cls in all_estimators():
        inner = LinearRegression() if issubclass(cls, RegressorMixin) else LogisticRegression()
        for attempt in ((), ("estimator",), ("base_estimator",), ("estimators",), ("steps",), ("transformers",)):
            try:
                if not attempt:
                    yield name, cls()
                elif attempt[0] == "estimators":
                    yield name, cls(estimators=[("a", inner), ("b", DecisionTreeClassifier())])
                elif attempt[0] == "steps":
                    yield name, cls(steps=[("scale", StandardScaler()), ("model", inner)])
                elif attempt[0] == "transformers":
                    yield name, cls(transformers=[("s", StandardScaler(), [0, 1]), ("o", "drop", [2])])
                else:
                    yield name, cls(**{attempt[0]: inner})
                break
            except TypeError:
                continue


ESTIMATORS = list(_estimators())


def test_every_sklearn_estimator_has_a_canonical_form_that_holds_get_params_deep():
    """The oracle is scikit-learn: every key of get_params(deep=True) is in the tree, with its value."""
    assert len(ESTIMATORS) > 150
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, model in ESTIMATORS:
            tree = canonical.canonical(model, HASH_KEY)
            text = params.dumps(tree)
            assert json.loads(text) == tree, name  # JSON through and through
            assert params.dumps(canonical.canonical(model, HASH_KEY)) == text, name  # stable
            flat = params.flatten(tree)
            for key, value in model.get_params(deep=True).items():
                assert key in flat, (name, key)
                assert flat[key] == canonical._Canonical(HASH_KEY).value(
                    value, key.rsplit("__", 1)[-1] in canonical.DATA_PARAMETERS), (name, key)
                checked += 1
    assert checked > 2000


def test_the_canonical_form_is_the_same_in_another_process():
    import subprocess
    import sys

    model = make_pipeline(ColumnTransformer([("s", StandardScaler(), [0]), ("o", OneHotEncoder(), [1])]),
                          SGDClassifier(random_state=np.random.RandomState(3), class_weight={0: 1, 1: 2.5}))
    here = params.dumps(canonical.canonical(model, HASH_KEY))
    code = ("import pickle, sys; from otel_rai.provenance import canonical, params; "
            "from otel_rai.audit.hashing import HashKey; "
            f"print(params.dumps(canonical.canonical(pickle.load(sys.stdin.buffer), HashKey.from_material({KEY!r}))))")
    import pickle

    there = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(model), capture_output=True, check=True)
    assert there.stdout.decode().strip() == here
    assert "0x" not in here  # no memory address (RandomState's repr has one)


# --- no raw training value --------------------------------------------------------------------------

CANARIES = ["Zanzibar-7731", "Quixote-5519", "Vesper-0042"]
NUMBER = 987654.321


def _canary_models():
    """Models whose configuration holds data (levels, fill values, words, points, user arguments) and whose
    training data holds the canaries."""
    frame = pd.DataFrame({"city": CANARIES * 20, "income": np.linspace(NUMBER, NUMBER + 59, 60)})
    target = np.arange(60) % 2
    yield "one-hot levels", make_pipeline(
        ColumnTransformer([("c", OneHotEncoder(categories=[CANARIES], drop=[CANARIES[0]]), ["city"]),
                           ("n", SimpleImputer(strategy="constant", fill_value=NUMBER), ["income"])]),
        LogisticRegression()), frame, target
    yield "ordinal", make_pipeline(
        ColumnTransformer([("c", OrdinalEncoder(categories=[CANARIES]), ["city"])], remainder="passthrough"),
        DecisionTreeClassifier()), frame, target
    yield "user function arguments", make_pipeline(
        FunctionTransformer(lambda a, ref=None: a, kw_args={"ref": CANARIES[1]}),
        ColumnTransformer([("c", OneHotEncoder(), ["city"])]), LogisticRegression()), frame, target
    yield "vocabulary", make_pipeline(CountVectorizer(vocabulary=CANARIES), LogisticRegression()), \
        [" ".join(CANARIES[: 1 + i % 3]) for i in range(60)], target
    points = np.array([[NUMBER, 1.0], [NUMBER + 1, 2.0]])
    yield "initial centroids", KMeans(n_clusters=2, init=points, n_init=1), \
        np.column_stack([np.linspace(NUMBER, NUMBER + 5, 60), np.arange(60)]), None
    yield "mixture means", GaussianMixture(2, means_init=points), \
        np.column_stack([np.linspace(NUMBER, NUMBER + 5, 60), np.arange(60)]), None


@pytest.mark.parametrize("name", [n for n, *_ in _canary_models()])
def test_no_raw_training_value_in_a_record_or_its_export(name, tmp_path):
    from otel_rai.provenance import cyclonedx

    model, data, target = next((m, d, t) for n, m, d, t in _canary_models() if n == name)
    audit = instrumented(artifacts=tmp_path / "artifacts")
    model.fit(data, target)
    model.predict(data[:3])
    (span,) = audit.records()
    record = ModelRecord.from_span(from_readable(span))
    exported = json.dumps(cyclonedx.bom(record))
    everything = json.dumps(dict(span.attributes)) + exported
    leaked = [c for c in CANARIES + [repr(NUMBER), str(NUMBER), "987654"] if c in everything]
    assert leaked == [], leaked
    assert '"redacted":true' in span.attributes[semconv.MODEL_PARAMS]
    # the same configuration redacts to the same digest (a change still shows in a diff), a changed one not
    again = canonical.canonical(model, HASH_KEY)["params"]
    assert params.dumps(again) == span.attributes[semconv.MODEL_PARAMS]


def test_redacted_values_differ_when_the_data_differs_and_the_key_matters():
    a = canonical.canonical(OneHotEncoder(categories=[["north", "south"]]), HASH_KEY)["params"]["categories"]
    b = canonical.canonical(OneHotEncoder(categories=[["north", "west"]]), HASH_KEY)["params"]["categories"]
    other_key = canonical.canonical(OneHotEncoder(categories=[["north", "south"]]),
                                    HashKey.from_material("another key of enough length"))["params"]["categories"]
    assert a["redacted"] and a["length"] == 1 and a["digest"] != b["digest"] != other_key["digest"] != a["digest"]
    kept = canonical.canonical(OneHotEncoder(drop="first", categories="auto"), HASH_KEY)["params"]
    assert kept["drop"] == "first" and kept["categories"] == "auto"  # mode words are configuration


# --- libraries and schema ----------------------------------------------------------------------------


def test_libraries_name_the_ones_the_model_uses(tmp_path):
    xgboost = pytest.importorskip("xgboost")
    lightgbm = pytest.importorskip("lightgbm")
    import sklearn

    audit = instrumented(artifacts=False)
    xgboost.XGBClassifier(n_estimators=5).fit(X, y).predict(X[:1])
    make_pipeline(StandardScaler(), lightgbm.LGBMClassifier(n_estimators=5, verbose=-1)).fit(X, y).predict(X[:1])
    frame = pd.DataFrame(X, columns=list("abcde"))
    LogisticRegression().fit(frame, y).predict(frame[:1])
    xgb, lgbm, frame_model = _records(audit)
    import platform

    assert xgb.libraries == {"python": platform.python_version(), "numpy": np.__version__,
                             "scipy": __import__("scipy").__version__, "scikit-learn": sklearn.__version__,
                             "xgboost": xgboost.__version__}
    assert lgbm.libraries["lightgbm"] == lightgbm.__version__ and "xgboost" not in lgbm.libraries
    assert frame_model.libraries["pandas"] == pd.__version__ and "pandas" not in xgb.libraries


def test_schema_has_names_dtypes_at_fit_and_first_call_and_classes():
    audit = instrumented(artifacts=False)
    frame = pd.DataFrame({"income": X[:, 0], "age": (X[:, 1] * 10).astype(np.int64),
                          "region": np.where(X[:, 2] > 0, "north", "south")})
    labels = np.where(y == 1, "approve", "deny")
    pipe = make_pipeline(ColumnTransformer([("n", StandardScaler(), ["income", "age"]),
                                            ("c", OneHotEncoder(), ["region"])]), LogisticRegression())
    pipe.fit(frame, labels)
    pipe.predict(frame.iloc[:2])
    (record,) = _records(audit)
    schema = record.schema
    assert schema["features"] == ["income", "age", "region"] and schema["n_features_in"] == 3
    assert schema["classes"] == ["approve", "deny"]
    dtypes = [str(d) for d in frame.dtypes]
    assert schema["fit"] == {"container": "pandas.DataFrame", "dtypes": dtypes, "rows": 300}
    assert schema["call"] == {"container": "pandas.DataFrame", "dtypes": dtypes}
    assert "north" not in json.dumps(schema)


def test_a_categorical_column_is_recorded_by_dtype_name_not_its_levels():
    audit = instrumented(artifacts=False)
    frame = pd.DataFrame({"x": X[:, 0], "city": pd.Categorical(np.where(y == 1, CANARIES[0], CANARIES[1]))})
    model = make_pipeline(ColumnTransformer([("c", OneHotEncoder(), ["city"])], remainder="passthrough"),
                          LogisticRegression()).fit(frame, y)
    model.predict(frame[:1])
    (span,) = audit.records()
    assert json.loads(span.attributes[semconv.MODEL_SCHEMA])["call"]["dtypes"] == ["float64", "category"]
    assert not any(c in json.dumps(dict(span.attributes)) for c in CANARIES)


# --- the training-data hash --------------------------------------------------------------------------


def _documented(parts) -> str:
    """The scheme of docs/hashing.md, written out independently: numbers only, and strings."""
    stretched = hashlib.scrypt(KEY.encode(), salt=b"otel-rai.key.v2:input-hash", n=16384, r=8, p=1, dklen=32,
                               maxmem=64 * 1024 * 1024)
    h = hashlib.blake2b(key=stretched, digest_size=16, person=b"otel-rai.train.1")
    for tag, part in parts:
        a = np.asarray(part, dtype=object)
        a = a.reshape(-1, 1) if a.ndim == 1 else a
        h.update(tag + struct.pack("<QQ", a.shape[0], a.shape[1]))
        for row in a:
            for v in row:
                if isinstance(v, str):
                    data = v.encode()
                    h.update(b"s" + struct.pack("<Q", len(data)) + data)
                elif v is None or (isinstance(v, float) and v != v):
                    h.update(b"m" + bytes(8))
                else:
                    h.update(b"n" + struct.pack("<d", float(v) + 0.0))
    return h.hexdigest()


@pytest.mark.parametrize("seed", range(6))
def test_the_training_hash_follows_the_documented_scheme(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9000))  # more than one chunk of rows, sometimes
    features = rng.normal(size=(n, int(rng.integers(1, 6))))
    features[rng.random(features.shape) < 0.05] = np.nan
    target = rng.integers(0, 3, n)
    weights = rng.random(n) if seed % 2 else None
    parts = [(b"X", features), (b"y", target)] + ([(b"w", weights)] if weights is not None else [])
    expected = _documented(parts)
    assert hash_training(features, target, sample_weight=weights, key=KEY) == expected
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(features.shape[1])])
    assert hash_training(frame, pd.Series(target), sample_weight=weights, key=KEY) == expected  # containers
    changed = features.copy()
    changed[n // 2, 0] = 7.0 if changed[n // 2, 0] != 7.0 else 8.0
    assert hash_training(changed, target, sample_weight=weights, key=KEY) != expected
    strings = np.array([["a", "bé"][i % 2] for i in range(n)], dtype=object).reshape(-1, 1)
    assert hash_training(strings, target, key=KEY) == _documented([(b"X", strings), (b"y", target)])


def test_a_fit_under_instrument_records_its_training_hash_rows_and_time(tmp_path):
    audit = instrumented(artifacts=False)
    weights = np.linspace(0.5, 1.5, len(y))
    model = LogisticRegression().fit(X, y, sample_weight=weights)
    model.predict(X[:1])
    prefit = RandomForestClassifier(n_estimators=3, random_state=0)
    otel_rai.uninstrument()
    prefit.fit(X, y)  # not seen
    audit = instrumented(artifacts=False)
    LogisticRegression().fit(X, y, sample_weight=weights).predict(X[:1])
    prefit.predict(X[:1])
    (seen, unseen) = _records(audit)
    assert seen.training["hash"] == hash_training(X, y, sample_weight=weights, key=KEY)
    assert seen.training["rows"] == 300 and seen.training["method"] == "fit" and seen.training["batches"] == 1
    assert seen.training["key_id"] == HASH_KEY.key_id and seen.training["duration_ms"] > 0
    assert seen.training["scheme"] == "blake2b-128/train.v1"
    assert unseen.training is None and unseen.schema["fit"] is None


def test_partial_fit_batches_chain_into_one_hash(tmp_path):
    audit = instrumented(artifacts=False)
    model = SGDClassifier(random_state=0)
    for start in range(0, 300, 100):
        model.partial_fit(X[start : start + 100], y[start : start + 100], classes=[0, 1])
    model.predict(X[:1])
    (record,) = _records(audit)
    expected = TrainingHash(HASH_KEY)
    for start in range(0, 300, 100):
        expected.update(X[start : start + 100], y[start : start + 100])
    assert record.training["hash"] == expected.hexdigest()
    assert (record.training["rows"], record.training["batches"], record.training["method"]) == (300, 3, "partial_fit")
    assert record.training["hash"] != hash_training(X, y, key=KEY)  # three batches are not one fit


def test_a_failing_record_part_is_named_and_the_rest_kept(tmp_path):
    class Odd(LogisticRegression):
        def get_params(self, deep=True):
            if deep is False and threading.current_thread().name == "otel-rai-audit":
                raise RuntimeError("secret QvWxKpLmZr")
            return super().get_params(deep)

    audit = instrumented(artifacts=False)
    Odd().fit(X, y).predict(X[:1])
    (record,) = _records(audit)
    assert record.error == "params: RuntimeError" and record.params is None and record.libraries
    # A marker no hash or id can hold by chance (the first form, "123", was found in a record hash)
    assert "QvWxKpLmZr" not in json.dumps(dict(audit.records()[0].attributes))


def test_a_refit_right_after_deciding_waits_for_the_record_of_the_model_it_replaces(tmp_path):
    """The record and artifact are made from the live model after its decisions; a refit of the same object
    holds until they are, so the record describes the model that decided, not the refitted one."""
    audit = instrumented(artifacts=tmp_path / "artifacts")
    model = LogisticRegression(C=0.5).fit(X, y)
    model.predict_proba(X[:4])
    model.set_params(C=2.0).fit(X[:200], y[:200])  # at once: the worker has most likely not seen the decision
    model.predict(X[:1])
    old, new = _records(audit)
    assert old.error is None and old.params["C"] == 0.5 and old.artifact["sha256"]
    assert new.params["C"] == 2.0 and new.fingerprint != old.fingerprint
    from otel_rai.capture.fingerprint import fingerprint
    from otel_rai.provenance.artifacts import ArtifactStore

    loaded = ArtifactStore(tmp_path / "artifacts").load(old.fingerprint, fingerprint_of=fingerprint,
                                                        sha=old.artifact["sha256"])
    assert loaded.model.C == 0.5 and fingerprint(loaded.model) == old.fingerprint
