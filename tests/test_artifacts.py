"""The artifact store: saved once per fingerprint, and nothing loaded whose store, digest, type or fingerprint
is not what it must be."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from otel_rai.capture.fingerprint import fingerprint
from otel_rai.errors import ArtifactError
from otel_rai.provenance import artifacts
from otel_rai.provenance.artifacts import ArtifactStore

X, y = make_classification(200, 4, random_state=0)


class Custom(ClassifierMixin, BaseEstimator):
    """A user's own estimator: skops saves it, and loads it only if the caller trusts its type."""

    def __init__(self, shift: float = 0.0) -> None:
        self.shift = shift

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.mean_ = np.asarray(X).mean(0) + self.shift
        return self

    def predict(self, X):
        return self.classes_[(np.asarray(X) > self.mean_).sum(1) % len(self.classes_)]


class WithPattern(LogisticRegression):
    """A model holding a compiled regular expression: skops cannot save one, pickle can."""

    def fit(self, X, y):
        super().fit(X, y)
        self.pattern_ = re.compile(r"[a-z]+")
        return self


class Unpicklable(LogisticRegression):
    """A model whose state cannot be serialised at all."""

    def fit(self, X, y):
        super().fit(X, y)
        self.hook_ = lambda: None
        return self


def _saved(tmp_path, model=None, background=None):
    model = model if model is not None else LogisticRegression().fit(X, y)
    store = ArtifactStore(tmp_path / "artifacts")
    fp = fingerprint(model)
    return store, fp, store.save(fp, model, fingerprint, background)


def test_saved_once_owner_only_and_loaded_back_with_every_check(tmp_path):
    store, fp, saved = _saved(tmp_path, background=X[:20])
    assert saved.written and saved.format.startswith("skops/")
    again = store.save(fp, LogisticRegression().fit(X, y), fingerprint)
    assert not again.written and again.sha256 == saved.sha256  # once per fingerprint
    root = tmp_path / "artifacts"
    for path in [root, *root.rglob("*")]:
        mode = os.stat(path).st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    manifest = json.loads((root / fp / "manifest.json").read_text())
    assert manifest["fingerprint"] == fp and manifest["model"]["sha256"] == saved.sha256
    data = (root / fp / manifest["model"]["file"]).read_bytes()
    assert artifacts.sha256(data) == saved.sha256  # the digest is of the bytes, as `sha256sum` says
    loaded = store.load(fp, fingerprint_of=fingerprint, sha=saved.sha256, background_sha=saved.background_sha256)
    assert fingerprint(loaded.model) == fp and np.array_equal(loaded.background, X[:20])
    assert store.status(fp, saved.sha256).state == "saved"


@pytest.mark.parametrize("kind", ["forest", "hgb", "xgboost", "lightgbm", "custom"])
def test_each_model_kind_round_trips_to_its_fingerprint(tmp_path, kind):
    if kind in ("xgboost", "lightgbm"):
        module = pytest.importorskip(kind)
        model = (module.XGBClassifier(n_estimators=10) if kind == "xgboost"
                 else module.LGBMClassifier(n_estimators=10, verbose=-1)).fit(X, y)
    else:
        model = {"forest": RandomForestClassifier(20, random_state=0), "hgb": HistGradientBoostingClassifier(),
                 "custom": Custom(0.5)}[kind].fit(X, y)
    store, fp, saved = _saved(tmp_path, model)
    trusted = ["test_artifacts.Custom"] if kind == "custom" else []
    loaded = store.load(fp, fingerprint_of=fingerprint, sha=saved.sha256, trusted_types=trusted)
    assert np.array_equal(loaded.model.predict(X), model.predict(X))


def test_a_model_skops_cannot_hold_is_saved_with_joblib_and_one_nothing_can_hold_is_an_error(tmp_path):
    model = WithPattern().fit(X, y)
    store, fp, saved = _saved(tmp_path, model)
    assert saved.format.startswith("joblib/") and _model_file(tmp_path, fp).suffix == ".joblib"
    assert store.load(fp, fingerprint_of=fingerprint, sha=saved.sha256).model.pattern_.pattern == "[a-z]+"
    broken = Unpicklable().fit(X, y)
    with pytest.raises(ArtifactError, match="cannot be saved") as caught:
        store.save(fingerprint(broken), broken, fingerprint)
    assert "skops" in str(caught.value) and "joblib" in str(caught.value)


def test_a_type_outside_the_trusted_libraries_is_refused_unless_named(tmp_path):
    store, fp, saved = _saved(tmp_path, Custom().fit(X, y))
    assert saved.format.startswith("skops/")
    with pytest.raises(ArtifactError, match="test_artifacts.Custom.*not trusted"):
        store.load(fp, fingerprint_of=fingerprint, sha=saved.sha256)
    assert store.load(fp, fingerprint_of=fingerprint, trusted_types=["test_artifacts.Custom"]).model.shift == 0.0


def _model_file(tmp_path, fp):
    manifest = json.loads((tmp_path / "artifacts" / fp / "manifest.json").read_text())
    return tmp_path / "artifacts" / fp / manifest["model"]["file"]


@pytest.mark.parametrize("offset", [0, 1, 100, -1])
def test_a_tampered_file_is_never_deserialised(tmp_path, offset, monkeypatch):
    store, fp, saved = _saved(tmp_path)
    path = _model_file(tmp_path, fp)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    loads = []
    monkeypatch.setattr(artifacts, "loads", lambda *a, **k: loads.append(1))
    with pytest.raises(ArtifactError, match="SHA-256"):
        store.load(fp, fingerprint_of=fingerprint, sha=saved.sha256)
    assert loads == [] and store.status(fp, saved.sha256).state == "damaged"


def test_a_file_and_manifest_replaced_together_are_refused_by_the_records_digest(tmp_path):
    """Whoever can write the store can rewrite the manifest too; the record's digest, in the chained trail,
    is what they cannot change. Without it, the loaded model's fingerprint still refuses a substitute."""
    store, fp, saved = _saved(tmp_path)
    forged = artifacts.dumps(LogisticRegression(C=0.01).fit(X, y), "skops")
    original = _model_file(tmp_path, fp)
    manifest_path = tmp_path / "artifacts" / fp / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"]["sha256"] = artifacts.sha256(forged)
    manifest_path.write_text(json.dumps(manifest))
    original.write_bytes(forged)  # in place, under the original's name
    with pytest.raises(ArtifactError, match="its SHA-256 is .*not the recorded"):
        store.load(fp, fingerprint_of=fingerprint, sha=saved.sha256)
    with pytest.raises(ArtifactError, match="its fingerprint is"):
        store.load(fp, fingerprint_of=fingerprint)
    renamed = original.with_name(f"model.{artifacts.sha256(forged)}.skops")  # under a name of its own
    original.rename(renamed)
    manifest["model"]["file"] = renamed.name
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not the one its record names"):
        store.load(fp, fingerprint_of=fingerprint, sha=saved.sha256)
    with pytest.raises(ArtifactError, match="its fingerprint is"):
        store.load(fp, fingerprint_of=fingerprint)


def test_another_models_artifact_under_this_fingerprint_is_refused(tmp_path):
    store, fp, saved = _saved(tmp_path)
    other = LogisticRegression(C=0.01).fit(X, y)
    other_fp = fingerprint(other)
    store.save(other_fp, other, fingerprint)
    (tmp_path / "artifacts" / fp).rename(tmp_path / "artifacts" / "moved")
    (tmp_path / "artifacts" / other_fp).rename(tmp_path / "artifacts" / fp)
    with pytest.raises(ArtifactError, match=f"describes model .*{other_fp}"):
        store.load(fp, fingerprint_of=fingerprint)


@pytest.mark.parametrize("what", ["root", "model directory", "model file", "manifest"])
def test_a_store_others_can_write_is_not_trusted(tmp_path, what):
    store, fp, saved = _saved(tmp_path)
    root = tmp_path / "artifacts"
    target = {"root": root, "model directory": root / fp, "model file": _model_file(tmp_path, fp),
              "manifest": root / fp / "manifest.json"}[what]
    os.chmod(target, os.stat(target).st_mode | 0o020)
    with pytest.raises(ArtifactError, match="others can write it"):
        store.load(fp, fingerprint_of=fingerprint, sha=saved.sha256)
    assert store.status(fp, saved.sha256).state in ("untrusted", "damaged")


def test_a_symlinked_file_is_not_trusted(tmp_path):
    store, fp, saved = _saved(tmp_path)
    path = _model_file(tmp_path, fp)
    elsewhere = tmp_path / "elsewhere.bin"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match="symbolic link"):
        store.load(fp, fingerprint_of=fingerprint, sha=saved.sha256)


def test_a_remote_store_is_loaded_from_only_when_trusted_explicitly():
    pytest.importorskip("fsspec")
    model = RandomForestClassifier(10, random_state=0).fit(X, y)
    store = ArtifactStore("memory://otel-rai-test-artifacts")
    assert store.remote
    fp = fingerprint(model)
    saved = store.save(fp, model, fingerprint)
    assert saved.uri.startswith("memory://") and store.status(fp, saved.sha256).state == "saved"
    with pytest.raises(ArtifactError, match="remote artifact store"):
        store.load(fp, fingerprint_of=fingerprint, sha=saved.sha256)
    loaded = store.load(fp, fingerprint_of=fingerprint, sha=saved.sha256, trust_remote=True)
    assert np.array_equal(loaded.model.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize("bad", ["../../etc", "", "0" * 31, "G" * 32, "0" * 32 + "/x", None])
def test_a_fingerprint_is_never_a_path(tmp_path, bad):
    store = ArtifactStore(tmp_path / "artifacts")
    with pytest.raises(ArtifactError, match="not a model fingerprint"):
        store.load(bad, fingerprint_of=fingerprint)


def test_missing_and_unreadable_artifacts_are_one_line_errors(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    with pytest.raises(ArtifactError, match="no artifact of model 0+ in") as caught:
        store.load("0" * 32, fingerprint_of=fingerprint)
    assert "\n" not in str(caught.value) and store.status("0" * 32).state == "missing"
    _, fp, _ = _saved(tmp_path)
    (tmp_path / "artifacts" / fp / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="is not JSON"):
        store.load(fp, fingerprint_of=fingerprint)


def test_the_default_store_is_beside_the_audit_store(tmp_path, monkeypatch):
    assert artifacts.resolve(None, tmp_path / "x" / "audit.db").url == str(tmp_path / "x" / "artifacts")
    assert artifacts.resolve(True, None).url.endswith("otel-rai-home/artifacts")
    assert artifacts.resolve(False, tmp_path / "audit.db") is None
    assert artifacts.resolve("file:///srv/models", None).url == "/srv/models"
    monkeypatch.setenv("OTEL_RAI_ARTIFACTS", "false")
    from otel_rai.settings import Settings

    assert Settings.resolve().artifacts is False
