"""The version of otel-rai."""

__version__ = "0.1.0"
