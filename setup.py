"""The package's one native part, optional: the encodings every audit span goes through (the chain's
canonical form, OTLP attributes, the store's row JSON, explanation entries) and its keyed digests (input
rows, groups) in C, otel_rai/codec/_native.c.
Everything else is declared in pyproject.toml. Without a compiler the package installs all the same and
writes the same bytes in Python."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("otel_rai.codec._native", ["otel_rai/codec/_native.c"], optional=True)])
