"""``otel-rai monitor``: the quality and drift table of a model version, from the trail.

Quality comes from the version's decisions in the window (``--since`` / ``--start`` / ``--end``, and
``--window N`` for the newest N of them) and their recorded outcomes, each label counted with its
decision; CBPE estimates from their probabilities; drift from the latest drift snapshot. Outcomes and
drift snapshots live in the local audit store (and in ClickHouse when ``export --to clickhouse --include
outcomes --include drift`` copied them): from a trace backend (Jaeger, Tempo, Phoenix) there is only the
CBPE estimate (and groups only for allowlisted sensitive features); drift is in its metrics.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import IO, Any

from otel_rai import semconv
from otel_rai.cli._common import (
    OK,
    CliError,
    UsageError,
    add_filter_options,
    add_source_options,
    backend_of,
    note,
    query_of,
)
from otel_rai.cli._common import count as whole_number

FORMATS = ("table", "json", "csv")


def _rows(f: Any) -> list[tuple[str, str, str, float | int | None]]:
    """(section, subject, metric, value) of every figure: the long form of the table."""
    from otel_rai.report.monitoring import CLASSIFICATION_COLUMNS, REGRESSION_COLUMNS

    columns = CLASSIFICATION_COLUMNS if f.kind == "classification" else REGRESSION_COLUMNS
    rows: list[tuple[str, str, str, float | int | None]] = []
    for s in f.slices:
        rows.append(("quality", s.name, "decisions", s.decisions))
        rows.append(("quality", s.name, "labelled", s.quality.labelled))
        rows += [("quality", s.name, name, getattr(s.quality, name)) for name, _ in columns]
        if f.kind == "classification":
            rows += [("quality", s.name, "estimated_accuracy", s.estimated_accuracy),
                     ("quality", s.name, "estimated_roc_auc", s.estimated_roc_auc)]
    for d in f.drift:
        rows += [("drift", d.feature, name, getattr(d, name)) for name in
                 ("psi", "js_distance", "wasserstein", "chi2_pvalue", "missing_rate_reference",
                  "missing_rate_current", "rows")]
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[str]], out: IO[str]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    out.write("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip() + "\n")
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")


def write_table(f: Any, out: IO[str]) -> None:
    from otel_rai.report.monitoring import CLASSIFICATION_COLUMNS, REGRESSION_COLUMNS

    if f.slices:
        columns = CLASSIFICATION_COLUMNS if f.kind == "classification" else REGRESSION_COLUMNS
        extra = ["EST. ACC", "EST. AUC"] if f.kind == "classification" else []
        header = ["QUALITY", "DECISIONS", "LABELLED", *(label.upper() for _, label in columns), *extra]
        rows = []
        for s in f.slices:
            row = [s.name, str(s.decisions), str(s.quality.labelled),
                   *(_cell(getattr(s.quality, n)) for n, _ in columns)]
            if extra:
                row += [_cell(s.estimated_accuracy), _cell(s.estimated_roc_auc)]
            rows.append(row)
        _table(header, rows, out)
    if f.drift:
        if f.slices:
            out.write("\n")
        header = ["DRIFT", "KIND", "PSI", "JS", "WASSERSTEIN", "CHI2 P", "MISSING REF", "MISSING NOW", "ROWS"]
        ranked = sorted(f.drift, key=lambda d: -(d.psi or 0.0))
        _table(header, [[d.feature, d.kind, _cell(d.psi), _cell(d.js_distance), _cell(d.wasserstein),
                         _cell(d.chi2_pvalue), _cell(d.missing_rate_reference), _cell(d.missing_rate_current),
                         str(d.rows)] for d in ranked], out)


def run(args: argparse.Namespace) -> int:
    """Print the table; one-line errors for what cannot be shown."""
    from otel_rai.report import load
    from otel_rai.report import monitoring as quality_and_drift

    if args.model_version is None:
        raise UsageError("give the model version to monitor: --model-version V")
    q, backend = query_of(args), backend_of(args)
    records, _ = load.load(backend, q, args.sensitive_feature or [])
    snapshots, alerts = load.monitoring(backend, q)
    models = {r.model for r in records} | {s[1].get(semconv.MODEL_NAME) for s in snapshots}
    if len(models) > 1 and args.model_name is None:
        raise UsageError(f"several models have version {args.model_version!r}; choose one with --model-name")
    if not records and not snapshots:
        raise CliError(f"no decisions of model version {args.model_version!r}")
    records.sort(key=lambda r: r.timestamp)
    if args.window:
        records = records[-args.window:]
    if args.backend == "clickhouse" and not (backend.holds("outcomes") or backend.holds("drift")):
        note("clickhouse holds no copied outcomes or drift snapshots (otel-rai export --to clickhouse --include "
             "outcomes --include drift): only the CBPE estimates")
    elif args.backend not in ("local", "clickhouse"):
        note(f"{args.backend} holds no outcomes and no drift snapshots (they stay in the local audit store): "
             "only the CBPE estimates; drift is in the metrics (ml.drift.*)")
    f = quality_and_drift.figures(records, snapshots, alerts, positive_label=args.positive_label)
    out = sys.stdout
    if args.format == "json":
        figures = [{"section": s, "subject": subject, "metric": m, "value": v} for s, subject, m, v in _rows(f)]
        doc = {"model_version": args.model_version, "kind": f.kind, "decisions": len(records), "figures": figures}
        out.write(json.dumps(doc, allow_nan=False) + "\n")
    elif args.format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["section", "subject", "metric", "value"])
        writer.writerows([s, subject, m, "" if v is None else v] for s, subject, m, v in _rows(f))
    else:
        write_table(f, out)
    return OK


def add_parser(sub: Any) -> None:
    """Register ``monitor``."""
    parser = sub.add_parser("monitor", help="print the quality and drift table of a model version",
                            description=__doc__.splitlines()[0].split(": ", 1)[1])
    add_filter_options(parser, rows=False)
    add_source_options(parser)
    parser.add_argument("--window", type=whole_number, default=0, metavar="N",
                        help="only the newest N decisions of the period (default: all)")
    parser.add_argument("--positive-label", default=None,
                        help="label of the positive class of a binary model (default: the second class)")
    parser.add_argument("--sensitive-feature", action="append", metavar="NAME",
                        help="with a remote backend: an allowlisted column naming groups (repeatable)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    parser.set_defaults(func=run)
