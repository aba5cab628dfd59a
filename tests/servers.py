"""Real servers for the tests, each on 127.0.0.1 with free ports, stopped afterwards.

* `OtlpReceiver`: an OTLP/gRPC trace receiver (the real opentelemetry-proto service) that keeps what
  it receives, and can be stopped and restarted on the same port to stage an outage; optionally over
  TLS (with client certificates), and slow (each request takes `delay` seconds).
* `OtlpReceiverProcess`: the same receiver in a process of its own, for tests whose process forks (a gRPC
  server in the forking process would make gRPC skip its fork handlers, which no application does).
* `HangingListener`: a TCP port that accepts connections and never answers (a hung backend).
* `Rotel`: the rotel collector (``pip install rotel``) on OTLP gRPC and HTTP, forwarding to a receiver.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def free_ports(n: int) -> list[int]:
    """n distinct free ports: each socket stays bound until all are chosen, so no two are the same."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


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

    def received(self) -> list[trace_service_pb2.ExportTraceServiceRequest]:
        with self._lock:
            return list(self.requests)

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        out = []
        for request in self.received():
            for rs in request.resource_spans:
                resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    out.extend((resource, span) for span in ss.spans)
        return out

    def records(self) -> list[Any]:
        """What was received as `otel_rai.records.SpanRecord`s, through protobuf's JSON mapping."""
        from google.protobuf.json_format import MessageToDict

        from otel_rai.codec import otlpjson

        return [r for request in self.received() for r in otlpjson.decode(MessageToDict(request))]

    def wait_for_spans(self, n: int, timeout: float = 30.0) -> list[tuple[dict[str, Any], Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.spans()
            if len(got) >= n:
                return got
            time.sleep(0.05)
        raise TimeoutError(f"received {len(self.spans())} spans, expected {n}")


class _AppendingReceiver(OtlpReceiver):
    """Appends each request, length-prefixed, to a file (the server side of `OtlpReceiverProcess`)."""

    def __init__(self, port: int, path: Path, delay: float) -> None:
        super().__init__(port, delay=delay)
        self._file = open(path, "ab")

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method name)
        if self.delay:
            time.sleep(self.delay)
        data = request.SerializeToString()
        with self._lock:
            self._file.write(struct.pack(">I", len(data)) + data)
            self._file.flush()
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiverProcess(OtlpReceiver):
    """An `OtlpReceiver` running in a child process; `received()` reads what it has written so far."""

    def __init__(self, workdir: Path, *, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self._path = workdir / f"otlp-{self.port}.bin"
        self._process: subprocess.Popen | None = None

    def start(self) -> OtlpReceiverProcess:
        self._path.touch()
        self._process = subprocess.Popen([sys.executable, __file__, str(self.port), str(self._path), str(self.delay)])
        wait_for_port(self.port, process=self._process)
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None

    def received(self) -> list[trace_service_pb2.ExportTraceServiceRequest]:
        data, out, at = self._path.read_bytes(), [], 0
        while at + 4 <= len(data):
            (size,) = struct.unpack_from(">I", data, at)
            if at + 4 + size > len(data):
                break  # a request still being written
            out.append(trace_service_pb2.ExportTraceServiceRequest.FromString(data[at + 4 : at + 4 + size]))
            at += 4 + size
        return out


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
        self.grpc_port, self.http_port = free_ports(2)
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


if __name__ == "__main__":  # OtlpReceiverProcess: port, file, delay; serves until terminated
    server = _AppendingReceiver(int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])).start()
    server._server.wait_for_termination()
