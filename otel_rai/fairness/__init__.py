"""Fairness: the definitions (`metrics`, equal to Fairlearn's), sliding windows, sensitive groups,
delayed outcomes, alert rules, and the monitor that streams them as OTel metrics from the audit worker.
Imports `capture`, `audit` (output encoding) and the foundation modules; never the sinks, the store or
the query backends (the session hands it a lookup and a journal).
"""
