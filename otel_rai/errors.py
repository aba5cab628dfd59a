"""The exceptions otel-rai raises: one hierarchy under `OtelRaiError`.

Each message is one line that names the offending value or file and starts with ``otel-rai:``; the
command line prints it as it is. Where a built-in meaning applies too (a bad value, a lookup that
failed), the class also derives from that built-in. This module imports nothing of otel-rai.
"""

from __future__ import annotations

PREFIX = "otel-rai: "


class OtelRaiError(Exception):
    """Base class of every otel-rai error."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message if message.startswith(PREFIX) or not message else PREFIX + message)


class AuditUnavailableError(OtelRaiError, RuntimeError):
    """The audit record of a decision could not be written durably, so (in fail-closed mode,
    ``instrument(on_audit_failure="raise")``) the decision is not returned."""


class StoreError(OtelRaiError):
    """An audit store that cannot be used: missing, not ours, from a newer otel-rai, or unreadable."""


class BackendError(OtelRaiError):
    """A query backend that cannot be reached, or that answered something unexpected."""


class InputError(OtelRaiError, ValueError):
    """A file or value given by the user that cannot be read as what it should be."""


class UnknownDecision(OtelRaiError, LookupError):
    """A decision that cannot be found: `record_outcome` named one that is neither remembered nor described
    by its arguments, or `reproduce` one the trail does not hold."""


class ExplanationError(OtelRaiError):
    """Why an explanation could not be computed. On a span only the class name is recorded."""


class StackError(OtelRaiError):
    """The local stack cannot be started, stopped or read."""


class ArtifactError(OtelRaiError):
    """A model artifact that must not or cannot be loaded: missing, in a store that is not trusted, or
    whose digest or fingerprint does not match the record."""


class InputMismatchError(OtelRaiError, ValueError):
    """`reproduce` was given an input whose keyed hash is not the one the decision recorded."""
