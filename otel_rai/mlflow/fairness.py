"""Fairness before deployment: a model's fairness figures on validation data, logged to an MLflow run.

    check = otel_rai.mlflow.log_fairness(model, X_val, y_val, sensitive_features=["sex"])  # runs.py
    check.passed    # False when a threshold is violated; the run is tagged otel_rai.fairness=fail

The figures are the audit report's (`otel_rai.report.figures`, on the definitions of
`otel_rai.fairness.metrics` that the streaming monitor uses) over the whole validation set: selection
rate, TPR and FPR per group; demographic parity and equalized odds differences and ratios. Every group
takes part (``min_group_size`` is 1 unless a `FairnessConfig` says otherwise), as in Fairlearn, whose
``between_groups`` values these equal; where Fairlearn reports 0 or NaN for a figure the data do not
support, there is no value (``docs/fairness.md``). A value is judged against the config's thresholds
(default: a demographic parity ratio of at least 0.8, the four-fifths rule, and an equalized odds
difference of at most 0.1); a figure without a value violates nothing.

The run gets the metrics (``fairness.<attribute>.<figure>``), the HTML audit report
(``fairness/report.html``) and the tags ``otel_rai.fairness`` (pass or fail) and
``otel_rai.fairness.violations``. `fairness_metrics` offers the same figures to ``mlflow.models.evaluate``.
Imports neither the session nor the capture path, nor the explainers: ``otel-rai check`` runs it;
`otel_rai.mlflow.runs.log_fairness` adds the explanations of the validation rows to the report.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from otel_rai import semconv
from otel_rai.report import html
from otel_rai.report.figures import AttributeFigures, DecisionRecord, figures
from otel_rai.settings import FairnessConfig

#: Where the HTML report goes among the run's artifacts.
REPORT_ARTIFACT = "fairness/report.html"
#: Validation data is judged as a whole: every group counts, as in Fairlearn.
VALIDATION_MIN_GROUP_SIZE = 1
#: The label of a decision below ``score_threshold`` (any label but the positive one would do).
BELOW_THRESHOLD = "(below threshold)"
#: The version named in the report when none is given.
UNVERSIONED = "validation"
#: Characters MLflow refuses in a metric name (``/`` only in `mlflow.models.evaluate`'s, but it is the same
#: name in both places).
_METRIC_NAME_UNSAFE = re.compile(r"[^\w.\- :]")

#: The figures of a `otel_rai.fairness.metrics.Summary` that are one number per attribute.
FIGURES = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
           "equalized_odds_ratio")
#: Its per-group rates.
RATES = ("selection_rate", "true_positive_rate", "false_positive_rate")

Sensitive = Sequence["str | tuple[str, ...]"] | Mapping[str, Sequence[Any]]


def validation_config(config: FairnessConfig | None = None) -> FairnessConfig:
    """`config`, else the defaults with every group counted (``VALIDATION_MIN_GROUP_SIZE``)."""
    return config if config is not None else FairnessConfig(min_group_size=VALIDATION_MIN_GROUP_SIZE)


@dataclass(frozen=True)
class FairnessCheck:
    """The fairness figures of a model on validation data, and how they compare with the thresholds."""

    model: str
    version: str
    positive_label: Any
    config: FairnessConfig
    attributes: list[AttributeFigures]
    #: ``<attribute>/<figure>`` of each violated threshold.
    violations: tuple[str, ...]
    report: str = field(repr=False)

    @property
    def passed(self) -> bool:
        """True when no threshold is violated."""
        return not self.violations

    def __bool__(self) -> bool:
        return self.passed

    def metrics(self) -> dict[str, float]:
        """The figures that have a value, by MLflow metric name."""
        out = {}
        for a in self.attributes:
            s = a.summary
            for figure in FIGURES:
                value = getattr(s, figure)
                if value is not None:
                    out[metric_name(a.attribute, figure)] = value
            for rate in RATES:
                for group, value in getattr(s, rate).items():
                    out[metric_name(a.attribute, rate, group)] = value
        return out


def metric_name(*parts: str) -> str:
    """``fairness.<part>.<part>...``, with the characters MLflow refuses in a metric name as ``_``."""
    return semconv.MLFLOW_FAIRNESS_METRIC_PREFIX + ".".join(_METRIC_NAME_UNSAFE.sub("_", p) for p in parts)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT
    except TypeError:  # pandas.NA
        return True


def _label(value: Any) -> str:
    """A group value as the monitor labels it: the string, or ``(missing)``."""
    return semconv.MISSING_GROUP if _is_missing(value) else str(value)


def _column(X: Any, name: str) -> list[Any]:
    columns = getattr(X, "columns", None)
    if columns is None or name not in columns:
        raise ValueError(f"otel-rai: sensitive feature {name!r} is not a column of the data; give its values "
                         "as sensitive_features={name: values} instead")
    return X[name].tolist()


def groups_of(X: Any, sensitive_features: Sensitive, n: int) -> dict[str, list[str]]:
    """{attribute: one group label per row}. Names (``"sex"``, an intersection ``"sex&race"`` or
    ``("sex", "race")``) are columns of `X`; a mapping gives each attribute's values directly."""
    out: dict[str, list[str]] = {}
    if isinstance(sensitive_features, Mapping):
        for name, values in sensitive_features.items():
            values = list(values)
            if len(values) != n:
                raise ValueError(f"otel-rai: {len(values)} values of sensitive feature {name!r} for {n} rows")
            out[str(name)] = [_label(v) for v in values]
        return out
    if isinstance(sensitive_features, str):
        sensitive_features = [sensitive_features]
    for spec in sensitive_features:
        parts = tuple(spec.split(semconv.INTERSECTION)) if isinstance(spec, str) else tuple(spec)
        if not parts or not all(isinstance(p, str) and p for p in parts):
            raise ValueError(f"otel-rai: sensitive feature {spec!r} must be a name or a tuple of names")
        columns = [[_label(v) for v in _column(X, p)] for p in parts]
        out[semconv.INTERSECTION.join(parts)] = [semconv.INTERSECTION.join(t) for t in zip(*columns)]
    return out


def positive_label_of(model: Any, config: FairnessConfig) -> Any:
    """The monitor's rule: ``positive_label``, else the second of two ``classes_``, else 1."""
    if config.positive_label is not None:
        return config.positive_label
    classes = getattr(model, "classes_", None)
    if classes is None:
        return 1
    classes = list(classes)
    if len(classes) != 2:
        raise ValueError(f"otel-rai: a model with {len(classes)} classes needs FairnessConfig(positive_label=...)")
    return classes[1]


def model_input(model: Any, X: Any) -> Any:
    """`X` as the model takes it: a DataFrame with more columns than the model was fitted on (the
    sensitive ones, say) is cut down to the model's columns."""
    names = getattr(model, "feature_names_in_", None)
    columns = getattr(X, "columns", None)
    if names is None or columns is None:
        return X
    names = list(names)
    return X[names] if set(names) < set(columns) else X


def decided(model: Any, X: Any, config: FairnessConfig) -> list[Any]:
    """The model's decision label per row (not audited: validation is not deciding); with
    ``score_threshold``, the positive label where the positive class scores at least the threshold."""
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    data = model_input(model, X)
    with suppress_instrumentation():
        if config.score_threshold is None:
            return list(model.predict(data))
        label = positive_label_of(model, config)
        classes = list(getattr(model, "classes_", []))
        if label not in classes:
            raise ValueError(f"otel-rai: the positive label {label!r} is not one of the model's classes")
        scores = model.predict_proba(data)[:, classes.index(label)]
    return [label if s >= config.score_threshold else BELOW_THRESHOLD for s in scores]


def evaluate_decisions(
    decisions: Sequence[Any],
    y_true: Sequence[Any],
    groups: Mapping[str, Sequence[str]],
    positive_label: Any,
    *,
    config: FairnessConfig | None = None,
    model_name: str = "model",
    version: str = UNVERSIONED,
    attributions: Sequence[Mapping[str, float]] = (),
) -> FairnessCheck:
    """The fairness check of given decisions (labels) against the truth, per group. `attributions`
    ({feature: attribution} of the first rows) fill the report's most attributed features."""
    config = validation_config(config)
    truth = list(y_true)
    if len(truth) != len(decisions):
        raise ValueError(f"otel-rai: {len(truth)} true labels for {len(decisions)} decisions")
    now = time.time()
    records = [
        DecisionRecord(decision_id=str(i), model=model_name, version=version, timestamp=now, output=decision,
                       groups={name: labels[i] for name, labels in groups.items()}, outcome=truth[i],
                       attributions=attributions[i] if i < len(attributions) else {})
        for i, decision in enumerate(decisions)
    ]
    summary = figures(records, positive_label, config.min_group_size)
    return FairnessCheck(
        model=model_name,
        version=version,
        positive_label=positive_label,
        config=config,
        attributes=summary.attributes,
        violations=tuple(violations(summary.attributes, config)),
        report=html.render(records, positive_label=positive_label, config=config),
    )


def violations(attributes: Sequence[AttributeFigures], config: FairnessConfig) -> list[str]:
    """``<attribute>/<figure>`` for each value beyond its threshold."""
    out = []
    for a in attributes:
        ratio, gap = a.summary.demographic_parity_ratio, a.summary.equalized_odds_difference
        if config.demographic_parity_ratio_min is not None and ratio is not None \
                and ratio < config.demographic_parity_ratio_min:
            out.append(f"{a.attribute}/demographic_parity_ratio")
        if config.equalized_odds_difference_max is not None and gap is not None \
                and gap > config.equalized_odds_difference_max:
            out.append(f"{a.attribute}/equalized_odds_difference")
    return out


def check(
    model: Any,
    X: Any,
    y: Sequence[Any],
    sensitive_features: Sensitive,
    *,
    config: FairnessConfig | None = None,
    model_name: str | None = None,
    version: str | None = None,
    attributions: Sequence[Mapping[str, float]] = (),
) -> FairnessCheck:
    """The fairness check of `model` on validation data `X`, `y` (`attributions`: see `evaluate_decisions`)."""
    config = validation_config(config)
    decisions = decided(model, X, config)
    positive = positive_label_of(model, config)
    return evaluate_decisions(decisions, y, groups_of(X, sensitive_features, len(decisions)), positive,
                              config=config, model_name=model_name or type(model).__name__,
                              version=version or UNVERSIONED, attributions=attributions)


def log(result: FairnessCheck, run_id: str | None = None) -> None:
    """Log `result` to the run `run_id`, else to the active run (started if there is none, as MLflow's
    own logging functions do): metrics, the report artifact and the pass/fail tags."""
    import mlflow

    verdict = semconv.MLFLOW_FAIRNESS_PASS if result.passed else semconv.MLFLOW_FAIRNESS_FAIL
    tags = {semconv.MLFLOW_FAIRNESS_TAG: verdict}
    if result.violations:
        tags[semconv.MLFLOW_FAIRNESS_VIOLATIONS_TAG] = ",".join(result.violations)
    if run_id is None:
        mlflow.log_metrics(result.metrics())
        mlflow.log_text(result.report, REPORT_ARTIFACT)
        mlflow.set_tags(tags)
        return
    from mlflow.entities import Metric, RunTag

    client = mlflow.MlflowClient()
    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in result.metrics().items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    client.log_text(run_id, result.report, REPORT_ARTIFACT)


def fairness_metrics(sensitive_features: Sequence[str | tuple[str, ...]], *,
                     config: FairnessConfig | None = None, positive_label: Any = None) -> list[Any]:
    """The fairness figures as ``mlflow.models.evaluate(extra_metrics=...)``: one metric per sensitive
    attribute and figure, named as `log_fairness` names them. The sensitive columns must be columns of the
    evaluation data with names that are Python identifiers (MLflow passes a column to a metric by name).
    A figure without a value is NaN there."""
    from mlflow.models import make_metric

    config = validation_config(config)
    if positive_label is not None:
        config = replace(config, positive_label=positive_label)
    out = []
    for spec in [sensitive_features] if isinstance(sensitive_features, str) else sensitive_features:
        parts = tuple(spec.split(semconv.INTERSECTION)) if isinstance(spec, str) else tuple(spec)
        for part in parts:
            if not part.isidentifier():
                raise ValueError(f"otel-rai: mlflow.models.evaluate passes a column to a metric by name, so "
                                 f"sensitive column {part!r} needs a name that is a Python identifier")
        attribute = semconv.INTERSECTION.join(parts)
        for figure in FIGURES:
            out.append(make_metric(eval_fn=_evaluator(parts, figure, config), name=metric_name(attribute, figure),
                                   greater_is_better=figure.endswith("ratio")))
    return out


def _evaluator(parts: tuple[str, ...], figure: str, config: FairnessConfig) -> Callable[..., float]:
    """A metric function ``(predictions, targets, <column>...)`` computing one figure."""

    def eval_fn(predictions: Any, targets: Any, *columns: Any) -> float:
        labels = [[_label(v) for v in column] for column in columns]
        joined = [semconv.INTERSECTION.join(t) for t in zip(*labels)]
        positive = config.positive_label if config.positive_label is not None else _binary_positive(targets)
        result = evaluate_decisions(list(predictions), list(targets), {semconv.INTERSECTION.join(parts): joined},
                                    positive, config=config)
        value = getattr(result.attributes[0].summary, figure) if result.attributes else None
        return math.nan if value is None else float(value)

    eval_fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_ONLY) for n in ("predictions", "targets", *parts)])
    return eval_fn


def _binary_positive(targets: Any) -> Any:
    """The positive label of binary targets as scikit-learn orders classes (the larger), else 1."""
    values = sorted(set(targets))
    return values[1] if len(values) == 2 else 1

