"""The package's surface: a light command line, one declaration per option, the entry point and shims."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import subprocess
import sys
import types
import warnings
from importlib.metadata import entry_points

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import settings
from otel_rai.session.instrumentor import RaiInstrumentor

HEAVY = ("sklearn", "numpy", "scipy", "pandas", "opentelemetry.exporter", "grpc")

_PROBE = """
import json, sys
from otel_rai import cli
code = cli.main(sys.argv[1:])
heavy = sorted({m for m in sys.modules if m.startswith(%r)})
print(json.dumps({"code": code, "heavy": heavy}))
"""


def _modules_loaded_by(*argv: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE % (HEAVY,), *argv], capture_output=True, text=True,
                         timeout=60)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def small_store(tmp_path):
    path = tmp_path / "audit.db"
    X = np.random.default_rng(0).normal(size=(50, 4))
    otel_rai.instrument(store=path, hash_key="layout-key-0123456789abcdef")
    model = otel_rai.register_model(LogisticRegression().fit(X, X[:, 0] > 0), name="m", version="1")
    model.predict(X[:5])
    otel_rai.uninstrument()
    return path


@pytest.mark.parametrize("argv", [("--help",), ("query", "--help"), ("stack", "status", "--dir", "/nonexistent")])
def test_commands_that_read_nothing_import_no_heavy_library(argv):
    got = _modules_loaded_by(*argv)
    assert got["heavy"] == [], got


def test_a_local_query_imports_no_heavy_library(small_store):
    got = _modules_loaded_by("query", "--store", str(small_store), "--format", "json")
    assert got["code"] == 0 and got["heavy"] == []


def test_instrument_takes_exactly_the_declared_options():
    params = inspect.signature(otel_rai.instrument).parameters
    fields = {f.name: f for f in dataclasses.fields(settings.Settings)}
    assert list(params) == list(fields)
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    for name in fields:
        assert f"{name}: " in otel_rai.instrument.__doc__
    with pytest.raises(TypeError, match="unknown options max_rows"):
        otel_rai.instrument(max_rows=3)


def test_an_option_comes_from_its_variable_and_an_argument_wins(monkeypatch):
    monkeypatch.setenv("OTEL_RAI_EXPLAIN_TOP_K", "7")
    monkeypatch.setenv("OTEL_RAI_CAPTURE_FEATURES", "age, income,,")
    resolved = settings.Settings.resolve()
    assert resolved.explain_top_k == 7 and resolved.capture_features == frozenset({"age", "income"})
    assert settings.Settings.resolve(explain_top_k=2).explain_top_k == 2
    monkeypatch.setenv("OTEL_RAI_EXPLAIN_TOP_K", "seven")
    with pytest.raises(ValueError, match="OTEL_RAI_EXPLAIN_TOP_K='seven' is not valid"):
        settings.Settings.resolve()
    monkeypatch.setenv("OTEL_RAI_HASH_KEY", "")
    monkeypatch.setenv("OTEL_RAI_CHECKPOINT_INTERVAL", "not-a-number-and-secret")
    with pytest.raises(ValueError) as raised:
        settings.Settings.resolve(explain_top_k=1)
    assert "OTEL_RAI_CHECKPOINT_INTERVAL" in str(raised.value)


def test_a_secret_variable_is_never_quoted_in_an_error(monkeypatch):
    strict = copy.copy(settings._FIELDS["hash_key"])  # a secret whose parser rejects the value
    strict.metadata = types.MappingProxyType({**strict.metadata, "parse": int})
    monkeypatch.setitem(settings._FIELDS, "hash_key", strict)
    monkeypatch.setenv("OTEL_RAI_HASH_KEY", "hunter2-is-my-key")
    with pytest.raises(ValueError) as raised:
        settings.from_env("hash_key")
    assert "hunter2" not in str(raised.value) and "OTEL_RAI_HASH_KEY" in str(raised.value)


def test_every_variable_read_is_declared():
    with pytest.raises(KeyError):
        settings.env("OTEL_RAI_NOT_A_SETTING")


def test_the_zero_code_entry_point_and_the_old_import_path_still_work():
    (point,) = [ep for ep in entry_points(group="opentelemetry_instrumentor") if ep.name == "otel_rai"]
    assert point.load() is RaiInstrumentor is otel_rai.RaiInstrumentor
    sys.modules.pop("otel_rai.instrumentor", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from otel_rai import instrumentor
    assert instrumentor.RaiInstrumentor is RaiInstrumentor
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_the_public_names_are_the_documented_ones():
    for name in otel_rai.__all__:
        assert getattr(otel_rai, name) is not None
    with pytest.raises(AttributeError):
        otel_rai.not_a_name  # noqa: B018
