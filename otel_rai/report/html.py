"""The fairness audit report: one self-contained HTML file for a model version.

`render` builds it from decision records (and the alerts raised meanwhile): counts, selection rate by
group with the four-fifths band as inline SVG, the differences and ratios with their definitions, the
most attributed features when explanations were recorded, and the alerts. The figures come from
`figures`, with the same definitions as the live metrics, over the whole period rather than a window.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Sequence

from otel_rai import semconv
from otel_rai.fairness import metrics as fairness
from otel_rai.fairness.alerts import FairnessAlert
from otel_rai.report.figures import AttributeFigures, DecisionRecord, Figures, figures
from otel_rai.settings import FairnessConfig
from otel_rai.version import __version__

#: SVG geometry, in pixels: bar height, gap, label column, plot width, number column.
_BAR_H, _GAP, _LABEL_W, _PLOT_W, _NUM_W = 22, 8, 160, 420, 70


def _svg(height: int, body: list[str], title: str) -> str:
    width = _LABEL_W + _PLOT_W + _NUM_W
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><title>{html.escape(title)}</title>{"".join(body)}</svg>')


def selection_rate_chart(attribute: AttributeFigures, ratio_min: float) -> str:
    """Horizontal bars of the selection rate by group on a 0–1 axis. The band from ``ratio_min`` × the
    highest rate up to it is shaded: a group whose bar ends left of the band fails the four-fifths rule."""
    rates = attribute.summary.selection_rate
    groups = sorted(rates)
    top = 20
    height = top + len(groups) * (_BAR_H + _GAP) + 24
    x = lambda v: _LABEL_W + v * _PLOT_W  # noqa: E731
    body = []
    best = max(rates.values(), default=0.0)
    if best > 0:
        lo = ratio_min * best
        body.append(f'<rect class="band" x="{x(lo):.2f}" y="{top - 6}" width="{x(best) - x(lo):.2f}" '
                    f'height="{height - top - 18}" fill="#fde68a" fill-opacity="0.6"/>')
        body.append(f'<text x="{x(lo):.2f}" y="{top - 8}" font-size="11" text-anchor="middle">'
                    f'{ratio_min:g} × max</text>')
    for i, group in enumerate(groups):
        y = top + i * (_BAR_H + _GAP)
        rate = rates[group]
        low = best > 0 and rate < ratio_min * best
        colour = "#dc2626" if low else "#2563eb"
        support = attribute.counts[group].decisions
        body.append(f'<text x="{_LABEL_W - 8}" y="{y + 15}" font-size="12" text-anchor="end">'
                    f'{html.escape(group)} (n={support})</text>')
        body.append(f'<rect class="bar" data-group="{html.escape(group)}" data-rate="{rate!r}" x="{_LABEL_W}" '
                    f'y="{y}" width="{rate * _PLOT_W:.2f}" height="{_BAR_H}" fill="{colour}"/>')
        body.append(f'<text x="{x(rate) + 4:.2f}" y="{y + 15}" font-size="12">{rate:.3f}</text>')
    axis_y = height - 18
    body.append(f'<line x1="{_LABEL_W}" y1="{axis_y}" x2="{x(1)}" y2="{axis_y}" stroke="#555"/>')
    for tick in (0, 0.25, 0.5, 0.75, 1):
        body.append(f'<text x="{x(tick):.2f}" y="{axis_y + 14}" font-size="10" text-anchor="middle">{tick:g}</text>')
    return _svg(height, body, f"Selection rate by {attribute.attribute}")


def attribution_chart(top: Sequence[tuple[str, float]]) -> str:
    """Horizontal bars of the mean absolute attribution of the most attributed features."""
    height = len(top) * (_BAR_H + _GAP) + 8
    scale = max((v for _, v in top), default=0.0) or 1.0
    body = []
    for i, (feature, value) in enumerate(top):
        y = 4 + i * (_BAR_H + _GAP)
        body.append(f'<text x="{_LABEL_W - 8}" y="{y + 15}" font-size="12" text-anchor="end">'
                    f'{html.escape(feature)}</text>')
        body.append(f'<rect class="bar" data-feature="{html.escape(feature)}" data-value="{value!r}" x="{_LABEL_W}" '
                    f'y="{y}" width="{value / scale * _PLOT_W:.2f}" height="{_BAR_H}" fill="#7c3aed"/>')
        body.append(f'<text x="{_LABEL_W + value / scale * _PLOT_W + 4:.2f}" y="{y + 15}" font-size="12">'
                    f'{value:.4g}</text>')
    return _svg(height, body, "Mean absolute attribution by feature")


# --- HTML ------------------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #111; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.fail { color: #b91c1c; font-weight: 600; } .ok { color: #15803d; } .na { color: #6b7280; }
code { background: #f3f4f6; padding: 0 0.2em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: float | None, digits: int = 4) -> str:
    return '<span class="na">no value</span>' if value is None else f"{value:.{digits}f}"


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _definition(func: Callable[..., Any]) -> str:
    return _e((func.__doc__ or "").strip().splitlines()[0])


def _check(value: float | None, threshold: float, below: bool) -> str:
    if value is None:
        return '<span class="na">not enough data</span>'
    failed = value < threshold if below else value > threshold
    return '<span class="fail">violated</span>' if failed else '<span class="ok">met</span>'


def _attribute_section(a: AttributeFigures, config: FairnessConfig) -> list[str]:
    s = a.summary
    out = [f"<h3>{_e(a.attribute)}</h3>", selection_rate_chart(a, config.demographic_parity_ratio_min)]
    out.append("<table><thead><tr><th>group</th><th>decisions</th><th>selected</th><th>selection rate</th>"
               "<th>labelled</th><th>TPR</th><th>FPR</th></tr></thead><tbody>")
    for group in sorted(a.counts):
        c = a.counts[group]
        out.append(
            f'<tr><td>{_e(group)}</td><td class="num">{c.decisions}</td><td class="num">{c.selected}</td>'
            f'<td class="num">{_num(s.selection_rate.get(group))}</td>'
            f'<td class="num">{c.tp + c.fp + c.fn + c.tn}</td>'
            f'<td class="num">{_num(s.true_positive_rate.get(group))}</td>'
            f'<td class="num">{_num(s.false_positive_rate.get(group))}</td></tr>'
        )
    out.append("</tbody></table>")
    rows = [
        ("demographic parity difference", s.demographic_parity_difference, fairness.demographic_parity_difference, ""),
        ("demographic parity ratio", s.demographic_parity_ratio, fairness.demographic_parity_ratio,
         _check(s.demographic_parity_ratio, config.demographic_parity_ratio_min, below=True)),
        ("equalized odds difference", s.equalized_odds_difference, fairness.equalized_odds_difference,
         _check(s.equalized_odds_difference, config.equalized_odds_difference_max, below=False)),
        ("equalized odds ratio", s.equalized_odds_ratio, fairness.equalized_odds_ratio, ""),
    ]
    out.append("<table><thead><tr><th>metric</th><th>value</th><th>definition</th><th>check</th></tr></thead><tbody>")
    for name, value, func, check in rows:
        out.append(f'<tr><td>{name}</td><td class="num" data-metric="{name}">{_num(value)}</td>'
                   f"<td>{_definition(func)}</td><td>{check}</td></tr>")
    out.append("</tbody></table>")
    return out


def render(
    records: Iterable[DecisionRecord],
    *,
    alerts: Iterable[FairnessAlert] = (),
    positive_label: Any = 1,
    config: FairnessConfig | None = None,
) -> str:
    """The HTML report of `records` (one model version) and the `alerts` raised over the same period, judged by
    `config`'s minimum group size and thresholds (default: `FairnessConfig`'s)."""
    config = config or FairnessConfig()
    return render_figures(figures(records, positive_label, config.min_group_size), alerts=alerts,
                          positive_label=positive_label, config=config)


def render_figures(
    f: Figures,
    *,
    alerts: Iterable[FairnessAlert] = (),
    positive_label: Any = 1,
    config: FairnessConfig | None = None,
) -> str:
    """The HTML report of figures already computed (`render` computes them from records)."""
    config = config or FairnessConfig()
    title = f"Fairness audit: {f.model} {f.version}"
    out = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"/>',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p>Decisions from {_when(f.first)} to {_when(f.last)}. Generated by otel-rai {_e(__version__)} "
        f"at {_when(datetime.now(timezone.utc).timestamp())}. A decision is positive when its label is "
        f"<code>{_e(positive_label)}</code>.</p>",
        "<h2>Counts</h2><table><tbody>",
        f'<tr><th>decisions</th><td class="num" id="decisions">{f.decisions}</td></tr>',
        f'<tr><th>positive decisions</th><td class="num" id="selected">{f.selected}</td></tr>',
        f'<tr><th>with a recorded outcome</th><td class="num" id="labelled">{f.labelled}</td></tr>',
        f'<tr><th>with an explanation</th><td class="num" id="explained">{f.explained}</td></tr>',
        "</tbody></table>",
        "<h2>Fairness by sensitive attribute</h2>",
        f"<p>Groups with fewer than {config.min_group_size} decisions (for TPR and FPR: actual positives or "
        "negatives) take no part in differences and ratios. The shaded band runs from "
        f"{config.demographic_parity_ratio_min:g} × the highest selection rate to it: a red bar fails the "
        "four-fifths rule. True and false positive rates need recorded outcomes. "
        "Definitions follow Fairlearn's <code>between_groups</code> (see docs/fairness.md).</p>",
    ]
    if not f.attributes:
        out.append('<p class="na">No decision carries a sensitive attribute: no group figures.</p>')
    for attribute in f.attributes:
        out.extend(_attribute_section(attribute, config))
    out.append("<h2>Most attributed features</h2>")
    if f.top_features:
        out.append(f"<p>Mean absolute attribution over the {f.explained} explained decisions (a feature "
                   "outside the attributions recorded for a decision counts as 0 there).</p>")
        out.append(attribution_chart(f.top_features))
    else:
        out.append('<p class="na">No explanations were recorded for these decisions.</p>')
    out.append("<h2>Alerts</h2>")
    alerts = sorted(alerts, key=lambda a: a.time_ns)
    if alerts:
        out.append("<table><thead><tr><th>time</th><th>attribute</th><th>metric</th><th>value</th>"
                   "<th>threshold</th><th>state</th></tr></thead><tbody>")
        for a in alerts:
            state = semconv.STATE_FIRING if a.firing else semconv.STATE_RESOLVED
            out.append(f'<tr class="alert"><td>{_when(a.time_ns / 1e9)}</td><td>{_e(a.attribute)}</td>'
                       f'<td>{_e(a.metric)}</td><td class="num">{a.value:.4f}</td>'
                       f'<td class="num">{a.threshold:g}</td>'
                       f'<td class="{"fail" if a.firing else "ok"}">{state}</td></tr>')
        out.append("</tbody></table>")
    else:
        out.append('<p class="na">No alert was raised over this period.</p>')
    out.append("</body></html>\n")
    return "\n".join(out)
