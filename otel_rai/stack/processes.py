"""The servers of the local stack, and `up`, `down` and `status` (``otel-rai stack``).

* rotel (``pip install rotel``) receives OTLP on 4317 (gRPC) and 4318 (HTTP) and forwards traces to
* Arize Phoenix (``pip install arize-phoenix``): UI and REST API on 6006, spans in SQLite under the stack directory;
* Prometheus (Debian's ``prometheus`` package) scrapes the application's ``/metrics`` endpoint, which
  ``opentelemetry-exporter-prometheus`` serves (Prometheus 2.x has no OTLP receiver), by default 127.0.0.1:9464.

Everything, configs, data, logs and the state file ``stack.json``, lives under one directory. ``down`` signals
a process only if its pid *and* its start time still match what ``up`` recorded. No root is needed once the
three programs are installed. docs/deploy.md describes the topology.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from otel_rai import settings
from otel_rai.errors import StackError

STATE_FILE = "stack.json"
#: Stop order: rotel first, so that it can hand what it holds to Phoenix before Phoenix goes.
COMPONENTS = ("rotel", "phoenix", "prometheus")
#: Where opentelemetry-exporter-prometheus serves metrics by default (OTEL_EXPORTER_PROMETHEUS_PORT).
DEFAULT_SCRAPE = "127.0.0.1:9464"
#: The EU AI Act's six months, as in collector/jaeger.yaml.
RETENTION = "184d"
#: How often Prometheus scrapes the application unless told otherwise.
SCRAPE_INTERVAL = "15s"
#: How long `up` waits for every server to answer, and `down` for each to exit after SIGTERM (then SIGKILL).
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
#: How long `up` gives the servers it started to exit when another failed to start.
_ABORT_TIMEOUT_S = 10.0
#: How often `up` asks the servers whether they are ready, and the readiness probes' own timeouts.
_READY_POLL_S = 0.25
_HTTP_PROBE_S = 2.0
_TCP_PROBE_S = 0.5
#: How often `down` looks whether a server has exited, after SIGTERM and after SIGKILL.
_EXIT_POLL_S = 0.1
_KILLED_POLL_S = 0.05

INSTALL = {
    "rotel": "pip install 'otel-rai[stack]' (or: pip install rotel)",
    "phoenix": "pipx install arize-phoenix, or set OTEL_RAI_PHOENIX to its `phoenix` command (it cannot share an "
               "environment with mlflow: their graphql-core versions conflict)",
    "prometheus": "sudo apt-get install prometheus on Debian/Ubuntu, or put a prometheus binary on PATH",
}


@dataclass(frozen=True)
class Ports:
    """Listen ports; 0 picks a free port. Phoenix's gRPC port only talks to rotel, so it defaults to free."""

    otlp_grpc: int = 4317
    otlp_http: int = 4318
    phoenix: int = 6006
    phoenix_grpc: int = 0
    prometheus: int = 9090


#: Port field -> the command-line option that sets it, for error messages.
PORT_OPTIONS = {
    "otlp_grpc": "--otlp-grpc-port",
    "otlp_http": "--otlp-http-port",
    "phoenix": "--phoenix-port",
    "phoenix_grpc": "--phoenix-grpc-port",
    "prometheus": "--prometheus-port",
}


@dataclass
class Process:
    """A server that ``up`` started: enough to find it again, and to tell it from a process that reused its pid."""

    name: str
    pid: int
    started: str  # the kernel's start time of the process, read right after spawning it
    argv: list[str]
    log: str
    addresses: dict[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    """What ``up`` started, as stored in ``<directory>/stack.json``."""

    directory: Path
    host: str
    ports: Ports
    scrape: list[str]
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def otlp_grpc_endpoint(self) -> str:
        """Where rotel receives OTLP over gRPC, as a URL."""
        return f"http://{self.host}:{self.ports.otlp_grpc}"

    @property
    def otlp_http_endpoint(self) -> str:
        """Where rotel receives OTLP over HTTP, as a URL."""
        return f"http://{self.host}:{self.ports.otlp_http}"

    @property
    def phoenix_url(self) -> str:
        """Phoenix's UI and REST API."""
        return f"http://{self.host}:{self.ports.phoenix}"

    @property
    def prometheus_url(self) -> str:
        """Prometheus's UI and API."""
        return f"http://{self.host}:{self.ports.prometheus}"

    def save(self) -> None:
        """Write the state file, replacing the old one at once (a reader never sees half of it)."""
        state = {
            "host": self.host,
            "ports": asdict(self.ports),
            "scrape": self.scrape,
            "processes": {name: asdict(p) for name, p in self.processes.items()},
        }
        tmp = self.directory / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.directory / STATE_FILE)

    @classmethod
    def load(cls, directory: Path) -> Stack | None:
        """The stack recorded in `directory`, or None; `StackError` for a state file this version cannot read."""
        path = directory / STATE_FILE
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_text())
            return cls(
                directory=directory,
                host=state["host"],
                ports=Ports(**state["ports"]),
                scrape=list(state["scrape"]),
                processes={name: Process(**p) for name, p in state["processes"].items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StackError(f"{path} is not a stack state file this version understands ({exc}); "
                             "stop its servers by hand and delete it") from exc


def default_dir() -> Path:
    """``$OTEL_RAI_HOME/stack``, else ``$XDG_DATA_HOME/otel-rai/stack``."""
    return settings.data_dir() / "stack"


# --- processes -----------------------------------------------------------------------------------------


_HAVE_PROC = Path("/proc/self/stat").exists()


def _start_time(pid: int) -> str | None:
    """The start time of a live process as the kernel reports it, or None if it is gone (or a zombie)."""
    if not _HAVE_PROC:  # macOS and the BSDs: ask ps
        run = subprocess.run(["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True)
        stat, _, started = run.stdout.strip().partition(" ")
        return None if not stat or stat.startswith("Z") else started.strip()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else fields[19]  # state, then field 22 of proc(5): starttime


#: Servers started by this process: polling them collects their exit status, so none lingers as a zombie.
_CHILDREN: dict[int, subprocess.Popen] = {}


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def state_of(process: Process) -> str:
    """``running``, ``exited``, or ``replaced`` (the pid now belongs to another process)."""
    _reap(process.pid)
    started = _start_time(process.pid)
    if started is None:
        return "exited"
    return "running" if started == process.started else "replaced"


def _spawn(name: str, argv: list[str], directory: Path, env: dict[str, str], addresses: dict[str, str]) -> Process:
    log = directory / f"{name}.log"
    with open(log, "ab") as out:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 env=env, cwd=directory, start_new_session=True)
    _CHILDREN[child.pid] = child
    started = _start_time(child.pid)
    if started is None:
        child.wait()
        raise StackError(f"{name} exited at once (status {child.returncode}); see {log}")
    return Process(name, child.pid, started, argv, str(log), addresses)


def _terminate(process: Process, timeout: float) -> str:
    """Stop `process` if it is still the one we started; returns what happened."""
    state = state_of(process)
    if state == "exited":
        return f"{process.name} (pid {process.pid}) had already exited"
    if state == "replaced":
        return f"pid {process.pid} is no longer the {process.name} we started: left alone"
    # Each server leads its own session (start_new_session), so the group holds it and any helper it spawned.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and state_of(process) == "running":
        time.sleep(_EXIT_POLL_S)
    if state_of(process) == "running":
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        while state_of(process) == "running":
            time.sleep(_KILLED_POLL_S)
        return f"killed {process.name} (pid {process.pid}) after {timeout:.0f} s"
    return f"stopped {process.name} (pid {process.pid})"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per stack directory."""
    settings.private_directory(directory)  # in the data directory, which holds the audit trail
    with open(directory / ".lock", "w") as lock:
        try:
            import fcntl
        except ImportError:  # Windows: no concurrent-use protection
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --- the three servers ---------------------------------------------------------------------------------


def _rotel_binary() -> Path | None:
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "rotel-agent"
    return binary if binary.exists() else None


def phoenix_command() -> list[str] | None:
    """How to run ``phoenix serve``: ``OTEL_RAI_PHOENIX`` (its ``phoenix`` command, e.g. in a virtualenv of
    its own), else this interpreter's Phoenix, else a ``phoenix`` command on PATH."""
    configured = settings.env("OTEL_RAI_PHOENIX")
    if configured:
        return [configured, "serve"]
    if importlib.util.find_spec("phoenix") is not None:
        return [sys.executable, "-m", "phoenix.server.main", "serve"]
    found = shutil.which("phoenix")
    return [found, "serve"] if found else None


def _prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def missing() -> list[str]:
    """One line per component that is not installed, with the command that installs it."""
    found = {
        "rotel": _rotel_binary() is not None,
        "phoenix": phoenix_command() is not None,
        "prometheus": _prometheus_binary() is not None,
    }
    return [f"{name} is not installed: {INSTALL[name]}" for name in COMPONENTS if not found[name]]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def resolve_ports(host: str, ports: Ports) -> Ports:
    """Ports with every 0 replaced by a free port; a taken port is an error naming the option that moves it."""
    chosen, taken = {}, []
    for name, port in asdict(ports).items():
        if port == 0:
            port = _free_port(host)
            while port in chosen.values():
                port = _free_port(host)
        elif not _port_free(host, port):
            taken.append(f"port {port} on {host} is in use; choose another with {PORT_OPTIONS[name]} "
                         "(0 = any free port)")
        chosen[name] = port
    if len(set(chosen.values())) != len(chosen):
        taken.append(f"two servers cannot share a port: {chosen}")
    if taken:
        raise StackError("; ".join(taken))
    return Ports(**chosen)


def _scrape_target(target: str) -> str:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise StackError(f"scrape target {target!r} must look like HOST:PORT, e.g. {DEFAULT_SCRAPE}")
    return target


def _prometheus_config(stack: Stack, rule_files: Sequence[Path], scrape_interval: str) -> Path:
    """Write prometheus.yml (self-scrape, plus the application targets from targets.json, which Prometheus
    re-reads when it changes) and return its path. JSON is valid YAML, so no YAML library is needed."""
    prom_dir = stack.directory / "prometheus"
    prom_dir.mkdir(exist_ok=True)
    targets = prom_dir / "targets.json"
    targets.write_text(json.dumps([{"targets": stack.scrape, "labels": {"stack": "otel-rai"}}], indent=2) + "\n")
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(Path(f).resolve()) for f in rule_files],
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": [f"{stack.host}:{stack.ports.prometheus}"]}]},
            {"job_name": "otel-rai-app", "honor_labels": True, "file_sd_configs": [{"files": [str(targets)]}]},
        ],
    }
    path = prom_dir / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment without settings that would redirect a server (another database, other flags)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "ROTEL_", "OTEL_"))}
    env.update(extra)
    return env


def _launch_all(stack: Stack, rule_files: Sequence[Path], scrape_interval: str) -> list[tuple[str, Callable[[], bool]]]:
    """Start the three servers; return (name, readiness check) pairs."""
    host, ports, directory = stack.host, stack.ports, stack.directory
    phoenix_dir = directory / "phoenix"
    phoenix_dir.mkdir(exist_ok=True)
    stack.processes["phoenix"] = _spawn(
        "phoenix",
        phoenix_command() or [],
        directory,
        _child_env({
            "PHOENIX_HOST": host,
            "PHOENIX_PORT": str(ports.phoenix),
            "PHOENIX_GRPC_PORT": str(ports.phoenix_grpc),
            "PHOENIX_WORKING_DIR": str(phoenix_dir),
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        }),
        {"UI and REST API": stack.phoenix_url, "OTLP gRPC (from rotel)": f"[::]:{ports.phoenix_grpc}"},
    )
    stack.save()
    prometheus_yml = _prometheus_config(stack, rule_files, scrape_interval)
    stack.processes["prometheus"] = _spawn(
        "prometheus",
        [
            str(_prometheus_binary()),
            f"--config.file={prometheus_yml}",
            f"--storage.tsdb.path={directory / 'prometheus' / 'data'}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address={host}:{ports.prometheus}",
        ],
        directory,
        _child_env({}),
        {"UI and API": stack.prometheus_url, "scraping": ", ".join(stack.scrape)},
    )
    stack.save()
    stack.processes["rotel"] = _spawn(
        "rotel",
        [
            str(_rotel_binary()), "start",
            "--otlp-grpc-endpoint", f"{host}:{ports.otlp_grpc}",
            "--otlp-http-endpoint", f"{host}:{ports.otlp_http}",
            # Phoenix stores traces only: refuse metrics and logs rather than forward them to be dropped.
            "--otlp-receiver-metrics-disabled",
            "--otlp-receiver-logs-disabled",
            "--exporter", "otlp",
            "--otlp-exporter-endpoint", f"http://127.0.0.1:{ports.phoenix_grpc}",
            "--otlp-exporter-protocol", "grpc",
            # rotel has no disk queue: keep retrying in memory while Phoenix is down instead of giving up at 5 min.
            "--otlp-exporter-retry-max-elapsed-time", "8760h",
            "--pid-file", str(directory / "rotel.pid"),
            "--log-file", str(directory / "rotel-daemon.log"),
        ],
        directory,
        _child_env({"RUST_LOG": "warn"}),
        {"OTLP gRPC": f"{host}:{ports.otlp_grpc}", "OTLP HTTP": f"{host}:{ports.otlp_http}"},
    )
    stack.save()
    return [
        ("phoenix", lambda: _http_ok(f"{stack.phoenix_url}/healthz")),
        ("prometheus", lambda: _http_ok(f"{stack.prometheus_url}/-/ready")),
        ("rotel", lambda: _listening(host, ports.otlp_grpc) and _listening(host, ports.otlp_http)),
    ]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=_HTTP_PROBE_S) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_TCP_PROBE_S):
            return True
    except OSError:
        return False


def _last_line(path: str) -> str:
    """The last non-empty line of a server's log (where a failing server says why), for a one-line error."""
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _wait_ready(stack: Stack, checks: list[tuple[str, Callable[[], bool]]], timeout: float) -> None:
    pending = dict(checks)
    deadline = time.monotonic() + timeout
    while pending:
        for name in list(pending):
            process = stack.processes[name]
            if state_of(process) != "running":
                raise StackError(f"{name} exited while starting; see {process.log}, which ends: "
                                 f"{_last_line(process.log)!r}")
            if pending[name]():
                del pending[name]
        if pending and time.monotonic() > deadline:
            name = next(iter(pending))
            log = stack.processes[name].log
            raise StackError(f"{name} was not ready after {timeout:.0f} s; see {log}, which ends: {_last_line(log)!r}")
        if pending:
            time.sleep(_READY_POLL_S)


# --- up, down, status ----------------------------------------------------------------------------------


def up(
    directory: Path | None = None,
    *,
    ports: Ports = Ports(),
    host: str = "127.0.0.1",
    scrape: Sequence[str] = (DEFAULT_SCRAPE,),
    rule_files: Sequence[Path] = (),
    scrape_interval: str = SCRAPE_INTERVAL,
    timeout: float = START_TIMEOUT_S,
) -> Stack:
    """Start rotel, Phoenix and Prometheus and wait until each answers; return where they listen.

    An already running stack in `directory` is returned as it is. If a server fails to start, the ones already
    started are stopped again and `StackError` says why (with the last line of that server's log).
    """
    directory = (directory or default_dir()).resolve()
    problems = missing()
    if problems:
        raise StackError("cannot start the stack: " + "; ".join(problems))
    for rule_file in rule_files:
        if not Path(rule_file).is_file():
            raise StackError(f"rule file {rule_file} does not exist")
    with _locked(directory):
        existing = Stack.load(directory)
        if existing is not None:
            states = {name: state_of(p) for name, p in existing.processes.items()}
            if set(states) == set(COMPONENTS) and set(states.values()) == {"running"}:
                return existing
            if "running" in states.values():
                raise StackError(f"the stack in {directory} is partly running ({states}); "
                                 "run `otel-rai stack down` first")
            (directory / STATE_FILE).unlink()
        stack = Stack(directory, host, resolve_ports(host, ports), [_scrape_target(t) for t in scrape])
        try:
            _wait_ready(stack, _launch_all(stack, rule_files, scrape_interval), timeout)
        except BaseException:
            _stop(stack, timeout=_ABORT_TIMEOUT_S)
            raise
        return stack


def _stop(stack: Stack, timeout: float) -> list[str]:
    outcomes = [_terminate(stack.processes[name], timeout) for name in COMPONENTS if name in stack.processes]
    (stack.directory / STATE_FILE).unlink(missing_ok=True)
    return outcomes


def down(directory: Path | None = None, *, timeout: float = STOP_TIMEOUT_S) -> list[str]:
    """Stop what ``up`` started in `directory` (and nothing else); the data stays. Returns one line per server."""
    directory = (directory or default_dir()).resolve()
    with _locked(directory):
        stack = Stack.load(directory)
        if stack is None:
            return []
        return _stop(stack, timeout)


@dataclass
class Status:
    """What `status` found: the stack recorded in `directory`, and the state of each server."""

    directory: Path
    stack: Stack | None
    states: dict[str, str]

    @property
    def running(self) -> bool:
        """Whether all three servers run."""
        return bool(self.states) and set(self.states) == set(COMPONENTS) and set(self.states.values()) == {"running"}

    def as_dict(self) -> dict:
        """The status as JSON-ready values (``stack status --json``)."""
        processes = {}
        for name, state in self.states.items():
            process = self.stack.processes[name]
            processes[name] = {"state": state, "pid": process.pid, "addresses": process.addresses, "log": process.log}
        return {"directory": str(self.directory), "running": self.running, "processes": processes,
                "otlp_endpoint": self.stack.otlp_grpc_endpoint if self.stack else None}


def status(directory: Path | None = None) -> Status:
    """What runs in `directory`, and where."""
    directory = (directory or default_dir()).resolve()
    stack = Stack.load(directory)
    states = {name: state_of(p) for name, p in stack.processes.items()} if stack else {}
    return Status(directory, stack, states)
