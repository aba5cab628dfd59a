"""``otel-rai reproduce``: make a recorded decision again from its input and the saved model.

Exit status: 0 REPRODUCED (bit for bit), 3 DIFFERS, 4 refused: this is not the input the model saw,
5 refused: the model artifact is missing, untrusted, or its digest or fingerprint does not match;
1 anything else (no such decision, an unreadable file or backend), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from otel_rai.cli import formats
from otel_rai.cli._common import (
    OK,
    add_artifact_options,
    add_key_options,
    add_source_options,
    add_time_options,
    artifact_store,
    backend_of,
    hash_keys,
    note,
)
from otel_rai.errors import ArtifactError, InputMismatchError

DIFFERS, INPUT_REFUSED, ARTIFACT_REFUSED = 3, 4, 5


def _value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return "(none)" if value is None else str(value)


def _print(result: Any) -> None:
    d = result.decision
    lines = [
        ("decision", f"{d.decision_id}  ({d.model_name} {d.model_version}, {d.operation}, {d.timestamp})"),
        ("model", d.model_fingerprint),
        ("record", "none found" if result.record is None else
         f"{result.record.timestamp}  stream {result.record.stream} seq {result.record.seq}"),
        ("input", f"keyed hash {result.input_hash} matches the decision"),
        ("artifact", f"{result.artifact} ({result.artifact_format}): SHA-256 and fingerprint verified"),
    ]
    text = [f"{k:<12} {v}" for k, v in lines]
    text += [f"{'warning':<12} {w}" for w in result.warnings]
    for c in result.comparisons:
        mark = "=" if c.equal else "≠"
        text.append(f"{c.what:<12} {_value(c.recorded)}  {mark}  {_value(c.reproduced)}"
                    + ("" if c.equal or c.difference is None else f"   (difference {c.difference:.3g})"))
    text += [f"{'note':<12} {n}" for n in result.notes]
    verdict = result.verdict
    if not result.reproduced:
        largest = result.largest_difference
        differing = [c.what for c in result.comparisons if not c.equal]
        verdict += f": {', '.join(differing)} differ"
        verdict += "" if largest is None else f", largest difference {largest:.3g}"
    text.append(verdict)
    print("\n".join(text))


def run(args: argparse.Namespace) -> int:
    """Reproduce one decision; the exit status says the verdict or the refusal."""
    from otel_rai.provenance.reproduce import reproduce

    backend, keys, store = backend_of(args), hash_keys(args), artifact_store(args)
    try:
        result = reproduce(args.decision_id, args.input, backend=backend, artifacts_store=store, key=keys,
                           trust_remote_artifacts=args.trust_remote_artifacts, trusted_types=args.trust_type or (),
                           since=args.since, start=args.start, end=args.end)
    except InputMismatchError as exc:
        note(str(exc))
        print("REFUSED: this is not the input the model saw")
        return INPUT_REFUSED
    except ArtifactError as exc:
        note(str(exc))
        print("REFUSED: the model artifact cannot be used")
        return ARTIFACT_REFUSED
    if args.format == "json":
        sys.stdout.write(formats.dumps(result.to_dict()) + "\n")
    else:
        _print(result)
    return OK if result.reproduced else DIFFERS


def add_parser(sub: Any) -> None:
    """Register ``reproduce``."""
    p = sub.add_parser("reproduce", help="make a recorded decision again and compare, bit for bit",
                       description=__doc__.split("\n\n")[0].split(": ", 1)[1] + "\n\n" + __doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("decision_id", metavar="DECISION_ID")
    p.add_argument("--input", required=True, metavar="FILE",
                   help="the decision's input row: .json (an object of feature: value, or an array), .jsonl, .csv")
    add_key_options(p)
    g = p.add_argument_group("where the decision is")
    add_time_options(g)
    add_source_options(p)
    add_artifact_options(p)
    p.add_argument("--trust-remote-artifacts", action="store_true",
                   help="load the model from a remote (fsspec) artifact store; loading a model file can run code")
    p.add_argument("--trust-type", action="append", metavar="MODULE.CLASS",
                   help="a further type a skops file may hold (repeatable)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=run)
