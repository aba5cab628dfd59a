"""Shared fixtures: an instrumented session with an in-memory exporter, and real OTLP servers."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Iterator

import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

import otel_rai
from otel_rai import semconv
from otel_rai.session.instrumentor import RaiInstrumentor

sys.path.insert(0, str(Path(__file__).parent))
from servers import OtlpReceiver, Rotel  # noqa: E402

KEY = "test-key-0123456789abcdef0123456789"


class Audit:
    """The spans of an instrumented test session."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def all_spans(self) -> list[ReadableSpan]:
        assert otel_rai.flush(30).complete
        return [s for s in self.exporter.get_finished_spans() if s.instrumentation_scope.name == semconv.SCOPE]

    def spans(self) -> list[ReadableSpan]:
        """The audit spans but the model records (one per fitted model, tested in test_model_records)."""
        return [s for s in self.all_spans() if s.name != semconv.MODEL_RECORD_SPAN]

    def records(self) -> list[ReadableSpan]:
        """The model record spans."""
        return [s for s in self.all_spans() if s.name == semconv.MODEL_RECORD_SPAN]

    def decision_spans(self) -> list[ReadableSpan]:
        """Spans that carry decisions (a chunked call's parent carries none)."""
        return [s for s in self.spans() if semconv.DECISION_IDS in s.attributes]

    def clear(self) -> None:
        otel_rai.flush(30)
        self.exporter.clear()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch) -> Iterator[None]:
    """Every test gets its own otel-rai home (store), key file directory, and ends uninstrumented."""
    monkeypatch.setenv("OTEL_RAI_HOME", str(tmp_path / "otel-rai-home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # where a generated hash key goes
    for var in ("OTEL_RAI_HASH_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(var, raising=False)
    yield
    if RaiInstrumentor().is_instrumented_by_opentelemetry:
        otel_rai.uninstrument()


def need(what: str, available: bool) -> None:
    """Skip a test whose program is not installed; under scripts/test.sh (CI, which installs every one) fail
    instead, so that a missing install step cannot pass as a skip."""
    if available:
        return
    if os.environ.get("OTEL_RAI_TEST_STRICT"):
        pytest.fail(f"{what} is not installed, although scripts/test.sh should have installed it")
    pytest.skip(f"{what} is not installed (scripts/test.sh installs it)")


def venv_python(name: str) -> str | None:
    """The interpreter of an oracle installed in a virtualenv of its own by scripts/test.sh (nannyml and
    evidently pin versions the project's environment cannot have); None when it is not there."""
    root = Path(os.environ.get("OTEL_RAI_TEST_VENVS") or Path.home() / ".cache" / "otel-rai-test")
    python = root / name / "bin" / "python"
    return str(python) if python.exists() else None


@pytest.fixture
def prometheus_installed() -> None:
    """Prometheus and promtool, from Debian's prometheus package."""
    import shutil

    need("Prometheus", bool(shutil.which("promtool") and shutil.which("prometheus")))


def bare(method, *args, **kwargs):
    """Call a (bound) estimator method with instrumentation suppressed: the uninstrumented result."""
    with suppress_instrumentation():
        return method(*args, **kwargs)


def instrumented(**kwargs) -> Audit:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel_rai.instrument(tracer_provider=provider, **{"hash_key": KEY, **kwargs})
    return Audit(exporter)


@pytest.fixture
def audit() -> Audit:
    return instrumented()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def rotel(receiver, tmp_path) -> Iterator[Rotel]:
    collector = Rotel(receiver.endpoint, tmp_path).start()
    yield collector
    collector.stop()


# --- ClickHouse in this process (chDB): one directory per test session, one database per test ----------------
# chDB opens one directory per process; every test that reads or writes ClickHouse uses this one.


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory) -> Path:
    try:
        import chdb  # noqa: F401
        import clickhouse_connect  # noqa: F401
    except ImportError:
        need("chdb and clickhouse-connect (pip install 'otel-rai[test]')", False)
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def clickhouse_url(chdb_dir, request) -> str:
    """A ``chdb://`` URL of a database of its own (created by whoever loads it first)."""
    name = "t_" + re.sub(r"\W", "_", request.node.name)[:40] + "_" + os.urandom(3).hex()
    return f"chdb://{chdb_dir}?database={name}"
