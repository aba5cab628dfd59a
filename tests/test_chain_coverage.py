"""verify-chain covers every column and table a reader uses, not only the hashed records: an edit of a
derived column (that would hide a decision from ``query``, ``verify --input`` or the report) or of the
local-only groups and outcomes is reported. A generator of edits, each on a fresh copy of one store."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import KEY
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import cli, semconv
from otel_rai.query import find_decisions

rng = np.random.RandomState(3)
FRAME = pd.DataFrame({"x": rng.randn(40), "y": rng.randn(40), "g": rng.choice(["a", "b"], 40)})
MODEL = LogisticRegression().fit(FRAME[["x", "y"]], (FRAME.x > 0).astype(int))


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A store with decisions in several spans, groups, outcomes, an input index and checkpoints."""
    path = tmp_path_factory.mktemp("coverage") / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY, service_name="scoring")
    for i in range(8):
        rows = FRAME.iloc[3 * i : 3 * i + 3]
        with otel_rai.decisions(ids=[f"g-{i}-{j}" for j in range(3)], groups={"g": rows.g.tolist()}):
            MODEL.predict(rows[["x", "y"]])
    with otel_rai.decisions(ids=["plain-0", "plain-1"]):  # no groups given: decisions without groups
        MODEL.predict(FRAME[["x", "y"]].head(2))
    for i in range(4):
        otel_rai.record_outcome(f"g-{i}-0", i % 2)
    otel_rai.uninstrument()  # closes, which fills the input index
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM input_index").fetchone()[0] == 26
        assert conn.execute("SELECT count(*) FROM decision_groups").fetchone()[0] == 24
        assert conn.execute("SELECT count(*) FROM outcomes").fetchone()[0] == 4
    return path


def _verify(path: Path, capsys, *key_args: str) -> tuple[int, dict]:
    code = cli.main(["verify-chain", "--store", str(path), "--format", "json", *key_args])
    return code, json.loads(capsys.readouterr().out)


def test_the_untouched_store_verifies(good, capsys):
    code, report = _verify(good, capsys, "--key", KEY)
    assert code == 0 and report["ok"] and report["unverified_local_rows"] == 0
    code, report = _verify(good, capsys)  # no key: OTEL_RAI_HASH_KEY unset, no key file
    assert code == 0 and report["unverified_local_rows"] == 24 + 4


DECISION = "(SELECT span FROM decisions WHERE decision_id = 'g-2-1')"
EDITS = {
    # derived span columns: each hides the decision from a query
    "model_version": f"UPDATE spans SET model_version = 'hidden' WHERE seq = {DECISION}",
    "model_name": f"UPDATE spans SET model_name = 'hidden' WHERE seq = {DECISION}",
    "model_fingerprint": f"UPDATE spans SET model_fingerprint = 'f' WHERE seq = {DECISION}",
    "operation": f"UPDATE spans SET operation = 'predict_proba' WHERE seq = {DECISION}",
    "n_decisions": f"UPDATE spans SET n_decisions = 0 WHERE seq = {DECISION}",
    # the service, alone and with the resource it repeats
    "origins.service": "UPDATE origins SET service = 'elsewhere'",
    "origins.service and resource": "UPDATE origins SET service = 'elsewhere', "
                                    "resource = json_set(resource, '$.\"service.name\"', 'elsewhere')",
    # the decisions table and the input index
    "decisions.decision_id": "UPDATE decisions SET decision_id = 'other' WHERE decision_id = 'g-2-1'",
    "decisions.output": "UPDATE decisions SET output = 1 - output WHERE decision_id = 'g-2-1'",
    "decisions.input_key": "UPDATE decisions SET input_key = input_key + 1 WHERE decision_id = 'g-2-1'",
    "input_index entry deleted": f"DELETE FROM input_index WHERE span = {DECISION} AND idx = 1",
    "input_index key changed": f"UPDATE input_index SET input_key = input_key + 1 WHERE span = {DECISION}",
    "input_index entry inserted": f"INSERT INTO input_index SELECT input_key + 7, span, idx FROM input_index "
                                  f"WHERE span = {DECISION} AND idx = 0",
    # groups: the report reads them
    "decision_groups edited": "UPDATE decision_groups SET grp = CASE grp WHEN 'a' THEN 'b' ELSE 'a' END "
                              "WHERE decision_id = 'g-2-1'",
    "decision_groups deleted": "DELETE FROM decision_groups WHERE decision_id = 'g-2-1'",
    "decision_groups inserted": "INSERT INTO decision_groups VALUES ('plain-0', 'g', 'a')",
    # outcomes: TPR/FPR and equalized odds read them
    "outcomes edited": "UPDATE outcomes SET y_true = '1' WHERE decision_id = 'g-0-0'",
    "outcomes deleted": "DELETE FROM outcomes WHERE decision_id = 'g-1-0'",
    "outcomes inserted": "INSERT INTO outcomes VALUES ('g-5-0', '1', (SELECT max(time_ns) FROM outcomes))",
    "outcomes time": "UPDATE outcomes SET time_ns = time_ns + 1 WHERE decision_id = 'g-2-0'",
}
#: Edits only the keyed digests see: without the key they are counted as not verified, not found.
NEEDS_KEY = {"decision_groups edited", "outcomes edited"}


def test_a_raised_index_watermark_is_reported(good, tmp_path, capsys):
    """A store being written has decisions past the watermark, not yet indexed (lookups scan them).
    Raising the watermark over them would hide them from ``verify --input``."""
    path = _edited(good, tmp_path, "DELETE FROM input_index WHERE span > 4")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '4' WHERE key = 'input_index_through'")
    assert _verify(path, capsys, "--key", KEY)[0] == 0  # as a store mid-way is: fine
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '999999' WHERE key = 'input_index_through'")
    code, report = _verify(path, capsys, "--key", KEY)
    assert code == 3 and "input_index" in report["problems"][0]["detail"]


def _edited(good: Path, tmp_path: Path, sql: str) -> Path:
    path = tmp_path / "edited.db"
    shutil.copy(good, path)
    with sqlite3.connect(path) as conn:
        assert conn.execute(sql).rowcount >= 1, sql  # the edit changed something
    return path


@pytest.mark.parametrize("edit", EDITS)
def test_every_edit_of_a_column_or_table_readers_use_is_reported(good, tmp_path, capsys, edit):
    path = _edited(good, tmp_path, EDITS[edit])
    code, report = _verify(path, capsys, "--key", KEY)
    assert code == 3 and not report["ok"], (edit, report)
    kinds = set(report["problems_by_kind"])
    assert kinds <= {"edited", "deleted", "foreign"}, kinds
    code, report = _verify(path, capsys)
    assert (code == 0) == (edit in NEEDS_KEY), (edit, report["problems_by_kind"])


def test_the_edits_do_hide_decisions_from_readers(good, tmp_path):
    """Why each matters: the query path reads the derived columns, not the records."""
    assert "g-2-1" in {d.decision_id for d in find_decisions(url=str(good), model_version=_version(good))}
    path = _edited(good, tmp_path, EDITS["model_version"])
    assert "g-2-1" not in {d.decision_id for d in find_decisions(url=str(path), model_version=_version(good))}


def _version(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT model_version FROM spans WHERE model_version IS NOT NULL").fetchone()[0]


def test_the_service_and_outcomes_are_sealed(good):
    records = list(find_decisions(url=str(good)))
    assert {d.attributes.get(semconv.AUDIT_SERVICE) for d in records} == {"scoring"}
    with sqlite3.connect(good) as conn:
        outcome_spans = conn.execute("SELECT attributes FROM spans WHERE name = ?", (semconv.OUTCOME_SPAN,)).fetchall()
    assert len(outcome_spans) == 4
    attributes = json.loads(outcome_spans[0][0])
    assert set(attributes) >= {semconv.OUTCOME_DECISION_ID, semconv.OUTCOME_DIGEST, semconv.AUDIT_RECORD_HASH}
    assert not any(v in ("0", "1", 0, 1) for k, v in attributes.items() if k.startswith("ml.outcome"))


class _Ragged(ClassifierMixin, BaseEstimator):
    """A classifier whose outputs cannot be read as flags: ragged lists, which numpy refuses (one row's
    output is a 1-by-1 list: no flags either, but no failure)."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, X):
        return [[1] * (1 + i % 2) for i in range(len(X))]


@pytest.mark.parametrize("kind", ["multiclass", "regressor", "unreadable"])
def test_groups_of_decisions_fairness_cannot_count_are_kept_and_covered(tmp_path, capsys, kind):
    """A model whose decisions are neither positive nor negative (three classes and no positive label; a
    regressor without a threshold; outputs whose reading fails) is not counted by the fairness monitor,
    but its decisions' groups are still kept for the report and covered by the chain: the store
    verifies, with a group row per decision."""
    from sklearn.linear_model import LinearRegression

    path = tmp_path / "audit.db"
    X = FRAME[["x", "y"]]
    if kind == "multiclass":
        model = LogisticRegression().fit(X, np.digitize(FRAME.x, [-0.5, 0.5]))
    elif kind == "regressor":
        model = LinearRegression().fit(X, FRAME.y)
    else:
        model = _Ragged().fit(X, FRAME.g)
    otel_rai.instrument(store=path, hash_key=KEY)
    for i in range(5):
        rows = FRAME.iloc[4 * i : 4 * i + 4]
        with otel_rai.decisions(ids=[f"{kind}-{i}-{j}" for j in range(4)], groups={"g": rows.g.tolist()}):
            model.predict(rows[["x", "y"]])
        with otel_rai.decisions(ids=[f"{kind}-{i}-single"], groups={"g": "a"}):
            model.predict(rows[["x", "y"]].head(1))
    otel_rai.uninstrument()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM decision_groups").fetchone()[0] == 25
    code, report = _verify(path, capsys, "--key", KEY)
    assert code == 0 and report["ok"] and report["unverified_local_rows"] == 0
