"""``otel-rai check``: is a model fair enough to deploy? Its fairness figures on validation data against
the thresholds, as `otel_rai.mlflow.log_fairness` computes them; exit status 3 when one is violated, so
that a CI pipeline can stop the deployment.

    otel-rai check --model models:/credit/3 --data val.csv --target y --sensitive sex

Inside ``mlflow run`` (``MLFLOW_RUN_ID``), or with ``--run-id``, the figures, the HTML report and the
pass/fail tag are logged to that run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from otel_rai import settings
from otel_rai.cli._common import OK, UNMATCHED, CliError, UsageError, note
from otel_rai.settings import FairnessConfig

#: The exit status of a check that found a threshold violated (that of `verify` finding a mismatch).
VIOLATED = UNMATCHED
#: How much of MLflow's error a message quotes (they can run to pages, over several lines).
QUOTED_CHARS = 200


def _read(path: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}") from None


def _load(uri: str) -> tuple[Any, str, str]:
    """(the deciding model, its name, its version) of an MLflow model URI."""
    import mlflow

    from otel_rai.registry import mlflow as registry

    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:QUOTED_CHARS]
        raise CliError(f"cannot load the MLflow model {uri}: {type(exc).__name__}: {detail}") from None
    try:
        version = registry.find(uri) if settings.env("MLFLOW_TRACKING_URI") or registry.parse(uri) else None
    except Exception as exc:  # the figures do not depend on it: only the report's title does
        note(f"{uri} not found in the MLflow registry ({type(exc).__name__}); its report names the URI")
        version = None
    model = registry.served_model(loaded)
    if not hasattr(model, "predict"):
        model = loaded  # a pyfunc flavour without a scikit-learn-style model: its predict gives labels
    if version is None:
        return model, uri, "unregistered"
    return model, version.name, version.version


def run(args: argparse.Namespace) -> int:
    """Check, print the figures, log to the run if there is one; exit status 3 on a violation."""
    from otel_rai.mlflow import fairness

    data = _read(args.data)
    if args.target not in data.columns:
        raise UsageError(f"--target {args.target!r} is not a column of {args.data}")
    missing = [s for s in args.sensitive for part in s.split("&") if part not in data.columns]
    if missing:
        raise UsageError(f"--sensitive {missing[0]!r} is not a column of {args.data}")
    config = FairnessConfig(min_group_size=args.min_group_size, positive_label=args.positive_label,
                            demographic_parity_ratio_min=args.dp_ratio_min,
                            equalized_odds_difference_max=args.eo_difference_max)
    model, name, version = _load(args.model)
    X, y = data.drop(columns=[args.target]), data[args.target].tolist()
    result = fairness.check(model, X, y, args.sensitive, config=config, model_name=name, version=version)
    run_id = args.run_id or settings.env("MLFLOW_RUN_ID")
    if run_id:
        fairness.log(result, run_id)
    if args.out is not None:
        try:
            args.out.write_text(result.report, encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {args.out}: {exc.strerror}") from None
    if args.format == "json":
        print(json.dumps({"model": name, "version": version, "passed": result.passed,
                          "violations": list(result.violations), "metrics": result.metrics()}, indent=2))
    else:
        _print(result)
    if run_id:
        note(f"logged to MLflow run {run_id}")
    return OK if result.passed else VIOLATED


def _print(result: Any) -> None:
    config = result.config
    limits = {"demographic_parity_ratio": f">= {config.demographic_parity_ratio_min}",
              "equalized_odds_difference": f"<= {config.equalized_odds_difference_max}"}
    print(f"{result.model} {result.version}: positive decision = {result.positive_label!r}")
    for a in result.attributes:
        rates = sorted(a.summary.selection_rate.items())
        print(f"  {a.attribute}: " + ", ".join(f"{group} selected {rate:.3f}" for group, rate in rates))
        for figure in ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
                       "equalized_odds_ratio"):
            value = getattr(a.summary, figure)
            shown = "no value" if value is None else f"{value:.4f}"
            verdict = "VIOLATED" if f"{a.attribute}/{figure}" in result.violations else ""
            print(f"    {figure:<31} {shown:>9}  {limits.get(figure, ''):<8} {verdict}".rstrip())
    print("FAIL: " + ", ".join(result.violations) if result.violations else "PASS", file=sys.stdout)


def add_parser(sub: Any) -> None:
    """Register ``check``."""
    defaults = FairnessConfig()
    p = sub.add_parser("check", help="check a model's fairness on validation data before deploying it",
                       description="Check a model's fairness figures on validation data against the "
                                   "thresholds; exit status 3 when one is violated, so that a CI pipeline "
                                   "can stop the deployment. Inside mlflow run (MLFLOW_RUN_ID), or with "
                                   "--run-id, they are logged to that run.")
    p.add_argument("--model", required=True, metavar="URI",
                   help="an MLflow model: models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN/PATH or a directory")
    p.add_argument("--data", required=True, type=Path, metavar="FILE", help="validation data, CSV (or .parquet)")
    p.add_argument("--target", required=True, metavar="COLUMN", help="the column of true labels")
    p.add_argument("--sensitive", required=True, action="append", metavar="COLUMN",
                   help="a sensitive column (repeatable; a&b is an intersection)")
    p.add_argument("--positive-label", help="label of a positive decision (default: the second of two classes)")
    p.add_argument("--min-group-size", type=int, default=1, help="smallest group that takes part (default 1)")
    p.add_argument("--dp-ratio-min", type=float, default=defaults.demographic_parity_ratio_min,
                   help=f"demographic parity ratio threshold (default {defaults.demographic_parity_ratio_min})")
    p.add_argument("--eo-difference-max", type=float, default=defaults.equalized_odds_difference_max,
                   help=f"equalized odds difference threshold (default {defaults.equalized_odds_difference_max})")
    p.add_argument("--run-id", help="log to this MLflow run (default: $MLFLOW_RUN_ID, set by mlflow run)")
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the HTML report here")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run)
