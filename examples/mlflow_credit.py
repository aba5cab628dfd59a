"""Credit scoring on MLflow, audited by otel-rai, end to end on one machine.

Run: python examples/mlflow_credit.py [--workdir DIR] [--keep-running]

It starts an MLflow tracking server (SQLite, in a temporary folder unless --workdir), then:

1. trains a model and logs it as an otel-rai pyfunc model, which answers with explanations;
2. checks its fairness on validation data, logged to the run (and with ``otel-rai check``, as CI would);
3. registers it as ``credit`` version 1, alias ``champion``;
4. serves ``models:/credit@champion`` with ``mlflow models serve`` (decisions go to the local audit store and
   to the MLflow experiment ``credit-decisions``);
5. asks it with curl;
6. finds the decision with ``otel-rai query`` in the audit store and in the MLflow server, makes it again
   with ``otel-rai reproduce``, and prints the link to it in MLflow's Traces tab.

Needs ``pip install 'otel-rai[mlflow]'``. With --keep-running the servers stay up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NUMERIC = ["income", "debt_ratio", "years_employed"]
CATEGORICAL = ["home"]
#: Adverse-action reasons: a feature (and the sign that counts against the applicant) -> the text.
REASON_CODES = {
    ("income", "-"): "Income insufficient for amount of credit requested",
    ("debt_ratio", "-"): "Excessive obligations in relation to income",
    ("years_employed", "-"): "Length of employment",
    ("home", "-"): "Type of residence",
}
EXPERIMENT = "credit-decisions"
#: Starting MLflow takes seconds to a minute on a busy machine.
START_TIMEOUT_S = 180


def applications(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Applicants, whether they repaid, and their sex (a sensitive attribute the model does not see)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "income": rng.lognormal(10.5, 0.5, n).round(-2),
        "debt_ratio": rng.uniform(0, 0.8, n).round(3),
        "years_employed": rng.integers(0, 30, n).astype(float),
        "home": rng.choice(["rent", "own", "mortgage"], n),
    })
    score = np.log(frame.income) - 10.5 - 3 * frame.debt_ratio + 0.03 * frame.years_employed
    repaid = (score + rng.normal(0, 0.4, n) > -0.9).astype(int).to_numpy()
    return frame, repaid, rng.choice(["female", "male"], n)


def pipeline() -> Pipeline:
    prep = ColumnTransformer([("num", StandardScaler(), NUMERIC),
                              ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)])
    return Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], url: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start a server in a process group of its own and wait until `url` answers."""
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{argv[0]} {argv[1]} stopped; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return process
        except OSError:
            time.sleep(0.5)
    sys.exit(f"{argv[0]} {argv[1]} did not start within {START_TIMEOUT_S} s; see {log}")


def stop(process: subprocess.Popen) -> None:
    """Stop the server's process group (MLflow's server has worker processes of its own)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run(workdir: Path, keep_running: bool) -> None:
    mlflow_bin = shutil.which("mlflow") or sys.exit("the mlflow command is missing: pip install 'otel-rai[mlflow]'")
    tracking_port, serving_port = free_port(), free_port()
    tracking = f"http://127.0.0.1:{tracking_port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    os.environ["MLFLOW_TRACKING_URI"] = tracking
    print(f"MLflow tracking server: {tracking} (files in {workdir})")
    servers = [start([mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
                      "--artifacts-destination", str(workdir / "artifacts"), "--host", "127.0.0.1",
                      "--port", str(tracking_port)], tracking + "/health", workdir / "mlflow-server.log", env)]
    try:
        import mlflow

        import otel_rai.mlflow

        # 1. Train, and log the model that answers with explanations.
        X, y, _ = applications(4000, seed=1)
        X_val, y_val, sex_val = applications(1500, seed=2)
        model = pipeline().fit(X, y)
        mlflow.set_experiment("credit-training")
        with mlflow.start_run() as run:
            mlflow.log_metric("accuracy", float((model.predict(X_val) == y_val).mean()))
            # 2. Fairness on validation data: metrics, the HTML report and a pass/fail tag on the run.
            #    The report also shows what drives the decisions (the explanations of the validation rows).
            check = otel_rai.mlflow.log_fairness(model, X_val, y_val, sensitive_features={"sex": sex_val},
                                                 model_name="credit", background=X.iloc[:200])
            print(f"1-2. trained and checked: fairness {'PASS' if check.passed else 'FAIL'} "
                  f"(demographic parity ratio by sex {check.attributes[0].summary.demographic_parity_ratio:.3f})")
            # 3. Log it as the pyfunc that answers with reasons, and register it.
            info = otel_rai.mlflow.log_model(model, name="credit-model", background=X.iloc[:200],
                                             input_example=X_val.iloc[:3], reason_codes=REASON_CODES,
                                             registered_model_name="credit")
        client = mlflow.MlflowClient()
        client.set_registered_model_alias("credit", "champion", info.registered_model_version)
        print(f"3. registered credit version {info.registered_model_version} as credit@champion "
              f"(run {run.info.run_id})")
        validation = workdir / "validation.csv"
        X_val.assign(sex=sex_val, repaid=y_val).to_csv(validation, index=False)
        gate = subprocess.run([sys.executable, "-m", "otel_rai", "check", "--model", "models:/credit@champion",
                               "--data", str(validation), "--target", "repaid", "--sensitive", "sex"],
                              capture_output=True, text=True, env=env)
        print(f"   otel-rai check --model models:/credit@champion ...: exit {gate.returncode}, "
              f"{gate.stdout.strip().splitlines()[-1]}")

        # 4. Serve it. Decisions go to the local audit store, which is also the write-ahead log of their
        #    export to the MLflow experiment.
        store = workdir / "audit.db"
        serving = f"http://127.0.0.1:{serving_port}"
        served_env = {**env, "OTEL_RAI_STORE": str(store), "OTEL_RAI_MLFLOW_EXPERIMENT": EXPERIMENT,
                      "OTEL_SERVICE_NAME": "credit-scoring", "OTEL_RAI_HOME": str(workdir / "otel-rai")}
        servers.append(start([mlflow_bin, "models", "serve", "-m", "models:/credit@champion", "-p", str(serving_port),
                              "-h", "127.0.0.1", "--env-manager", "local"], serving + "/ping",
                             workdir / "models-serve.log", served_env))
        print(f"4. serving models:/credit@champion at {serving}")

        # 5. Ask it, as any client would, about an applicant it declines (so that the reasons matter).
        applicant = X_val[model.predict(X_val) == 0].iloc[[0]]
        body = json.dumps({"dataframe_split": applicant.to_dict(orient="split", index=False)})
        command = ["curl", "-s", "-X", "POST", f"{serving}/invocations", "-H", "Content-Type: application/json",
                   "-d", body]
        print("5. " + shlex.join(command))
        if shutil.which("curl"):
            answer = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        else:
            request = urllib.request.Request(f"{serving}/invocations", body.encode(),
                                             {"Content-Type": "application/json"})
            answer = json.load(urllib.request.urlopen(request))
        decision = answer["predictions"][0]
        print(json.dumps(answer, indent=2))

        # 6. The decision, in the audit store and in the MLflow server.
        decision_id = decision["decision_id"]
        found = wait_for(decision_id, store, tracking)
        for where, argv in (("the audit store", ["--store", str(store)]),
                            ("the MLflow server", ["--backend", "mlflow", "--url", tracking])):
            shown = subprocess.run([sys.executable, "-m", "otel_rai", "query", *argv, "--decision-id", decision_id,
                                    "--since", "1h"], capture_output=True, text=True,
                                   env={**env, "OTEL_RAI_MLFLOW_EXPERIMENT": EXPERIMENT})
            print(f"6. otel-rai query {' '.join(argv)} --decision-id {decision_id}   ({where})")
            print(shown.stdout.rstrip())
        # ... and made again from the model the server saved, from the applicant's row alone.
        row = workdir / "applicant.json"
        row.write_text(json.dumps(applicant.iloc[0].to_dict()))
        again = subprocess.run([sys.executable, "-m", "otel_rai", "reproduce", decision_id, "--input", str(row),
                                "--store", str(store)], capture_output=True, text=True, env=served_env)
        print(f"   otel-rai reproduce {decision_id} --input {row.name}: exit {again.returncode}, "
              f"{(again.stdout.strip().splitlines() or [again.stderr.strip()])[-1]}")
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        print(f"   in MLflow: {tracking}/#/experiments/{experiment}/traces?selectedEvaluationId=tr-{found.trace_id}")
        print(f"TRACE experiment={experiment} trace=tr-{found.trace_id} decision={decision_id}")
        if keep_running:
            print("servers running; Ctrl-C (or kill PID) stops them")
            # Also when started in the background, where a shell ignores Ctrl-C for it.
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, _interrupt)
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        for process in reversed(servers):
            stop(process)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def wait_for(decision_id: str, store: Path, tracking: str, timeout: float = 60.0):
    """The decision, once both the audit store and the MLflow server have it."""
    from otel_rai.query import find_decisions
    from otel_rai.query.mlflow import Mlflow

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        local = next(find_decisions(decision_id=decision_id, url=str(store)), None)
        remote = next(find_decisions(decision_id=decision_id, backend=Mlflow(tracking, EXPERIMENT)), None)
        if local is not None and remote is not None:
            return remote
        time.sleep(0.5)
    sys.exit(f"decision {decision_id} did not arrive within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description="Credit scoring on MLflow, audited by otel-rai.")
    parser.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary folder)")
    parser.add_argument("--keep-running", action="store_true", help="leave the servers up until Ctrl-C")
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args.workdir.resolve(), args.keep_running)
        return
    with tempfile.TemporaryDirectory(prefix="otel-rai-mlflow-") as folder:
        run(Path(folder), args.keep_running)


if __name__ == "__main__":
    main()
