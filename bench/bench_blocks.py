"""What a store that keeps each commit's spans as one block would cost SQLite (issue 20). Reported, not gated.

    python bench/bench_blocks.py [--blocks 30] [--replays 8] [--runs 3]

1. Capture: an instrumented session (LR, 20 features, single-row ``predict_proba``, the local store,
   fairness groups on every decision) runs `--blocks` blocks of 200 calls, each ending with ``flush()``, as
   the honest scenario does; every write transaction's rows are kept as `Store.append` writes them.
2. Replay the steady transactions (`--replays` times, with fresh seqs and decision ids each time) into a
   fresh file of each layout, with the store's connection and pragmas:
   * **rows**: the current schema (2): a ``spans`` row, a ``decisions`` row and a ``decision_groups`` row a
     decision, and their indexes;
   * **block**: one row a transaction holding its spans' rows as one JSON array (seq range, model version,
     time range and decision id range beside it, indexed by version and time and by time), and one row of
     its groups.
3. Report, per decision, the CPU of this thread from ``BEGIN`` to ``COMMIT`` (the rows' tuples and the
   block's JSON are built before), the CPU of joining the block's JSON in Python (a native row builder, as
   the store has, would write it instead), and the file's size; each the median of `--runs`.

What this leaves out: the block layout's readers (a lookup would read a block and pick its span), the
chain's checks of each column, the export, and an index entry for each decision id that a caller gives
(those are not time-ordered, so a range of ids a block cannot find them). It prices SQLite's part only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import otel_rai  # noqa: E402
from otel_rai.store import connection  # noqa: E402
from otel_rai.store import store as store_module  # noqa: E402

CALLS = 200
BLOCKS = """CREATE TABLE blocks (
    first INTEGER PRIMARY KEY, last INTEGER NOT NULL, model_version TEXT, start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL, first_id TEXT, last_id TEXT, spans TEXT NOT NULL);
CREATE INDEX blocks_by_version ON blocks (model_version, start_ns);
CREATE INDEX blocks_by_time ON blocks (start_ns);
CREATE TABLE block_groups (first INTEGER PRIMARY KEY, groups TEXT NOT NULL)"""
#: Statements of `Store.append`, by table, and the columns of a spans row used here.
SPANS, DECISIONS, GROUPS = "INSERT INTO spans", "INSERT INTO decisions", "INSERT OR REPLACE INTO decision_groups"
SEQ, START, VERSION, ATTRIBUTES = 0, 7, 12, 16


def capture(blocks: int) -> list[list[tuple[str, int, list]]]:
    """Each write transaction of an instrumented session: [(statement head, width, rows)]."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 20))
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    transactions: list[list[tuple[str, int, list]]] = []
    current: list[tuple[str, int, list]] = []
    insert, writing = store_module.insert, store_module.writing

    def kept_insert(conn: Any, head: str, width: int, rows: Any) -> None:
        rows = list(rows)
        current.append((head, width, rows))
        insert(conn, head, width, rows)

    @contextmanager
    def kept_writing(conn: Any) -> Iterator[None]:
        current.clear()
        with writing(conn):
            yield
        transactions.append(list(current))

    store_module.insert, store_module.writing = kept_insert, kept_writing
    try:
        with tempfile.TemporaryDirectory() as tmp:
            otel_rai.instrument(store=Path(tmp) / "audit.db", explain=False)
            try:
                with otel_rai.decisions(groups={"sex": "f"}):
                    for _ in range(blocks):
                        for i in range(CALLS):
                            model.predict_proba(X[i : i + 1])
                        otel_rai.flush(120)
            finally:
                otel_rai.uninstrument()
    finally:
        store_module.insert, store_module.writing = insert, writing
    # The first blocks warm up; a transaction without decision spans (a checkpoint, the close) is not one.
    steady = [t for t in transactions[len(transactions) // 5 :] if any(h == SPANS and rows for h, _, rows in t)]
    return [t for t in steady if any(h == DECISIONS and rows for h, _, rows in t)]


def _fresh(path: Path, layout: str) -> Any:
    """A new store with the store's own pragmas; the block layout's tables beside its (empty) ones."""
    conn = connection.connect(path, create=True)
    with connection.writing(conn):
        conn.execute("INSERT INTO origins (id, resource, resource_schema_url, scope_name, scope_version)"
                     " VALUES (1, '{}', '', 'otel_rai', '0')")
        if layout == "block":
            for statement in BLOCKS.split(";"):
                conn.execute(statement)
    return conn


def _renumbered(transaction: list[tuple[str, int, list]], offset: int) -> list[tuple[str, int, list]]:
    """The transaction with seqs moved by `offset`, and decision ids by as many milliseconds (still in order)."""
    def moved(decision_id: str) -> str:
        return f"{int(decision_id[:12], 16) + offset:012x}{decision_id[12:]}"

    out = []
    for head, width, rows in transaction:
        if head == SPANS:
            rows = [(r[0] + offset, 1, *r[2:]) for r in rows]
        elif head == DECISIONS:
            rows = [(r[0] + offset, r[1], moved(r[2]), *r[3:]) for r in rows]
        elif head == GROUPS:
            rows = [(moved(r[0]), *r[1:]) for r in rows]
        out.append((head, width, rows))
    return out


def replay(transactions: list[list[tuple[str, int, list]]], layout: str, replays: int) -> dict[str, float]:
    """µs of this thread's CPU a decision from BEGIN to COMMIT (and, for a block, joining its JSON before),
    and bytes a decision on disk."""
    json_text = store_module.json_text
    spent, built, decisions = 0.0, 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{layout}.db"
        conn = _fresh(path, layout)
        for replay_number in range(1, replays + 1):
            for transaction in transactions:
                moved = _renumbered(transaction, replay_number * 1_000_000)
                tables = {head: rows for head, _, rows in moved}
                spans = tables[SPANS]
                decisions += len(tables[DECISIONS])
                if layout == "rows":
                    t0 = time.thread_time()
                    with connection.writing(conn):
                        for head, width, rows in moved:
                            connection.insert(conn, head, width, rows)
                    spent += time.thread_time() - t0
                    continue
                ids = [r[2] for r in tables[DECISIONS]]
                t0 = time.thread_time()
                # A span's columns but its attributes, then its attributes as they are (already JSON).
                body = "[" + ",".join(f"[{json_text(r[:ATTRIBUTES] + r[ATTRIBUTES + 1:])},{r[ATTRIBUTES]}]"
                                      for r in spans) + "]"
                groups = json_text(tables.get(GROUPS, []))
                t1 = time.thread_time()
                built += t1 - t0
                with connection.writing(conn):
                    conn.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (spans[0][SEQ], spans[-1][SEQ], spans[0][VERSION], min(r[START] for r in spans),
                                  max(r[START] for r in spans), min(ids), max(ids), body))
                    conn.execute("INSERT INTO block_groups VALUES (?, ?)", (spans[0][SEQ], groups))
                spent += time.thread_time() - t1
        conn.close()
        size = sum(os.path.getsize(p) for p in Path(tmp).iterdir())
    return {"sqlite_us": spent / decisions * 1e6, "python_us": built / decisions * 1e6, "bytes": size / decisions}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--replays", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    transactions = capture(args.blocks)
    n = sum(len(rows) for t in transactions for head, _, rows in t if head == DECISIONS)
    print(f"{len(transactions)} transactions, {n} decisions a replay", file=sys.stderr)
    found: dict[str, list[dict[str, float]]] = {"rows": [], "block": []}
    for _ in range(args.runs):  # the layouts alternate
        for layout in found:
            found[layout].append(replay(transactions, layout, args.replays))
    print("| layout | SQLite CPU, µs a decision | joining a block in Python, µs a decision | bytes a decision |")
    print("|---|---|---|---|")
    for layout, runs in found.items():
        cpu = [r["sqlite_us"] for r in runs]
        python = f"{statistics.median(r['python_us'] for r in runs):.1f}" if layout == "block" else "—"
        print(f"| {layout} | {statistics.median(cpu):.1f} ({min(cpu):.1f}–{max(cpu):.1f}) | {python} "
              f"| {statistics.median(r['bytes'] for r in runs):,.0f} |")
    print(json.dumps({layout: runs for layout, runs in found.items()}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
