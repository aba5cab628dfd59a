"""``otel-rai report``: write the fairness audit report of a model version as HTML.

It reads the decisions of a model version from ``--backend`` (by default the local audit store, with its
groups and outcomes), or from a JSON-lines file with ``--records``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from otel_rai import settings
from otel_rai.cli._common import (
    OK,
    CliError,
    UsageError,
    add_filter_options,
    add_source_options,
    backend_of,
    query_of,
)
from otel_rai.query.capabilities import Tallying
from otel_rai.settings import FairnessConfig


def run(args: argparse.Namespace) -> int:
    """Write the report; one-line errors for what cannot be reported."""
    from otel_rai.report import html, load

    if args.model_version is None:
        raise UsageError("give the model version to report on: --model-version V")
    config = FairnessConfig(min_group_size=args.min_group_size, demographic_parity_ratio_min=args.dp_ratio_min,
                            equalized_odds_difference_max=args.eo_difference_max)
    sensitive = args.sensitive_feature or [n for n in settings.from_env("sensitive_features") or ()]
    backend = backend_of(args) if args.records is None else None
    if isinstance(backend, Tallying):  # counted where the decisions are (ClickHouse: SQL aggregates)
        return _write(args, *_tallied(args, backend, sensitive, config))
    if args.records is not None:
        records, alerts = load.read_records(args.records), []
    else:
        records, alerts = load.load(backend, query_of(args), sensitive)
    chosen = [r for r in records if r.version == args.model_version and args.model_name in (None, r.model)]
    if not chosen:
        raise _no_decisions(args)
    if len({r.model for r in chosen}) > 1:
        raise UsageError(f"several models have version {args.model_version!r}; choose one with --model-name")
    alerts = [a for a in alerts if a.version == args.model_version and a.model == chosen[0].model]
    page = html.render(chosen, alerts=alerts, positive_label=args.positive_label, config=config)
    return _write(args, page, len(chosen))


def _no_decisions(args: argparse.Namespace) -> CliError:
    return CliError(f"no decisions of model version {args.model_version!r}"
                    + (f" of model {args.model_name!r}" if args.model_name else ""))


def _tallied(args: argparse.Namespace, backend: Tallying, sensitive: list[str],
             config: FairnessConfig) -> tuple[str, int]:
    """The page, from the backend's counts."""
    from otel_rai.report import figures, html, load

    tally, alerts = load.tallied(backend, query_of(args), sensitive, args.positive_label)
    if not tally.decisions:
        raise _no_decisions(args)
    if len(tally.models) > 1:
        raise UsageError(f"several models have version {args.model_version!r}; choose one with --model-name")
    (model,) = tally.models
    f = figures.counted(model, args.model_version, tally.decisions, tally.selected, tally.labelled,
                        tally.first_ns / 1e9, tally.last_ns / 1e9, tally.groups, config.min_group_size)
    alerts = [a for a in alerts if a.version == args.model_version and a.model == model]
    return html.render_figures(f, alerts=alerts, positive_label=args.positive_label, config=config), tally.decisions


def _write(args: argparse.Namespace, page: str, decisions: int) -> int:
    try:
        args.out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror}") from None
    print(f"wrote {args.out} ({decisions} decisions)")
    return OK


def add_parser(sub: Any) -> None:
    """Register ``report``."""
    defaults = FairnessConfig()
    parser = sub.add_parser("report", help="write the fairness audit report of a model version as HTML",
                            description=__doc__.splitlines()[0].split(": ", 1)[1])
    add_filter_options(parser, rows=False)
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
