"""Why an explanation could not be computed. On a span only the class name is recorded."""

from otel_rai.errors import ExplanationError

__all__ = ["ExplanationError", "MissingBackground", "ModelChanged", "UnsupportedModel"]


class UnsupportedModel(ExplanationError):
    """The chosen method cannot represent this model (e.g. a tree with categorical xgboost splits)."""


class MissingBackground(ExplanationError):
    """The method needs background data: ``register_model(model, background=X_ref)``."""


class ModelChanged(ExplanationError):
    """The model was refitted between the decision and its explanation, which would describe the new fit."""
