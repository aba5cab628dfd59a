"""How many decisions the common process lifecycles lose, over many runs. Prints a table and writes
bench/results/bench_lifecycles.json.

    python bench/bench_lifecycles.py [--runs 20] [--decisions 2000] [--methods fork,spawn,forkserver]

Each run is a fresh process (tests/lifecycle_app.py) that makes `--decisions` single-row decisions in
the children of one lifecycle (Pool with-block, close/join, terminate, maxtasksperchild, imap;
ProcessPoolExecutor; a process per task; terminate() while tasks still run), in fail-open and fail-closed
mode, into a local store; the decisions it reports are looked up there. "Lost" counts decisions whose
result came back to the parent (or, for terminate mid-flight, that the child made and noted) and are not
in the store. Run it against another checkout with ``PYTHONPATH=/path/to/checkout``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "lifecycle_app.py"
KEY = "bench-key-0123456789abcdef0123456789"
#: A run of a few thousand decisions takes seconds; one still going after this is counted as hung.
HUNG_AFTER_S = 120
#: Not ProcessPoolExecutor(max_tasks_per_child=...): CPython 3.11's hangs with it, bare (tests/test_lifecycles.py).
LIFECYCLES = ["pool-with", "pool-close-join", "pool-terminate", "pool-maxtasksperchild", "pool-imap-unordered",
              "executor", "process-per-task", "pool-terminate-mid-flight"]


def one_run(lifecycle: str, method: str, n: int, fail_closed: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        store, notes = Path(tmp) / "audit.db", Path(tmp) / "notes"
        notes.mkdir()
        env = {**os.environ, "OTEL_RAI_HASH_KEY": KEY, "OTEL_RAI_STORE": str(store), "OTEL_RAI_HOME": tmp,
               "LIFECYCLE_NOTES": str(notes), "OTEL_RAI_ON_AUDIT_FAILURE": "raise" if fail_closed else "log"}
        process = subprocess.Popen([sys.executable, str(APP), lifecycle, method, str(n)], env=env, cwd=tmp,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = process.communicate(timeout=HUNG_AFTER_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the app and its children (a hung pool worker)
            process.communicate()
            return {"hung": True}
        if process.returncode != 0:
            return {"failed": err[-500:]}
        result = json.loads(out.strip().splitlines()[-1])
        with sqlite3.connect(store) as conn:
            stored = [r[0] for r in conn.execute("SELECT decision_id FROM decisions")]
    expected = set(result["decided"] if lifecycle == "pool-terminate-mid-flight" else result["returned"])
    return {"expected": len(expected), "lost": len(expected - set(stored)), "twice": len(stored) - len(set(stored)),
            "seconds": result["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--methods", default="fork,spawn,forkserver")
    parser.add_argument("--lifecycles", default=",".join(LIFECYCLES))
    parser.add_argument("--modes", default="log,raise")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_lifecycles.json"))
    args = parser.parse_args()
    rows = []
    print(f"{'lifecycle':<26} {'method':<10} {'mode':<6} {'runs':>4} {'decisions':>9} {'lost':>6} {'worst':>6} "
          f"{'twice':>5} {'hung':>4} {'failed':>6}")
    for lifecycle in args.lifecycles.split(","):
        for method in args.methods.split(","):
            for mode in args.modes.split(","):
                runs = [one_run(lifecycle, method, args.decisions, mode == "raise") for _ in range(args.runs)]
                done = [r for r in runs if "lost" in r]
                row = {"lifecycle": lifecycle, "method": method, "mode": mode, "runs": len(runs),
                       "decisions": sum(r["expected"] for r in done), "lost": sum(r["lost"] for r in done),
                       "worst_run": max((r["lost"] for r in done), default=0),
                       "twice": sum(r["twice"] for r in done), "hung": sum("hung" in r for r in runs),
                       "failed": sum("failed" in r for r in runs)}
                rows.append(row)
                print(f"{lifecycle:<26} {method:<10} {mode:<6} {row['runs']:>4} {row['decisions']:>9} {row['lost']:>6} "
                      f"{row['worst_run']:>6} {row['twice']:>5} {row['hung']:>4} {row['failed']:>6}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": platform.platform(), "python": platform.python_version(),
                                          "cpus": os.cpu_count(), "pythonpath": os.environ.get("PYTHONPATH", ""),
                                          "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
