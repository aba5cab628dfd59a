"""Quality and drift from the trail: the report's sections and the table of ``otel-rai monitor``.

The figures use the live monitor's functions (`otel_rai.monitoring`) on decision records and the drift
snapshots of the local audit store:

* quality: over the labelled decisions of the period, overall and per group, and over time in
  `PERIODS` consecutive slices of equal numbers of decisions. Decisions are grouped by decision time, so
  a label that arrived late counts in the slice of its decision. CBPE estimates cover every decision
  with probabilities, labelled or not;
* drift: the latest snapshot of the period (the live window at that time against the reference).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import numpy as np

from otel_rai import semconv
from otel_rai.monitoring import estimate, quality, snapshot
from otel_rai.monitoring.alerts import MonitoringAlert
from otel_rai.monitoring.drift import Drift
from otel_rai.monitoring.quality import Classes, ClassificationCounts, Quality, RegressionCounts
from otel_rai.report.figures import DecisionRecord

#: Slices of the period in the quality-over-time figures.
PERIODS = 10
#: Features charted in the drift section, the worst first.
WORST_FEATURES = 10
#: PSI above this is marked as drift in the report (MonitoringConfig's default alert threshold).
PSI_MARK = 0.2


@dataclass(frozen=True)
class Slice:
    """Quality of one set of decisions: everyone, or one group of a sensitive attribute."""

    attribute: str | None
    group: str | None
    decisions: int
    quality: Quality
    estimated_accuracy: float | None = None
    estimated_roc_auc: float | None = None

    @property
    def name(self) -> str:
        return "all decisions" if self.attribute is None else f"{self.attribute} = {self.group}"


@dataclass(frozen=True)
class Period:
    """One slice of the period in time: its decisions' first and last times (Unix seconds)."""

    start: float
    end: float
    slices: list[Slice]


@dataclass(frozen=True)
class MonitoringFigures:
    kind: str | None  # "classification", "regression", or None (nothing to measure)
    slices: list[Slice]
    periods: list[Period]
    drift: list[Drift] = field(default_factory=list)
    snapshot_time: float | None = None
    reference_source: str | None = None
    alerts: list[MonitoringAlert] = field(default_factory=list)


class _Counter:
    """Counts of one model's records, per slice."""

    def __init__(self, records: Sequence[DecisionRecord], positive_label: Any) -> None:
        classes = next((r.classes for r in records if r.classes), None)
        self.classes = Classes(np.asarray(classes)) if classes else None
        self.positive = None
        if self.classes is not None and len(self.classes) == 2:
            found = self.classes.index(positive_label) if positive_label is not None else -1
            self.positive = found if found >= 0 else 1
        self.regression = self.classes is None and any(
            isinstance(r.output, (int, float)) and not isinstance(r.output, bool) for r in records)

    @property
    def kind(self) -> str | None:
        return "classification" if self.classes is not None else "regression" if self.regression else None

    def slices(self, records: Sequence[DecisionRecord]) -> list[Slice]:
        members: dict[tuple[str, str] | None, list[DecisionRecord]] = {None: list(records)}
        for r in records:
            for attribute, group in r.groups.items():
                members.setdefault((attribute, group), []).append(r)
        keys = [None, *sorted(k for k in members if k is not None)]
        return [self._slice(k, members[k]) for k in keys]

    def _slice(self, key: tuple[str, str] | None, records: list[DecisionRecord]) -> Slice:
        attribute, group = key if key is not None else (None, None)
        if self.classes is None:
            counts = RegressionCounts()
            pairs = [(float(r.outcome), float(r.output)) for r in records if _number(r.outcome) and _number(r.output)]
            if pairs:
                truth, pred = np.array(pairs).T
                counts.add(truth, pred)
            return Slice(attribute, group, len(records), quality.regression(counts))
        k = len(self.classes)
        counts, estimates = ClassificationCounts(k), estimate.EstimateCounts(k)
        scored_true, scored_pred, scored_proba, plain_true, plain_pred = [], [], [], [], []
        est_pred, est_proba = [], []
        for r in records:
            predicted = self.classes.index(r.output)
            proba = r.proba if r.proba is not None and len(r.proba) == k else None
            if proba is not None and predicted >= 0:
                est_pred.append(predicted)
                est_proba.append(proba)
            truth = self.classes.index(r.outcome) if r.outcome is not None else -1
            if truth < 0 or predicted < 0:
                continue
            if proba is not None:
                scored_true.append(truth)
                scored_pred.append(predicted)
                scored_proba.append(proba)
            else:
                plain_true.append(truth)
                plain_pred.append(predicted)
        if scored_true:
            counts.add(np.array(scored_true), np.array(scored_pred), np.array(scored_proba, np.float64))
        if plain_true:
            counts.add(np.array(plain_true), np.array(plain_pred))
        if est_pred:
            estimates.add(np.array(est_pred), np.array(est_proba, np.float64))
        return Slice(attribute, group, len(records), quality.classification(counts, self.positive),
                     estimate.accuracy(estimates), estimate.roc_auc(estimates, self.positive))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def figures(
    records: Iterable[DecisionRecord],
    snapshots: Sequence[tuple[int, dict]] = (),
    alerts: Sequence[MonitoringAlert] = (),
    positive_label: Any = None,
    periods: int = PERIODS,
) -> MonitoringFigures:
    """Quality (overall, per group, over time) and drift (the latest snapshot) of one model version."""
    ordered = sorted(records, key=lambda r: r.timestamp)
    counter = _Counter(ordered, positive_label)
    slices = counter.slices(ordered) if counter.kind else []
    over_time = []
    if counter.kind and ordered:
        for part in np.array_split(np.arange(len(ordered)), min(periods, len(ordered))):
            chunk = [ordered[i] for i in part]
            over_time.append(Period(chunk[0].timestamp, chunk[-1].timestamp, counter.slices(chunk)))
    drift, when, source = [], None, None
    if snapshots:
        when_ns, attributes = max(snapshots, key=lambda s: s[0])
        drift = [h.drift() for h in snapshot.read(attributes)]
        when, source = when_ns / 1e9, attributes.get(semconv.DRIFT_REFERENCE_SOURCE)
    return MonitoringFigures(counter.kind, slices, over_time, drift, when, source, list(alerts))


# --- HTML ----------------------------------------------------------------------------------------------

#: The over-time chart, in pixels: plot width, height, and the margin around the plot.
_W, _H, _PAD = 640, 220, 40
#: The legend column right of the over-time chart, in pixels.
_LEGEND_W = 160
#: One colour per line of the over-time chart, cycled beyond; each line is also named in the legend.
_COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563")
#: The PSI chart, in pixels: bar height, gap, label column, plot width, number column.
_BAR_H, _GAP, _LABEL_W, _PLOT_W, _NUM_W = 20, 6, 160, 420, 70


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: float | None, digits: int = 4) -> str:
    return '<span class="na">–</span>' if value is None else f"{value:.{digits}f}"


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M")


CLASSIFICATION_COLUMNS = (("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
                   ("f1_macro", "F1 macro"), ("roc_auc", "ROC AUC"), ("log_loss", "log loss"),
                   ("brier_score", "Brier"), ("calibration_error", "ECE"))
REGRESSION_COLUMNS = (("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²"))


def quality_section(f: MonitoringFigures) -> list[str]:
    """The quality section: a table per slice, and accuracy (or MAE) over time per slice as SVG lines."""
    out = ["<h2>Model quality</h2>"]
    if f.kind is None or not f.slices:
        return out + ['<p class="na">No decision of this version can be measured (neither a classifier '
                      "nor a regressor).</p>"]
    columns = CLASSIFICATION_COLUMNS if f.kind == "classification" else REGRESSION_COLUMNS
    out.append("<p>Over the decisions whose ground truth was recorded (docs/monitoring.md). A label counts "
               "with its decision, whenever it arrived. Estimated accuracy and ROC AUC (CBPE) cover every "
               "decision with probabilities and are as good as the model's calibration.</p>")
    head = "".join(f"<th>{label}</th>" for _, label in columns)
    estimated = "<th>est. accuracy</th><th>est. ROC AUC</th>" if f.kind == "classification" else ""
    out.append('<div class="wide" style="overflow-x: auto"><table id="quality"><thead><tr><th></th>'
               f"<th>decisions</th><th>labelled</th>{head}{estimated}</tr></thead><tbody>")
    for s in f.slices:
        cells = "".join(f'<td class="num" data-metric="{name}">{_num(getattr(s.quality, name))}</td>'
                        for name, _ in columns)
        if f.kind == "classification":
            cells += (f'<td class="num">{_num(s.estimated_accuracy)}</td>'
                      f'<td class="num">{_num(s.estimated_roc_auc)}</td>')
        out.append(f'<tr data-slice="{_e(s.name)}"><td>{_e(s.name)}</td><td class="num">{s.decisions}</td>'
                   f'<td class="num">{s.quality.labelled}</td>{cells}</tr>')
    out.append("</tbody></table></div>")  # a wide table scrolls on its own, the page does not
    metric, label = ("accuracy", "accuracy") if f.kind == "classification" else ("mae", "MAE")
    if len(f.periods) > 1:
        out.append(f"<h3>{label.capitalize()} over time</h3>")
        out.append(over_time_chart(f, metric, label))
    return out


def over_time_chart(f: MonitoringFigures, metric: str, label: str) -> str:
    """Lines of `metric` per slice across the periods (and, for accuracy, the estimate overall, dashed)."""
    names = [s.name for s in f.slices]
    series: dict[str, list[float | None]] = {n: [] for n in names}
    estimated: list[float | None] = []
    for period in f.periods:
        found = {s.name: getattr(s.quality, metric) for s in period.slices}
        for n in names:
            series[n].append(found.get(n))
        estimated.append(period.slices[0].estimated_accuracy if metric == "accuracy" else None)
    values = [v for vs in [*series.values(), estimated] for v in vs if v is not None]
    if not values:
        return '<p class="na">No labelled decisions yet.</p>'
    lo, hi = (0.0, 1.0) if metric == "accuracy" else (0.0, max(values) * 1.1 or 1.0)
    n = len(f.periods)
    x = lambda i: _PAD + (i + 0.5) * (_W - 2 * _PAD) / n  # noqa: E731
    y = lambda v: _H - _PAD + (v - lo) / (hi - lo) * (2 * _PAD - _H)  # noqa: E731
    body = [f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#555"/>']
    for tick in np.linspace(lo, hi, 5):
        body.append(f'<text x="{_PAD - 4}" y="{y(tick) + 4:.1f}" font-size="10" text-anchor="end">{tick:.2g}</text>')
    for i, period in enumerate(f.periods):
        if i in (0, n - 1):
            body.append(f'<text x="{x(i):.1f}" y="{_H - _PAD + 14}" font-size="10" text-anchor="middle">'
                        f"{_e(_when(period.start))}</text>")
    lines = [(name, series[name], _COLOURS[i % len(_COLOURS)], "") for i, name in enumerate(names)]
    if metric == "accuracy":
        lines.append(("estimated (all decisions)", estimated, "#6b7280", ' stroke-dasharray="4 3"'))
    for j, (name, points, colour, dash) in enumerate(lines):
        coords = [f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(points) if v is not None]
        if coords:
            body.append(f'<polyline class="series" data-series="{_e(name)}" fill="none" stroke="{colour}" '
                        f'stroke-width="2"{dash} points="{" ".join(coords)}"/>')
        body.append(f'<text x="{_W - _PAD + 4}" y="{_PAD + 12 * j}" font-size="10" fill="{colour}">{_e(name)}</text>')
    width = _W + _LEGEND_W
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{_H}" '
            f'viewBox="0 0 {width} {_H}"><title>{_e(label)} over time</title>{"".join(body)}</svg>')


def drift_section(f: MonitoringFigures) -> list[str]:
    """The drift section: the worst features by PSI charted, and a table of every feature."""
    out = ["<h2>Input and prediction drift</h2>"]
    if not f.drift:
        return out + ['<p class="na">No drift snapshot for this version: it had no reference profile '
                      "(docs/monitoring.md).</p>"]
    out.append(f"<p>The live window at {_when(f.snapshot_time)} UTC against the reference profile (from "
               f"{_e(f.reference_source)} data). PSI above {PSI_MARK} is marked: a significant shift.</p>")
    ranked = sorted(f.drift, key=lambda d: -(d.psi or 0.0))
    out.append(psi_chart(ranked[:WORST_FEATURES]))
    out.append('<table id="drift"><thead><tr><th>feature</th><th>kind</th><th>PSI</th><th>JS distance</th>'
               "<th>Wasserstein</th><th>χ² p-value</th><th>missing (reference)</th><th>missing (window)</th>"
               "<th>rows</th></tr></thead><tbody>")
    for d in ranked:
        mark = " fail" if d.psi is not None and d.psi > PSI_MARK else ""
        out.append(f'<tr data-feature="{_e(d.feature)}"><td>{_e(d.feature)}</td><td>{d.kind}</td>'
                   f'<td class="num{mark}" data-metric="psi">{_num(d.psi)}</td>'
                   f'<td class="num">{_num(d.js_distance)}</td><td class="num">{_num(d.wasserstein)}</td>'
                   f'<td class="num">{_num(d.chi2_pvalue)}</td><td class="num">{_num(d.missing_rate_reference)}</td>'
                   f'<td class="num">{_num(d.missing_rate_current)}</td><td class="num">{d.rows}</td></tr>')
    out.append("</tbody></table>")
    return out


def psi_chart(drift: Sequence[Drift]) -> str:
    """Horizontal bars of the PSI of the given features, with the threshold as a line."""
    bar, gap, label_w, plot_w = _BAR_H, _GAP, _LABEL_W, _PLOT_W
    top = max([PSI_MARK * 1.25, *[d.psi or 0.0 for d in drift]])  # the threshold line stays inside the plot
    height = len(drift) * (bar + gap) + 24
    x = lambda v: label_w + v / top * plot_w  # noqa: E731
    body = []
    for i, d in enumerate(drift):
        yy = 4 + i * (bar + gap)
        value = d.psi or 0.0
        colour = "#dc2626" if value > PSI_MARK else "#2563eb"
        body.append(f'<text x="{label_w - 8}" y="{yy + 14}" font-size="12" text-anchor="end">{_e(d.feature)}</text>')
        body.append(f'<rect class="bar" data-feature="{_e(d.feature)}" data-psi="{value!r}" x="{label_w}" y="{yy}" '
                    f'width="{value / top * plot_w:.2f}" height="{bar}" fill="{colour}"/>')
        body.append(f'<text x="{x(value) + 4:.1f}" y="{yy + 14}" font-size="11">{value:.3f}</text>')
    body.append(f'<line x1="{x(PSI_MARK):.1f}" y1="0" x2="{x(PSI_MARK):.1f}" y2="{height - 20}" stroke="#b45309" '
                f'stroke-dasharray="4 3"/><text x="{x(PSI_MARK):.1f}" y="{height - 6}" font-size="10" '
                f'text-anchor="middle">PSI {PSI_MARK}</text>')
    width = label_w + plot_w + _NUM_W
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><title>PSI of the most drifted features</title>{"".join(body)}</svg>')


def alerts_section(f: MonitoringFigures) -> list[str]:
    """The quality and drift alerts of the period."""
    out = ["<h3>Quality and drift alerts</h3>"]
    if not f.alerts:
        return out + ['<p class="na">No quality or drift alert was raised over this period.</p>']
    out.append("<table><thead><tr><th>time</th><th>kind</th><th>subject</th><th>metric</th><th>value</th>"
               "<th>threshold</th><th>state</th></tr></thead><tbody>")
    for a in sorted(f.alerts, key=lambda a: a.time_ns):
        subject = a.feature if a.kind == "drift" else ("all decisions" if a.attribute is None else
                                                       f"{a.attribute}" + (f" = {a.group}" if a.group else ""))
        state = semconv.STATE_FIRING if a.firing else semconv.STATE_RESOLVED
        out.append(f'<tr class="monitoring-alert"><td>{_when(a.time_ns / 1e9)}</td><td>{a.kind}</td>'
                   f"<td>{_e(subject)}</td><td>{_e(a.metric)}</td><td class=\"num\">{a.value:.4f}</td>"
                   f'<td class="num">{a.threshold:.4f}</td>'
                   f'<td class="{"fail" if a.firing else "ok"}">{state}</td></tr>')
    out.append("</tbody></table>")
    return out


def sections(f: MonitoringFigures) -> list[str]:
    """Every monitoring section of the report, in order."""
    return [*quality_section(f), *drift_section(f), *alerts_section(f)]
