"""examples/credit_scoring.py as a user runs it: with the local store (the default), and with an OTLP
endpoint (the docs/deploy.md recipe), where it must not read back from a store it no longer writes. The
run against a real rotel → Phoenix is in tests/test_query_phoenix.py (it shares that module's Phoenix)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from servers import attributes

from otel_rai import semconv

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "credit_scoring.py"


def run_example(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_RAI_HOME": str(cwd / "home"), **env}
    done = subprocess.run([sys.executable, str(EXAMPLE), *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "Traceback" not in done.stderr
    return done


def test_the_example_on_the_local_store(tmp_path):
    out = run_example(tmp_path).stdout
    assert "audited 12 decisions in 2 spans; complete=True" in out
    assert "read back from the audit store: credit 1.4.2, this run" in out
    assert "its lowest score" in out and "Reasons (log-odds of class 1, linear" in out
    assert "2 fairness alert(s) for credit 2.0" in out and "0 fairness alert(s) for credit 2.1" in out
    applicant = json.loads((tmp_path / "applicant.json").read_text())
    assert set(applicant) == {"income", "debt_ratio", "years_employed", "region", "home"}


def test_the_example_with_an_otlp_endpoint_exports_and_says_where_to_read_back(tmp_path, receiver):
    done = run_example(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    out = done.stdout
    assert "audited 12 decisions in 2 spans; complete=True" in out
    assert "read back from the audit store" not in out  # there is no store to read from
    assert "exported over OTLP" in out and "--backend jaeger|tempo|phoenix" in out
    assert not (tmp_path / "home" / "audit.db").exists()
    received = receiver.spans()
    ids = {i for _, span in received for i in attributes(span).get(semconv.DECISION_IDS, ())}
    assert {f"A-{1090 + i}/1.4.1" for i in range(6)} <= ids and len(ids) == 12 + 6000
    kinds = {attributes(span).get(semconv.UI_SPAN_KIND) for _, span in received}
    assert semconv.UI_KIND_DECISION in kinds and semconv.UI_KIND_EVALUATOR in kinds  # decisions, alerts
    assert {r[semconv.UI_PROJECT_NAME] for r, _ in received} == {"credit-scoring"}
