"""Provenance: which fitted model decided, and can its decision be made again. The model record span
(parameters, libraries, feature schema, training-data hash), the artifact store that keeps each fitted
model by fingerprint, reading records back from any query backend, CycloneDX export, and `reproduce`.
Imports `query` and everything below it; never `session`, `report`, `stack` or `cli`.
"""
