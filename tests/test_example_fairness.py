"""The fairness part of examples/credit_scoring.py: the planted bias raises alerts, the fix does not."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import credit_scoring  # noqa: E402


def test_biased_version_alerts_and_fixed_version_does_not(capsys):
    logger = logging.getLogger("otel_rai.alerts")
    handlers, level = list(logger.handlers), logger.level
    try:
        credit_scoring.fairness_demo()
    finally:
        logger.handlers[:], logger.level = handlers, level
    out = capsys.readouterr().out
    assert "2 fairness alert(s) for credit 2.0" in out
    assert "0 fairness alert(s) for credit 2.1" in out
    assert "demographic_parity_ratio of model credit 2.0 for sex is 0.3" in out
    assert "equalized_odds_difference of model credit 2.0 for sex is 0.5" in out
