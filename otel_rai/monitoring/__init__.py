"""Monitoring: model quality from delayed labels, quality estimated before labels (CBPE), and input and
prediction drift against a reference profile, streamed as OTel metrics from the audit worker.
`quality`, `estimate`, `drift`, `profile` and `snapshot` are pure (counts in, numbers out) and serve the
report and the command line too; `monitor` (live) imports `fairness`, `capture` and `audit`, never the
sinks, the store or the query backends.
"""
