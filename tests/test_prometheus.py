"""Prometheus: the recording and alert rules (promtool), and a real scrape of two replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fairlearn import metrics as flm
from servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "collector" / "prometheus"

needs_prometheus = pytest.mark.usefixtures("prometheus_installed")


@needs_prometheus
def test_rules_pass_their_promtool_unit_tests():
    check = subprocess.run(["promtool", "check", "rules", "rules.yml"], cwd=RULES_DIR, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", "test_rules.yml"], cwd=RULES_DIR,
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def stop(process: subprocess.Popen) -> None:
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Replica:
    def __init__(self, part: int, parts: int, tmp: Path, script: str = "fairness_replica.py") -> None:
        self.port = free_port()
        self.out = tmp / f"replica-{part}.json"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "OTEL_RAI_HOME": str(tmp / f"home-{part}")}
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name(script)), str(self.port), str(part),
             str(parts), str(self.out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
        )

    def wait_ready(self) -> dict:
        line = self.process.stdout.readline()
        assert line.strip() == "ready", f"replica exited with {self.process.poll()}"
        return json.loads(self.out.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # the replica serves until its stdin closes
            stop(self.process)


class Prometheus:
    def __init__(self, targets: list[str], tmp: Path) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {RULES_DIR / 'rules.yml'}\n"
            "scrape_configs:\n  - job_name: credit\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n"
        )
        self.log = open(tmp / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, process=self.process)
        # The port opens before the TSDB is loaded; until then queries answer 503.
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5):
                    break
            except OSError:  # 503 while loading, or a reset or timeout while it starts
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, promql: str, check, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if check(result):
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql} -> {result}")
            time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        stop(self.process)
        self.log.close()


@pytest.mark.stack
@needs_prometheus
def test_prometheus_ratios_across_replicas_equal_fairlearn(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from fairness_replica import data

    replicas = [Replica(part, 2, tmp_path) for part in range(2)]
    prometheus = None
    try:
        parts = [r.wait_ready() for r in replicas]
        prometheus = Prometheus([f"127.0.0.1:{r.port}" for r in replicas], tmp_path)
        X, y = data()
        rows = np.concatenate([p["rows"] for p in parts])
        y_pred = np.concatenate([p["y_pred"] for p in parts])
        y_true, sex = y[rows], X.sex.to_numpy()[rows]

        # Wait until the rules have been evaluated over both replicas' every decision and outcome.
        for recorded in ("ml_fairness_group:decisions", "ml_fairness_group:outcomes"):
            prometheus.wait_for(f'sum({recorded}{{ml_fairness_window="cumulative"}})',
                                lambda r: r and float(r[0]["value"][1]) == len(X))
        assert len(prometheus.query("count by (instance) (ml_decisions_total)")) == 2
        selector = ('{ml_model_name="credit", ml_model_version="3.1", ml_fairness_attribute="sex", '
                    'ml_fairness_window="cumulative"}')

        def value(name: str) -> float:
            result = prometheus.wait_for(name + selector, lambda r: len(r) == 1)
            return float(result[0]["value"][1])

        kw = {"sensitive_features": sex}
        assert value("ml_fairness:demographic_parity_ratio") == pytest.approx(
            flm.demographic_parity_ratio(y_true, y_pred, **kw), abs=1e-9)
        assert value("ml_fairness:demographic_parity_difference") == pytest.approx(
            flm.demographic_parity_difference(y_true, y_pred, **kw), abs=1e-9)
        assert value("ml_fairness:equalized_odds_difference") == pytest.approx(
            flm.equalized_odds_difference(y_true, y_pred, **kw), abs=1e-9)
        assert value("ml_fairness:equalized_odds_ratio") == pytest.approx(
            flm.equalized_odds_ratio(y_true, y_pred, **kw), abs=1e-9)
        rates = prometheus.query("ml_fairness_group:selection_rate" + selector)
        frame = flm.MetricFrame(metrics=flm.selection_rate, y_true=y_true, y_pred=y_pred, sensitive_features=sex)
        assert {r["metric"]["ml_fairness_group"]: float(r["value"][1]) for r in rates} == pytest.approx(
            dict(frame.by_group.items()), abs=1e-9)
        # Each replica's own window gauge is there too, under the exporter's translated name.
        gauges = prometheus.query('ml_fairness_demographic_parity_ratio{ml_fairness_attribute="sex"}')
        assert {g["metric"]["instance"] for g in gauges} == {f"127.0.0.1:{r.port}" for r in replicas}
    finally:
        for replica in replicas:
            replica.stop()
        if prometheus is not None:
            prometheus.stop()
