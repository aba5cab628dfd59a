"""otel-rai semantic conventions: every span and attribute name the SDK emits.

This module is the only place these strings are spelled out. The query tooling, the collector config
and the tests import them from here; `docs/semantic-conventions.md` documents each one.
"""

from typing import Final

#: Instrumentation scope of every span this package creates.
SCOPE: Final = "otel_rai"

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

# --- when the audit itself failed (the prediction still returned) ----------------------------------
AUDIT_ERROR: Final = "ml.audit.error"

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
    AUDIT_ERROR,
)

#: Attributes with one entry per row of the span, and prefixes of such attributes. A reader (the query
#: tooling) takes entry i of each as part of decision i; every other attribute describes the whole call.
PER_ROW: Final = (DECISION_IDS, INPUT_HASHES, OUTPUTS)
PER_ROW_PREFIXES: Final = (OUTPUT_SCORES_PREFIX, INPUT_VALUE_PREFIX)

#: Attribute names the caller may not set through ``decisions(attributes=...)``.
RESERVED_PREFIX: Final = "ml."


def is_per_row(name: str) -> bool:
    """Whether attribute `name` holds one entry per row (see `PER_ROW`)."""
    return name in PER_ROW or name.startswith(PER_ROW_PREFIXES)


def span_name(operation: str, model_name: str) -> str:
    """Span name of a decision: ``"{operation} {model name}"``, e.g. ``predict_proba credit``."""
    return f"{operation} {model_name}"
