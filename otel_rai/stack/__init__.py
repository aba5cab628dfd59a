"""Stack: a local audit store without Docker, as background processes: rotel (OTLP in), Arize Phoenix
(traces and UI) and Prometheus (metrics). `up`, `down` and `status` manage them (`processes`). Imports
only the foundation modules: managing processes needs neither scikit-learn nor the OTel SDK.
"""

from otel_rai.errors import StackError
from otel_rai.stack.processes import Ports, Process, Stack, Status, default_dir, down, missing, status, up

__all__ = ["Ports", "Process", "Stack", "StackError", "Status", "default_dir", "down", "missing", "status", "up"]
