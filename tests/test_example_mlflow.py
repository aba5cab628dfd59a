"""examples/mlflow_credit.py, run as a user runs it: it starts its own MLflow servers, and every step it
promises shows in its output."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest
from mlflow_servers import ROOT, base_env

pytestmark = pytest.mark.stack


def test_the_mlflow_example_runs_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "mlflow_credit.py"), "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=900, env=base_env({"OTEL_RAI_HOME": str(tmp_path)}))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "1-2. trained and checked: fairness PASS" in text
    assert "3. registered credit version 1 as credit@champion" in text
    assert "otel-rai check --model models:/credit@champion ...: exit 0, PASS" in text
    decision = re.search(r"TRACE experiment=(\d+) trace=(tr-[0-9a-f]{32}) decision=([0-9a-f]{32})", text)
    assert decision is not None
    rows = [line for line in text.splitlines() if decision.group(3) in line and "credit  1" in line]
    assert len(rows) == 2  # found by otel-rai query in the audit store and in the MLflow server
    assert '"prediction": 0' in text and '"reason_codes": [' in text
    assert f"otel-rai reproduce {decision.group(3)} --input applicant.json: exit 0, REPRODUCED" in text
    ports = re.findall(r"MLflow tracking server: http://127.0.0.1:(\d+)", text) + \
        re.findall(r"serving models:/credit@champion at http://127.0.0.1:(\d+)", text)
    assert len(ports) == 2
    for port in ports:
        with pytest.raises(OSError):  # the example stopped the servers it started
            socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
