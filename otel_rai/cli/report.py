"""``otel-rai report``: write the fairness audit report of a model version as HTML.

It reads the decisions of one model version, or of several to compare (``--model-version`` repeated, or
``--model-name`` alone for every version of that model), from ``--backend`` (by default the local audit
store, with its groups and outcomes), or from a JSON-lines file with ``--records``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from otel_rai import semconv, settings
from otel_rai.cli._common import (
    OK,
    CliError,
    UsageError,
    add_filter_options,
    add_source_options,
    backend_of,
    output,
    query_of,
)
from otel_rai.query.capabilities import Tallying
from otel_rai.settings import FairnessConfig


def run(args: argparse.Namespace) -> int:
    """Write the report; one-line errors for what cannot be reported."""
    from otel_rai.provenance import lookup
    from otel_rai.report import html, load
    from otel_rai.report import monitoring as quality_and_drift

    if not args.model_version and args.model_name is None:
        raise UsageError("give the model version to report on: --model-version V (repeat it to compare "
                         "versions), or --model-name N for every version of a model")
    wanted = args.model_version or [None]
    sensitive = args.sensitive_feature or [n for n in settings.from_env("sensitive_features") or ()]
    if args.records is not None:
        records, alerts = load.read_records(args.records), []
        backend = None
    else:
        backend = backend_of(args)
        records, alerts = [], []
        for version in wanted:
            found, raised = load.load(backend, query_of(args, model_version=version), sensitive)
            records += found
            alerts += raised
    chosen = [r for r in records if None in wanted or r.version in wanted]
    chosen = [r for r in chosen if args.model_name in (None, r.model)]
    missing = [v for v in wanted if v is not None and v not in {r.version for r in chosen}]
    if not chosen or missing:
        asked = ", ".join(map(repr, missing or wanted)) if any(wanted) else None
        what = (f"model version {asked}" if asked else "any version") + (
            f" of model {args.model_name!r}" if args.model_name else "")
        held = f"; versions there: {_versions_there(args, backend, records)}"
        raise CliError(f"no decisions of {what}{held}")
    if len({r.model for r in chosen}) > 1:
        raise UsageError(f"several models match ({', '.join(sorted({r.model for r in chosen}))}); choose one with "
                         "--model-name")
    alerts = [a for a in alerts if (a.model, a.version) in {(r.model, r.version) for r in chosen}]
    config = FairnessConfig(min_group_size=args.min_group_size, demographic_parity_ratio_min=args.dp_ratio_min,
                            equalized_odds_difference_max=args.eo_difference_max)
    model = chosen[0].model
    monitoring = {}
    model_records = None if backend is None else {}
    for version in sorted({r.version for r in chosen}):
        snapshots, monitoring_alerts = ([], []) if backend is None else load.monitoring(
            backend, query_of(args, model_version=version, model_name=model))
        monitoring[version] = quality_and_drift.figures(
            [r for r in chosen if r.version == version],
            [s for s in snapshots if s[1].get(semconv.MODEL_NAME) == model],
            [a for a in monitoring_alerts if a.version == version and a.model == model],
            positive_label=args.positive_label)
        if model_records is not None:
            of_version = lookup.records(backend, query_of(args, model_version=version, model_name=model))
            model_records[version] = list(lookup.latest(list(of_version)).values())
    if isinstance(backend, Tallying):  # the fairness counts and time buckets as SQL aggregates (ClickHouse)
        counted = [_counted(args, backend, model, version, [r for r in chosen if r.version == version], sensitive,
                            config) for version in sorted({r.version for r in chosen})]
        page = html.render_counted(counted, alerts=alerts, positive_label=args.positive_label, config=config,
                                   monitoring=monitoring, model_records=model_records)
    else:
        page = html.render(chosen, alerts=alerts, positive_label=args.positive_label, config=config,
                           monitoring=monitoring, model_records=model_records)
    with output(str(args.out)) as out:  # owner-only, like every audit file
        out.write(page)
    shown = sorted({r.version for r in chosen})
    print(f"wrote {args.out} ({len(chosen)} decisions of version{'s' if len(shown) > 1 else ''} {', '.join(shown)})")
    return OK


def _counted(args: argparse.Namespace, backend: Tallying, model: str, version: str, records: list[Any],
             sensitive: list[str], config: FairnessConfig) -> Any:
    """One version's figures from the backend's counts (attributions from its records)."""
    from otel_rai.report import figures, html

    q = query_of(args, model_version=version, model_name=model)
    tally = backend.tally(q, args.positive_label, sensitive)
    f = figures.counted(model, version, tally.decisions, tally.selected, tally.labelled, tally.first_ns / 1e9,
                        tally.last_ns / 1e9, tally.groups, config.min_group_size, figures.attributions(records))

    def timeline_of(attribute: str | None, period: tuple[float, float] | None) -> figures.Timeline:
        start, width, n = figures.buckets(*(period or (f.first, f.last)))
        decided, selected = backend.buckets(q, args.positive_label, sensitive, attribute, start, width, n)
        return figures.Timeline(attribute, start, width, decided, selected)

    return html.Counted(f, timeline_of)


def _versions_there(args: argparse.Namespace, backend: Any, records: list[Any]) -> str:
    """The versions the backend (or the records file) holds decisions of, for the error message."""
    from otel_rai.query import catalog

    if backend is None:
        labels = sorted({f"{r.model} {r.version}" for r in records})
        return ", ".join(labels) or "none"
    return catalog.described(catalog.versions(query_of(args, model_version=None, model_name=None), backend))


def add_parser(sub: Any) -> None:
    """Register ``report``."""
    defaults = FairnessConfig()
    parser = sub.add_parser("report", help="write the fairness audit report of a model version as HTML",
                            description=__doc__.splitlines()[0].split(": ", 1)[1])
    add_filter_options(parser, rows=False, several_versions=True)
    add_source_options(parser)
    parser.add_argument("--records", type=Path, help="read decisions from this JSON-lines file instead")
    parser.add_argument("--sensitive-feature", action="append", metavar="NAME",
                        help="with a remote backend: an allowlisted column naming groups (repeatable; "
                             "default $OTEL_RAI_SENSITIVE_FEATURES)")
    parser.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    parser.add_argument("--positive-label", default="1", help="label of a positive decision (default 1)")
    parser.add_argument("--min-group-size", type=int, default=defaults.min_group_size,
                        help=f"smallest group that takes part in differences and ratios "
                             f"(default {defaults.min_group_size})")
    parser.add_argument("--dp-ratio-min", type=float, default=defaults.demographic_parity_ratio_min,
                        help=f"demographic parity ratio threshold (default {defaults.demographic_parity_ratio_min})")
    parser.add_argument("--eo-difference-max", type=float, default=defaults.equalized_odds_difference_max,
                        help=f"equalized odds difference threshold (default "
                             f"{defaults.equalized_odds_difference_max})")
    parser.set_defaults(func=run)
