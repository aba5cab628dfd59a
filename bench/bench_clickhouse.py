"""ClickHouse (chDB, in this process) against the local SQLite store, on the same decisions.

    python bench/bench_clickhouse.py [--decisions 1000000] [--dir DIR] [--keep] [--skip-local-report]
                                     [--only WHAT[:KIND]]... [--results FILE]

1. Generate: `--decisions` decisions through the real SDK (`otel_rai.instrument` with the local store):
   nine in ten in 1000-row `predict_proba` calls, one in ten in single-row calls, three model versions over
   30 days (a simulated wall clock spreads the calls over the month), the sensitive attribute of every row
   (`decisions(groups=...)`), and an outcome recorded for one row in ten. One process: one chain stream,
   with as many records as there are calls.
2. Load: `export --to clickhouse --include groups --include outcomes --include drift` (the real loader:
   the exporter's rows, the views filling the lookup tables). Time, and size on disk of both stores.
3. Measure, each in a fresh process (median of `REPEATS`, and the first, cold): the first page (50) of one
   version and one day; one decision by id; one input hash; the month's report aggregates of one version;
   verify-chain of the stream; the whole `otel-rai report` page, `monitor` and `model list` of a version;
   each with the process's peak memory (VmHWM).

Prints a Markdown table and writes bench/results/bench_clickhouse.json (or `--results`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


DAY = 86_400 * 10**9
#: The simulated month: 30 days, ending two days ago (the tables' TTL drops rows older than 185 days).
DAYS = 30
VERSIONS = {"1.0": (0, 12), "2.0": (8, 22), "3.0": (18, 30)}  # version -> its days
BATCH_ROWS = 1000
#: Share of decisions made one row at a time (each a span, a chain record).
SINGLE_SHARE = 0.1
#: One decision in this many gets an outcome.
LABEL_EVERY = 10
KEY = "bench-key-0123456789abcdef0123456789"
REPEATS = 5
PAGE = 50
#: What is measured, each on both stores.
MEASURES = ("page", "id", "hash", "report", "chain", "page-report", "monitor", "models")


class _Clock:
    """`time.time_ns` for the generating process: a wall clock that the generator moves through the month.
    Every reading is a microsecond later than the one before, as real clocks move."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def generate(path: Path, decisions: int, seed: int = 0) -> dict[str, Any]:
    """Decisions through the real SDK into the local store at `path` (see the module docstring)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import otel_rai

    rng = np.random.default_rng(seed)
    groups = np.array(["f", "m", "x"])

    def applicants(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """New applicants (every input row is new, as in production): features, sex, ground truth."""
        X = rng.normal(size=(n, 10))
        sex = rng.choice(groups, size=n, p=[0.48, 0.48, 0.04])
        return X, sex, (X[:, 0] + 0.5 * X[:, 1] + (sex == "m") > 0.2).astype(int)

    X, _, y = applicants(20_000)
    start = (time.time_ns() // DAY - DAYS - 2) * DAY
    clock = _Clock(start)
    real_time_ns = time.time_ns
    singles = int(decisions * SINGLE_SHARE)
    batches = (decisions - singles) // BATCH_ROWS
    calls = ["b"] * batches + ["s"] * singles
    random_order = np.random.default_rng(seed + 1).permutation(len(calls))
    step = DAYS * DAY // max(len(calls), 1)
    time.time_ns = clock  # the SDK stamps calls, checkpoints and outcomes with it
    began = time.perf_counter()
    try:
        otel_rai.instrument(store=path, hash_key=KEY, service_name="credit-scoring", sensitive_features=["sex"],
                            checkpoint_key=KEY)
        models = {v: otel_rai.register_model(LogisticRegression().fit(X, y), name="credit", version=v)
                  for v in VERSIONS}
        made = 0
        for n, i in enumerate(random_order):
            clock.now = max(clock.now, start + n * step)
            day = (clock.now - start) / DAY
            active = [v for v, (a, b) in VERSIONS.items() if a <= day < b] or ["3.0"]
            version = active[int(rng.integers(len(active)))]
            rows = BATCH_ROWS if calls[i] == "b" else 1
            Xc, sex, yc = applicants(rows)
            with otel_rai.decisions(groups={"sex": sex.tolist()}) as scope:
                models[version].predict_proba(Xc)
            for j in range(-made % LABEL_EVERY, rows, LABEL_EVERY):  # every tenth decision made
                otel_rai.record_outcome(scope.ids[j], int(yc[j]))
            made += rows
        assert otel_rai.flush(600).complete
    finally:
        otel_rai.uninstrument()
        time.time_ns = real_time_ns
    return {"decisions": made, "calls": len(calls), "seconds": time.perf_counter() - began,
            "start_ns": start, "size_bytes": sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))}


def load(path: Path, url: str) -> dict[str, Any]:
    """`otel-rai export --to clickhouse --include groups --include outcomes --include drift`, timed."""
    from otel_rai import cli
    from otel_rai.clickhouse import client, schema

    began = time.perf_counter()
    code = cli.main(["export", "--to", "clickhouse", "--url", url, "--store", str(path),
                     "--include", "groups", "--include", "outcomes", "--include", "drift"])
    seconds = time.perf_counter() - began
    assert code == 0
    db = client.connect(url)
    sizes = dict(db.rows("SELECT table, sum(bytes_on_disk) FROM system.parts WHERE active AND database = "
                         "{db:String} GROUP BY table", {"db": db.layout.database}))
    (spans,), = db.rows(f"SELECT count() FROM {db.table(schema.TRACES)}")
    return {"seconds": seconds, "spans": spans, "bytes": {k: int(v) for k, v in sizes.items()}}


# --- measurements, each in a process of its own ------------------------------------------------------------


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _backend(kind: str, path: str, url: str) -> Any:
    from otel_rai import query

    backend = query.connect("local", path) if kind == "local" else query.connect("clickhouse", url)
    if kind == "clickhouse":
        backend.db.rows("SELECT 1")  # chDB starts its engine at the first query: not part of any measurement
    return backend


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return times, result


def measure(what: str, kind: str, path: str, url: str, facts: dict[str, Any]) -> dict[str, Any]:
    """One measurement on one backend; runs in a fresh process."""
    from otel_rai import query
    from otel_rai.query import Query

    backend = _backend(kind, path, url)
    out: dict[str, Any] = {}
    if what == "page":
        day = facts["start_ns"] + 15 * DAY
        q = Query(model_version="2.0", start_ns=day, end_ns=day + DAY)
        times, found = _timed(lambda: [d.decision_id for d in itertools.islice(query.decisions(q, backend), PAGE)],
                              REPEATS)
        out["found"] = len(found)
    elif what in ("id", "hash"):
        wanted = facts["ids"] if what == "id" else facts["hashes"]
        field = "decision_ids" if what == "id" else "input_hashes"
        values = iter(wanted)
        times, found = _timed(lambda: list(query.decisions(Query(**{field: frozenset([next(values)])}), backend)),
                              REPEATS)
        out["found"] = len(found)
        if kind == "clickhouse":
            out["rows_read"] = backend.last_summary
    elif what == "report":
        from otel_rai.report import figures
        from otel_rai.report import load as report_load

        q = Query(model_version="2.0", start_ns=facts["start_ns"], end_ns=facts["start_ns"] + DAYS * DAY)
        if kind == "clickhouse":
            times, tally = _timed(lambda: backend.tally(q, 1, ["sex"]), 1)
            out["decisions"], out["selected"] = tally.decisions, tally.selected
            out["groups"] = {g: c.selected / c.decisions for g, c in tally.groups["sex"].items()}
        else:
            def local_report() -> Any:
                records, _ = report_load.load(backend, q, ["sex"])
                return figures.figures(records, 1, 1)

            times, f = _timed(local_report, 1)
            out["decisions"], out["selected"] = f.decisions, f.selected
            out["groups"] = {g: c.selected / c.decisions for g, c in f.attributes[0].counts.items()}
    elif what in ("page-report", "monitor", "models"):
        # The whole command, as a user runs it: the report's page (main's sections: counts, model, fairness,
        # time charts, attributions, alerts, quality and drift), the monitor's table, the model list.
        import contextlib
        import io

        from otel_rai import cli

        source = ["--store", path] if kind == "local" else ["--backend", "clickhouse", "--url", url]
        command = {"page-report": ["report", "--model-version", "2.0", "--sensitive-feature", "sex", "--out",
                                   str(Path(path).parent / f"report-{kind}.html")],
                   "monitor": ["monitor", "--model-version", "2.0", "--format", "json"],
                   "models": ["model", "list", "--format", "json"]}[what]
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            times, code = _timed(lambda: cli.main([*command, *source]), 1)
        out["exit"], out["output_bytes"] = code, len(printed.getvalue())
    elif what == "chain":
        from otel_rai.chain.keys import read_keys
        from otel_rai.query.trail import verify

        keys = read_keys([KEY], [], [])
        times, report = _timed(lambda: verify(backend, Query(), keys), 1)
        out["ok"], out["records"] = report.ok, report.records
    else:
        raise ValueError(what)
    out.update(seconds=times, peak_rss_mb=_peak_rss_mb())
    return out


def _in_process(what: str, kind: str, path: Path, url: str, facts: dict[str, Any]) -> dict[str, Any]:
    run = subprocess.run([sys.executable, __file__, "--measure", what, kind, str(path), url, json.dumps(facts)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if run.returncode:
        raise RuntimeError(f"{what} on {kind} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def _facts(path: Path, start_ns: int) -> dict[str, Any]:
    """Decision ids and input hashes to look up: spread over the store, from both kinds of span."""
    import sqlite3

    conn = sqlite3.connect(path)
    total = conn.execute("SELECT max(rowid) FROM spans").fetchone()[0]
    picked = conn.execute("SELECT d.decision_id, d.input_hash FROM decisions d WHERE d.span IN (SELECT seq FROM "
                          "spans WHERE seq % ? = 7) AND d.idx = 0 LIMIT ?",
                          (max(total // (REPEATS * 4), 1), REPEATS * 2)).fetchall()
    return {"start_ns": start_ns, "ids": [p[0] for p in picked], "hashes": [p[1] for p in picked]}


def _ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:,.1f} ms (first {seconds[0] * 1000:,.1f})" if len(seconds) > 1 \
        else f"{seconds[0]:,.2f} s"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        _, _, what, kind, path, url, facts = sys.argv
        print(json.dumps(measure(what, kind, path, url, json.loads(facts))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, help="where the stores go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the stores (reused by a later run with --dir)")
    parser.add_argument("--skip-local-report", action="store_true",
                        help="do not time the local report (it reads every decision of the version into Python)")
    parser.add_argument("--only", action="append", metavar="WHAT[:KIND]",
                        help="measure only this again (one of MEASURES; kind local or clickhouse) "
                             "on the stores of --dir, keeping the other results of the last run")
    parser.add_argument("--results", type=Path, help="the results file (default bench/results/bench_clickhouse.json)")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-ch-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["OTEL_RAI_HOME"] = str(work / "home")
    path, url = work / "audit.db", f"chdb://{work / 'ch'}"
    results: dict[str, Any] = {"decisions": args.decisions, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                               "python": platform.python_version()}
    out = args.results or ROOT / "bench" / "results" / "bench_clickhouse.json"
    if args.only:
        results = json.loads(out.read_text())
    try:
        state = work / "generated.json"
        if state.exists() and json.loads(state.read_text())["decisions"] >= args.decisions * 0.99:
            results["generate"] = json.loads(state.read_text())
        else:
            for leftover in (path, work / "ch"):
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
            results["generate"] = generate(path, args.decisions)
            results["generate"]["load"] = load(path, url)
            state.write_text(json.dumps(results["generate"]))
        results["load"] = results["generate"]["load"]
        facts = _facts(path, results["generate"]["start_ns"])
        for what in MEASURES:
            for kind in ("local", "clickhouse"):
                if what == "report" and kind == "local" and args.skip_local_report:
                    continue
                if args.only and what not in args.only and f"{what}:{kind}" not in args.only:
                    continue
                results.setdefault(what, {})[kind] = _in_process(what, kind, path, url, facts)
                print(what, kind, _ms(results[what][kind]["seconds"]),
                      f"{results[what][kind]['peak_rss_mb']:,.0f} MB", file=sys.stderr, flush=True)
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    _table(results)
    return 0


def _table(r: dict[str, Any]) -> None:
    g = r["generate"]
    print(f"\n{r['decisions']:,} decisions in {g['calls']:,} calls ({r['machine']}, Python {r['python']})\n")
    if "load" in r:
        load_ = r["load"]
        tables = ", ".join(f"{k} {v / 1e6:,.0f}" for k, v in sorted(load_["bytes"].items()))
        print(f"generated through the SDK in {g['seconds']:,.0f} s; loaded into ClickHouse in "
              f"{load_['seconds']:,.0f} s ({r['decisions'] / load_['seconds']:,.0f} decisions/s); on disk: SQLite "
              f"{g['size_bytes'] / 1e6:,.0f} MB, ClickHouse {sum(load_['bytes'].values()) / 1e6:,.0f} MB ({tables})\n")
    print("| | local SQLite store | ClickHouse (chDB) |\n|---|---|---|")
    names = {"page": f"first page ({PAGE}) of one version and one day", "id": "one decision by id",
             "hash": "one input hash", "report": "a month's report aggregates (one version)",
             "chain": "verify-chain of the stream", "page-report": "otel-rai report (the whole page, one version)",
             "monitor": "otel-rai monitor (one version)", "models": "otel-rai model list"}
    for what, name in names.items():
        cells = []
        for kind in ("local", "clickhouse"):
            m = r.get(what, {}).get(kind)
            if m is None:
                cells.append("not run")
                continue
            extra = f", peak {m['peak_rss_mb']:,.0f} MB" if what not in ("page", "id", "hash") else ""
            extra += f", {m['records']:,} records" if what == "chain" else ""
            cells.append(_ms(m["seconds"]) + extra)
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    for what in ("id", "hash"):
        read = r.get(what, {}).get("clickhouse", {}).get("rows_read") or {}
        print(f"\nrows ClickHouse read for {names[what]}: lookup table {read.get('lookup', {}).get('read_rows')}, "
              f"otel_traces {read.get('spans', {}).get('read_rows')}")


if __name__ == "__main__":
    sys.exit(main())
