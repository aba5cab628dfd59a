"""Settings of an instrumented process: arguments of `instrument()` first, then environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otel_rai.hashing import HashKey

#: Rows per decision span; larger calls become chunk spans under one parent span.
DEFAULT_MAX_ROWS_PER_SPAN = 1000
#: Calls waiting for the audit worker before a new call blocks (back-pressure, never a drop).
DEFAULT_MAX_PENDING_CALLS = 10_000
#: Attributions per row on a decision span (adverse-action notices name about four reasons).
DEFAULT_EXPLAIN_TOP_K = 4
#: Estimated per-row cost above which a tree ensemble gets Saabas instead of exact TreeSHAP.
DEFAULT_EXPLAIN_BUDGET_US = 2000.0
#: Model evaluations per row of the model-agnostic explanation method.
DEFAULT_EXPLAIN_MAX_EVALS = 4096
#: Rows of multi-row calls waiting for the audit worker before a new one blocks (bounds the memory of
#: the input snapshots; one larger call still goes in alone).
DEFAULT_MAX_PENDING_ROWS = 1_000_000


def data_dir() -> Path:
    """Where otel-rai keeps its files: ``OTEL_RAI_HOME``, else ``$XDG_DATA_HOME/otel-rai``."""
    home = os.environ.get("OTEL_RAI_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(xdg).expanduser() / "otel-rai"


def env_list(name: str) -> list[str]:
    """A comma-separated environment variable as a list, blanks dropped."""
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


@dataclass(frozen=True)
class Settings:
    """Everything the capture path and the audit worker need, resolved once by `instrument()`."""

    hash_key: HashKey
    model_version: str | None = None
    capture_features: frozenset[str] = frozenset()
    max_rows_per_span: int = DEFAULT_MAX_ROWS_PER_SPAN
    max_pending_calls: int = DEFAULT_MAX_PENDING_CALLS
    explain: bool = True
    explain_top_k: int = DEFAULT_EXPLAIN_TOP_K
    explain_budget_us: float = DEFAULT_EXPLAIN_BUDGET_US
    explain_max_evals: int = DEFAULT_EXPLAIN_MAX_EVALS
