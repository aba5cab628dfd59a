"""``otel-rai stack up|down|status``: a local audit store without Docker (`otel_rai.stack`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from otel_rai.stack import Ports, Status, default_dir, down, status, up
from otel_rai.stack.processes import COMPONENTS, DEFAULT_SCRAPE, SCRAPE_INTERVAL, START_TIMEOUT_S

DESCRIPTION = ("Start, stop or inspect rotel (OTLP in), Arize Phoenix (traces, UI) and Prometheus (metrics) as "
               "background processes; everything lives under one directory (docs/deploy.md).")


def _print_status(current: Status) -> None:
    if current.stack is None:
        print(f"otel-rai stack in {current.directory}: not running")
        return
    overall = "running" if current.running else "not fully running"
    print(f"otel-rai stack in {current.directory}: {overall}")
    for name in COMPONENTS:
        if name not in current.states:
            print(f"  {name:<11} not started")
            continue
        process = current.stack.processes[name]
        where = ", ".join(f"{what} {address}" for what, address in process.addresses.items())
        print(f"  {name:<11} {current.states[name]:<8} pid {process.pid:<7} {where}")
    if current.running:
        print(f"send decisions with: OTEL_EXPORTER_OTLP_ENDPOINT={current.stack.otlp_grpc_endpoint}")
        print(f"logs and data: {current.directory}")


def _up(args: argparse.Namespace) -> int:
    ports = Ports(args.otlp_grpc_port, args.otlp_http_port, args.phoenix_port, args.phoenix_grpc_port,
                  args.prometheus_port)
    up(args.dir, ports=ports, host=args.host, scrape=args.scrape or [DEFAULT_SCRAPE], rule_files=args.rule_file,
       scrape_interval=args.scrape_interval, timeout=args.timeout)
    _print_status(status(args.dir))
    return 0


def _down(args: argparse.Namespace) -> int:
    outcomes = down(args.dir)
    for line in outcomes or [f"nothing to stop in {(args.dir or default_dir()).resolve()}"]:
        print(line)
    return 0


def _status(args: argparse.Namespace) -> int:
    current = status(args.dir)
    if args.json:
        print(json.dumps(current.as_dict(), indent=2))
    else:
        _print_status(current)
    return 0 if current.running else 3


def run(args: argparse.Namespace) -> int:
    """Run a parsed ``stack`` command."""
    return args.stack_func(args)


def _configure(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=None,
                        help="stack directory: configs, data, logs, state (default: $OTEL_RAI_HOME/stack, "
                             "else ~/.local/share/otel-rai/stack)")
    commands = parser.add_subparsers(dest="stack_command", required=True, metavar="{up,down,status}")

    start = commands.add_parser("up", parents=[common], help="start rotel, Phoenix and Prometheus",
                                description="Start rotel (OTLP in), Arize Phoenix (traces, UI) and Prometheus "
                                            "(metrics, by scraping) in the background.")
    defaults = Ports()
    start.add_argument("--host", default="127.0.0.1", help="address the servers listen on (default 127.0.0.1)")
    start.add_argument("--otlp-grpc-port", type=int, default=defaults.otlp_grpc, help="rotel OTLP gRPC (4317)")
    start.add_argument("--otlp-http-port", type=int, default=defaults.otlp_http, help="rotel OTLP HTTP (4318)")
    start.add_argument("--phoenix-port", type=int, default=defaults.phoenix, help="Phoenix UI and REST API (6006)")
    start.add_argument("--phoenix-grpc-port", type=int, default=defaults.phoenix_grpc,
                       help="Phoenix OTLP gRPC, used by rotel only (default: a free port)")
    start.add_argument("--prometheus-port", type=int, default=defaults.prometheus, help="Prometheus (9090)")
    start.add_argument("--scrape", action="append", metavar="HOST:PORT",
                       help=f"a /metrics endpoint for Prometheus to scrape; repeatable (default {DEFAULT_SCRAPE}, "
                            "where opentelemetry-exporter-prometheus serves)")
    start.add_argument("--scrape-interval", default=SCRAPE_INTERVAL,
                       help=f"Prometheus scrape interval (default {SCRAPE_INTERVAL})")
    start.add_argument("--rule-file", action="append", type=Path, default=[], metavar="PATH",
                       help="Prometheus recording/alert rules, e.g. collector/prometheus/rules.yml; repeatable")
    start.add_argument("--timeout", type=float, default=START_TIMEOUT_S,
                       help=f"seconds to wait for the servers ({START_TIMEOUT_S:g})")
    start.set_defaults(stack_func=_up)

    stop = commands.add_parser("down", parents=[common], help="stop what up started (the data stays)")
    stop.set_defaults(stack_func=_down)

    show = commands.add_parser("status", parents=[common], help="what runs, and where; exit status 3 if not running")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(stack_func=_status)

    parser.set_defaults(func=run)


def add_parser(sub: Any) -> None:
    """Register ``stack`` (with ``up``, ``down``, ``status``)."""
    parser = sub.add_parser("stack", help="a local audit store without Docker: rotel, Phoenix, Prometheus",
                            description=DESCRIPTION)
    _configure(parser)

