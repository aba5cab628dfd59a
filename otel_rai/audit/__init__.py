"""Audit: what happens on the audit worker's thread. The worker batches captured calls, hashes their
inputs with the secret key, encodes their outputs and explanations, and builds and ends their spans
through the audit tracer. Imports `capture`, `explanations`, `codec` and the foundation modules; never
the chain, the sinks, the store or anything that reads the trail back.
"""
