"""CLI: ``otel-rai``, the audit trail from the command line. One module per command, each with
``add_parser(sub)`` setting ``func``; `_common` holds the options and errors they share and `formats`
the output. Reads through `query`, `store`, `chain`, `report` and `stack`, and sends through `sinks`
(`replay`, `spool export`); never imports the audit worker, the capture path or the session, and imports
heavy modules only inside the command that needs them.

    otel-rai query --model-version 1.4.2 --since 24h
    otel-rai show A-1093/1.4.1
    otel-rai verify --input applicants.csv
    otel-rai export --format otlp-json --output audit.jsonl
    otel-rai replay audit.jsonl --endpoint http://localhost:4317
    otel-rai monitor --model-version 1.4.2 --since 24h
    otel-rai spool status
    otel-rai model show credit 1.4.2
    otel-rai reproduce A-1093 --input applicant.json

Errors are one line on stderr (``--debug`` adds the traceback). Exit status: 0 success (an empty result
is a success), 1 failure (an unreachable backend, an unusable store or file), 2 bad usage, 3 ``verify``
found input rows that match no decision, or ``verify-chain`` found a broken chain, or ``reproduce``
found a decision that DIFFERS; ``reproduce`` refuses with 4 (not the input the model saw) and 5 (an
artifact that must not be loaded).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from typing import Sequence

from otel_rai.cli._common import FAILED, OK, USAGE, Parser, UsageError, note
from otel_rai.errors import PREFIX, OtelRaiError

__all__ = ["COMMANDS", "build_parser", "main"]

#: The command modules of this package, in the order ``--help`` lists them.
COMMANDS = ("query", "show", "verify", "export", "replay", "verify_chain", "report", "monitor", "stack", "spool",
            "model", "reproduce")


def build_parser() -> Parser:
    """The ``otel-rai`` argument parser, with every command."""
    parser = Parser(prog="otel-rai", description="The otel-rai audit trail: find, show, verify and export decisions.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


class _OneLine(logging.Formatter):
    """Library warnings as one line each: no traceback unless --debug."""

    def format(self, record: logging.LogRecord) -> str:
        return PREFIX + record.getMessage().removeprefix(PREFIX)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``otel-rai`` with `argv` (default: the process's arguments); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported in one line
        return int(exc.code or 0)
    handler = logging.StreamHandler(sys.stderr)
    if not args.debug:  # libraries log each failed attempt; the command reports the outcome
        handler.setFormatter(_OneLine())
        handler.setLevel(logging.ERROR)
        handler.addFilter(lambda record: record.name.startswith("otel_rai"))
    logging.getLogger().addHandler(handler)
    try:
        return args.func(args)
    except UsageError as exc:
        note(str(exc))
        return USAGE
    except OtelRaiError as exc:
        note(str(exc))
        return FAILED
    except ValueError as exc:  # arguments the query layer rejected
        if args.debug:
            raise
        note(str(exc))
        return USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away, e.g. `| head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except Exception as exc:
        if args.debug:
            raise
        note(f"internal error: {type(exc).__name__}: {str(exc).removeprefix(PREFIX)} "
             "(run with --debug for the traceback)")
        return FAILED
    finally:
        logging.getLogger().removeHandler(handler)
