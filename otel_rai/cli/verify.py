"""``otel-rai verify``: which decisions were made on these inputs?"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from otel_rai import query, semconv, settings
from otel_rai.cli import formats
from otel_rai.cli._common import (
    OK,
    UNMATCHED,
    CliError,
    add_filter_options,
    add_source_options,
    backend_of,
    note,
    query_of,
)


def _keys(args: argparse.Namespace) -> list[Any]:
    """The hash keys: every --key and every line of every --key-file; else OTEL_RAI_HASH_KEY; else the
    generated key file. Never generated here. Several keys verify decisions across key rotations."""
    from otel_rai.audit.hashing import HashKey

    materials = list(args.key or [])
    paths = list(args.key_file or [])
    if not materials and not paths:
        configured = settings.from_env("hash_key")
        if configured:
            materials.append(configured)
        else:
            paths.append(str(settings.hash_key_file()))
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                materials += [line.strip() for line in f if line.strip()]
        except OSError as exc:
            reason = f"{path}: {exc.strerror or exc}"
            hint = "give --key or --key-file, or set OTEL_RAI_HASH_KEY"
            raise CliError(f"no hash key: {hint} ({reason})") from None
    if not materials or not all(materials):
        raise CliError("the hash key is empty" + (f" (key files: {', '.join(paths)})" if paths else ""))
    return [HashKey.from_material(m) for m in materials]


def run(args: argparse.Namespace) -> int:
    """Hash each input row and print the decisions it matches."""
    from otel_rai.query import inputs

    q, backend = query_of(args), backend_of(args)  # arguments are checked before any I/O
    keys = _keys(args)
    features = None
    if args.model_version or args.model_name:  # put named columns in the order that model recorded
        first = next(query.decisions(q, backend, 1), None)
        if first is not None:
            features = first.attributes.get(semconv.INPUT_FEATURES)
    matches = inputs.match(inputs.read_rows(args.input, features), keys, q, backend)
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
    ids = ", ".join(k.key_id for k in keys)
    note(f"{matched} of {len(matches)} input rows match a decision (hash key id{'s' if len(keys) > 1 else ''} {ids})")
    return OK if matched == len(matches) else UNMATCHED


DESCRIPTION = """Hash each input row with the key and report the decisions it matches.

Input files: .json (an array of rows, or JSON lines: one row a line), .jsonl, or .csv (a header row of
feature names). A row is an object of feature name -> value, or an array of values in column order.
CSV cells are typed per column as pandas.read_csv does by default; JSON keeps its own types, so it is
the exact choice."""


def add_parser(sub: Any) -> None:
    """Register ``verify``."""
    p = sub.add_parser("verify", help="which decisions were made on these inputs?", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, metavar="FILE", help=".json, .jsonl or .csv")
    p.add_argument("--key", action="append",
                   help="a hash key, repeatable for rotated keys (better: OTEL_RAI_HASH_KEY or --key-file; "
                   "others see command lines)")
    p.add_argument("--key-file", metavar="PATH", action="append",
                   help=f"a file of hash keys, one per line (default: $OTEL_RAI_HASH_KEY, else "
                   f"{settings.hash_key_file()})")
    add_filter_options(p, rows=False)
    add_source_options(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run)
