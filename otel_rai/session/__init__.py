"""Session: one instrumented process. `RaiInstrumentor` (``instrument()``, ``opentelemetry-instrument``)
resolves the settings and wires capture → audit → chain → sinks, with the fairness monitor; `lifecycle`
flushes at SIGTERM and in multiprocessing children, and `metrics` publishes the delivery counters. The
top of the data path: may import every layer below; only the package root and the MLflow bridge import it.
"""
