"""A synthetic credit-scoring service with two model versions, audited by otel-rai.

Run: python examples/credit_scoring.py

With no OTLP endpoint configured, the decisions go to the local audit store (no server needed), and
the example reads some back from it. With one (``OTEL_EXPORTER_OTLP_ENDPOINT``, docs/deploy.md), they
are exported there; say where they are stored to read them back from there:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 python examples/credit_scoring.py --backend phoenix

It also writes applicant.json, the application of A-1093 as the service received it, for
``otel-rai verify --input applicant.json``. Then try: otel-rai query --model-version 1.4.2 --since 1h
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import otel_rai
from otel_rai import settings
from otel_rai.explanations import format_reasons
from otel_rai.query import backends, find_decisions

NUMERIC = ["income", "debt_ratio", "years_employed"]
CATEGORICAL = ["region", "home"]
#: How long to wait for exported decisions to show up in a remote backend (a collector forwards them).
READ_BACK_TIMEOUT_S = 60.0
#: The applicant whose application is written to `APPLICANT_FILE`, for `otel-rai verify --input`.
APPLICANT, APPLICANT_FILE = "A-1093", Path("applicant.json")


def applications(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "income": rng.lognormal(10.5, 0.5, n).round(-2),
            "debt_ratio": rng.uniform(0, 0.8, n).round(3),
            "years_employed": rng.integers(0, 30, n),
            "region": rng.choice(["north", "south", "east", "west"], n),
            "home": rng.choice(["rent", "own", "mortgage"], n),
        }
    )


def repaid(frame: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    score = np.log(frame.income) - 10.5 - 2 * frame.debt_ratio + 0.03 * frame.years_employed
    return (score + rng.normal(0, 0.4, len(frame)) > -0.9).astype(int)


def pipeline(classifier) -> Pipeline:
    prep = ColumnTransformer(
        [("num", StandardScaler(), NUMERIC), ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)]
    )
    return Pipeline([("prep", prep), ("clf", classifier)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A credit-scoring service audited by otel-rai.")
    parser.add_argument("--backend", choices=backends(),
                        help="where to read the decisions back from (default: the local audit store, when "
                             "no OTLP endpoint is configured)")
    parser.add_argument("--url", help="that backend's URL (default: its own, e.g. http://localhost:6006 for phoenix)")
    args = parser.parse_args(argv)
    exporting = settings.otlp_endpoint_configured()
    backend = args.backend or (None if exporting else "local")

    started = datetime.now(timezone.utc)
    otel_rai.instrument(service_name="credit-scoring")

    train = applications(5000, seed=1)
    y = repaid(train, seed=2)
    # background: the reference data a linear model's explanations are measured against
    v1 = otel_rai.register_model(pipeline(LogisticRegression(max_iter=500)).fit(train, y), name="credit",
                                 version="1.4.1", background=train)
    v2 = otel_rai.register_model(pipeline(HistGradientBoostingClassifier()).fit(train, y), name="credit",
                                 version="1.4.2")

    incoming = applications(6, seed=3)
    ids = [f"A-{1090 + i}" for i in range(len(incoming))]
    for model, version in ((v1, "1.4.1"), (v2, "1.4.2")):
        with otel_rai.decisions(ids=[f"{i}/{version}" for i in ids]) as d:
            approved = model.predict_proba(incoming)[:, 1]
        print(f"model credit {version}")
        for decision_id, p in zip(d.ids, approved):
            print(f"  {decision_id:<12} p(repaid)={p:.3f} -> {'approve' if p > 0.5 else 'decline'}")
    # The application as the service received it (JSON): `otel-rai verify --input applicant.json` finds
    # the decisions made on it, by its keyed hash.
    application = incoming.iloc[ids.index(APPLICANT)].to_dict()
    APPLICANT_FILE.write_text(json.dumps({k: v.item() if hasattr(v, "item") else v for k, v in application.items()}))
    print(f"wrote {APPLICANT_FILE}: the application of {APPLICANT}")

    result = otel_rai.flush()
    print(f"audited {result.decisions} decisions in {result.spans} spans; complete={result.complete}")
    if backend is None:
        print("the decisions were exported over OTLP; to read them back from where the collector stores them, "
              "run this with --backend jaeger|tempo|phoenix [--url URL], or: otel-rai query --backend phoenix "
              "--model-version 1.4.2 --since 1h")
    else:
        read_back(backend, args.url, started)

    fairness_demo()
    where = "" if backend in (None, "local") else f" --backend {backend}" + (f" --url {args.url}" if args.url else "")
    print(f"next: otel-rai query --model-version 1.4.2 --since 1h{where}; otel-rai show {APPLICANT}/1.4.1{where};"
          f" otel-rai verify --input {APPLICANT_FILE}{where}"
          + ("; otel-rai report --model-version 2.0 --out report.html" if backend == "local" else ""))


def read_back(backend: str, url: str | None, started: datetime) -> None:
    """Some decisions of this run, and the reasons of one, read back from where they were stored."""
    where = "the audit store" if backend == "local" else backend
    deadline = time.monotonic() + READ_BACK_TIMEOUT_S
    while True:  # a remote backend shows exported decisions a moment later
        newest = list(find_decisions(model_version="1.4.2", start=started, backend=backend, url=url))
        older = list(find_decisions(model_version="1.4.1", start=started, backend=backend, url=url))
        if (len(newest) >= 6 and len(older) >= 6) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if not older:
        print(f"the decisions did not show up in {where} within {READ_BACK_TIMEOUT_S:g} s; is the collector "
              "forwarding there?")
        return
    print(f"read back from {where}: credit 1.4.2, this run")
    for d in newest[:3]:
        print(f"  {d.timestamp}  {d.decision_id:<12} output={d.output} p(repaid)={d.scores['1']:.3f} "
              f"input={d.input_hash[:12]}…")
    lowest = min(older, key=lambda d: d.scores["1"])
    print(f"why did credit 1.4.1 give {lowest.decision_id.split('/')[0]} its lowest score, "
          f"p(repaid)={lowest.scores['1']:.3f}?")
    for line in format_reasons({**lowest.attributes, **lowest.values}):
        print(f"  {line}")


# --- fairness: a planted bias that the monitor catches, and the fixed version that passes ---------


def fairness_demo() -> None:
    """Version 2.0 learns a historical bias against women and trips the four-fifths rule; 2.1 does not.
    2.0's explanations name the applicant's sex as its most attributed feature.

    2.0 was trained with the applicant's sex as a feature, 2.1 drops it in its ColumnTransformer;
    `sensitive_features` makes the monitor read the ``sex`` column of every input either way (a call
    can also give groups with ``decisions(groups=...)``). Alerts arrive as log records on
    ``otel_rai.alerts``, as ``ml.fairness.alert`` spans and metric, and through `on_alert`; outcomes
    arrive later, by decision id.
    """
    # Fairness settings belong to instrument(); the demo instruments again so that it reads on its own.
    otel_rai.uninstrument()
    raised = []
    otel_rai.instrument(
        service_name="credit-scoring",
        sensitive_features=["sex"],
        fairness=otel_rai.FairnessConfig(window=2000, min_group_size=200, on_alert=raised.append),
    )
    alerts = logging.getLogger("otel_rai.alerts")
    alerts.addHandler(_Print())
    alerts.setLevel(logging.INFO)

    def with_sex(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
        return frame.assign(sex=np.random.default_rng(seed).choice(["f", "m"], len(frame)))

    train = with_sex(applications(8000, seed=10), seed=11)
    truth = repaid(train, seed=12)
    # The historical decisions 2.0 learns from declined almost half of the women who would repay.
    history = np.where((train.sex == "f") & (np.random.default_rng(13).random(len(train)) < 0.45), 0, truth)
    biased = pipeline(LogisticRegression(max_iter=500))
    biased.steps[0][1].transformers.append(("sex", OneHotEncoder(), ["sex"]))
    biased = otel_rai.register_model(biased.fit(train, history), name="credit", version="2.0", background=train)
    fixed = pipeline(LogisticRegression(max_iter=500)).fit(train, truth)
    fixed = otel_rai.register_model(fixed, name="credit", version="2.1", background=train)

    for model, version in ((biased, "2.0"), (fixed, "2.1")):
        print(f"fairness: streaming 3000 applications to credit {version}")
        before = len(raised)
        for batch in range(60):
            incoming = with_sex(applications(50, seed=1000 + batch), seed=2000 + batch)
            with otel_rai.decisions() as d:
                model.predict(incoming)
            # Later (here: right away), whether each applicant repaid arrives by decision id.
            for decision_id, outcome in zip(d.ids, repaid(incoming, seed=3000 + batch)):
                otel_rai.record_outcome(decision_id, outcome)
            otel_rai.flush()
        print(f"  {len(raised) - before} fairness alert(s) for credit {version}")


class _Print(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(f"  {record.getMessage()}")


if __name__ == "__main__":
    main()
