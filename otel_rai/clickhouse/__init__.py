"""ClickHouse, the audit store past one machine: the collector exporter's ``otel_traces`` table and otel-rai's
lookup tables (`schema`), attribute values as the exporter writes them (`values`), spans as its rows (`rows`),
the client (`client`: ``http(s)://`` or in-process ``chdb://``) and loading spans into it (`load`).
Imports `codec` and the foundation modules; never `store`, `query` or the capture path (the CLI wires them).
"""
