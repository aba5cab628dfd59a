"""``otel-rai verify``: which decisions were made on these inputs?"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from otel_rai.cli import formats
from otel_rai.cli._common import (
    OK,
    UNMATCHED,
    absent_model,
    add_filter_options,
    add_key_options,
    add_source_options,
    backend_of,
    hash_keys,
    note,
    query_of,
)


def run(args: argparse.Namespace) -> int:
    """Hash each input row and print the decisions it matches."""
    from otel_rai.query import catalog, inputs

    q, backend = query_of(args), backend_of(args)  # arguments are checked before any I/O
    keys = hash_keys(args)
    rows = inputs.read_rows(args.input)
    orders = []
    if any(isinstance(r, dict) for r in rows):  # named columns go in the order each model recorded
        orders = [v.features for v in catalog.versions(q, backend) if v.features]
    matches = inputs.match(rows, keys, q, backend, orders)
    if args.format == "json":
        for m in matches:
            sys.stdout.write(formats.dumps({"row": m.row, "input_hash": m.input_hash,
                                            "decisions": [d.to_dict() for d in m.decisions]}) + "\n")
    else:
        print(f"{'ROW':>5}  {'INPUT HASH':<32}  {'DECISION':<34}  {'MODEL':<24}  {'TIME (UTC)':<23}  OUTPUT")
        for m in matches:
            for d in m.decisions or [None]:
                if d is None:
                    print(f"{m.row:>5}  {m.input_hash:<32}  {'- no decision -':<34}")
                else:
                    model = f"{d.model_name} {d.model_version}"
                    print(f"{m.row:>5}  {m.input_hash:<32}  {d.decision_id:<34}  {model:<24}  "
                          f"{d.timestamp[:23].replace('T', ' '):<23}  {d.output}")
    matched = sum(1 for m in matches if m.decisions)
    current = [k.key_id for k in keys if k.scheme == keys[0].scheme]  # not the ids of the legacy variants
    note(f"{matched} of {len(matches)} input rows match a decision (hash key id{'s' if len(current) > 1 else ''} "
         f"{', '.join(current)})")
    absent = absent_model(args, q, backend) if matched < len(matches) else None
    if absent:
        note(absent)
    return OK if matched == len(matches) else UNMATCHED


DESCRIPTION = """Hash each input row with the key and report the decisions it matches.

Input files: .json (an array of rows, or JSON lines: one row a line), .jsonl, or .csv (a header row of
feature names). A row is an object of feature name -> value, or an array of values in column order.
Objects and CSV rows are matched by feature name: whatever the order of their keys, they are put in the
column order each model version recorded (--model-version or --model-name narrows which); keys that are
no model's column are left out. CSV cells are typed per column as pandas.read_csv does by default; JSON
keeps its own types, so it is the exact choice."""


def add_parser(sub: Any) -> None:
    """Register ``verify``."""
    p = sub.add_parser("verify", help="which decisions were made on these inputs?", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, metavar="FILE", help=".json, .jsonl or .csv")
    add_key_options(p)
    add_filter_options(p, rows=False)
    add_source_options(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run)
