"""otel-rai semantic conventions: every span and attribute name the SDK emits.

This module is the only place these strings are spelled out. The query tooling, the collector config
and the tests import them from here; `docs/semantic-conventions.md` documents each one.
"""

from typing import Final

#: Instrumentation scope of every span this package creates.
SCOPE: Final = "otel_rai"
#: OpenTelemetry's resource attribute naming the service (the store and the queries read it).
SERVICE_NAME: Final = "service.name"

# --- the model that decided ---------------------------------------------------------------------
MODEL_NAME: Final = "ml.model.name"
MODEL_CLASS: Final = "ml.model.class"
MODEL_VERSION: Final = "ml.model.version"
MODEL_FINGERPRINT: Final = "ml.model.fingerprint"
#: The registry alias (or legacy stage) the model was loaded under, e.g. ``champion``. An alias moves from
#: version to version, so it is recorded beside MODEL_VERSION, never as it.
MODEL_ALIAS: Final = "ml.model.alias"

# --- the call -------------------------------------------------------------------------------------
OPERATION: Final = "ml.operation"
BATCH_SIZE: Final = "ml.batch.size"
BATCH_OFFSET: Final = "ml.batch.offset"
BATCH_CHUNKS: Final = "ml.batch.chunks"

# --- per-row arrays: entry i of each describes row BATCH_OFFSET + i of the call ------------------
DECISION_IDS: Final = "ml.decision.ids"
INPUT_HASHES: Final = "ml.input.hashes"
OUTPUTS: Final = "ml.outputs"
#: Prefix of the per-class score arrays: ``ml.output.scores.<class label>``, one float per row.
OUTPUT_SCORES_PREFIX: Final = "ml.output.scores."

# --- describing the per-row arrays -----------------------------------------------------------------
INPUT_HASH_KEY_ID: Final = "ml.input.hash.key_id"
INPUT_HASH_SCHEME: Final = "ml.input.hash.scheme"
INPUT_FEATURES: Final = "ml.input.features"
OUTPUT_CLASSES: Final = "ml.output.classes"
#: Prefix of allowlisted raw feature values: ``ml.input.value.<feature name>``, one entry per row.
INPUT_VALUE_PREFIX: Final = "ml.input.value."

# --- the explanation of each decision (docs/explanations.md) --------------------------------------
EXPLANATION_METHOD: Final = "ml.explanation.method"
#: What the attributions add up to: log-odds, logit, probability, decision-function, raw, log-prediction.
EXPLANATION_OUTPUT: Final = "ml.explanation.output"
#: The class whose output is explained, when all rows of the span explain the same class.
EXPLANATION_CLASS: Final = "ml.explanation.class"
#: Per row: the largest attributions, ``name=+value,name=-value`` by decreasing magnitude.
EXPLANATION_TOP: Final = "ml.explanation.top"
#: Per row: the base value the row's attributions start from.
EXPLANATION_BASE_VALUES: Final = "ml.explanation.base_values"
#: Why there is no explanation: the exception type, e.g. ``MissingBackground``.
EXPLANATION_ERROR: Final = "ml.explanation.error"

# --- when the audit itself failed (the prediction still returned) ----------------------------------
AUDIT_ERROR: Final = "ml.audit.error"

# --- fairness alert spans (ALERT_SPAN, below), with MODEL_NAME and MODEL_VERSION ------------------
#: The sensitive attribute (a name, never a group value): also an attribute of the fairness metrics.
FAIRNESS_ATTRIBUTE: Final = "ml.fairness.attribute"
FAIRNESS_METRIC: Final = "ml.fairness.metric"
FAIRNESS_VALUE: Final = "ml.fairness.value"
FAIRNESS_THRESHOLD: Final = "ml.fairness.threshold"
#: STATE_FIRING when the metric crossed into violation, STATE_RESOLVED when it crossed back.
FAIRNESS_STATE: Final = "ml.fairness.state"

# --- the tamper-evident chain (docs/audit-trail.md): on every span of the audit tracer ------------
#: The chain the record belongs to: 32 hex digits, new for each instrumented process (and forked child).
AUDIT_STREAM: Final = "ml.audit.stream"
#: Position in the stream: 1, 2, 3, ... in the order the audit worker ended the spans.
AUDIT_SEQ: Final = "ml.audit.seq"
#: AUDIT_RECORD_HASH of the previous record of the stream (64 zeros for the first).
AUDIT_PREV_HASH: Final = "ml.audit.prev_hash"
#: SHA-256 of the record's canonical form, which includes AUDIT_STREAM, AUDIT_SEQ and AUDIT_PREV_HASH.
AUDIT_RECORD_HASH: Final = "ml.audit.record_hash"
#: Name of the checkpoint span: the stream's head (its AUDIT_PREV_HASH), count and time.
CHECKPOINT_SPAN: Final = "ml.audit.checkpoint"
#: Decisions in the stream up to this checkpoint.
CHECKPOINT_DECISIONS: Final = "ml.audit.checkpoint.decisions"
#: CHECKPOINT_ALGORITHM_HMAC or CHECKPOINT_ALGORITHM_ED25519; absent when the checkpoint is unsigned.
CHECKPOINT_ALGORITHM: Final = "ml.audit.checkpoint.algorithm"
CHECKPOINT_KEY_ID: Final = "ml.audit.checkpoint.key_id"
#: Signature of the checkpoint's AUDIT_RECORD_HASH (hex).
CHECKPOINT_SIGNATURE: Final = "ml.audit.checkpoint.signature"
#: What sealing adds to every span.
CHAIN_ATTRIBUTES: Final = (AUDIT_STREAM, AUDIT_SEQ, AUDIT_PREV_HASH, AUDIT_RECORD_HASH)
CHECKPOINT_ALGORITHM_HMAC: Final = "hmac-sha256"
CHECKPOINT_ALGORITHM_ED25519: Final = "ed25519"

#: Every attribute name above, for allowlists (the collector's and the tests').
SPAN_ATTRIBUTES: Final = (
    MODEL_NAME,
    MODEL_CLASS,
    MODEL_VERSION,
    MODEL_FINGERPRINT,
    MODEL_ALIAS,
    OPERATION,
    BATCH_SIZE,
    BATCH_OFFSET,
    BATCH_CHUNKS,
    DECISION_IDS,
    INPUT_HASHES,
    OUTPUTS,
    INPUT_HASH_KEY_ID,
    INPUT_HASH_SCHEME,
    INPUT_FEATURES,
    OUTPUT_CLASSES,
    EXPLANATION_METHOD,
    EXPLANATION_OUTPUT,
    EXPLANATION_CLASS,
    EXPLANATION_TOP,
    EXPLANATION_BASE_VALUES,
    EXPLANATION_ERROR,
    AUDIT_ERROR,
    FAIRNESS_ATTRIBUTE,
    FAIRNESS_METRIC,
    FAIRNESS_VALUE,
    FAIRNESS_THRESHOLD,
    FAIRNESS_STATE,
    AUDIT_STREAM,
    AUDIT_SEQ,
    AUDIT_PREV_HASH,
    AUDIT_RECORD_HASH,
    CHECKPOINT_DECISIONS,
    CHECKPOINT_ALGORITHM,
    CHECKPOINT_KEY_ID,
    CHECKPOINT_SIGNATURE,
)

#: Attributes with one entry per row of the span, and prefixes of such attributes. A reader (the query
#: tooling) takes entry i of each as part of decision i; every other attribute describes the whole call.
PER_ROW: Final = (DECISION_IDS, INPUT_HASHES, OUTPUTS, EXPLANATION_TOP, EXPLANATION_BASE_VALUES)
PER_ROW_PREFIXES: Final = (OUTPUT_SCORES_PREFIX, INPUT_VALUE_PREFIX)

#: Attribute names the caller may not set through ``decisions(attributes=...)``.
RESERVED_PREFIX: Final = "ml."


def is_per_row(name: str) -> bool:
    """Whether attribute `name` holds one entry per row (see `PER_ROW`)."""
    return name in PER_ROW or name.startswith(PER_ROW_PREFIXES)


def span_name(operation: str, model_name: str) -> str:
    """Span name of a decision: ``"{operation} {model name}"``, e.g. ``predict_proba credit``."""
    return f"{operation} {model_name}"


# --- fairness metrics (docs/fairness.md) ---------------------------------------------------------
#: Counter: one per decision and sensitive attribute (attributes: model, FAIRNESS_*, OUTCOME).
METRIC_DECISIONS: Final = "ml.decisions"
#: Counter: one per decision whose ground truth arrived and sensitive attribute (adds TRUE_OUTCOME).
METRIC_OUTCOMES: Final = "ml.outcomes"
#: Gauges over the SDK's sliding window, per model version and sensitive attribute (and group).
METRIC_SELECTION_RATE: Final = "ml.fairness.selection_rate"
METRIC_TRUE_POSITIVE_RATE: Final = "ml.fairness.true_positive_rate"
METRIC_FALSE_POSITIVE_RATE: Final = "ml.fairness.false_positive_rate"
METRIC_DEMOGRAPHIC_PARITY_DIFFERENCE: Final = "ml.fairness.demographic_parity_difference"
METRIC_DEMOGRAPHIC_PARITY_RATIO: Final = "ml.fairness.demographic_parity_ratio"
METRIC_EQUALIZED_ODDS_DIFFERENCE: Final = "ml.fairness.equalized_odds_difference"
METRIC_EQUALIZED_ODDS_RATIO: Final = "ml.fairness.equalized_odds_ratio"
#: Counter: one per threshold crossing into the alerting state. Also the name of the alert span.
METRIC_ALERT: Final = "ml.fairness.alert"
ALERT_SPAN: Final = METRIC_ALERT

#: The group within FAIRNESS_ATTRIBUTE: a metric attribute only, never on a span.
FAIRNESS_GROUP: Final = "ml.fairness.group"
#: The decision's outcome: OUTCOME_POSITIVE or OUTCOME_NEGATIVE.
OUTCOME: Final = "ml.outcome"
#: The ground truth recorded later with `otel_rai.record_outcome`: OUTCOME_POSITIVE or OUTCOME_NEGATIVE.
TRUE_OUTCOME: Final = "ml.true_outcome"
OUTCOME_POSITIVE: Final = "positive"
OUTCOME_NEGATIVE: Final = "negative"
#: Joins the parts of an intersection, in attribute names (``sex&race``) and group values.
INTERSECTION: Final = "&"
MISSING_GROUP: Final = "(missing)"
OTHER_GROUP: Final = "(other)"

# --- the alert span and the alert counter --------------------------------------------------------
STATE_FIRING: Final = "firing"
STATE_RESOLVED: Final = "resolved"
ALERT_METRIC_ATTRIBUTES: Final = (MODEL_NAME, MODEL_VERSION, FAIRNESS_ATTRIBUTE, FAIRNESS_METRIC)
#: Every attribute of an alert span, for allowlists.
ALERT_SPAN_ATTRIBUTES: Final = (*ALERT_METRIC_ATTRIBUTES, FAIRNESS_VALUE, FAIRNESS_THRESHOLD, FAIRNESS_STATE)

# --- delivery of the audit trail (docs/audit-trail.md) ---------------------------------------------
#: Gauge: audit records (calls waiting for the worker, spans not yet delivered) held by this process.
METRIC_AUDIT_PENDING: Final = "ml.audit.pending"
#: Counter: spans this process delivered to the OTLP backend.
METRIC_AUDIT_EXPORTED: Final = "ml.audit.exported"
#: Counter: audit records that will never be delivered. 0 unless something failed (see the docs).
METRIC_AUDIT_DROPPED: Final = "ml.audit.dropped"

# --- MLflow runs (docs/mlflow.md): what `otel_rai.mlflow.log_fairness` and `otel-rai check` log -----
#: Run tag: MLFLOW_FAIRNESS_PASS or MLFLOW_FAIRNESS_FAIL, judged against the fairness thresholds.
MLFLOW_FAIRNESS_TAG: Final = "otel_rai.fairness"
MLFLOW_FAIRNESS_PASS: Final = "pass"
MLFLOW_FAIRNESS_FAIL: Final = "fail"
#: Run tag: the violated checks, ``<attribute>/<metric>`` separated by commas (absent when none).
MLFLOW_FAIRNESS_VIOLATIONS_TAG: Final = "otel_rai.fairness.violations"
#: Prefix of the run's fairness metrics: ``fairness.<attribute>.<metric>`` and
#: ``fairness.<attribute>.<rate>.<group>`` (characters MLflow refuses in a metric name become ``_``).
MLFLOW_FAIRNESS_METRIC_PREFIX: Final = "fairness."
