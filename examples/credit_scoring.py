"""A synthetic credit-scoring service with two model versions, audited by otel-rai.

Run: python examples/credit_scoring.py

With no OTLP endpoint configured, the decisions go to the local audit store (no server needed), and
the example reads some back. Then try: otel-rai query --model-version 1.4.2 --since 1h
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import otel_rai
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
    v1 = otel_rai.register_model(pipeline(LogisticRegression(max_iter=500)).fit(train, y), name="credit", version="1.4.1")
    v2 = otel_rai.register_model(pipeline(HistGradientBoostingClassifier()).fit(train, y), name="credit", version="1.4.2")

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
        print(f"  {d.timestamp}  {d.decision_id:<12} output={d.output} p(repaid)={d.scores['1']:.3f} input={d.input_hash[:12]}…")


if __name__ == "__main__":
    main()
