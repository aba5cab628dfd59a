"""The fairness audit report: one self-contained HTML page for one model version or several.

`render` builds it from decision records and the alerts raised meanwhile. The page is a header and a list
of sections; each section is a function of a `Page` (one model version's records, figures, alerts and
settings) returning HTML fragments, listed in `SECTIONS` in page order: to add a section, write such a
function and add it there. With several versions, the `COMPARISON_SECTIONS` come first, then each
version's sections. Charts are inline SVG (`charts`), each with a title and axis labels with units. The
figures come from `figures`, with the same definitions as the live metrics, over the whole period rather
than a window.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from otel_rai import semconv
from otel_rai.fairness import metrics as fairness
from otel_rai.fairness.alerts import FairnessAlert
from otel_rai.provenance.record import ModelRecord
from otel_rai.report import charts
from otel_rai.report.charts import Bar, Series
from otel_rai.report.figures import (
    ALL,
    AttributeFigures,
    DecisionRecord,
    Figures,
    Timeline,
    figures,
    timeline,
    versions,
)
from otel_rai.report.model import model_section as model_records_section
from otel_rai.report.monitoring import MonitoringFigures
from otel_rai.report.monitoring import sections as monitoring_sections
from otel_rai.settings import FairnessConfig
from otel_rai.version import __version__

#: A group's selection rate in a time bucket is drawn only when the group had at least this many decisions
#: there: a rate of two or three decisions says nothing.
MIN_BUCKET_DECISIONS = 10

#: (sensitive attribute or None, period in Unix seconds or None) -> the time buckets of a version's decisions.
TimelineSource = Callable[[Any, Any], Timeline]


@dataclass(frozen=True)
class Page:
    """What a section sees: the records of one model version, their figures, the alerts of the version,
    and how to judge them. `anchor` prefixes element ids (unique when a page shows several versions)."""

    records: Sequence[DecisionRecord]
    figures: Figures
    alerts: Sequence[FairnessAlert]
    positive_label: Any
    config: FairnessConfig
    anchor: str = ""
    #: Quality and drift of the version (docs/monitoring.md), when known.
    monitoring: MonitoringFigures | None = None
    #: The version's model records (docs/model-records.md); None when the report was not given them.
    model_records: Sequence[ModelRecord] | None = None
    #: Where the time charts' counts come from when the page has figures but no records (a backend's SQL
    #: aggregates): (attribute or None, period or None) -> the `Timeline` `figures.timeline` would give.
    timeline_of: TimelineSource | None = None

    def timeline(self, attribute: str | None, period: tuple[float, float] | None = None) -> Timeline:
        """Decisions and positive decisions per time bucket (`otel_rai.report.figures.timeline`)."""
        if self.timeline_of is not None:
            return self.timeline_of(attribute, period)
        return timeline(self.records, self.positive_label, attribute, period)


Section = Callable[[Page], list[str]]


# --- text helpers ------------------------------------------------------------------------------------

_LITERAL = re.compile(r"``(.+?)``")


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: float | None, digits: int = 4) -> str:
    return '<span class="na">no value</span>' if value is None else f"{value:.{digits}f}"


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    if seconds < 86_400:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 86_400:g} days"


def definition(func: Callable[..., Any]) -> str:
    """The first line of `func`'s docstring as HTML: escaped, its double-backtick literals as ``<code>``."""
    return _LITERAL.sub(r"<code>\1</code>", _e((func.__doc__ or "").strip().splitlines()[0]))


def _check(value: float | None, threshold: float, below: bool) -> str:
    if value is None:
        return '<span class="na">not enough data</span>'
    failed = value < threshold if below else value > threshold
    return '<span class="fail">violated</span>' if failed else '<span class="ok">met</span>'


def _colours(names: Iterable[str]) -> dict[str, str]:
    return {name: charts.PALETTE[i % len(charts.PALETTE)] for i, name in enumerate(names)}


# --- charts ------------------------------------------------------------------------------------------


def selection_rate_chart(attribute: AttributeFigures, ratio_min: float) -> str:
    """Horizontal bars of the selection rate by group on a 0–1 axis. The band from `ratio_min` × the
    highest rate up to it is shaded: a group whose bar ends left of the band fails the four-fifths rule."""
    rates = attribute.summary.selection_rate
    best = max(rates.values(), default=0.0)
    items = [
        Bar(f"{group} (n={attribute.counts[group].decisions})", rates[group],
            charts.FAIL if best > 0 and rates[group] < ratio_min * best else charts.PALETTE[0],
            {"group": group, "rate": repr(rates[group])})
        for group in sorted(rates)
    ]
    return charts.bars(f"Selection rate by {attribute.attribute}", items, domain=(0.0, 1.0),
                       x_label="selection rate: positive decisions / decisions of the group (0–1)",
                       band=(ratio_min * best, best) if best > 0 else None, band_label=f"{ratio_min:g} × max",
                       css_class="selection-rate")


def attribution_chart(top: Sequence[tuple[str, float]], unit: str | None) -> str:
    """Horizontal bars of the mean absolute attribution of the most attributed features."""
    items = [Bar(feature, value, "#7c3aed", {"feature": feature, "value": repr(value)}) for feature, value in top]
    return charts.bars("Mean absolute attribution by feature", items, fmt=".4g", css_class="attributions",
                       x_label=f"mean |attribution| per decision ({unit or 'units of the explained output'})")


def _time_charts(tl: Timeline, title: str, positive_label: Any) -> list[str]:
    starts = tl.starts()
    span = tl.width * len(starts)
    x_domain = (tl.start, tl.start + span)
    fmt = charts.time_label(span)
    colours = _colours(tl.decisions)
    centre = tl.width / 2
    counts = [Series(g, [(t + centre, float(c)) for t, c in zip(starts, cs)], colours[g])
              for g, cs in tl.decisions.items()]
    rates = [Series(g, [(t + centre, s / c) for t, c, s in zip(starts, cs, tl.selected[g])
                        if c >= MIN_BUCKET_DECISIONS], colours[g])
             for g, cs in tl.decisions.items()]
    x_label = f"time (UTC), buckets of {_duration(tl.width)}"
    return [
        charts.lines(f"Decisions over time {title}", counts, x_domain=x_domain, x_format=fmt, x_label=x_label,
                     y_label=f"decisions per {_duration(tl.width)}", css_class="decisions-over-time"),
        charts.lines(f"Selection rate over time {title}", rates, x_domain=x_domain, y_domain=(0.0, 1.0),
                     x_format=fmt, x_label=x_label, y_label=f"selection rate (0–1, label {positive_label})",
                     css_class="selection-rate-over-time"),
    ]


# --- the sections of one model version ------------------------------------------------------------------


def counts_section(page: Page) -> list[str]:
    """Decisions, positive decisions, and those with an outcome and with an explanation."""
    f, a = page.figures, page.anchor
    return [
        "<h2>Counts</h2>",
        f"<p>Decisions from {_when(f.first)} to {_when(f.last)}. A decision is positive when its label is "
        f"<code>{_e(page.positive_label)}</code>.</p>",
        '<table class="counts"><tbody>',
        f'<tr><th>decisions</th><td class="num" id="{a}decisions">{f.decisions}</td></tr>',
        f'<tr><th>positive decisions</th><td class="num" id="{a}selected">{f.selected}</td></tr>',
        f'<tr><th>with a recorded outcome</th><td class="num" id="{a}labelled">{f.labelled}</td></tr>',
        f'<tr><th>with an explanation</th><td class="num" id="{a}explained">{f.explained}</td></tr>',
        "</tbody></table>",
    ]


def _attribute_section(a: AttributeFigures, config: FairnessConfig) -> list[str]:
    s = a.summary
    out = [f"<h3>{_e(a.attribute)}</h3>", '<div class="pair">',
           f"<figure>{selection_rate_chart(a, config.demographic_parity_ratio_min)}</figure>",
           '<table class="groups"><thead><tr><th>group</th><th>decisions</th><th>selected</th>'
           "<th>selection rate</th><th>labelled</th><th>TPR</th><th>FPR</th></tr></thead><tbody>"]
    for group in sorted(a.counts):
        c = a.counts[group]
        out.append(
            f'<tr><td>{_e(group)}</td><td class="num">{c.decisions}</td><td class="num">{c.selected}</td>'
            f'<td class="num">{_num(s.selection_rate.get(group))}</td>'
            f'<td class="num">{c.tp + c.fp + c.fn + c.tn}</td>'
            f'<td class="num">{_num(s.true_positive_rate.get(group))}</td>'
            f'<td class="num">{_num(s.false_positive_rate.get(group))}</td></tr>'
        )
    out.append("</tbody></table></div>")
    rows = [
        ("demographic parity difference", s.demographic_parity_difference, fairness.demographic_parity_difference, ""),
        ("demographic parity ratio", s.demographic_parity_ratio, fairness.demographic_parity_ratio,
         _check(s.demographic_parity_ratio, config.demographic_parity_ratio_min, below=True)),
        ("equalized odds difference", s.equalized_odds_difference, fairness.equalized_odds_difference,
         _check(s.equalized_odds_difference, config.equalized_odds_difference_max, below=False)),
        ("equalized odds ratio", s.equalized_odds_ratio, fairness.equalized_odds_ratio, ""),
    ]
    out.append('<table class="metrics"><thead><tr><th>metric</th><th>value</th><th>definition</th><th>check</th>'
               "</tr></thead><tbody>")
    for name, value, func, check in rows:
        out.append(f'<tr><td>{name}</td><td class="num" data-metric="{name}">{_num(value)}</td>'
                   f"<td>{definition(func)}</td><td>{check}</td></tr>")
    out.append("</tbody></table>")
    return out


def fairness_section(page: Page) -> list[str]:
    """Per sensitive attribute: selection rates by group (chart and table), the differences and ratios
    with their definitions and checks."""
    config = page.config
    out = [
        "<h2>Fairness by sensitive attribute</h2>",
        f"<p>Groups with fewer than {config.min_group_size} decisions (for TPR and FPR: actual positives or "
        "negatives) take no part in differences and ratios. The shaded band runs from "
        f"{config.demographic_parity_ratio_min:g} × the highest selection rate to it: a red bar fails the "
        "four-fifths rule. True and false positive rates need recorded outcomes. "
        "Definitions follow Fairlearn's <code>between_groups</code> (see docs/fairness.md).</p>",
    ]
    if not page.figures.attributes:
        out.append('<p class="na">No decision carries a sensitive attribute: no group figures.</p>')
    for attribute in page.figures.attributes:
        out.extend(_attribute_section(attribute, config))
    return out


def timeline_section(page: Page) -> list[str]:
    """Decisions and selection rate per time bucket, by group of each sensitive attribute (or of all
    decisions when there is none)."""
    attributes = [a.attribute for a in page.figures.attributes] or [None]
    out = ["<h2>Over time</h2>",
           "<p>Decisions and selection rate per time bucket"
           + (", by group" if attributes != [None] else "")
           + f". A group's selection rate is drawn for the buckets where it had at least {MIN_BUCKET_DECISIONS} "
           "decisions.</p>"]
    for attribute in attributes:
        tl = page.timeline(attribute)
        title = f"by {attribute}" if attribute is not None else "(all decisions)"
        out.append('<div class="charts">' + "".join(f"<figure>{c}</figure>"
                                                    for c in _time_charts(tl, title, page.positive_label)) + "</div>")
    return out


def explanation_section(page: Page) -> list[str]:
    """The most attributed features: chart, ranked list, and mean signed attribution by group."""
    f = page.figures
    out = ["<h2>Most attributed features</h2>"]
    if not f.top_features:
        return out + ['<p class="na">No explanations were recorded for these decisions.</p>']
    unit = f.explained_output
    out.append(f"<p>Mean absolute attribution over the {f.explained} explained decisions"
               + (f", in {_e(unit)}" if unit else "")
               + " (each decision records its largest attributions; a feature outside them counts as 0 there). "
               f"The most attributed feature is <strong class=\"top-feature\">{_e(f.top_features[0][0])}</strong>."
               "</p>")
    out.append('<div class="pair">')
    out.append(f"<figure>{attribution_chart(f.top_features, unit)}</figure>")
    out.append('<ol class="top-features">' + "".join(
        f'<li data-feature="{_e(name)}">{_e(name)} <span class="num">{value:.4g}</span></li>'
        for name, value in f.top_features) + "</ol></div>")
    for attribute, groups in f.group_attributions.items():
        names = [name for name, _ in f.top_features]
        out.append(f"<h3>Mean attribution by {_e(attribute)}</h3>"
                   "<p>Signed: a negative value lowers the explained output for that group on average.</p>")
        out.append(f'<table class="group-attributions" data-attribute="{_e(attribute)}"><thead><tr><th>feature</th>'
                   + "".join(f"<th>{_e(g)}</th>" for g in groups) + "</tr></thead><tbody>")
        for name in names:
            out.append(f"<tr><td>{_e(name)}</td>"
                       + "".join(f'<td class="num">{groups[g].get(name, 0.0):+.4g}</td>' for g in groups) + "</tr>")
        out.append("</tbody></table>")
    return out


def alerts_section(page: Page) -> list[str]:
    """The alerts raised over the period, oldest first."""
    out = ["<h2>Alerts</h2>"]
    alerts = sorted(page.alerts, key=lambda a: a.time_ns)
    if not alerts:
        return out + ['<p class="na">No alert was raised over this period.</p>']
    out.append("<table><thead><tr><th>time</th><th>attribute</th><th>metric</th><th>value</th>"
               "<th>threshold</th><th>state</th></tr></thead><tbody>")
    for a in alerts:
        state = semconv.STATE_FIRING if a.firing else semconv.STATE_RESOLVED
        out.append(f'<tr class="alert"><td>{_when(a.time_ns / 1e9)}</td><td>{_e(a.attribute)}</td>'
                   f'<td>{_e(a.metric)}</td><td class="num">{a.value:.4f}</td>'
                   f'<td class="num">{a.threshold:g}</td>'
                   f'<td class="{"fail" if a.firing else "ok"}">{state}</td></tr>')
    out.append("</tbody></table>")
    return out


#: The sections of one model version, in page order (see the module docstring).
def monitoring_section(page: Page) -> list[str]:
    """Quality and drift of the version, when the report was given them."""
    return monitoring_sections(page.monitoring) if page.monitoring is not None else []


def model_section(page: Page) -> list[str]:
    """The model the version's decisions came from, from its model records, when the report was given them."""
    return model_records_section(page.model_records) if page.model_records is not None else []


SECTIONS: list[Section] = [counts_section, model_section, fairness_section, timeline_section, explanation_section,
                           alerts_section, monitoring_section]


# --- comparing versions ---------------------------------------------------------------------------------


def comparison_section(pages: Sequence[Page]) -> list[str]:
    """Several versions side by side: counts, selection rates, the checks, the top feature; selection rate
    by version and group; selection rate over time by version."""
    attributes = sorted({a.attribute for p in pages for a in p.figures.attributes})
    out = ["<h2>Versions compared</h2>", '<table class="comparison"><thead><tr><th>version</th><th>decisions</th>'
           "<th>from</th><th>to</th><th>selection rate</th>"]
    for attribute in attributes:
        out.append(f"<th>demographic parity ratio ({_e(attribute)})</th><th>equalized odds difference "
                   f"({_e(attribute)})</th>")
    out.append("<th>most attributed feature</th></tr></thead><tbody>")
    for p in pages:
        f = p.figures
        by_attribute = {a.attribute: a.summary for a in f.attributes}
        cells = [f'<td>{_e(f.model)} {_e(f.version)}</td><td class="num">{f.decisions}</td>',
                 f"<td>{_when(f.first)}</td><td>{_when(f.last)}</td>",
                 f'<td class="num">{_num(f.selected / f.decisions)}</td>']
        for attribute in attributes:
            s = by_attribute.get(attribute)
            if s is None:
                cells.append('<td class="na">-</td><td class="na">-</td>')
                continue
            cells.append(f'<td class="num">{_num(s.demographic_parity_ratio)} '
                         f"{_check(s.demographic_parity_ratio, p.config.demographic_parity_ratio_min, True)}</td>"
                         f'<td class="num">{_num(s.equalized_odds_difference)} '
                         f"{_check(s.equalized_odds_difference, p.config.equalized_odds_difference_max, False)}</td>")
        cells.append(f"<td>{_e(f.top_features[0][0]) if f.top_features else '-'}</td>")
        out.append(f'<tr data-version="{_e(f.version)}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    colours = _colours(p.figures.version for p in pages)
    for attribute in attributes:
        items = []
        for p in pages:
            figures_of = next((a for a in p.figures.attributes if a.attribute == attribute), None)
            for group, rate in sorted((figures_of.summary.selection_rate if figures_of else {}).items()):
                items.append(Bar(f"{p.figures.version} · {group}", rate, colours[p.figures.version],
                                 {"version": p.figures.version, "group": group, "rate": repr(rate)}))
        out.append("<figure>" + charts.bars(
            f"Selection rate by version and {attribute}", items, domain=(0.0, 1.0), css_class="version-rates",
            x_label="selection rate: positive decisions / decisions of the group (0–1)") + "</figure>")
    period = (min(p.figures.first for p in pages), max(p.figures.last for p in pages))
    series, tl = [], None
    for p in pages:  # the same buckets for every version: those of the whole period
        tl = p.timeline(None, period)
        points = [(t + tl.width / 2, s / c) for t, c, s in zip(tl.starts(), tl.decisions[ALL], tl.selected[ALL])
                  if c >= MIN_BUCKET_DECISIONS]
        series.append(Series(p.figures.version, points, colours[p.figures.version]))
    span = tl.width * len(tl.starts())
    out.append("<figure>" + charts.lines(
        "Selection rate over time by version", series, x_domain=(tl.start, tl.start + span),
        x_format=charts.time_label(span), y_domain=(0.0, 1.0), css_class="version-rate-over-time",
        x_label=f"time (UTC), buckets of {_duration(tl.width)}",
        y_label=f"selection rate (0–1, label {pages[0].positive_label})") + "</figure>")
    return out


#: Sections shown once, before the versions' own, when a page shows several versions.
COMPARISON_SECTIONS: list[Callable[[Sequence[Page]], list[str]]] = [comparison_section]


# --- the page -------------------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; padding: 0 1em; color: #111; }
h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; vertical-align: top; }
td.num, span.num { text-align: right; font-variant-numeric: tabular-nums; }
.fail { color: #b91c1c; font-weight: 600; } .ok { color: #15803d; } .na { color: #6b7280; }
code { background: #f3f4f6; padding: 0 0.2em; }
figure { margin: 0.5em 0; }
svg.chart { width: 100%; height: auto; max-width: 720px; font-size: 13px; }
svg.chart .chart-title { font-size: 15px; font-weight: 600; }
svg.chart .tick { font-size: 11px; fill: #374151; } svg.chart .axis-label { fill: #374151; }
.pair { display: grid; grid-template-columns: repeat(auto-fit, minmax(30em, 1fr)); gap: 0.5em 2em;
        align-items: start; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(30em, 1fr)); gap: 0.5em 2em; }
ol.top-features { margin: 2.5em 0 0; }
section.version { border-top: 3px solid #e5e7eb; margin-top: 2em; }
@media print { figure, table { break-inside: avoid; } body { max-width: none; } }
"""


def _page(records: Sequence[DecisionRecord], alerts: Sequence[FairnessAlert], positive_label: Any,
          config: FairnessConfig, anchor: str, monitoring: Mapping[str, MonitoringFigures],
          model_records: Mapping[str, Sequence[ModelRecord]] | None) -> Page:
    f = figures(records, positive_label, config.min_group_size)
    mine = [a for a in alerts if (a.model, a.version) == (records[0].model, records[0].version)]
    version = records[0].version
    return Page(records, f, mine, positive_label, config, anchor, monitoring.get(version),
                None if model_records is None else model_records.get(version, ()))


def render(
    records: Iterable[DecisionRecord],
    *,
    alerts: Iterable[FairnessAlert] = (),
    positive_label: Any = 1,
    config: FairnessConfig | None = None,
    monitoring: Mapping[str, MonitoringFigures] | MonitoringFigures | None = None,
    model_records: Mapping[str, Sequence[ModelRecord]] | None = None,
) -> str:
    """The HTML report of `records` (one model version, or several to compare) and the `alerts` raised over
    the same period, judged by `config`'s minimum group size and thresholds (default: `FairnessConfig`'s);
    with `monitoring` ({model version: its figures}, or one version's figures when the report has one), the
    quality and drift sections too; with `model_records` ({model version: its model records}), the model
    section."""
    config = config or FairnessConfig()
    alerts = list(alerts)
    by_version = versions(records)
    if not by_version:
        figures([], positive_label, config.min_group_size)  # raises: no decisions to report
    several = len(by_version) > 1
    if isinstance(monitoring, MonitoringFigures):
        if several:
            raise ValueError("otel-rai: give the monitoring figures of several versions by version")
        monitoring = {next(iter(by_version.values()))[0].version: monitoring}
    pages = [_page(rs, alerts, positive_label, config, f"v{i}-" if several else "", monitoring or {}, model_records)
             for i, rs in enumerate(by_version.values())]
    return _html(pages)


@dataclass(frozen=True)
class Counted:
    """One model version counted where its decisions are (a backend's SQL aggregates): its figures and
    its time buckets, instead of its records."""

    figures: Figures
    timeline_of: TimelineSource


def render_counted(
    counted: Sequence[Counted],
    *,
    alerts: Iterable[FairnessAlert] = (),
    positive_label: Any = 1,
    config: FairnessConfig | None = None,
    monitoring: Mapping[str, MonitoringFigures] | None = None,
    model_records: Mapping[str, Sequence[ModelRecord]] | None = None,
) -> str:
    """The page `render` makes, from versions already counted (in the order they first decided)."""
    config = config or FairnessConfig()
    alerts = list(alerts)
    several = len(counted) > 1
    pages = []
    for i, c in enumerate(sorted(counted, key=lambda c: c.figures.first)):
        f = c.figures
        mine = [a for a in alerts if (a.model, a.version) == (f.model, f.version)]
        pages.append(Page((), f, mine, positive_label, config, f"v{i}-" if several else "",
                          (monitoring or {}).get(f.version),
                          None if model_records is None else model_records.get(f.version, ()), c.timeline_of))
    if not pages:
        figures([], positive_label, config.min_group_size)  # raises: no decisions to report
    return _html(pages)


def _html(pages: Sequence[Page]) -> str:
    several = len(pages) > 1
    names = sorted({p.figures.model for p in pages})
    title = f"Fairness audit: {', '.join(names)} " + " and ".join(p.figures.version for p in pages)
    out = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>Generated by otel-rai {_e(__version__)} at {_when(datetime.now(timezone.utc).timestamp())}.</p>",
    ]
    if several:
        for section in COMPARISON_SECTIONS:
            out.extend(section(pages))
    for page in pages:
        if several:
            out.append(f'<section class="version" data-version="{_e(page.figures.version)}">'
                       f"<h1>{_e(page.figures.model)} {_e(page.figures.version)}</h1>")
        for section in SECTIONS:
            out.extend(section(page))
        if several:
            out.append("</section>")
    out.append("</body></html>\n")
    return "\n".join(out)
