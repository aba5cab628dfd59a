"""Every supported tree ensemble as one `Forest`: flat node arrays the explainers share.

A forest's output is ``base + sum of the values of the leaves a row reaches`` (one column per
output), in the space the trees add up in: log-odds for boosted classifiers, probabilities for
forests of classification trees, the prediction for regressors. `extract` knows where each library
keeps its trees; the splitting rule of each library (``<=`` or ``<``, where missing values go,
categorical sets) is data here, applied by `Forest.goes_left`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from otel_rai.explanations.errors import UnsupportedModel

#: Largest categorical code a categorical split can test (HistGradientBoosting: 255 bins).
_MAX_CATEGORY = 1 << 16
#: LightGBM counts a value within this of 0.0 as zero (its kZeroThreshold), for ``zero_as_missing``.
_LIGHTGBM_ZERO = 1e-35


@dataclass
class Forest:
    """Flat node arrays of all trees; node ``roots[t]`` is the root of tree ``t``."""

    left: np.ndarray  # int64 child taken when the split holds; -1 at leaves
    right: np.ndarray
    feature: np.ndarray  # int64 split feature; -1 at leaves
    threshold: np.ndarray  # float64 (float32-valued where the library compares in float32)
    default_left: np.ndarray  # bool: where a missing value goes
    cover: np.ndarray  # float64 training cover (samples, weights or hessians) of every node
    value: np.ndarray  # (n_nodes, n_outputs) leaf values, already scaled (learning rate, 1/n_trees)
    roots: np.ndarray
    base: np.ndarray  # (n_outputs,) added to the sum of leaves
    output: str  # what an output column is: one of `otel_rai.explanations.explanation.OUTPUTS`
    n_features: int
    prepare: Callable[[Any], np.ndarray]  # the model's own input conversion to a float matrix
    strict: bool = False  # the split holds when x < threshold (xgboost), not x <= threshold
    nan_as_zero: np.ndarray | None = None  # lightgbm: NaN compares as 0.0 at these nodes
    zero_missing: np.ndarray | None = None  # lightgbm: 0.0 counts as missing at these nodes
    categories: np.ndarray | None = None  # (n_nodes,) row in `cat_left`, -1 for numeric splits
    cat_left: np.ndarray | None = None  # (n_sets, n_codes) bool: this code goes left
    cat_known: np.ndarray | None = None  # (n_sets, n_codes) bool: known code (unknown -> default)
    feature_map: np.ndarray | None = None  # prepared column -> input column, when they differ
    #: The model's own raw output (n_rows, n_outputs) through its public API, to check the forest.
    reference: Callable[[Any], np.ndarray] | None = None

    @property
    def n_outputs(self) -> int:
        """The number of output columns (1, or one per class)."""
        return self.value.shape[1]

    def goes_left(self, X: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """Whether each row of `X` goes left at `nodes` (internal nodes; shape (k,) or (n_rows, k))."""
        feature = self.feature[nodes]
        x = X[:, feature] if nodes.ndim == 1 else np.take_along_axis(X, feature, axis=1)
        threshold = self.threshold[nodes]
        missing = np.isnan(x)
        any_missing = missing.any()
        if any_missing and self.nan_as_zero is not None:
            x = np.where(missing & self.nan_as_zero[nodes], 0.0, x)
            missing = np.isnan(x)
        if self.zero_missing is not None:
            missing |= self.zero_missing[nodes] & (np.abs(x) <= _LIGHTGBM_ZERO)
            any_missing = True
        left = x < threshold if self.strict else x <= threshold
        if self.categories is not None:
            sets = self.categories[nodes]
            categorical = sets >= 0
            if categorical.any():
                left, missing = self._categorical(x, sets, categorical, left, missing)
                any_missing = True
        if any_missing:
            left = np.where(missing, self.default_left[nodes], left)
        return left

    def _categorical(self, x, sets, categorical, left, missing):
        n_codes = self.cat_left.shape[1]
        valid = categorical & (x >= 0) & (x < n_codes)  # NaN compares False
        code = np.where(valid, x, 0).astype(np.int64)
        row = np.where(categorical, sets, 0)
        known = valid & self.cat_known[row, code]
        left = np.where(categorical, known & self.cat_left[row, code], left)
        missing = np.where(categorical, ~known, missing)
        return left, missing


# --- assembling a Forest from per-tree node arrays ------------------------------------------------


@dataclass
class _Tree:
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    cover: np.ndarray
    value: np.ndarray  # (n_nodes, n_outputs)
    nan_as_zero: np.ndarray | None = None
    zero_missing: np.ndarray | None = None
    #: categorical splits: (node, codes that go left, known codes or None for "all known")
    sets: list[tuple[int, np.ndarray, np.ndarray | None]] = field(default_factory=list)


def _assemble(trees: list[_Tree], base: np.ndarray, **fields: Any) -> Forest:
    offsets = np.cumsum([0] + [len(t.left) for t in trees])

    def joined(name: str, dtype: type) -> np.ndarray:
        return np.concatenate([np.asarray(getattr(t, name), dtype) for t in trees])

    def children(name: str) -> np.ndarray:
        shifted = [np.where(getattr(t, name) >= 0, getattr(t, name) + o, -1) for t, o in zip(trees, offsets)]
        return np.concatenate(shifted)

    forest = Forest(
        left=children("left"),
        right=children("right"),
        feature=joined("feature", np.int64),
        threshold=joined("threshold", np.float64),
        default_left=joined("default_left", bool),
        cover=joined("cover", np.float64),
        value=np.concatenate([np.asarray(t.value, np.float64) for t in trees]),
        roots=offsets[:-1].astype(np.int64),
        base=np.asarray(base, np.float64).reshape(-1),
        **fields,
    )
    forest.feature[forest.left < 0] = -1
    if trees[0].nan_as_zero is not None:
        forest.nan_as_zero = joined("nan_as_zero", bool)
        forest.zero_missing = joined("zero_missing", bool)
    sets = [(o + node, left, known) for t, o in zip(trees, offsets) for node, left, known in t.sets]
    if sets:
        _set_categories(forest, sets)
    if (forest.cover[forest.feature >= 0] <= 0).any():
        raise UnsupportedModel("a split node has no training cover")
    return forest


def _set_categories(forest: Forest, sets: list[tuple[int, np.ndarray, np.ndarray | None]]) -> None:
    n_codes = max(len(left) for _, left, _ in sets)
    forest.categories = np.full(len(forest.left), -1, np.int64)
    forest.cat_left = np.zeros((len(sets), n_codes), bool)
    forest.cat_known = np.ones((len(sets), n_codes), bool)
    for row, (node, left, known) in enumerate(sets):
        forest.categories[node] = row
        forest.cat_left[row, : len(left)] = left
        if known is not None:
            forest.cat_known[row] = False
            forest.cat_known[row, : len(known)] = known


def _one_hot_column(values: np.ndarray, column: int, n_outputs: int) -> np.ndarray:
    out = np.zeros((len(values), n_outputs))
    out[:, column] = values
    return out


# --- scikit-learn ----------------------------------------------------------------------------------


def _sklearn_tree(tree: Any, value: np.ndarray) -> _Tree:
    missing_left = getattr(tree, "missing_go_to_left", None)
    return _Tree(
        left=tree.children_left,
        right=tree.children_right,
        feature=tree.feature,
        threshold=tree.threshold,
        default_left=np.zeros(tree.node_count, bool) if missing_left is None else np.asarray(missing_left, bool),
        cover=tree.weighted_n_node_samples,
        value=value,
    )


def _matrix(model: Any, dtype: type, convert: Callable[[Any], Any] | None = None) -> Callable[[Any], np.ndarray]:
    """Rows as the dense float matrix the trees compare. A 2-D array of the model's width is taken as
    is (the model's own predict has validated it); anything else goes through `convert`, by default
    the model's input validation (DataFrame column checks included)."""
    width = model.n_features_in_

    def prepare(X: Any) -> np.ndarray:
        if hasattr(X, "toarray"):  # scipy sparse: the trees see zeros where it stores none
            X = X.toarray()
        if isinstance(X, np.ndarray) and X.ndim == 2 and X.shape[1] == width:
            return np.asarray(X, dtype)
        if convert is not None:
            return np.asarray(convert(X), dtype)
        from sklearn.utils.validation import validate_data

        return validate_data(model, X, reset=False, dtype=dtype, ensure_all_finite=False)

    return prepare


def _check_single_output(model: Any) -> None:
    if getattr(model, "n_outputs_", 1) != 1:
        raise UnsupportedModel("multi-output trees")


def _sklearn_forest(model: Any) -> Forest:
    """DecisionTree*, RandomForest*, ExtraTrees*: the mean of the trees' probabilities or values."""
    _check_single_output(model)
    estimators = getattr(model, "estimators_", [model])
    scale = 1.0 / len(estimators)
    is_classifier = hasattr(model, "classes_")
    trees = []
    for estimator in estimators:
        tree = estimator.tree_
        value = tree.value[:, 0, :].astype(np.float64)
        if is_classifier:
            value = value / value.sum(axis=1, keepdims=True)
        trees.append(_sklearn_tree(tree, value * scale))
    n_outputs = trees[0].value.shape[1]
    return _assemble(
        trees,
        np.zeros(n_outputs),
        output="probability" if is_classifier else "raw",
        n_features=model.n_features_in_,
        prepare=_matrix(model, np.float32),  # sklearn trees compare float32 inputs
        reference=_columns(model.predict_proba if is_classifier else model.predict),
    )


def _gradient_boosting(model: Any) -> Forest:
    """GradientBoosting*: init prediction + learning_rate * sum of regression trees per class."""
    from sklearn.dummy import DummyClassifier, DummyRegressor

    if not (model.init_ == "zero" or isinstance(model.init_, (DummyClassifier, DummyRegressor))):
        raise UnsupportedModel("GradientBoosting with a non-constant init estimator")
    n_outputs = model.estimators_.shape[1]
    zero_row = np.zeros((1, model.n_features_in_), dtype=np.float32)
    base = model._raw_predict_init(zero_row)[0]  # constant: the init estimator ignores X
    trees = [
        _sklearn_tree(tree, _one_hot_column(tree.value[:, 0, 0] * model.learning_rate, k, n_outputs))
        for stage in model.estimators_
        for k, tree in enumerate(estimator.tree_ for estimator in stage)
    ]
    return _assemble(
        trees,
        base,
        output=_boosting_output(model, n_outputs),
        n_features=model.n_features_in_,
        prepare=_matrix(model, np.float32),  # sklearn trees compare float32 inputs
        reference=_columns(model.decision_function if hasattr(model, "classes_") else model.predict),
    )


def _columns(
    method: Callable[[Any], Any], link: Callable[[np.ndarray], np.ndarray] | None = None
) -> Callable[[Any], np.ndarray]:
    """A model method's output as (n_rows, n_outputs) float64, optionally through `link`."""

    def output(X: Any) -> np.ndarray:
        out = np.asarray(method(X), np.float64)
        out = out.reshape(len(out), -1)
        return link(out) if link is not None else out

    return output


def _boosting_output(model: Any, n_outputs: int, link: str = "identity") -> str:
    if hasattr(model, "classes_"):
        return "log-odds" if n_outputs == 1 else "logit"
    return "log-prediction" if link == "log" else "raw"


def _hist_gradient_boosting(model: Any) -> Forest:
    """HistGradientBoosting*: baseline + sum of leaf values (shrinkage is already in the leaves)."""
    n_outputs = model.n_trees_per_iteration_
    known = f_idx_map = feature_map = None
    if model._preprocessor is None:
        prepare = _matrix(model, np.float64)
    else:  # HGB's own encoder puts the categorical columns first
        known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
        known = _decode_bitsets(known)
        feature_map = np.concatenate([np.flatnonzero(model.is_categorical_), np.flatnonzero(~model.is_categorical_)])

        def prepare(X: Any) -> np.ndarray:
            return np.asarray(model._preprocess_X(X, reset=False), np.float64)

    trees = [
        _hgb_tree(predictor, k, n_outputs, known, f_idx_map)
        for iteration in model._predictors
        for k, predictor in enumerate(iteration)
    ]
    return _assemble(
        trees,
        model._baseline_prediction.reshape(-1),
        output=_boosting_output(model, n_outputs, _hgb_link(model)),
        n_features=model.n_features_in_,
        prepare=prepare,
        feature_map=feature_map,
        reference=_columns(model.decision_function) if hasattr(model, "classes_")
        else _columns(model.predict, np.log if _hgb_link(model) == "log" else None),
    )


def _hgb_link(model: Any) -> str:
    return "log" if getattr(model, "loss", "") in ("poisson", "gamma") else "identity"


def _hgb_tree(predictor: Any, k: int, n_outputs: int, known: Any, f_idx_map: Any) -> _Tree:
    """One HGB predictor. Categorical split: listed codes go left, other known codes right, and
    unknown codes, negative values and NaN follow ``missing_go_to_left``."""
    nodes = predictor.nodes
    leaf = nodes["is_leaf"].astype(bool)
    tree = _Tree(
        left=np.where(leaf, -1, nodes["left"].astype(np.int64)),
        right=np.where(leaf, -1, nodes["right"].astype(np.int64)),
        feature=np.where(leaf, -1, nodes["feature_idx"].astype(np.int64)),
        threshold=nodes["num_threshold"],
        default_left=nodes["missing_go_to_left"].astype(bool),
        cover=nodes["count"],
        value=_one_hot_column(np.where(leaf, nodes["value"], 0.0), k, n_outputs),
    )
    if known is not None:
        left_sets = _decode_bitsets(predictor.raw_left_cat_bitsets)
        for node in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf):
            feature = nodes["feature_idx"][node]
            tree.sets.append((int(node), left_sets[nodes["bitset_idx"][node]], known[f_idx_map[feature]]))
    return tree


def _decode_bitsets(bitsets: np.ndarray) -> np.ndarray:
    """(n, 8) uint32 bitsets of 256 categories -> (n, 256) bool."""
    words = np.asarray(bitsets, dtype="<u4").reshape(len(bitsets), -1)
    return np.unpackbits(words.view(np.uint8), axis=1, bitorder="little").astype(bool)


# --- xgboost -----------------------------------------------------------------------------------------

_XGB_LINKS = {
    "binary:logistic": "logit",
    "reg:logistic": "logit",
    "count:poisson": "log",
    "reg:gamma": "log",
    "reg:tweedie": "log",
    "survival:cox": "log",
}


def _xgboost(model: Any) -> Forest:
    """XGBClassifier/XGBRegressor (gbtree): base margin + sum of leaves, split ``x < threshold``."""
    booster = model.get_booster()
    learner = json.loads(booster.save_raw("json"))["learner"]
    gbm = learner["gradient_booster"]
    if gbm["name"] != "gbtree":
        raise UnsupportedModel(f"xgboost booster {gbm['name']}")
    objective = learner["objective"]["name"]
    params = learner["learner_model_param"]
    n_outputs = max(int(params["num_class"]), int(params["num_target"]), 1)
    base = np.asarray(json.loads(params["base_score"]), np.float64).reshape(-1)
    link = _XGB_LINKS.get(objective, "identity")
    if link == "logit":
        base = np.log(base / (1.0 - base))
    elif link == "log":
        base = np.log(base)
    base = np.broadcast_to(base, (n_outputs,)).copy()
    model_json = gbm["model"]
    n_trees = _xgb_tree_limit(model, model_json)
    trees = []
    for tree, group in zip(model_json["trees"][:n_trees], model_json["tree_info"][:n_trees]):
        if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise UnsupportedModel("xgboost multi-target trees")
        if any(tree["split_type"]):
            raise UnsupportedModel("xgboost categorical splits")
        left = np.asarray(tree["left_children"], np.int64)
        condition = np.asarray(tree["split_conditions"], np.float32).astype(np.float64)
        trees.append(
            _Tree(
                left=left,
                right=np.asarray(tree["right_children"], np.int64),
                feature=np.asarray(tree["split_indices"], np.int64),
                threshold=condition,
                default_left=np.asarray(tree["default_left"], bool),
                cover=np.asarray(tree["sum_hessian"], np.float64),
                value=_one_hot_column(np.where(left < 0, condition, 0.0), int(group), n_outputs),
            )
        )
    return _assemble(
        trees,
        base,
        output=_boosting_output(model, n_outputs if hasattr(model, "classes_") else 1, link),
        n_features=int(params["num_feature"]),
        prepare=_matrix(model, np.float32, np.asarray),  # xgboost compares in float32
        strict=True,
        reference=_columns(lambda X: model.predict(X, output_margin=True)),
    )


def _xgb_tree_limit(model: Any, model_json: dict) -> int:
    """Trees up to the best iteration when early stopping chose one (what predict uses)."""
    n_trees = len(model_json["trees"])
    best = getattr(model, "best_iteration", None) if getattr(model, "early_stopping_rounds", None) else None
    indptr = model_json.get("iteration_indptr")
    if best is None or not indptr:
        return n_trees
    return min(n_trees, int(indptr[int(best) + 1]))


# --- lightgbm ----------------------------------------------------------------------------------------


def _lightgbm(model: Any) -> Forest:
    """LGBMClassifier/LGBMRegressor: sum of leaves (the init score lives in the first trees)."""
    booster = model.booster_
    dump = booster.dump_model()
    if dump.get("pandas_categorical"):
        raise UnsupportedModel("lightgbm pandas categorical columns")
    n_outputs = int(dump["num_tree_per_iteration"])
    n_iterations = booster.current_iteration()
    best = getattr(model, "best_iteration_", None)
    if best:
        n_iterations = min(n_iterations, int(best))
    infos = dump["tree_info"][: n_iterations * n_outputs]
    if any(info.get("is_linear") for info in infos):
        raise UnsupportedModel("lightgbm linear trees")
    scale = 1.0 / n_iterations if dump.get("average_output") else 1.0
    trees = [_lgbm_tree(info["tree_structure"], i % n_outputs, n_outputs, scale) for i, info in enumerate(infos)]
    objective = dump["objective"].split()[0]
    link = "log" if objective in ("poisson", "gamma", "tweedie") else "identity"
    return _assemble(
        trees,
        np.zeros(n_outputs),
        output=_boosting_output(model, n_outputs, link),
        n_features=int(dump["max_feature_idx"]) + 1,
        prepare=_matrix(model, np.float64, np.asarray),
        # rf mode: predict_proba averages the trees, but raw_score (and pred_contrib) add them up;
        # the explained output is the one the decision uses, the average.
        reference=_columns(lambda X: model.predict(X, raw_score=True) * scale),
    )


def _lgbm_tree(root: dict, k: int, n_outputs: int, scale: float) -> _Tree:
    nodes: list[dict] = []
    left: list[int] = []
    right: list[int] = []
    stack = [(root, -1, False)]
    while stack:  # preorder; each child links itself into its parent's slot
        node, parent, is_left = stack.pop()
        index = len(nodes)
        nodes.append(node)
        left.append(-1)
        right.append(-1)
        if parent >= 0:
            (left if is_left else right)[parent] = index
        if "split_index" in node:
            stack.append((node["right_child"], index, False))
            stack.append((node["left_child"], index, True))
    split = np.asarray(["split_index" in n for n in nodes])
    categorical = np.asarray([s and n["decision_type"] == "==" for s, n in zip(split, nodes)], bool)
    numeric = split & ~categorical
    missing = [n.get("missing_type", "None") for n in nodes]
    tree = _Tree(
        left=np.asarray(left),
        right=np.asarray(right),
        feature=np.asarray([n["split_feature"] if s else -1 for s, n in zip(split, nodes)]),
        threshold=np.asarray([n["threshold"] if s else np.nan for s, n in zip(numeric, nodes)], np.float64),
        # categorical: NaN goes right
        default_left=np.asarray([bool(n.get("default_left")) for n in nodes]) & ~categorical,
        cover=np.asarray([n["internal_count"] if s else n.get("leaf_count", 0) for s, n in zip(split, nodes)],
                         np.float64),
        value=_one_hot_column(
            np.asarray([0.0 if s else n["leaf_value"] * scale for s, n in zip(split, nodes)]), k, n_outputs
        ),
        nan_as_zero=np.asarray([m != "NaN" for m in missing]) & numeric,
        zero_missing=np.asarray([m == "Zero" for m in missing]) & numeric,
    )
    for node in np.flatnonzero(categorical):
        codes = [int(c) for c in str(nodes[node]["threshold"]).split("||")]
        codes = [c for c in codes if c < _MAX_CATEGORY]
        left_codes = np.zeros(max(codes, default=0) + 1, bool)
        left_codes[codes] = True
        tree.sets.append((int(node), left_codes, None))  # every other code goes right
    return tree


# --- dispatch ------------------------------------------------------------------------------------------


def _qualified(cls: type) -> str:
    return f"{cls.__module__.split('.')[0]}.{cls.__name__}"


_EXTRACTORS: dict[str, Callable[[Any], Forest]] = {
    **{f"sklearn.{name}": _sklearn_forest for name in (
        "DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor",
        "RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier", "ExtraTreesRegressor",
    )},
    "sklearn.GradientBoostingClassifier": _gradient_boosting,
    "sklearn.GradientBoostingRegressor": _gradient_boosting,
    "sklearn.HistGradientBoostingClassifier": _hist_gradient_boosting,
    "sklearn.HistGradientBoostingRegressor": _hist_gradient_boosting,
    "xgboost.XGBClassifier": _xgboost,
    "xgboost.XGBRegressor": _xgboost,
    "xgboost.XGBRFClassifier": _xgboost,
    "xgboost.XGBRFRegressor": _xgboost,
    "lightgbm.LGBMClassifier": _lightgbm,
    "lightgbm.LGBMRegressor": _lightgbm,
}


def is_tree_model(model: Any) -> bool:
    """Whether `extract` knows the class of `model`."""
    return _qualified(type(model)) in _EXTRACTORS


def extract(model: Any) -> Forest:
    """The `Forest` of a fitted tree ensemble; `UnsupportedModel` for what it cannot represent."""
    extractor = _EXTRACTORS.get(_qualified(type(model)))
    if extractor is None:
        raise UnsupportedModel(f"{type(model).__name__} is not a supported tree ensemble")
    return extractor(model)
