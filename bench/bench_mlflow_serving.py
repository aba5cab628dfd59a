"""What auditing and explaining cost a served MLflow model: one-row ``/invocations`` requests.

    python bench/bench_mlflow_serving.py [--requests 2000] [--blocks 10] [--json bench/results/mlflow_serving.json]

The same fitted model (a scaler and a logistic regression on 8 numeric features) is served three ways by
``mlflow models serve --env-manager local`` (uvicorn, one worker), side by side on free ports:

* **bare**: ``mlflow.sklearn.log_model`` (MLflow's own pyfunc: ``predict`` returns the labels);
* **audited**: `otel_rai.mlflow.log_model`, explanations off: prediction, class scores and decision id,
  every request audited to a local store;
* **explained**: the same with explanations: the top reasons too (the default).

One client thread sends the same one-row ``dataframe_split`` request over a kept-alive connection, in
blocks that alternate between the servers (so that the machine's noise falls on all three alike). It
reports per server the median and 90th percentile of the wall time per request, and the CPU the server's
processes used per request (from /proc: all threads, the audit worker's included), and the ratios to bare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
import requests  # noqa: E402
from mlflow_servers import ModelServer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import otel_rai.mlflow  # noqa: E402

FEATURES = 8
WARMUP = 200
KINDS = ("bare", "audited", "explained")
_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group `pgid` (all their threads)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ..., utime (12), stime (13)
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def save_models(folder: Path) -> tuple[dict[str, Path], pd.DataFrame]:
    """The same fitted model saved as each kind of server's model; and the data it was fitted on."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(2000, FEATURES)), columns=[f"f{i}" for i in range(FEATURES)])
    y = (X.f0 - X.f1 + 0.5 * X.f2 > 0).astype(int)
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    paths = {kind: folder / kind for kind in KINDS}
    mlflow.sklearn.save_model(model, paths["bare"], input_example=X.iloc[:2], pip_requirements=["scikit-learn"])
    for kind in ("audited", "explained"):
        otel_rai.mlflow.save_model(model, paths[kind], name="bench", background=X.iloc[:200],
                                   explain=kind == "explained", input_example=X.iloc[:2],
                                   pip_requirements=["scikit-learn"])
    return paths, X


def main() -> int:
    """Serve, time, print (and write) the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per server")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks the requests are split into")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths, X = save_models(root)
        env = {"OTEL_RAI_HOME": str(root / "home"), "OTEL_RAI_STORE": str(root / "audit.db"),
               "OTEL_RAI_HASH_KEY": "bench-key-0123456789abcdef-9f3a7c2e"}
        servers = {kind: ModelServer(str(paths[kind]), root, env).start() for kind in KINDS}
        try:
            body = json.dumps({"dataframe_split": X.iloc[[7]].to_dict(orient="split", index=False)})
            sessions = {kind: requests.Session() for kind in KINDS}
            headers = {"Content-Type": "application/json"}

            def ask(kind: str) -> float:
                start = time.perf_counter()
                response = sessions[kind].post(servers[kind].url + "/invocations", data=body, headers=headers)
                elapsed = time.perf_counter() - start
                response.raise_for_status()
                return elapsed

            for kind in KINDS:
                for _ in range(WARMUP):
                    ask(kind)
            wall: dict[str, list[float]] = {kind: [] for kind in KINDS}
            cpu: dict[str, float] = dict.fromkeys(KINDS, 0.0)
            per_block = args.requests // args.blocks
            for block in range(args.blocks):
                order = KINDS if block % 2 == 0 else tuple(reversed(KINDS))
                for kind in order:
                    pgid = servers[kind]._process.pid
                    before = group_cpu_s(pgid)
                    wall[kind] += [ask(kind) for _ in range(per_block)]
                    cpu[kind] += group_cpu_s(pgid) - before
            answer = sessions["explained"].post(servers["explained"].url + "/invocations", data=body,
                                                headers=headers).json()
        finally:
            for server in servers.values():
                server.stop()
    results = {}
    for kind in KINDS:
        times = sorted(wall[kind])
        results[kind] = {
            "median_ms": statistics.median(times) * 1e3,
            "p90_ms": times[int(0.9 * len(times))] * 1e3,
            "server_cpu_ms_per_request": cpu[kind] / len(times) * 1e3,
        }
    for kind in ("audited", "explained"):
        results[kind]["median_ratio"] = results[kind]["median_ms"] / results["bare"]["median_ms"]
        results[kind]["cpu_ratio"] = (results[kind]["server_cpu_ms_per_request"]
                                      / results["bare"]["server_cpu_ms_per_request"])
    print(f"{'server':<10} {'median ms':>10} {'p90 ms':>8} {'server CPU ms/req':>18} {'median vs bare':>15} "
          f"{'CPU vs bare':>12}")
    for kind in KINDS:
        r = results[kind]
        ratios = f"{r.get('median_ratio', 1):>14.2f}x {r.get('cpu_ratio', 1):>11.2f}x"
        print(f"{kind:<10} {r['median_ms']:>10.2f} {r['p90_ms']:>8.2f} {r['server_cpu_ms_per_request']:>18.2f} "
              f"{ratios}")
    print("an answer of the explained server:", json.dumps(answer["predictions"][0]))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                                         "mlflow": mlflow.__version__, "requests": args.requests,
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
