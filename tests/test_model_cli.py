"""``otel-rai model list|show|diff|export``, ``show`` naming the record, and the report's model section: from
real records in a store, the CycloneDX export validated against the CycloneDX 1.6 JSON schema."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import KEY
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import otel_rai
from otel_rai import cli
from otel_rai.capture.fingerprint import fingerprint
from otel_rai.provenance import cyclonedx, lookup
from otel_rai.query import local

RNG = np.random.default_rng(3)
FRAME = pd.DataFrame({"income": RNG.normal(50000, 8000, 300).round(2), "age": RNG.integers(18, 80, 300),
                      "region": RNG.choice(["north", "south", "east"], 300)})
Y = (FRAME.income > 50000).astype(int).to_numpy()


def _pipeline(C: float) -> Pipeline:
    prep = ColumnTransformer([("num", StandardScaler(), ["income", "age"]),
                              ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"])])
    return Pipeline([("prep", prep), ("clf", LogisticRegression(C=C))])


@pytest.fixture(scope="module")
def trail(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    path = root / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY, service_name="credit-scoring")
    try:
        for version, C in (("1.0", 1.0), ("1.1", 0.25)):
            model = otel_rai.register_model(_pipeline(C).fit(FRAME, Y), name="credit", version=version,
                                            background=FRAME.iloc[:30], source_uri=f"models:/credit/{version}")
            with otel_rai.decisions(ids=[f"{version}-{i}" for i in range(5)]):
                model.predict_proba(FRAME.iloc[:5])
            model.predict(FRAME.iloc[5:6])
        gbm = HistGradientBoostingClassifier(max_iter=20).fit(FRAME[["income", "age"]], Y)
        gbm.predict(FRAME[["income", "age"]].iloc[:7])
        assert otel_rai.flush(60).complete
    finally:
        otel_rai.uninstrument()
    return path


class Plain:
    """A backend that only yields spans, as a remote one does."""

    def __init__(self, backend) -> None:
        self.backend = backend

    def spans(self, query):
        return self.backend.spans(query)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_each_fitted_model_with_its_decisions(trail, capsys):
    code, out, _ = run(capsys, "model", "list", "--store", str(trail), "--format", "json")
    rows = [json.loads(line) for line in out.splitlines()]
    gbm = ("HistGradientBoostingClassifier", rows[2]["fingerprint"], 7, 1)  # unregistered: version = fingerprint
    assert code == 0 and [(r["name"], r["version"], r["decisions"], r["records"]) for r in rows] == [
        ("credit", "1.0", 6, 1), ("credit", "1.1", 6, 1), gbm]
    assert all(r["first_decision"] <= r["last_decision"] for r in rows)
    # the generic path (any backend, span by span) agrees with the store's SQL
    generic = lookup.summaries(Plain(local.connect(str(trail))))
    assert [s.to_dict() for s in generic] == rows
    code, out, _ = run(capsys, "model", "list", "credit", "--store", str(trail))
    assert code == 0 and out.splitlines()[0].split() == ["NAME", "VERSION", "FINGERPRINT", "FIRST", "DECISION", "(UTC)",
                                                         "LAST", "DECISION", "(UTC)", "DECISIONS", "RECORD"]
    assert len(out.splitlines()) == 3


def test_show_gives_parameters_libraries_schema_training_and_artifact(trail, capsys):
    code, out, _ = run(capsys, "model", "show", "credit", "1.1", "--store", str(trail))
    assert code == 0
    assert "clf__C = 0.25" in out and "prep__cat = OneHotEncoder" in out
    assert re.search(r"libraries\s+numpy \S+\s+pandas \S+\s+python \S+\s+scikit-learn \S+\s+scipy \S+", out)
    assert "features       3 in: income, age, region" in out and "source         models:/credit/1.1" in out
    assert re.search(r"training\s+300 rows, fit", out) and re.search(r"training hash\s+[0-9a-f]{32}", out)
    assert re.search(r"artifact\s+saved: .*SHA-256 verified", out)
    code, out, _ = run(capsys, "model", "show", "credit", "1.1", "--store", str(trail), "--format", "json")
    shown = json.loads(out)
    assert shown["params"]["steps"][1][1]["params"]["C"] == 0.25 and shown["artifact_status"]["state"] == "saved"
    assert shown["schema"]["features"] == ["income", "age", "region"] and shown["training"]["rows"] == 300


def test_show_reports_a_damaged_or_missing_artifact(trail, capsys, tmp_path):
    import shutil

    shutil.copytree(trail.parent, tmp_path / "copy")
    store = tmp_path / "copy" / "audit.db"
    record = next(iter(lookup.records(local.connect(str(store)))))
    (model_file,) = (tmp_path / "copy" / "artifacts" / record.fingerprint).glob("model.*")
    model_file.write_bytes(b"tampered")
    code, out, _ = run(capsys, "model", "show", "credit", "1.0", "--store", str(store))
    assert code == 0 and re.search(r"artifact\s+damaged: .* has SHA-256", out)
    shutil.rmtree(tmp_path / "copy" / "artifacts")
    code, out, _ = run(capsys, "model", "show", "credit", "1.0", "--store", str(store))
    assert re.search(r"artifact\s+missing", out)


def test_diff_is_a_table_of_what_changed(trail, capsys):
    code, out, _ = run(capsys, "model", "diff", "credit", "1.0", "1.1", "--store", str(trail))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["SECTION", "KEY", "1.0", "1.1"]
    assert [line.split() for line in lines[1:]] == [["params", "clf__C", "1.0", "0.25"]]
    code, out, _ = run(capsys, "model", "diff", "credit", "1.0", "1.1", "--store", str(trail), "--format", "json")
    assert [json.loads(line) for line in out.splitlines()] == [
        {"section": "params", "key": "clf__C", "1.0": 1.0, "1.1": 0.25}]
    code, out, _ = run(capsys, "model", "diff", "credit", "1.0", "1.0", "--store", str(trail))
    assert "same class, parameters, schema, libraries and training data" in out


def test_export_is_a_valid_cyclonedx_1_6_ml_bom(trail, capsys, tmp_path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    validator = JsonStrictValidator(SchemaVersion.V1_6)
    for name, version in (("credit", "1.0"), ("credit", "1.1")):
        out_file = tmp_path / f"{version}.cdx.json"
        code, _, _ = run(capsys, "model", "export", name, version, "--format", "cyclonedx", "--store", str(trail),
                         "--output", str(out_file))
        text = out_file.read_text()
        assert code == 0 and validator.validate_str(text) is None
        bom = json.loads(text)
        model = bom["components"][0]
        assert model["type"] == "machine-learning-model" and model["version"] == version
        card = model["modelCard"]
        assert card["modelParameters"]["task"] == "classification"
        assert card["modelParameters"]["approach"] == {"type": "supervised"}
        assert {"name": "otel-rai:param:clf__C", "value": "1.0" if version == "1.0" else "0.25"} in card["properties"]
        assert model["externalReferences"][0]["url"] == f"models:/credit/{version}"
        assert len(model["hashes"][0]["content"]) == 64
        libraries = {c["name"] for c in bom["components"] if c["type"] == "library"}
        assert {"scikit-learn", "numpy", "scipy", "pandas"} <= libraries
        data = next(c for c in bom["components"] if c["type"] == "data")
        assert card["modelParameters"]["datasets"] == [{"ref": data["bom-ref"]}]
    # the validator is not a rubber stamp
    bad = json.loads(text)
    bad["components"][0]["modelCard"]["modelParameters"]["approach"]["type"] = "guessing"
    assert validator.validate_str(json.dumps(bad)) is not None


def test_export_of_every_record_kind_validates(trail):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    validator = JsonStrictValidator(SchemaVersion.V1_6)
    for record in lookup.records(local.connect(str(trail))):
        assert validator.validate_str(json.dumps(cyclonedx.bom(record))) is None, record.name


def test_show_decision_names_its_record_and_key_parameters(trail, capsys):
    code, out, _ = run(capsys, "show", "1.1-2", "--store", str(trail))
    assert code == 0
    assert re.search(r"Model record: sklearn\.pipeline\.Pipeline, recorded \S+ \(stream [0-9a-f]{32} seq \d+\)", out)
    assert "key parameters: clf__C=0.25" in out
    code, out, _ = run(capsys, "show", "1.1-2", "--store", str(trail), "--format", "json")
    linked = json.loads(out)["model_record"]
    assert linked["key_parameters"] == {"clf__C": 0.25}
    assert linked["fingerprint"] == json.loads(out)["model_fingerprint"]


def test_the_report_has_a_model_section(trail, capsys, tmp_path):
    page = tmp_path / "report.html"
    code, _, _ = run(capsys, "report", "--model-version", "1.1", "--store", str(trail), "--out", str(page))
    html = page.read_text()
    assert code == 0 and "<h2>Model</h2>" in html and html.count('class="model-record"') == 1
    assert 'data-param="clf__C">0.25<' in html and "models:/credit/1.1" in html


def test_errors_are_one_line(trail, capsys):
    for args, message in (
        (("model", "show", "credit", "9.9"), "no model record of credit 9.9"),
        (("model", "export", "nobody", "1"), "no model record of nobody 1"),
        (("model", "diff", "credit", "1.0", "9.9"), "no model record of credit 9.9"),
    ):
        code, out, err = run(capsys, *args, "--store", str(trail))
        assert code == 1 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_fingerprint_prefix_picks_one_model(trail, capsys):
    record = next(r for r in lookup.records(local.connect(str(trail))) if r.name == "credit")
    code, out, _ = run(capsys, "model", "show", "credit", record.version, "--fingerprint", record.fingerprint[:8],
                       "--store", str(trail), "--format", "json")
    assert code == 0 and json.loads(out)["fingerprint"] == record.fingerprint
    assert record.fingerprint == fingerprint(_pipeline(1.0).fit(FRAME, Y))
