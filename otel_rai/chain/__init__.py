"""Chain: the tamper-evident audit trail. The canonical form of a record and its hash (`canonical`),
sealing each span into its process's stream and signing checkpoints (`seal`, `keys`), and walking a
trail to find edits, gaps and insertions (`verify`). Imports `audit` (its tracer), `codec` and the
foundation modules; never the sinks, the store or the query backends.
"""
