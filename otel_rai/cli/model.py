"""``otel-rai model``: the fitted models behind the decisions, from their model records.

    otel-rai model list                          name, version, fingerprint, decisions, first and last
    otel-rai model show credit 1.4.2             parameters, libraries, schema, training data, artifact
    otel-rai model diff credit 1.4.1 1.4.2       what changed between two versions
    otel-rai model export credit 1.4.2 --format cyclonedx    a CycloneDX 1.6 ML-BOM
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from otel_rai._time import rfc3339
from otel_rai.cli import formats
from otel_rai.cli._common import (
    OK,
    CliError,
    add_artifact_options,
    add_source_options,
    add_time_options,
    artifact_store,
    backend_of,
    output,
    query_of,
    where,
)

#: Widest value shown in a text table before it is cut.
_CELL = 60


def _records(args: argparse.Namespace, version: str, fingerprint: str | None = None) -> list[Any]:
    """The newest record of each fingerprint of model `args.name` `version` (one if `fingerprint`)."""
    from otel_rai.provenance import lookup

    q = query_of(args, model_name=args.name, model_version=version)
    found = list(lookup.latest(list(lookup.records(backend_of(args), q))).values())
    if fingerprint:
        found = [r for r in found if r.fingerprint is not None and r.fingerprint.startswith(fingerprint)]
    if not found:
        which = f"{args.name} {version}" + (f" (fingerprint {fingerprint}…)" if fingerprint else "")
        raise CliError(f"no model record of {which} in {where(args)}")
    return found


def _one(args: argparse.Namespace, version: str, fingerprint: str | None) -> Any:
    found = _records(args, version, fingerprint)
    if len(found) > 1:
        prints = ", ".join(str(r.fingerprint) for r in found)
        raise CliError(f"{args.name} {version} names {len(found)} fitted models ({prints}); choose one with "
                       "--fingerprint")
    return found[0]


def _text(value: Any) -> str:
    from otel_rai.provenance.params import display

    text = display(value)
    return text if len(text) <= _CELL else text[: _CELL - 1] + "…"


def _when(ns: int | None) -> str:
    return "" if ns is None else rfc3339(ns)[:19].replace("T", " ")


def run_list(args: argparse.Namespace) -> int:
    """Print one line per fitted model."""
    from otel_rai.provenance import lookup

    found = lookup.summaries(backend_of(args), query_of(args, model_name=args.name))
    if args.format == "json":
        for s in found:
            sys.stdout.write(formats.dumps(s.to_dict()) + "\n")
        return OK
    rows = [[str(s.name), str(s.version), s.fingerprint, _when(s.first_ns), _when(s.last_ns), f"{s.decisions:,}",
             "yes" if s.records else "no"] for s in found]
    _table(["NAME", "VERSION", "FINGERPRINT", "FIRST DECISION (UTC)", "LAST DECISION (UTC)", "DECISIONS", "RECORD"],
           rows)
    return OK


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _artifact_line(args: argparse.Namespace, record: Any) -> tuple[str, dict[str, Any]]:
    status = artifact_store(args).status(str(record.fingerprint), (record.artifact or {}).get("sha256"))
    data = {"state": status.state, "detail": status.detail, "format": status.format, "bytes": status.size}
    text = f"{status.state}: {status.detail}" + (f" ({status.size:,} bytes)" if status.size else "")
    if status.state == "missing" and (record.artifact or {}).get("error"):
        text += f"; saving failed ({record.artifact['error']})"
    return text, data


def run_show(args: argparse.Namespace) -> int:
    """Print the record of each fitted model of a version, with its artifact's status."""
    found = _records(args, args.version, args.fingerprint)
    for i, record in enumerate(found):
        artifact_text, artifact = _artifact_line(args, record)
        if args.format == "json":
            sys.stdout.write(formats.dumps({**record.to_dict(), "artifact_status": artifact}) + "\n")
            continue
        schema = record.schema or {}
        call, fit = schema.get("call") or {}, schema.get("fit") or {}
        lines = [
            ("model", f"{record.name} {record.version}  ({record.qualified_class})"),
            ("fingerprint", record.fingerprint),
            ("recorded", f"{record.timestamp}  service {record.service}, stream {record.stream} seq {record.seq}"),
        ]
        if record.source_uri:
            lines.append(("source", record.source_uri))
        lines.append(("libraries", "  ".join(f"{k} {v}" for k, v in sorted(record.libraries.items()))))
        features = schema.get("features")
        lines.append(("features", f"{schema.get('n_features_in')} in"
                      + (f": {', '.join(map(str, features))}" if features else "")))
        if fit:
            lines.append(("fit input", f"{fit.get('container')}, {fit.get('rows')} rows, dtypes "
                          f"{', '.join(dict.fromkeys(fit.get('dtypes') or []))}"))
        if call:
            dtypes = ", ".join(dict.fromkeys(call.get("dtypes") or []))
            lines.append(("first call", f"{call.get('container')}, dtypes {dtypes}"))
        if schema.get("classes") is not None:
            lines.append(("classes", formats.dumps(schema["classes"])))
        t = record.training
        lines.append(("training", "not seen (the model was not fitted under instrument())" if not t else
                      f"{t.get('rows')} rows, {t.get('method')}"
                      + (f" ({t.get('batches')} batches)" if (t.get("batches") or 1) > 1 else "")
                      + f", ended {t.get('time')}, {float(t.get('duration_ms') or 0):.1f} ms"))
        if t:
            lines.append(("training hash", f"{t.get('hash')}  (key id {t.get('key_id')}, {t.get('scheme')})"))
        lines.append(("artifact", artifact_text))
        if record.error:
            lines.append(("incomplete", record.error))
        out = [("\n" if i else "")] + [f"{k:<14} {'' if v is None else v}" for k, v in lines]
        out.append("parameters")
        out += [f"  {name} = {_text(value)}" for name, value in sorted(record.flat_params().items())]
        print("\n".join(out))
    return OK


def run_diff(args: argparse.Namespace) -> int:
    """Print what differs between the records of two versions."""
    from otel_rai.provenance.record import diff

    left = _one(args, args.version1, args.fingerprint1)
    right = _one(args, args.version2, args.fingerprint2)
    differences = diff(left, right)
    if args.format == "json":
        for d in differences:
            sys.stdout.write(formats.dumps({"section": d.section, "key": d.key, args.version1: d.left,
                                            args.version2: d.right}) + "\n")
        return OK
    if not differences:
        print(f"{args.name} {args.version1} and {args.version2}: same class, parameters, schema, libraries and "
              "training data")
        return OK
    _table(["SECTION", "KEY", args.version1, args.version2],
           [[d.section, d.key, "(absent)" if d.left is None else _text(d.left),
             "(absent)" if d.right is None else _text(d.right)] for d in differences])
    return OK


def run_export(args: argparse.Namespace) -> int:
    """Write a version's record as a CycloneDX 1.6 BOM."""
    from otel_rai.provenance import cyclonedx

    record = _one(args, args.version, args.fingerprint)
    document = cyclonedx.bom(record)
    with output(args.output) as out:
        out.write(formats.dumps(document) + "\n")
    return OK


def _record_options(p: argparse.ArgumentParser, *, artifacts: bool = False,
                    formats_: tuple[str, ...] = ("text", "json")) -> None:
    """The options every ``model`` subcommand shares: window, service, source, artifacts, format."""
    g = p.add_argument_group("which records")
    add_time_options(g)
    g.add_argument("--service", metavar="S")
    add_source_options(p)
    if artifacts:
        add_artifact_options(p)
    p.add_argument("--format", choices=formats_, default=formats_[0])
    p.set_defaults(model_name=None, model_version=None)


def add_parser(sub: Any) -> None:
    """Register ``model`` and its subcommands."""
    p = sub.add_parser("model", help="the fitted models behind the decisions: list, show, diff, export",
                       description=__doc__.splitlines()[0].split(": ", 1)[1])
    models = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True, parser_class=type(p))

    q = models.add_parser("list", help="every fitted model: name, version, fingerprint, decisions")
    q.add_argument("name", nargs="?", metavar="NAME", help="only this model")
    _record_options(q, formats_=("table", "json"))
    q.set_defaults(func=run_list)

    q = models.add_parser("show", help="a model's record: parameters, libraries, schema, training data, artifact")
    q.add_argument("name", metavar="NAME")
    q.add_argument("version", metavar="VERSION")
    q.add_argument("--fingerprint", metavar="FP", help="one fitted model of the version (a prefix will do)")
    _record_options(q, artifacts=True)
    q.set_defaults(func=run_show)

    q = models.add_parser("diff", help="parameter, schema and library differences between two versions")
    q.add_argument("name", metavar="NAME")
    q.add_argument("version1", metavar="V1")
    q.add_argument("version2", metavar="V2")
    q.add_argument("--fingerprint1", metavar="FP")
    q.add_argument("--fingerprint2", metavar="FP")
    _record_options(q, formats_=("table", "json"))
    q.set_defaults(func=run_diff)

    q = models.add_parser("export", help="a model record as a CycloneDX 1.6 ML-BOM (modelCard)")
    q.add_argument("name", metavar="NAME")
    q.add_argument("version", metavar="VERSION")
    q.add_argument("--fingerprint", metavar="FP")
    _record_options(q, formats_=("cyclonedx",))
    q.add_argument("--output", "-o", metavar="FILE", help="default: stdout")
    q.set_defaults(func=run_export)
