"""Real servers for the tests, each on 127.0.0.1 with free ports, stopped afterwards.

* `OtlpReceiver`: an OTLP/gRPC trace receiver (the real opentelemetry-proto service) that keeps what
  it receives, and can be stopped and restarted on the same port to stage an outage; optionally over
  TLS (with client certificates), and slow (each request takes `delay` seconds).
* `HangingListener`: a TCP port that accepts connections and never answers (a hung backend).
* `Rotel`: the rotel collector (``pip install rotel``) on OTLP gRPC and HTTP, forwarding to a receiver.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects ExportTraceServiceRequests; `spans()` flattens them to (resource attrs, span) pairs."""

    def __init__(self, port: int | None = None, *, credentials: grpc.ServerCredentials | None = None,
                 delay: float = 0.0) -> None:
        self.port = port or free_port()
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self._credentials = credentials
        self.delay = delay

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method name)
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.requests.append(request)
            self.metadata.append(dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()

    def start(self) -> OtlpReceiver:
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                   options=[("grpc.max_receive_message_length", 64 << 20)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        if self._credentials is None:
            self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        else:
            self._server.add_secure_port(f"127.0.0.1:{self.port}", self._credentials)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        with self._lock:
            requests = list(self.requests)
        out = []
        for request in requests:
            for rs in request.resource_spans:
                resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out

    def records(self) -> list[Any]:
        """What was received as `otel_rai.records.SpanRecord`s, through protobuf's JSON mapping."""
        from google.protobuf.json_format import MessageToDict

        from otel_rai import otlpjson

        with self._lock:
            requests = list(self.requests)
        return [r for request in requests for r in otlpjson.decode(MessageToDict(request))]

    def wait_for_spans(self, n: int, timeout: float = 30.0) -> list[tuple[dict[str, Any], Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.spans()
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise TimeoutError(f"received {len(self.spans())} spans, expected {n}")


class HangingListener:
    """Accepts TCP connections on `port` and never answers; `stop` closes them all and frees the port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self._socket.listen(64)
        self._socket.settimeout(0.2)
        self._accepted: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._socket.accept()
            except (socket.timeout, OSError):
                continue
            self._accepted.append(conn)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        for conn in self._accepted:
            conn.close()
        self._socket.close()


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as the Python value."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(any_value(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


def attributes(span: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in span.attributes}


def decision_spans(received: list[tuple[dict[str, Any], Any]]) -> list[tuple[dict[str, Any], Any]]:
    """The (resource, span) pairs that carry decisions (not checkpoints, alerts or chunked parents)."""
    return [(resource, span) for resource, span in received if "ml.decision.ids" in attributes(span)]


def rotel_binary() -> Path:
    import rotel

    return Path(rotel.__file__).parent / "rotel-agent"


class Rotel:
    """rotel-agent receiving OTLP on gRPC and HTTP, forwarding over gRPC to `forward_to`."""

    def __init__(self, forward_to: str, workdir: Path) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self._forward_to = forward_to
        self._workdir = workdir
        self._process: subprocess.Popen | None = None

    def start(self) -> Rotel:
        log = open(self._workdir / f"rotel-{self.grpc_port}.log", "wb")
        self._process = subprocess.Popen(
            [
                str(rotel_binary()), "start",
                "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
                "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
                "--exporter", "otlp",
                "--otlp-exporter-endpoint", self._forward_to,
                "--otlp-exporter-protocol", "grpc",
                "--traces-batch-timeout", "100ms",
                "--pid-file", str(self._workdir / f"rotel-{self.grpc_port}.pid"),
                "--log-file", str(self._workdir / f"rotel-{self.grpc_port}.out"),
            ],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"},
        )
        wait_for_port(self.grpc_port, process=self._process)
        wait_for_port(self.http_port, process=self._process)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"
