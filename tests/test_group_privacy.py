"""Group values of sensitive features are bounded: each attribute keeps at most ``max_groups`` labels
(further ones count as ``(other)``, with one warning), labels are at most 128 characters, a process tracks
at most 16 attributes named only per call, and the local store keeps exactly the labels the metrics
publish. A span never carries a group value (only a keyed digest) unless it is allowlisted. Checked with
a column of a thousand names, against the metrics, the store file, the spans, the logs and the report.
"""

from __future__ import annotations

import logging
import random
import sqlite3

import numpy as np
import pandas as pd
from conftest import KEY
from leaks import Secrets, everything_of, file_texts
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import otel_rai
from otel_rai import cli, semconv
from otel_rai.capture.scope import GROUP_LABEL_CHARS
from otel_rai.fairness.groups import MAX_AD_HOC_ATTRIBUTES

MAX_GROUPS = 10
N = 1000


def _metric_labels(reader: InMemoryMetricReader, key: str = semconv.FAIRNESS_GROUP) -> dict[str, set[str]]:
    """{attribute: group labels} of every fairness data point."""
    out: dict[str, set[str]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    a = dict(point.attributes or {})
                    if semconv.FAIRNESS_ATTRIBUTE in a and key in a:
                        out.setdefault(a[semconv.FAIRNESS_ATTRIBUTE], set()).add(a[key])
    return out


def test_a_thousand_names_leave_only_capped_labels(tmp_path, caplog, capsys):
    s = Secrets(random.Random(11))
    names = [s.text().strip() or "x" for _ in range(N)]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"name": names, "income": rng.normal(size=N)})
    model = make_pipeline(ColumnTransformer([("n", StandardScaler(), ["income"])]), LogisticRegression()).fit(
        frame, (frame.income > 0).astype(int))
    reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
    spans = TracerProvider()
    spans.add_span_processor(SimpleSpanProcessor(exporter))
    store = tmp_path / "audit.db"
    caplog.set_level(logging.DEBUG)
    otel_rai.instrument(store=store, hash_key=KEY, sensitive_features=["name"], tracer_provider=spans,
                        meter_provider=MeterProvider(metric_readers=[reader]),
                        fairness=otel_rai.FairnessConfig(max_groups=MAX_GROUPS, min_group_size=1))
    for start in range(0, N, 50):
        model.predict(frame.iloc[start : start + 50])
    assert otel_rai.flush(60).complete
    published = _metric_labels(reader)["name"]
    otel_rai.uninstrument()
    with sqlite3.connect(store) as conn:
        stored = {r[0] for r in conn.execute("SELECT DISTINCT grp FROM decision_groups")}
        assert conn.execute("SELECT count(*) FROM decision_groups").fetchone()[0] == N
    first = set(names[:MAX_GROUPS])
    assert published == stored == first | {semconv.OTHER_GROUP}
    assert sum("has more than 10 groups" in r.getMessage() for r in caplog.records) == 1
    # the names past the cap are nowhere: store file, spans, logs
    beyond = Secrets(random.Random(0), needles={n for n in s.needles if not any(n in f for f in first)})
    texts = {**file_texts(tmp_path.iterdir()), "logs": "\n".join(r.getMessage() for r in caplog.records)}
    texts["spans"] = "\n".join(everything_of(span) for span in exporter.get_finished_spans())
    for where, text in texts.items():
        assert beyond.found_in(text) == [], where
    # no name at all on a span: the spans carry a keyed digest per decision
    everyone = Secrets(random.Random(0), needles=set(s.needles))
    assert everyone.found_in(texts["spans"]) == []
    decision_spans = [x for x in exporter.get_finished_spans() if semconv.DECISION_IDS in x.attributes]
    assert all(len(x.attributes[semconv.GROUPS_DIGEST]) == len(x.attributes[semconv.DECISION_IDS])
               for x in decision_spans)
    # the report still works, and shows exactly those groups
    version = decision_spans[0].attributes[semconv.MODEL_VERSION]
    out = tmp_path / "report.html"
    assert cli.main(["report", "--store", str(store), "--model-version", version, "--sensitive-feature", "name",
                     "--out", str(out)]) == 0, capsys.readouterr().err
    page = out.read_text()
    assert semconv.OTHER_GROUP in page and beyond.found_in(page) == []


def test_labels_are_short_and_per_call_attributes_are_bounded(caplog):
    reader = InMemoryMetricReader()
    x = np.random.default_rng(1).normal(size=(40, 2))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    otel_rai.instrument(hash_key=KEY, store=False, meter_provider=MeterProvider(metric_readers=[reader]))
    with otel_rai.decisions(groups={"region": "r" * 10_000}):
        model.predict(x[:2])
    for i in range(3 * MAX_AD_HOC_ATTRIBUTES):
        with otel_rai.decisions(groups={f"attribute-{i}": "a"}):
            model.predict(x[:1])
    assert otel_rai.flush(30).complete
    labels = _metric_labels(reader)
    otel_rai.uninstrument()
    (region,) = labels["region"]
    assert len(region) == GROUP_LABEL_CHARS and region.startswith("r" * 100)
    assert len(labels) == MAX_AD_HOC_ATTRIBUTES  # "region" and the first 15 per-call names
    assert sum("named only per call" in r.getMessage() for r in caplog.records) == 1
