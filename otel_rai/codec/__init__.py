"""Codec: how a span is written down and read back. `records.SpanRecord` (a span as plain data), OTLP
protobuf (`otlpproto`) and JSON (`otlpjson`), conversions to and from the OTel SDK's spans (`sdk`), and
the ``ml.explanation.top`` format (`reasons`). Imports only the foundation modules.
"""
