"""Sinks: where ended audit spans go. The `base.Sink` seam, the OTLP exporter thread (`otlp`), the
store sink with its outbox (`local`), and the choice of sinks and the audit tracer provider
(`provider`). Imports `store`, `codec` and the foundation modules; never the audit worker, the chain
or the query backends.
"""
