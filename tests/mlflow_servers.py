"""Real MLflow processes for the tests, on 127.0.0.1 with free ports, stopped afterwards.

* `TrackingServer`: ``mlflow server`` with a SQLite backend store (OTLP/HTTP traces at ``/v1/traces``).
* `ModelServer`: ``mlflow models serve --env-manager local`` of a model URI, importing otel_rai from this
  checkout (``PYTHONPATH``).

Each runs in a session of its own (the model server's command execs uvicorn in a child), so that
`stop` ends the process group it started, and nothing else.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Mapping

from servers import free_port

ROOT = Path(__file__).resolve().parent.parent
#: Starting MLflow imports a lot; on a busy two-core machine it has taken 40 s.
START_TIMEOUT_S = 180.0


def mlflow_command() -> list[str]:
    """The ``mlflow`` command of this interpreter."""
    found = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    return [found] if found else [sys.executable, "-m", "mlflow"]


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.update(extra or {})
    return env


class _Process:
    def __init__(self, name: str, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / f"{name}-{self.port}.log"
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, argv: list[str], env: dict[str, str], ready: str) -> None:
        with open(self.log, "wb") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"{argv[:3]} exited with {self._process.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(self.url + ready, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"{argv[:3]} not ready after {START_TIMEOUT_S} s: {self.tail()}")

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """SIGTERM to the process group this started (then SIGKILL), and wait."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass


class TrackingServer(_Process):
    """``mlflow server`` on a SQLite backend store in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        super().__init__("mlflow-server", workdir)
        self.workdir = workdir
        self.backend_store = f"sqlite:///{workdir / 'mlflow.db'}"

    def start(self) -> TrackingServer:
        argv = [*mlflow_command(), "server", "--backend-store-uri", self.backend_store,
                "--artifacts-destination", str(self.workdir / "artifacts"),
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self._start(argv, base_env(), "/health")
        return self


class ModelServer(_Process):
    """``mlflow models serve -m URI --env-manager local``, with `env` added to this process's environment."""

    def __init__(self, model_uri: str, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        super().__init__("mlflow-models-serve", workdir)
        self.model_uri = model_uri
        self.env = dict(env or {})

    def start(self) -> ModelServer:
        argv = [*mlflow_command(), "models", "serve", "-m", self.model_uri, "-p", str(self.port),
                "-h", "127.0.0.1", "--env-manager", "local"]
        self._start(argv, base_env(self.env), "/ping")
        return self
