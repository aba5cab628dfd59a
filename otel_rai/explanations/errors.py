"""Why an explanation could not be computed. On a span only the class name is recorded."""


class ExplanationError(Exception):
    """Base class of the explanation errors."""


class UnsupportedModel(ExplanationError):
    """The chosen method cannot represent this model (e.g. a tree with categorical xgboost splits)."""


class MissingBackground(ExplanationError):
    """The method needs background data: ``register_model(model, background=X_ref)``."""


class ModelChanged(ExplanationError):
    """The model was refitted between the decision and its explanation, which would describe the new fit."""
