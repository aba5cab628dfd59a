"""A synthetic credit-scoring service with two model versions, audited by otel-rai.

Run: python examples/credit_scoring.py

With no OTLP endpoint configured, the decisions go to the local audit store (no server needed), and
the example reads some back. Then try: otel-rai query --model-version 1.4.2 --since 1h
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import otel_rai
from otel_rai.explanations import format_reasons
from otel_rai.query import find_decisions

NUMERIC = ["income", "debt_ratio", "years_employed"]
CATEGORICAL = ["region", "home"]


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
    score = np.log(frame.income) - 10.5 - 3 * frame.debt_ratio + 0.03 * frame.years_employed
    return (score + rng.normal(0, 0.4, len(frame)) > -0.9).astype(int)


def pipeline(classifier) -> Pipeline:
    prep = ColumnTransformer(
        [("num", StandardScaler(), NUMERIC), ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)]
    )
    return Pipeline([("prep", prep), ("clf", classifier)])


def main() -> None:
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

    result = otel_rai.flush()
    print(f"audited {result.decisions} decisions in {result.spans} spans; complete={result.complete}")

    print("read back from the audit store: credit 1.4.2, this run")
    for d in find_decisions(model_version="1.4.2", start=started, limit=3):
        print(f"  {d.timestamp}  {d.decision_id:<12} output={d.output} p(repaid)={d.scores['1']:.3f} "
              f"input={d.input_hash[:12]}…")
    declined = next(find_decisions(model_version="1.4.1", decision_id="A-1092/1.4.1", start=started))
    print("why was A-1092 declined by credit 1.4.1?")
    for line in format_reasons({**declined.attributes, **declined.values}):
        print(f"  {line}")

    fairness_demo()
    print("next: otel-rai query --model-version 1.4.2 --since 1h; otel-rai show A-1092/1.4.1;"
          " otel-rai report --model-version 2.0 --out report.html")


# --- fairness: a planted bias that the monitor catches, and the fixed version that passes ---------


def fairness_demo() -> None:
    """Version 2.0 learns a historical bias against women and trips the four-fifths rule; 2.1 does not.

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
        fairness=otel_rai.FairnessConfig(window=2000, min_group_size=300, on_alert=raised.append),
    )
    alerts = logging.getLogger("otel_rai.alerts")
    alerts.addHandler(_Print())
    alerts.setLevel(logging.INFO)

    def with_sex(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
        return frame.assign(sex=np.random.default_rng(seed).choice(["f", "m"], len(frame)))

    train = with_sex(applications(8000, seed=10), seed=11)
    truth = repaid(train, seed=12)
    # The historical decisions 2.0 learns from declined a third of the women who would repay.
    history = np.where((train.sex == "f") & (np.random.default_rng(13).random(len(train)) < 0.35), 0, truth)
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
