"""Capture: what happens on the caller's thread. Patching estimator classes, the recorder that turns an
outermost predict call into a `DecisionCall`, `decisions()` scopes, model identity and fingerprints,
and the fail-closed wait. Imports only the foundation modules (`semconv`, `settings`, `errors`, `_fork`).
"""
