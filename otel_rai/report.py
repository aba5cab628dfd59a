"""The fairness audit report: one self-contained HTML file for a model version.

`render` builds it from decision records (and the alerts raised meanwhile): counts, selection rate by
group with the four-fifths band as inline SVG, the differences and ratios with their definitions, the
most attributed features when explanations were recorded, and the alerts. The figures use the same
definitions as the live metrics (`otel_rai.fairness`), over the whole period rather than a window.

``otel-rai report`` is the command line (`add_parser`): it reads the decisions of a model version from
``--backend`` (by default the local audit store, with its groups and outcomes), or from a JSON-lines
file with ``--records``.
"""

from __future__ import annotations

import argparse
import collections
import html
import json
import math
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from otel_rai import config, fairness, semconv
from otel_rai.alerts import FairnessAlert
from otel_rai.version import __version__

TOP_FEATURES = 10


class ReportError(Exception):
    """A report cannot be built from what was given; the message says why (exit status 1)."""


class ReportUsageError(ReportError):
    """Arguments that cannot work together (exit status 2)."""


@dataclass(frozen=True)
class DecisionRecord:
    """One decision as a backend stores it.

    output: the predicted label (``ml.outputs``). groups: {sensitive attribute: group}, when known.
    outcome: the ground truth, when recorded. attributions: {feature: attribution} of the decision's
    explanation (``ml.explanation.*``), when there is one. timestamp: Unix seconds.
    """

    decision_id: str
    model: str
    version: str
    timestamp: float
    output: Any
    groups: Mapping[str, str] = field(default_factory=dict)
    outcome: Any = None
    attributions: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecisionRecord:
        """A record from a JSON object with the same keys; `timestamp` may be ISO 8601."""
        try:
            stamp = data["timestamp"]
            if isinstance(stamp, str):
                stamp = datetime.fromisoformat(stamp).timestamp()
            return cls(
                decision_id=str(data["decision_id"]),
                model=str(data["model"]),
                version=str(data["version"]),
                timestamp=float(stamp),
                output=data["output"],
                groups={str(k): str(v) for k, v in (data.get("groups") or {}).items()},
                outcome=data.get("outcome"),
                attributions={str(k): float(v) for k, v in (data.get("attributions") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportError(f"bad decision record {dict(data)!r:.200}: {type(exc).__name__}: {exc}") from None


def _printed(value: Any) -> str:
    # Backends and JSON may hand back the label 1 as "1", 1.0 or true: compare printed integers.
    if isinstance(value, bool) or (isinstance(value, float) and value.is_integer()):
        value = int(value)
    return str(value)


@dataclass(frozen=True)
class Thresholds:
    demographic_parity_ratio_min: float = 0.8
    equalized_odds_difference_max: float = 0.1


# --- figures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeFigures:
    attribute: str
    counts: dict[str, fairness.GroupCounts]
    summary: fairness.Summary


@dataclass(frozen=True)
class Figures:
    model: str
    version: str
    decisions: int
    selected: int
    labelled: int
    first: float
    last: float
    attributes: list[AttributeFigures]
    top_features: list[tuple[str, float]]
    explained: int


def _is_positive(value: Any, positive_label: Any) -> bool:
    return _printed(value) == _printed(positive_label)


def figures(records: Iterable[DecisionRecord], positive_label: Any, min_group_size: int) -> Figures:
    """Everything the report shows, computed in one pass over the records."""
    counts: dict[str, dict[str, fairness.GroupCounts]] = collections.defaultdict(
        lambda: collections.defaultdict(fairness.GroupCounts)
    )
    attribution_sums: collections.Counter[str] = collections.Counter()
    models, n, selected, labelled, explained = set(), 0, 0, 0, 0
    first, last = math.inf, -math.inf
    version = ""
    for record in records:
        models.add(record.model)
        version = record.version
        n += 1
        first, last = min(first, record.timestamp), max(last, record.timestamp)
        positive = _is_positive(record.output, positive_label)
        selected += positive
        actual = None if record.outcome is None else _is_positive(record.outcome, positive_label)
        labelled += actual is not None
        for attribute, group in record.groups.items():
            c = counts[attribute][group]
            c.decisions += 1
            c.selected += positive
            if actual is not None:
                c.add_outcome(positive, actual)
        if record.attributions:
            explained += 1
            for feature, value in record.attributions.items():
                attribution_sums[feature] += abs(value)
    if n == 0:
        raise ReportError("no decisions to report")
    top = [(f, total / explained) for f, total in attribution_sums.most_common(TOP_FEATURES)]
    return Figures(
        model=", ".join(sorted(models)),
        version=version,
        decisions=n,
        selected=selected,
        labelled=labelled,
        first=first,
        last=last,
        attributes=[
            AttributeFigures(a, dict(groups), fairness.summarize(groups, min_group_size))
            for a, groups in sorted(counts.items())
        ],
        top_features=top,
        explained=explained,
    )


# --- SVG -------------------------------------------------------------------------------------------

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


def _attribute_section(a: AttributeFigures, thresholds: Thresholds) -> list[str]:
    s = a.summary
    out = [f"<h3>{_e(a.attribute)}</h3>", selection_rate_chart(a, thresholds.demographic_parity_ratio_min)]
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
         _check(s.demographic_parity_ratio, thresholds.demographic_parity_ratio_min, below=True)),
        ("equalized odds difference", s.equalized_odds_difference, fairness.equalized_odds_difference,
         _check(s.equalized_odds_difference, thresholds.equalized_odds_difference_max, below=False)),
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
    min_group_size: int = 30,
    thresholds: Thresholds = Thresholds(),
) -> str:
    """The HTML report of `records` (one model version) and the `alerts` raised over the same period."""
    f = figures(records, positive_label, min_group_size)
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
        f"<p>Groups with fewer than {min_group_size} decisions (for TPR and FPR: actual positives or "
        "negatives) take no part in differences and ratios. The shaded band runs from "
        f"{thresholds.demographic_parity_ratio_min:g} × the highest selection rate to it: a red bar fails the "
        "four-fifths rule. True and false positive rates need recorded outcomes. "
        "Definitions follow Fairlearn's <code>between_groups</code> (see docs/fairness.md).</p>",
    ]
    if not f.attributes:
        out.append('<p class="na">No decision carries a sensitive attribute: no group figures.</p>')
    for attribute in f.attributes:
        out.extend(_attribute_section(attribute, thresholds))
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


# --- command line ------------------------------------------------------------------------------------


def read_records(path: Path) -> list[DecisionRecord]:
    """Decision records from a JSON-lines file (the keys of `DecisionRecord`)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(DecisionRecord.from_dict(json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ReportError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return records


def load(args: argparse.Namespace) -> tuple[list[DecisionRecord], list[FairnessAlert]]:
    """The decisions and alerts of ``args.model_version`` from ``--backend``.

    From the local store, groups and outcomes come from its local-only tables. A remote backend holds
    groups only as allowlisted raw values (``capture_features``) of the ``--sensitive-feature`` columns,
    and no outcomes.
    """
    from otel_rai import cli, query
    from otel_rai.query.local import Local

    backend, q = cli.backend_of(args), cli.query_of(args)
    found = list(query.decisions(q, backend))
    alerts = [FairnessAlert.from_span(s.attributes, s.start_ns)
              for s in query.find_spans(q, backend) if s.name == semconv.ALERT_SPAN]
    ids = [d.decision_id for d in found]
    local = backend.store if isinstance(backend, Local) else None
    stored_groups = local.groups(ids) if local is not None else {}
    outcomes = local.outcomes(ids) if local is not None else {}
    sensitive = args.sensitive_feature or config.env_list("OTEL_RAI_SENSITIVE_FEATURES")
    records = [
        DecisionRecord(
            decision_id=d.decision_id,
            model=str(d.model_name),
            version=str(d.model_version),
            timestamp=d.time_ns / 1e9,
            output=d.output,
            groups=stored_groups.get(d.decision_id)
            or {name: _printed(d.features[name]) for name in sensitive if name in d.features},
            outcome=outcomes.get(d.decision_id),
        )
        for d in found
        if d.error is None
    ]
    return records, alerts


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``report`` to the ``otel-rai`` command line."""
    from otel_rai import cli

    parser = subparsers.add_parser("report", help="write the fairness audit report of a model version as HTML",
                                   description=__doc__.splitlines()[0])
    cli.add_filter_options(parser, rows=False)
    cli.add_source_options(parser)
    parser.add_argument("--records", type=Path, help="read decisions from this JSON-lines file instead")
    parser.add_argument("--sensitive-feature", action="append", metavar="NAME",
                        help="with a remote backend: an allowlisted column naming groups (repeatable; "
                             "default $OTEL_RAI_SENSITIVE_FEATURES)")
    parser.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    parser.add_argument("--positive-label", default="1", help="label of a positive decision (default 1)")
    parser.add_argument("--min-group-size", type=int, default=100,
                        help="smallest group that takes part in differences and ratios (default 100)")
    parser.add_argument("--dp-ratio-min", type=float, default=0.8, help="demographic parity ratio threshold")
    parser.add_argument("--eo-difference-max", type=float, default=0.1, help="equalized odds difference threshold")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The ``report`` command: 0 when written; else a one-line message and 1 (no report could be built)
    or 2 (bad usage), like the rest of ``otel-rai``."""
    try:
        if args.model_version is None:
            raise ReportUsageError("give the model version to report on: --model-version V")
        if args.records is not None:
            records, alerts = read_records(args.records), []
        else:
            records, alerts = load(args)
        chosen = [r for r in records if r.version == args.model_version and args.model_name in (None, r.model)]
        if not chosen:
            raise ReportError(f"no decisions of model version {args.model_version!r}"
                              + (f" of model {args.model_name!r}" if args.model_name else ""))
        if len({r.model for r in chosen}) > 1:
            raise ReportUsageError(f"several models have version {args.model_version!r}; choose one with --model-name")
        alerts = [a for a in alerts if a.version == args.model_version and a.model == chosen[0].model]
        page = render(chosen, alerts=alerts, positive_label=args.positive_label, min_group_size=args.min_group_size,
                      thresholds=Thresholds(args.dp_ratio_min, args.eo_difference_max))
        args.out.write_text(page, encoding="utf-8")
    except (ReportError, OSError) as exc:
        message = f"cannot write {args.out}: {exc.strerror}" if isinstance(exc, OSError) else str(exc)
        print(f"otel-rai: {message}", file=sys.stderr)
        return 2 if isinstance(exc, ReportUsageError) else 1
    print(f"wrote {args.out} ({len(chosen)} decisions)")
    return 0
