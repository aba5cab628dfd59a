"""Deprecated: `RaiInstrumentor` lives in `otel_rai.session.instrumentor` (and is `otel_rai.RaiInstrumentor`)."""

import warnings

from otel_rai.session.instrumentor import FlushResult, RaiInstrumentor, flush, record_outcome

__all__ = ["FlushResult", "RaiInstrumentor", "flush", "record_outcome"]

warnings.warn("otel_rai.instrumentor is deprecated; import RaiInstrumentor from otel_rai", DeprecationWarning,
              stacklevel=2)
