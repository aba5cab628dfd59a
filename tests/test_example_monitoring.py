"""examples/monitoring.py: the planted drift raises one drift alert (age), the planted shock a quality
alert for the west, and `otel-rai monitor` prints both tables."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import monitoring  # noqa: E402


def test_the_example_shows_a_drift_alert_and_a_quality_alert(tmp_path, capsys):
    alerts = monitoring.main(tmp_path / "audit.db")
    fired = [a for a in alerts if a.firing]
    inputs = {"income", "debt_ratio", "years_employed", "age", "region"}
    assert [a.feature for a in fired if a.kind == "drift" and a.feature in inputs] == ["age"]
    quality = {(a.attribute, a.group, a.metric) for a in fired if a.kind == "quality"}
    assert ("region", "west", "ml.quality.accuracy") in quality
    assert {group for _, group, _ in quality} == {"west"}
    out = capsys.readouterr().out
    assert "QUALITY" in out and "region = west" in out and "DRIFT" in out
    drift_table = out[out.index("DRIFT"):].splitlines()
    assert drift_table[1].split()[0] == "age"  # ranked by PSI: age first
