"""Report: the fairness audit report of a model version. Decision records from a query backend or a
file (`load`), the figures they add up to (`figures`), and the self-contained HTML page (`html`).
Imports `query`, `fairness` and the foundation modules; never the audit worker.
"""

from otel_rai.report.figures import DecisionRecord
from otel_rai.report.html import render

__all__ = ["DecisionRecord", "render"]
