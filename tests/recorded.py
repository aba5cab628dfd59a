"""Real decisions for the store and query tests: instrument, predict, uninstrument."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from conftest import KEY
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import store
from otel_rai.codec.records import SpanRecord


def data(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    return make_classification(n, 6, random_state=0)


@dataclass
class Recorded:
    """What `record` did: the decision ids per model version, and the inputs and outputs per id."""

    path: Path
    ids: dict[str, list[str]] = field(default_factory=dict)
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    outputs: dict[str, int] = field(default_factory=dict)

    def window(self) -> dict[str, int]:
        """start/end around the recording, in whole microseconds (the coarsest backend resolution)."""
        starts = [s.start_ns for s in self.spans()]
        return {"start": min(starts) // 1000 * 1000, "end": max(starts) + 1000}

    def spans(self) -> list[SpanRecord]:
        s = store.Store(self.path)
        try:
            return list(s.spans())
        finally:
            s.close()


def record(path: Path, versions: dict[str, int], *, service: str = "credit-scoring", **options) -> Recorded:
    """For each model version, one predict_proba call of that many rows, with ids ``<version>-<row>``."""
    X, y = data()
    out = Recorded(path)
    otel_rai.instrument(store=path, hash_key=KEY, service_name=service, **options)
    try:
        for version, rows in versions.items():
            model = otel_rai.register_model(LogisticRegression().fit(X, y), name="credit", version=version)
            batch = np.tile(X, (rows // len(X) + 1, 1))[:rows]
            ids = [f"{version}-{i}" for i in range(rows)]
            with otel_rai.decisions(ids=ids):
                proba = model.predict_proba(batch)
            out.ids[version] = ids
            for i, decision_id in enumerate(ids):
                out.inputs[decision_id] = batch[i]
                out.outputs[decision_id] = int(model.classes_[proba[i].argmax()])
        assert otel_rai.flush(30).complete
    finally:
        otel_rai.uninstrument()
    return out
