"""The zero-code path (``opentelemetry-instrument python app.py``) fails loudly: when otel-rai cannot
instrument (an unusable store, a bad setting), it logs an error, counts
``ml.audit.instrumentation_failures``, `flush()` says so, and with ``OTEL_RAI_ON_AUDIT_FAILURE=raise``
every decision is refused. Run for real, in subprocesses."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KEY

from otel_rai import semconv

APP = """
import json, sys
import numpy as np
from sklearn.linear_model import LogisticRegression
import otel_rai

X = np.random.RandomState(0).randn(20, 3)
model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
outcomes = []
for i in range(5):
    try:
        outcomes.append(int(model.predict(X[i : i + 1])[0]))
    except otel_rai.AuditUnavailableError as exc:
        outcomes.append(str(exc))
result = otel_rai.flush(10)
print(json.dumps({"outcomes": outcomes, "complete": result.complete, "failures": dict(result.failures),
                  "error": result.error, "decisions": result.decisions}))
"""


def _run(tmp_path: Path, **env: str) -> tuple[dict, str, str]:
    app = tmp_path / "app.py"
    app.write_text(APP)
    environment = {
        **os.environ,
        "OTEL_RAI_HASH_KEY": KEY,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "console",  # a real exporter: the metrics are printed at exit
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRIC_EXPORT_INTERVAL": "600000",
        **env,
    }
    environment.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    instrument = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    run = subprocess.run([instrument, sys.executable, str(app)], env=environment, capture_output=True, text=True,
                         timeout=180)
    assert run.returncode == 0, run.stderr
    first = run.stdout.index("{")
    result, _ = json.JSONDecoder().raw_decode(run.stdout[first:])
    return result, run.stdout[first:], run.stderr


def _failures_counted(stdout: str) -> list[tuple[str, float]]:
    """(error.type, value) of each ml.audit.instrumentation_failures point the console exporter printed."""
    decoder, points = json.JSONDecoder(), []
    for found in re.finditer(r'\{\s*"resource_metrics"', stdout):
        document, _ = decoder.raw_decode(stdout, found.start())
        for rm in document["resource_metrics"]:
            for sm in rm["scope_metrics"]:
                for metric in sm["metrics"]:
                    if metric["name"] == semconv.METRIC_AUDIT_INSTRUMENTATION_FAILURES:
                        points += [(p["attributes"][semconv.ERROR_TYPE], p["value"])
                                   for p in metric["data"]["data_points"]]
    return points


UNUSABLE = {
    "store is a directory": ({"OTEL_RAI_STORE": "{dir}"}, "StoreError"),
    "store is not ours": ({"OTEL_RAI_STORE": "{garbage}"}, "StoreError"),
    "bad setting": ({"OTEL_RAI_MAX_ROWS_PER_SPAN": "zero"}, "ValueError"),
    "weak key": ({"OTEL_RAI_HASH_KEY": "short"}, "InputError"),
}


def _env(tmp_path: Path, settings: dict[str, str]) -> dict[str, str]:
    (tmp_path / "garbage.db").write_bytes(b"not a database at all" * 100)
    return {k: v.format(dir=tmp_path, garbage=tmp_path / "garbage.db") for k, v in settings.items()}


@pytest.mark.parametrize("case", UNUSABLE)
def test_fail_open_runs_unaudited_but_says_so(tmp_path, case):
    settings, error_type = UNUSABLE[case]
    result, stdout, stderr = _run(tmp_path, **_env(tmp_path, settings))
    assert all(isinstance(o, int) for o in result["outcomes"])  # predictions return, unaudited
    assert result["complete"] is False and result["failures"] == {"instrument": 1}
    assert result["error"].startswith(error_type) and result["decisions"] == 0
    assert "otel-rai: instrumentation failed" in stderr and "NOT audited" in stderr
    assert _failures_counted(stdout) == [(error_type, 1)]
    assert KEY not in stdout + stderr


@pytest.mark.parametrize("case", ["store is a directory", "bad setting"])
def test_fail_closed_refuses_every_decision(tmp_path, case):
    settings, error_type = UNUSABLE[case]
    result, stdout, stderr = _run(tmp_path, OTEL_RAI_ON_AUDIT_FAILURE="raise", **_env(tmp_path, settings))
    assert all("withheld" in str(o) and f"instrumentation failed: {error_type}" in str(o) for o in result["outcomes"])
    assert result["complete"] is False and result["failures"] == {"instrument": 1}
    assert "every decision is refused" in stderr
    assert _failures_counted(stdout) == [(error_type, 1)]


def test_fail_closed_from_the_environment_records_before_returning(tmp_path):
    store = tmp_path / "audit.db"
    result, stdout, stderr = _run(tmp_path, OTEL_RAI_ON_AUDIT_FAILURE="raise", OTEL_RAI_STORE=str(store))
    assert all(isinstance(o, int) for o in result["outcomes"]) and result["complete"], stderr
    assert result["decisions"] == 5 and _failures_counted(stdout) == []
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 5


def test_explicit_instrument_raises_to_its_caller(tmp_path):
    import otel_rai
    from otel_rai.errors import StoreError

    with pytest.raises(StoreError):
        otel_rai.instrument(store=tmp_path, hash_key=KEY)
    assert otel_rai.flush(1).complete  # nothing was started, nothing is claimed
