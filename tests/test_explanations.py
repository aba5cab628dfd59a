"""`otel_rai.explain`: SHAP as the oracle for every method, and additivity for every family."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import shap
import xgboost as xgb
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_classification
from sklearn.decomposition import PCA
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, PoissonRegressor, Ridge, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

import otel_rai
from otel_rai.explanations import MissingBackground, UnsupportedModel, treeshap

pytestmark = pytest.mark.filterwarnings("ignore:LightGBM binary classifier:UserWarning")
ATOL = 1e-6


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(800, 8, n_informative=5, n_classes=3, random_state=0)
    X[:, 0] += np.linspace(0, 4, len(X))  # a drifting mean: a 100-row background would miss it
    return X, y


def assert_additive(ex, model_output):
    """base + Σ values == the explained output, which is the model's own output."""
    np.testing.assert_allclose(ex.base_values + ex.values.sum(1), ex.output_values, rtol=0, atol=ATOL)
    np.testing.assert_allclose(ex.output_values, model_output, rtol=0, atol=ATOL)


def rows_of(values, columns):
    """SHAP's (n, features, outputs) array at each row's explained output column."""
    return values[np.arange(len(values)), :, columns] if values.ndim == 3 else values


# --- linear ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda X, y: LogisticRegression().fit(X, y == 1), "log-odds"),
        (lambda X, y: LogisticRegression().fit(X, y), "logit"),
        (lambda X, y: LinearSVC().fit(X, y == 1), "decision-function"),
        (lambda X, y: SGDClassifier(loss="log_loss", random_state=0).fit(X, y == 1), "log-odds"),
        (lambda X, y: Ridge().fit(X, X[:, 1] + y), "raw"),
        (lambda X, y: LinearRegression().fit(X, X[:, 1] + y), "raw"),
    ],
    ids=["logistic-binary", "logistic-multiclass", "linear-svc", "sgd-log", "ridge", "ols"],
)
def test_linear_equals_shap_given_the_full_background_mean(data, make, kind):
    X, y = data
    model = make(X, y)
    ex = otel_rai.explain(model, X[:50], background=X)
    assert ex.method == "linear" and ex.output == kind
    oracle = shap.LinearExplainer(model, (X.mean(0), np.cov(X.T)))
    columns = np.searchsorted(model.classes_, ex.classes) if np.ndim(model.coef_) == 2 and len(model.coef_) > 1 else 0
    np.testing.assert_allclose(ex.values, rows_of(oracle.shap_values(X[:50]), columns), rtol=0, atol=ATOL)
    np.testing.assert_allclose(ex.base_values, np.atleast_1d(oracle.expected_value)[columns], rtol=0, atol=ATOL)
    scores = model.decision_function(X[:50]) if hasattr(model, "classes_") else model.predict(X[:50])
    assert_additive(ex, scores if scores.ndim == 1 else scores[np.arange(50), columns])


def test_linear_background_mean_is_not_a_100_row_sample(data):
    X, y = data
    model = LogisticRegression().fit(X, y == 1)
    ex = otel_rai.explain(model, X[:5], background=X)
    subsampled = shap.LinearExplainer(model, X)  # SHAP summarises raw data to 100 rows
    assert abs(subsampled.expected_value - ex.base_values[0]) > 0.05
    assert ex.base_values[0] == pytest.approx(model.decision_function(X.mean(0, keepdims=True))[0], abs=1e-12)


def test_log_link_regressor_explains_the_log_prediction(data):
    X, y = data
    model = PoissonRegressor().fit(X, y)
    ex = otel_rai.explain(model, X[:20], background=X)
    assert ex.output == "log-prediction"
    assert_additive(ex, np.log(model.predict(X[:20])))


def test_linear_needs_a_background(data):
    X, y = data
    with pytest.raises(MissingBackground):
        otel_rai.explain(LogisticRegression().fit(X, y), X[:2])


def test_registered_background_is_the_default(data):
    X, y = data
    model = otel_rai.register_model(Ridge().fit(X, y), background=X[:300])
    ex = otel_rai.explain(model, X[:3])
    assert ex.base_values[0] == pytest.approx(model.predict(X[:300].mean(0, keepdims=True))[0], abs=1e-12)


# --- trees ---------------------------------------------------------------------------------------------

NAN_OK = "nan"  # the family routes missing values itself


def _xgb_binary(X, y, t):
    return xgb.XGBClassifier(n_estimators=25, max_depth=4).fit(X, y == 1)


TREE_MODELS = {
    "decision-tree-classifier": (lambda X, y, t: DecisionTreeClassifier(max_depth=7, random_state=0).fit(X, y), NAN_OK),
    "decision-tree-regressor": (lambda X, y, t: DecisionTreeRegressor(max_depth=7, random_state=0).fit(X, t), NAN_OK),
    "random-forest-binary": (lambda X, y, t: RandomForestClassifier(20, max_depth=8, random_state=0).fit(X, y == 1),
                             NAN_OK),
    "random-forest-multiclass": (lambda X, y, t: RandomForestClassifier(20, random_state=0).fit(X, y), NAN_OK),
    "random-forest-regressor": (lambda X, y, t: RandomForestRegressor(15, max_depth=9, random_state=0).fit(X, t),
                                NAN_OK),
    "extra-trees-classifier": (lambda X, y, t: ExtraTreesClassifier(15, max_depth=8, random_state=0).fit(X, y), None),
    "extra-trees-regressor": (lambda X, y, t: ExtraTreesRegressor(15, max_depth=8, random_state=0).fit(X, t), None),
    "gradient-boosting-binary": (
        lambda X, y, t: GradientBoostingClassifier(n_estimators=30, random_state=0).fit(X, y == 1), None),
    "gradient-boosting-regressor": (
        lambda X, y, t: GradientBoostingRegressor(n_estimators=30, random_state=0).fit(X, t), None),
    "hist-gradient-boosting-binary": (
        lambda X, y, t: HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(X, y == 1), NAN_OK),
    "hist-gradient-boosting-multiclass": (
        lambda X, y, t: HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, y), NAN_OK),
    "hist-gradient-boosting-regressor": (
        lambda X, y, t: HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X, t), NAN_OK),
    "xgboost-binary": (_xgb_binary, NAN_OK),
    "xgboost-multiclass": (lambda X, y, t: xgb.XGBClassifier(n_estimators=15, max_depth=4).fit(X, y), NAN_OK),
    "xgboost-regressor": (lambda X, y, t: xgb.XGBRegressor(n_estimators=20, max_depth=5).fit(X, t), NAN_OK),
    "lightgbm-binary": (lambda X, y, t: lgb.LGBMClassifier(n_estimators=25, verbose=-1).fit(X, y == 1), NAN_OK),
    "lightgbm-multiclass": (lambda X, y, t: lgb.LGBMClassifier(n_estimators=15, verbose=-1).fit(X, y), NAN_OK),
    "lightgbm-regressor": (lambda X, y, t: lgb.LGBMRegressor(n_estimators=25, verbose=-1).fit(X, t), NAN_OK),
}


def model_output(model, X, ex):
    """The output the explanation claims to explain, computed by the model itself."""
    n = len(X)
    if ex.output == "probability":
        proba = model.predict_proba(X)
        return proba[np.arange(n), np.searchsorted(model.classes_, ex.classes)]
    if isinstance(model, xgb.XGBModel):
        out = model.predict(X, output_margin=True)
    elif isinstance(model, lgb.LGBMModel):
        out = model.predict(X, raw_score=True)
    elif hasattr(model, "decision_function"):
        out = model.decision_function(X)
    else:
        out = model.predict(X)
    return out if out.ndim == 1 else out[np.arange(n), np.searchsorted(model.classes_, ex.classes)]


@pytest.fixture(scope="module")
def tree_data(data):
    X, y = data
    X_missing = X.copy()
    X_missing[np.random.default_rng(0).random(X.shape) < 0.08] = np.nan
    return X, X_missing, y


@pytest.mark.parametrize("name", list(TREE_MODELS))
def test_trees_equal_shap_tree_explainer(tree_data, name):
    X, X_missing, y = tree_data
    make, missing = TREE_MODELS[name]
    target = X[:, 1] + y  # a regression target without missing values
    X = X_missing if missing == NAN_OK else X
    model = make(X, y, target)
    rows = X[:120]
    ex = otel_rai.explain(model, rows)
    assert ex.method == "tree_path_dependent"
    explainer = shap.TreeExplainer(model)  # feature_perturbation="tree_path_dependent"
    multi = ex.classes is not None and len(model.classes_) > 2
    columns = np.searchsorted(model.classes_, ex.classes) if multi or ex.output == "probability" else 0
    output = model_output(model, rows, ex)
    if isinstance(model, xgb.XGBModel):
        # SHAP hands xgboost models to xgboost's own TreeSHAP, which computes in float32: agreement
        # to float32 precision of the margin. SHAP's own float64 algorithm on the same trees is the
        # exact oracle for the values.
        native = rows_of(explainer.shap_values(rows), columns)
        float32 = 1e-5 * max(1.0, np.abs(output).max())
        np.testing.assert_allclose(ex.values, native, rtol=0, atol=float32)
        expected = np.atleast_1d(explainer.expected_value)[columns]
        np.testing.assert_allclose(ex.base_values, expected, rtol=0, atol=float32)
        np.testing.assert_allclose(ex.output_values, output, rtol=0, atol=float32)  # xgboost sums in float32
        np.testing.assert_allclose(ex.base_values + ex.values.sum(1), ex.output_values, rtol=0, atol=ATOL)
        explainer.model.model_type = "internal"
        oracle = explainer.shap_values(rows.astype(np.float32), check_additivity=False)
    else:
        oracle = explainer.shap_values(rows)
        np.testing.assert_allclose(ex.base_values, np.atleast_1d(explainer.expected_value)[columns], rtol=0, atol=ATOL)
        assert_additive(ex, output)
    np.testing.assert_allclose(ex.values, rows_of(oracle, columns), rtol=0, atol=ATOL)


def test_multiclass_gradient_boosting_is_additive(data):
    X, y = data  # SHAP's TreeExplainer supports only binary GradientBoostingClassifier
    model = GradientBoostingClassifier(n_estimators=15, random_state=0).fit(X, y)
    ex = otel_rai.explain(model, X[:60])
    assert ex.output == "logit" and (ex.classes == model.predict(X[:60])).all()
    assert_additive(ex, model_output(model, X[:60], ex))


def test_binary_classifiers_explain_the_positive_class_multiclass_the_predicted(data):
    X, y = data
    binary = HistGradientBoostingClassifier(max_iter=10).fit(X, np.where(y == 1, "yes", "no"))
    assert set(otel_rai.explain(binary, X[:30]).classes) == {"yes"}
    multi = RandomForestClassifier(10, random_state=0).fit(X, y)
    assert (otel_rai.explain(multi, X[:30]).classes == multi.predict(X[:30])).all()


def test_every_tree_kernel_gives_the_same_values(data, monkeypatch):
    """Column tables, G tables and the per-row path: the same formulas, whichever memory allows."""
    X, y = data
    model = RandomForestClassifier(8, random_state=0).fit(X, y == 1)  # fully grown: wide paths
    tables = otel_rai.explain(model, X[:40])
    monkeypatch.setattr(treeshap, "MAX_COLUMN_BITS", 3)
    monkeypatch.setattr(treeshap, "MAX_G_BITS", 6)
    monkeypatch.setattr(treeshap, "MAX_G_ENTRIES", 5000)
    mixed = treeshap.TreeShap(treeshap_forest(model), treeshap.walk(treeshap_forest(model)))
    assert {type(k).__name__ for k in mixed._kernels_for(1)} == {"_ColumnTables", "_GTables", "_PerRow"}
    values, *_ = mixed.explain(X[:40].astype(np.float32), lambda s: np.ones(len(s), int))
    np.testing.assert_allclose(values, tables.values, rtol=0, atol=1e-12)


def treeshap_forest(model):
    from otel_rai.explanations.forest import extract

    return extract(model)


def test_hist_gradient_boosting_native_categorical_splits():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "region": pd.Categorical(rng.choice(["n", "s", "e", "w"], 600)),
        "income": rng.normal(size=600),
    })
    y = (frame.region.isin(["n", "e"]) ^ (frame.income > 0.5)).astype(int)
    model = HistGradientBoostingClassifier(max_iter=20, categorical_features="from_dtype").fit(frame, y)
    rows = frame.head(80).copy()
    rows.loc[rows.index[:5], "income"] = np.nan
    ex = otel_rai.explain(model, rows)
    assert ex.feature_names == ["region", "income"]
    assert_additive(ex, model.decision_function(rows))
    assert np.abs(ex.values[:, 0]).max() > 0.1  # the categorical column carries real attribution


def test_lightgbm_categorical_splits_equal_shap():
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.integers(0, 6, 800), rng.normal(size=800)]).astype(float)
    y = (np.isin(X[:, 0], [1, 4]) ^ (X[:, 1] > 0)).astype(int)
    model = lgb.LGBMClassifier(n_estimators=20, verbose=-1, min_child_samples=5).fit(X, y, categorical_feature=[0])
    rows = X[:100].copy()
    rows[:3, 0] = [np.nan, -1, 9]  # missing, negative and unseen codes go right
    ex = otel_rai.explain(model, rows)
    np.testing.assert_allclose(ex.values, shap.TreeExplainer(model).shap_values(rows), rtol=0, atol=ATOL)
    assert_additive(ex, model.predict(rows, raw_score=True))


def test_lightgbm_random_forest_mode_explains_the_averaged_output(data):
    X, y = data
    model = lgb.LGBMClassifier(boosting_type="rf", n_estimators=10, bagging_freq=1, bagging_fraction=0.8,
                               verbose=-1).fit(X, y == 1)
    ex = otel_rai.explain(model, X[:40])
    p = model.predict_proba(X[:40])[:, 1]
    assert_additive(ex, np.log(p / (1 - p)))  # predict_proba averages the trees
    # raw_score and pred_contrib (hence SHAP) add the trees up instead: n_estimators times ours
    np.testing.assert_allclose(10 * ex.values, shap.TreeExplainer(model).shap_values(X[:40]), rtol=0, atol=1e-5)


def test_saabas_fallback_past_the_budget_equals_shap_approximate(data):
    X, y = data
    model = RandomForestClassifier(20, random_state=0).fit(X, y == 1)
    ex = otel_rai.explain(model, X[:50], budget_us=1.0)
    assert ex.method == "saabas"
    oracle = shap.TreeExplainer(model).shap_values(X[:50], approximate=True)[:, :, 1]
    np.testing.assert_allclose(ex.values, oracle, rtol=0, atol=ATOL)
    assert_additive(ex, model.predict_proba(X[:50])[:, 1])
    assert otel_rai.explain(model, X[:2]).method == "tree_path_dependent"  # within the default budget


def test_method_can_be_forced(data):
    X, y = data
    model = HistGradientBoostingClassifier(max_iter=10).fit(X, y == 1)
    assert otel_rai.explain(model, X[:3], method="saabas").method == "saabas"
    with pytest.raises(ValueError, match="method must be one of"):
        otel_rai.explain(model, X[:3], method="kernel")
    with pytest.raises(UnsupportedModel):
        otel_rai.explain(SVC().fit(X, y), X[:3], method="tree_path_dependent")


# --- pipelines -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def credit():
    rng = np.random.default_rng(2)
    n = 400
    frame = pd.DataFrame({
        "income": rng.normal(50, 15, n),
        "debt_ratio": rng.random(n),
        "region": rng.choice(["north", "south", "east"], n),
        "channel": rng.choice(["web", "branch"], n),
    })
    score = 0.05 * frame.income - 3 * frame.debt_ratio + (frame.region == "south") - 0.5 * (frame.channel == "web")
    y = (score + rng.normal(0, 0.5, n) > score.median()).astype(int)
    return frame, y


def column_transformer():
    return ColumnTransformer([
        ("num", StandardScaler(), ["income", "debt_ratio"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["region", "channel"]),
    ])


def exact_shap_of_pipeline(score, frame, rows):
    """Oracle: interventional SHAP of the whole pipeline over its raw columns, with the whole frame
    as background. SHAP's masker needs numbers, so categories travel as integer codes."""
    categorical = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    categories = {c: np.unique(frame[c]) for c in categorical}

    def encode(table):
        return table.assign(**{c: np.searchsorted(v, table[c]) for c, v in categories.items()}).astype(float)

    def f(array):
        decoded = pd.DataFrame(array, columns=frame.columns)
        for c, v in categories.items():
            decoded[c] = v[decoded[c].astype(int)]
        return score(decoded.astype({c: float for c in frame.columns if c not in categories}))

    masker = shap.maskers.Independent(encode(frame).to_numpy(), max_samples=len(frame))
    return shap.explainers.Exact(f, masker)(encode(rows).to_numpy())


def test_pipeline_with_one_hot_is_explained_in_raw_columns_and_equals_shap(credit):
    frame, y = credit
    pipe = make_pipeline(column_transformer(), LogisticRegression()).fit(frame, y)
    rows = frame.head(25)
    ex = otel_rai.explain(pipe, rows, background=frame)
    assert ex.feature_names == list(frame.columns) and ex.values.shape == (25, 4)
    assert ex.method == "linear" and ex.output == "log-odds"
    assert_additive(ex, pipe.decision_function(rows))
    oracle = exact_shap_of_pipeline(pipe.decision_function, frame, rows)
    np.testing.assert_allclose(ex.values, oracle.values, rtol=0, atol=ATOL)
    np.testing.assert_allclose(ex.base_values, oracle.base_values, rtol=0, atol=ATOL)


def test_nested_preprocessing_maps_every_output_to_its_raw_column(credit):
    frame, y = credit
    frame = frame.assign(tenure=np.arange(len(frame)) % 17 * 1.0)
    frame.loc[frame.index[::7], "income"] = np.nan
    numeric = make_pipeline(SimpleImputer(add_indicator=True), StandardScaler())  # adds missingindicator_income
    pre = ColumnTransformer(
        [("num", numeric, ["income", "debt_ratio"]), ("cat", OneHotEncoder(drop="first"), ["region", "channel"])],
        remainder="passthrough",  # tenure
    )
    pipe = make_pipeline(pre, Ridge()).fit(frame, y)
    rows = frame.head(20)
    ex = otel_rai.explain(pipe, rows, background=frame)
    assert ex.method == "linear" and ex.feature_names == list(frame.columns)
    assert_additive(ex, pipe.predict(rows))
    oracle = exact_shap_of_pipeline(pipe.predict, frame, rows)
    np.testing.assert_allclose(ex.values, oracle.values, rtol=0, atol=ATOL)


def test_tree_pipeline_sums_treeshap_of_the_expanded_columns(credit):
    frame, y = credit
    pipe = make_pipeline(column_transformer(), RandomForestClassifier(20, max_depth=6, random_state=0)).fit(frame, y)
    rows = frame.head(30)
    ex = otel_rai.explain(pipe, rows)
    assert ex.method == "tree_path_dependent" and ex.values.shape == (30, 4)
    transformed = pipe[:-1].transform(rows)
    transformed = transformed.toarray() if hasattr(transformed, "toarray") else transformed
    per_column = shap.TreeExplainer(pipe[-1]).shap_values(transformed)[:, :, 1]
    names = list(pipe[:-1].get_feature_names_out())
    for j, raw in enumerate(frame.columns):
        mine = [i for i, n in enumerate(names) if n.split("__", 1)[1].startswith(raw)]
        np.testing.assert_allclose(ex.values[:, j], per_column[:, mine].sum(1), rtol=0, atol=ATOL)
    assert_additive(ex, pipe.predict_proba(rows)[:, 1])


def test_pipeline_that_mixes_columns_falls_back_to_the_agnostic_method(data):
    X, y = data
    pipe = make_pipeline(StandardScaler(), PCA(3), LogisticRegression()).fit(X, y == 1)
    ex = otel_rai.explain(pipe, X[:10], background=X)
    assert ex.method == "permutation" and ex.output == "probability" and ex.values.shape == (10, 8)
    np.testing.assert_allclose(ex.base_values, pipe.predict_proba(X)[:, 1].mean(), rtol=0, atol=1e-12)
    assert_additive(ex, pipe.predict_proba(X[:10])[:, 1])


# --- model-agnostic ------------------------------------------------------------------------------------


class Scorecard(ClassifierMixin, BaseEstimator):
    """A hand-written sklearn-API classifier: no coef_, no trees, a non-linear score."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict_proba(self, X):
        X = np.asarray(X, dtype=float)
        z = np.tanh(X[:, 0]) * X[:, 1] + 0.3 * X[:, 2] ** 2 - 0.5 * X[:, 3]
        p = 1.0 / (1.0 + np.exp(-z))
        return np.column_stack([1 - p, p])

    def predict(self, X):
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(int)]


def test_custom_estimator_uses_the_agnostic_method_and_equals_exact_shap():
    X, y = make_classification(300, 5, random_state=3)
    model = Scorecard().fit(X, y)
    background = X[:100]  # 2^5 coalitions x 100 rows fit the default 4096 evaluations: exact
    ex = otel_rai.explain(model, X[100:115], background=background)
    assert ex.method == "exact" and ex.output == "probability"
    assert_additive(ex, model.predict_proba(X[100:115])[:, 1])
    oracle = shap.explainers.Exact(lambda A: model.predict_proba(A)[:, 1],
                                   shap.maskers.Independent(background, max_samples=len(background)))(X[100:115])
    np.testing.assert_allclose(ex.values, oracle.values, rtol=0, atol=ATOL)
    np.testing.assert_allclose(ex.base_values, oracle.base_values, rtol=0, atol=ATOL)


class Interactions(RegressorMixin, BaseEstimator):
    """A fast non-additive regressor: pairwise products and a saturation."""

    def fit(self, X, y):
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        return X[:, 0] * X[:, 1] + np.tanh(X[:, 2] + X[:, 3]) + X[:, 4:].sum(axis=1) - X[:, 5] * X[:, 6]


def test_permutation_sampling_is_additive_deterministic_and_close_to_exact():
    X = np.random.default_rng(4).normal(size=(260, 10))
    model = Interactions().fit(X, None)
    background = X[:200]
    ex = otel_rai.explain(model, X[200:230], background=background)
    assert ex.method == "permutation"
    assert_additive(ex, model.predict(X[200:230]))
    np.testing.assert_array_equal(otel_rai.explain(model, X[200:230], background=background).values, ex.values)
    exact = otel_rai.explain(model, X[200:230], background=background, method="exact")
    np.testing.assert_allclose(ex.base_values, exact.base_values, rtol=0, atol=1e-9)  # v(∅): whole background
    relative = np.abs(ex.values - exact.values).sum(1) / np.abs(exact.values).sum(1)
    assert relative.mean() < 0.2  # docs/explanations.md: 0.07-0.15 for 8-12 features at 4096 evaluations


def test_agnostic_method_needs_a_background():
    X, y = make_classification(100, 4, random_state=0)
    with pytest.raises(MissingBackground):
        otel_rai.explain(Scorecard().fit(X, y), X[:2])


def test_explaining_under_instrumentation_records_no_extra_decisions(audit):
    X, y = make_classification(200, 4, random_state=0)
    model = Scorecard().fit(X, y)
    otel_rai.explain(model, X[:3], background=X)
    assert audit.spans() == []
