"""The native encoders and keyed digests (`_native.c`), or None where they were not built (no compiler at install).

Each of its functions writes the same bytes as the Python code it stands in for, or returns None for a
value it leaves to that code; tests/test_native.py holds them to it. ``OTEL_RAI_PURE_PYTHON=1`` (read
once, at import) uses Python only.
"""

from __future__ import annotations

from types import ModuleType

from otel_rai import settings

module: ModuleType | None = None
if not settings.env_flag("OTEL_RAI_PURE_PYTHON"):
    try:
        from otel_rai.codec import _native as module
    except ImportError:  # not built: Python writes everything
        module = None
