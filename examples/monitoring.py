"""Quality and drift monitoring of a synthetic credit-scoring model, with otel-rai.

Run: python examples/monitoring.py

The model is fitted under instrument(), so its training data becomes the drift reference (bin edges and
counts only). Then a stream of applications arrives in three phases:

1. like the training data, with the repayment labels arriving a little later: no alert;
2. a campaign brings in older applicants (age up by one standard deviation): a drift alert for `age`,
   and none for the other inputs; age hardly matters to repayment, so the quality holds;
3. for applicants in the west, 20% of the outcomes go against the model (a local shock the model does not
   know about): a quality alert for region=west.

Everything goes to the local audit store; afterwards the example prints what `otel-rai monitor` prints.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import otel_rai

NUMERIC = ["income", "debt_ratio", "years_employed", "age"]
CATEGORICAL = ["region"]
#: Decisions per phase, and the window of the gauges: with about 750 labelled decisions per region in the
#: window, a noise drop of 0.05 in a region's accuracy is a 2.5-sigma event (docs/monitoring.md, Noise).
PHASE, WINDOW = 5000, 3000


def applications(n: int, seed: int, age_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "income": rng.normal(50, 12, n).round(1),  # thousands
        "debt_ratio": rng.uniform(0, 0.8, n).round(3),
        "years_employed": rng.integers(0, 30, n),
        "age": rng.normal(40 + 12 * age_shift, 12, n).round(),
        "region": rng.choice(["north", "south", "east", "west"], n),
    })


def repaid(frame: pd.DataFrame, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    score = 0.08 * (frame.income - 50) - 4 * (frame.debt_ratio - 0.4) + 0.05 * frame.years_employed
    return np.array(rng.random(len(frame)) < 1 / (1 + np.exp(-score)), dtype=int)


def serve(model, frame: pd.DataFrame, outcomes: np.ndarray) -> None:
    """Decide in requests of 1 to 50 applications; each outcome is recorded after its decision."""
    rng = np.random.default_rng(len(frame))
    start = 0
    while start < len(frame):
        stop = start + int(rng.choice([1, 5, 50]))
        with otel_rai.decisions() as d:
            model.predict_proba(frame.iloc[start:stop])
        for decision_id, y in zip(d.ids, outcomes[start:stop]):
            otel_rai.record_outcome(decision_id, int(y))
        start = stop


def main(store: Path | None = None) -> list[otel_rai.MonitoringAlert]:
    alerts: list[otel_rai.MonitoringAlert] = []
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    store = store or Path(tempfile.mkdtemp(prefix="otel-rai-monitoring-")) / "audit.db"
    otel_rai.instrument(service_name="credit-scoring", store=store, sensitive_features=["region"],
                        fairness=otel_rai.FairnessConfig(window=WINDOW, min_group_size=500),
                        monitoring=otel_rai.MonitoringConfig(window=WINDOW, min_rows=500, on_alert=alerts.append))
    train = applications(6000, seed=1)
    prep = ColumnTransformer([("num", StandardScaler(), NUMERIC),
                              ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)])
    model = Pipeline([("prep", prep), ("clf", LogisticRegression())]).fit(train, repaid(train, seed=2))
    otel_rai.register_model(model, name="credit", version="3.0", background=train.iloc[:100])

    print("phase 1: applications like the training data")
    first = applications(PHASE, seed=3)
    serve(model, first, repaid(first, seed=4))
    print("phase 2: older applicants (age up by one standard deviation)")
    second = applications(PHASE, seed=5, age_shift=1.0)
    serve(model, second, repaid(second, seed=6))
    print("phase 3: in the west, 20% of the outcomes go against the model")
    third = applications(PHASE, seed=7, age_shift=1.0)
    outcomes = repaid(third, seed=8)
    west = (third.region == "west").to_numpy() & (np.random.default_rng(9).random(PHASE) < 0.2)
    outcomes[west] = 1 - outcomes[west]
    serve(model, third, outcomes)
    otel_rai.uninstrument()  # flushes; the gauges were published, the alerts raised, the last snapshot written

    fired = [a for a in alerts if a.firing]
    print(f"\n{len(fired)} alert(s):")
    for a in fired:
        print("  " + a.message(show_group=True))
    from otel_rai.cli import main as cli

    print(f"\n$ otel-rai monitor --model-version 3.0 --window {WINDOW} --store {store}")
    cli(["monitor", "--model-version", "3.0", "--window", str(WINDOW), "--store", str(store)])
    return alerts


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
