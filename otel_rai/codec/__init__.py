"""Codec: how a span is written down and read back. `records.SpanRecord` (a span as plain data), OTLP
protobuf (`otlpproto`) and JSON (`otlpjson`), conversions to and from the OTel SDK's spans (`sdk`), the
``ml.explanation.top`` format (`reasons`), and the native encoders where they were built (`native`).
Imports only the foundation modules.
"""
