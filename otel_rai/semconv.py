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
#: The step of the grid EXPLANATION_TOP's values are rounded to (0: exact); absent when they are signs only.
EXPLANATION_RESOLUTION: Final = "ml.explanation.resolution"

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
#: The ``service.name`` of the resource the span was sealed under (so that the chain covers it).
AUDIT_SERVICE: Final = "ml.audit.service"
#: Per row: a keyed digest of the decision's (attribute, group) pairs, which the local store keeps.
GROUPS_DIGEST: Final = "ml.fairness.groups_digest"
#: Name of the span a recorded outcome ends (`otel_rai.record_outcome`), with the two attributes below.
OUTCOME_SPAN: Final = "ml.audit.outcome"
OUTCOME_DECISION_ID: Final = "ml.outcome.decision_id"
#: A keyed digest of the decision id and the ground truth as the local store keeps it (never the value).
OUTCOME_DIGEST: Final = "ml.outcome.digest"
#: What sealing adds to every span.
CHAIN_ATTRIBUTES: Final = (AUDIT_STREAM, AUDIT_SEQ, AUDIT_PREV_HASH, AUDIT_RECORD_HASH, AUDIT_SERVICE)
CHECKPOINT_ALGORITHM_HMAC: Final = "hmac-sha256"
CHECKPOINT_ALGORITHM_ED25519: Final = "ed25519"

#: The feature a drift figure is about: an input feature's name, or DRIFT_PREDICTION / DRIFT_SCORE.
DRIFT_FEATURE: Final = "ml.drift.feature"
# --- monitoring alert spans (with MODEL_NAME, MODEL_VERSION, and DRIFT_FEATURE or FAIRNESS_ATTRIBUTE) -
MONITORING_METRIC: Final = "ml.monitoring.metric"
MONITORING_VALUE: Final = "ml.monitoring.value"
MONITORING_THRESHOLD: Final = "ml.monitoring.threshold"
#: The baseline value a quality threshold derives from (threshold = baseline - margin).
MONITORING_BASELINE: Final = "ml.monitoring.baseline"
#: STATE_FIRING or STATE_RESOLVED.
MONITORING_STATE: Final = "ml.monitoring.state"

# --- drift snapshots (the local store's drift_snapshots table, never a span): the keys of one, holding
# concatenated per-feature arrays in the order of DRIFT_FEATURES ---------------------------------
DRIFT_FEATURES: Final = "ml.drift.features"
#: Per feature: DRIFT_KIND_NUMERIC or DRIFT_KIND_CATEGORICAL.
DRIFT_KINDS: Final = "ml.drift.kinds"
DRIFT_KIND_NUMERIC: Final = "numeric"
DRIFT_KIND_CATEGORICAL: Final = "categorical"
#: Per feature: its number of bins (value bins, then other for categorical, then missing).
DRIFT_BINS: Final = "ml.drift.bins"
#: Numeric features' interior bin edges, then the bin positions (the reference mean in each value bin).
DRIFT_EDGES: Final = "ml.drift.edges"
DRIFT_POSITIONS: Final = "ml.drift.positions"
DRIFT_REFERENCE_COUNTS: Final = "ml.drift.reference_counts"
DRIFT_CURRENT_COUNTS: Final = "ml.drift.current_counts"
#: Where the reference profile came from: "fit", "reference" or "background".
DRIFT_REFERENCE_SOURCE: Final = "ml.drift.reference_source"
# --- trace UIs: OpenInference-style attributes (docs/semantic-conventions.md, "In trace UIs") ---------
# Phoenix and MLflow show a span's kind, input and output from these names. They are a view, derived from
# the ml.* attributes above (which stay the record, and which the chain covers), never raw feature values
# beyond the allowlisted ones. Mapping to OTel's ML inference proposal (semantic-conventions issue 3420)
# and the GenAI conventions: docs/semantic-conventions.md.
#: Resource attribute: the Phoenix project of the spans; otel-rai sets it to ``service.name``.
UI_PROJECT_NAME: Final = "openinference.project.name"
#: What a span is: UI_KIND_DECISION on decision spans, UI_KIND_EVALUATOR on fairness alert spans;
#: checkpoint spans have none (a UI shows them as unknown, and a kind filter hides them).
UI_SPAN_KIND: Final = "openinference.span.kind"
UI_KIND_DECISION: Final = "DECISION"
UI_KIND_EVALUATOR: Final = "EVALUATOR"
#: JSON text: the decision ids, input hashes and allowlisted raw values of the span's rows.
UI_INPUT_VALUE: Final = "input.value"
UI_INPUT_MIME_TYPE: Final = "input.mime_type"
#: JSON text: each row's label or value, its scores and its top reasons.
UI_OUTPUT_VALUE: Final = "output.value"
UI_OUTPUT_MIME_TYPE: Final = "output.mime_type"
UI_MIME_JSON: Final = "application/json"
#: Required on OpenInference DECISION spans: the API the call speaks (UI_DECISION_SYSTEM_SKLEARN).
UI_DECISION_SYSTEM: Final = "decision.system"
UI_DECISION_SYSTEM_SKLEARN: Final = "scikit-learn"
#: ``<ml.model.name> <ml.model.version>``.
UI_DECISION_MODEL_NAME: Final = "decision.model_name"
#: The key, inside UI_INPUT_VALUE's JSON, of a row's allowlisted raw values (a collector that deletes raw
#: values deletes UI_INPUT_VALUE where it holds this key).
UI_ALLOWLISTED_KEY: Final = "allowlisted"
#: The span attributes above, for allowlists.
UI_SPAN_ATTRIBUTES: Final = (UI_SPAN_KIND, UI_INPUT_VALUE, UI_INPUT_MIME_TYPE, UI_OUTPUT_VALUE, UI_OUTPUT_MIME_TYPE,
                             UI_DECISION_SYSTEM, UI_DECISION_MODEL_NAME)

# --- the model record (docs/model-records.md): one span per fitted model and process ---------------
#: Name of the model record span. It carries MODEL_NAME, MODEL_CLASS, MODEL_VERSION and MODEL_FINGERPRINT
#: too: a decision links to its record by MODEL_FINGERPRINT.
MODEL_RECORD_SPAN: Final = "ml.model.record"
#: Canonical JSON of the model's parameters (``get_params(deep=True)`` as a tree; training-derived values
#: are replaced by keyed digests).
MODEL_PARAMS: Final = "ml.model.params"
#: JSON object: library -> version (python, numpy, scipy, scikit-learn, and those the model's classes use).
MODEL_LIBRARIES: Final = "ml.model.libraries"
#: JSON object: the feature schema (names, dtypes at fit time and at the first call, n_features_in_, classes).
MODEL_SCHEMA: Final = "ml.model.schema"
#: Where the model came from: an MLflow run or registry URI, a file path (``register_model(source_uri=)``).
MODEL_SOURCE_URI: Final = "ml.model.source_uri"
#: Keyed hash of the training data (X, y, sample weights) of the fit under ``instrument()`` (docs/hashing.md).
TRAINING_HASH: Final = "ml.model.training.hash"
TRAINING_HASH_KEY_ID: Final = "ml.model.training.hash.key_id"
TRAINING_HASH_SCHEME: Final = "ml.model.training.hash.scheme"
TRAINING_ROWS: Final = "ml.model.training.rows"
#: ``fit``, ``partial_fit`` (then TRAINING_BATCHES counts the batches), ``fit_transform`` or ``fit_predict``.
TRAINING_METHOD: Final = "ml.model.training.method"
TRAINING_BATCHES: Final = "ml.model.training.batches"
#: When the (last) fit ended, RFC 3339 UTC; and how long it took.
TRAINING_TIME: Final = "ml.model.training.time"
TRAINING_DURATION_MS: Final = "ml.model.training.duration_ms"
#: The saved model (docs/model-records.md): SHA-256 of its bytes, serializer, and where it was saved.
ARTIFACT_SHA256: Final = "ml.model.artifact.sha256"
ARTIFACT_FORMAT: Final = "ml.model.artifact.format"
ARTIFACT_URI: Final = "ml.model.artifact.uri"
#: SHA-256 of the saved ``register_model(background=)`` rows, which some explanations need.
ARTIFACT_BACKGROUND_SHA256: Final = "ml.model.artifact.background_sha256"
#: Why no artifact was saved: the exception type only.
ARTIFACT_ERROR: Final = "ml.model.artifact.error"
#: Every attribute a model record adds to the model attributes.
MODEL_RECORD_ATTRIBUTES: Final = (
    MODEL_PARAMS,
    MODEL_LIBRARIES,
    MODEL_SCHEMA,
    MODEL_SOURCE_URI,
    TRAINING_HASH,
    TRAINING_HASH_KEY_ID,
    TRAINING_HASH_SCHEME,
    TRAINING_ROWS,
    TRAINING_METHOD,
    TRAINING_BATCHES,
    TRAINING_TIME,
    TRAINING_DURATION_MS,
    ARTIFACT_SHA256,
    ARTIFACT_FORMAT,
    ARTIFACT_URI,
    ARTIFACT_BACKGROUND_SHA256,
    ARTIFACT_ERROR,
)

#: Every attribute name above, for allowlists (the collector's and the tests').
SPAN_ATTRIBUTES: Final = (
    MODEL_NAME,
    MODEL_CLASS,
    MODEL_VERSION,
    MODEL_FINGERPRINT,
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
    EXPLANATION_RESOLUTION,
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
    AUDIT_SERVICE,
    GROUPS_DIGEST,
    OUTCOME_DECISION_ID,
    OUTCOME_DIGEST,
    # quality and drift alerts (docs/monitoring.md)
    MONITORING_METRIC,
    MONITORING_VALUE,
    MONITORING_THRESHOLD,
    MONITORING_BASELINE,
    MONITORING_STATE,
    DRIFT_FEATURE,
    *UI_SPAN_ATTRIBUTES,
    *MODEL_RECORD_ATTRIBUTES,
)

#: Attributes with one entry per row of the span, and prefixes of such attributes. A reader (the query
#: tooling) takes entry i of each as part of decision i; every other attribute describes the whole call.
PER_ROW: Final = (DECISION_IDS, INPUT_HASHES, OUTPUTS, EXPLANATION_TOP, EXPLANATION_BASE_VALUES, GROUPS_DIGEST)
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

# --- quality and drift monitoring (docs/monitoring.md) -----------------------------------------------
#: Gauges over the window of a model version (and, with FAIRNESS_ATTRIBUTE and FAIRNESS_GROUP, of one
#: group), from the decisions whose ground truth arrived; MONITORING_WINDOW says which window.
METRIC_QUALITY_ACCURACY: Final = "ml.quality.accuracy"
#: Precision, recall and F1 carry QUALITY_AVERAGE: AVERAGE_BINARY (of the positive class) or AVERAGE_MACRO.
METRIC_QUALITY_PRECISION: Final = "ml.quality.precision"
METRIC_QUALITY_RECALL: Final = "ml.quality.recall"
METRIC_QUALITY_F1: Final = "ml.quality.f1"
METRIC_QUALITY_ROC_AUC: Final = "ml.quality.roc_auc"
METRIC_QUALITY_LOG_LOSS: Final = "ml.quality.log_loss"
METRIC_QUALITY_BRIER: Final = "ml.quality.brier_score"
#: Expected calibration error: top-label confidence in 10 equal-width bins.
METRIC_QUALITY_ECE: Final = "ml.quality.calibration_error"
METRIC_QUALITY_MAE: Final = "ml.quality.mae"
METRIC_QUALITY_RMSE: Final = "ml.quality.rmse"
METRIC_QUALITY_R2: Final = "ml.quality.r2"
#: Gauge: decisions in the window, with QUALITY_LABELLED "true" (ground truth arrived) or "false".
METRIC_QUALITY_DECISIONS: Final = "ml.quality.decisions"
#: Gauges: accuracy and ROC AUC estimated from the predicted probabilities alone (CBPE), before labels.
METRIC_QUALITY_ESTIMATED_ACCURACY: Final = "ml.quality.estimated.accuracy"
METRIC_QUALITY_ESTIMATED_ROC_AUC: Final = "ml.quality.estimated.roc_auc"
#: Counter: ground truths recorded (by arrival), with QUALITY_CORRECT for classifiers.
METRIC_QUALITY_LABELS: Final = "ml.quality.labels"
#: Histogram (seconds): from a decision to the arrival of its ground truth.
METRIC_QUALITY_LABEL_DELAY: Final = "ml.quality.label_delay"
#: Counter and span: a quality metric crossed below its baseline minus the margin (or back).
METRIC_QUALITY_ALERT: Final = "ml.quality.alert"
QUALITY_ALERT_SPAN: Final = METRIC_QUALITY_ALERT

#: Gauges per model version and feature (DRIFT_FEATURE), the window against the reference profile.
METRIC_DRIFT_PSI: Final = "ml.drift.psi"
METRIC_DRIFT_JS_DISTANCE: Final = "ml.drift.js_distance"
METRIC_DRIFT_WASSERSTEIN: Final = "ml.drift.wasserstein"
METRIC_DRIFT_CHI2_PVALUE: Final = "ml.drift.chi2_pvalue"
#: Gauge: share of missing values, with MONITORING_WINDOW "current" or "baseline" (the reference).
METRIC_DRIFT_MISSING_RATE: Final = "ml.drift.missing_rate"
#: Counter and span: a feature's PSI crossed above the threshold (or back).
METRIC_DRIFT_ALERT: Final = "ml.drift.alert"
DRIFT_ALERT_SPAN: Final = METRIC_DRIFT_ALERT

#: The window a quality gauge describes: WINDOW_CURRENT (the sliding window) or WINDOW_BASELINE.
MONITORING_WINDOW: Final = "ml.monitoring.window"
WINDOW_CURRENT: Final = "current"
WINDOW_BASELINE: Final = "baseline"
QUALITY_AVERAGE: Final = "ml.quality.average"
AVERAGE_BINARY: Final = "binary"
AVERAGE_MACRO: Final = "macro"
QUALITY_LABELLED: Final = "ml.quality.labelled"
QUALITY_CORRECT: Final = "ml.quality.correct"
DRIFT_PREDICTION: Final = "(prediction)"
DRIFT_SCORE: Final = "(score)"

#: Every attribute of the quality and drift alert spans, for allowlists (the group only when allowlisted).
MONITORING_SPAN_ATTRIBUTES: Final = (
    MODEL_NAME, MODEL_VERSION, MONITORING_METRIC, MONITORING_VALUE, MONITORING_THRESHOLD, MONITORING_BASELINE,
    MONITORING_STATE, DRIFT_FEATURE, FAIRNESS_ATTRIBUTE, FAIRNESS_GROUP,
)
# --- hardening (docs/audit-trail.md, threat model) -------------------------------------------------
#: OpenTelemetry's exception event of a failed call, and its attributes: the type, and a template of the
#: message and stack trace in which every literal is replaced (`otel_rai.audit.redaction`).
EXCEPTION_EVENT: Final = "exception"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
EXCEPTION_ESCAPED: Final = "exception.escaped"
#: Counter: instrumentation that failed (an unusable store, a bad setting), by ERROR_TYPE. The process then
#: runs unaudited (fail-open) or refuses every decision (fail-closed); `otel_rai.flush()` says so too.
METRIC_AUDIT_INSTRUMENTATION_FAILURES: Final = "ml.audit.instrumentation_failures"
#: OpenTelemetry's attribute naming the class of an error: here the exception type.
ERROR_TYPE: Final = "error.type"
