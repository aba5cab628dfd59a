"""Reason codes: a table from a feature (and the sign of its attribution) to an adverse-action reason, and
the principal reasons of a decision, checked on generated tables and rankings against a direct reading of
the rule."""

from __future__ import annotations

import random

import pytest

from otel_rai.mlflow.reason_codes import DEFAULT_MAX_REASONS, ReasonCodes


def _expected(table, reasons, max_reasons):
    """The rule, read directly: walk the ranking, take the text for the feature's sign (else for the
    feature), skip zero attributions and repeated texts, stop at max_reasons."""
    out = []
    for feature, value in reasons:
        if value == 0:
            continue
        sign = "+" if value > 0 else "-"
        text = table.get((feature, sign), table.get(feature))
        if text and text not in out:
            out.append(text)
    return out[:max_reasons]


@pytest.mark.parametrize("seed", range(200))
def test_principal_reasons_follow_the_rule(seed):
    rng = random.Random(seed)
    features = [f"f{i}" for i in range(rng.randint(1, 8))]
    texts = [f"reason {i}" for i in range(rng.randint(1, 6))]
    table = {}
    for feature in features:
        for key in rng.sample([feature, (feature, "+"), (feature, "-")], rng.randint(0, 3)):
            table[key] = rng.choice(texts)
    max_reasons = rng.randint(1, 5)
    reasons = [(rng.choice(features), rng.choice([0.0, rng.uniform(-3, 3)])) for _ in range(rng.randint(0, 10))]
    codes = ReasonCodes(table, max_reasons)
    assert codes.principal(reasons) == _expected(table, reasons, max_reasons)
    assert len(codes.principal(reasons)) <= max_reasons


def test_four_principal_reasons_by_default():
    table = {f"f{i}": f"reason {i}" for i in range(10)}
    assert DEFAULT_MAX_REASONS == 4
    assert ReasonCodes(table).principal([(f"f{i}", -1.0) for i in range(10)]) == [f"reason {i}" for i in range(4)]


@pytest.mark.parametrize("table, max_reasons, message", [
    ({("f", "*"): "x"}, 4, "is not a feature name or a"),
    ({("f",): "x"}, 4, "is not a feature name or a"),
    ({3: "x"}, 4, "is not a feature name or a"),
    ({"": "x"}, 4, "is not a feature name or a"),
    ({"f": ""}, 4, "must be a non-empty string"),
    ({"f": None}, 4, "must be a non-empty string"),
    ({"f": "x"}, 0, "max_reasons must be a whole number"),
    ({"f": "x"}, True, "max_reasons must be a whole number"),
])
def test_a_bad_table_is_refused_naming_the_key(table, max_reasons, message):
    with pytest.raises(ValueError, match=message):
        ReasonCodes(table, max_reasons)


def test_the_table_is_written_down_for_the_model_artifact():
    codes = ReasonCodes({("income", "-"): "Income insufficient", "age": "Age"}, 2)
    assert codes.to_json() == {"max_reasons": 2, "codes": [
        {"feature": "income", "sign": "-", "text": "Income insufficient"},
        {"feature": "age", "sign": None, "text": "Age"}]}
