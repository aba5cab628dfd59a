"""The report's "Model" section: what the model records of the reported version say about the model."""

from __future__ import annotations

import html
from typing import Sequence

from otel_rai.provenance.params import display
from otel_rai.provenance.record import ModelRecord

#: Longest parameter value shown before it is cut.
_VALUE = 80


def _e(value: object) -> str:
    return html.escape(str(value))


def _cut(text: str) -> str:
    return text if len(text) <= _VALUE else text[: _VALUE - 1] + "…"


def model_section(records: Sequence[ModelRecord]) -> list[str]:
    """HTML of the model section: one block per fitted model (fingerprint) of the version."""
    out = ["<h2>Model</h2>"]
    if not records:
        out.append('<p class="na">No model record was found for this version (records are written by '
                   "otel-rai 0.1 and later, see docs/model-records.md).</p>")
        return out
    if len(records) > 1:
        out.append(f"<p>{len(records)} fitted models decided under this version (a refit without a new "
                   "version); each has its record.</p>")
    for r in records:
        schema = r.schema or {}
        t = r.training or {}
        rows = [
            ("class", f"<code>{_e(r.qualified_class)}</code>"),
            ("fingerprint", f"<code>{_e(r.fingerprint)}</code>"),
            ("recorded", _e(f"{r.timestamp}, service {r.service}, stream {r.stream} seq {r.seq}")),
            ("libraries", _e(", ".join(f"{k} {v}" for k, v in sorted(r.libraries.items())))),
            ("features", _e(f"{schema.get('n_features_in')}: " + ", ".join(map(str, schema.get("features") or [])))),
            ("classes", _e(schema.get("classes"))),
            ("training data", _e(f"{t.get('rows')} rows ({t.get('method')}, ended {t.get('time')}); keyed hash "
                                 f"{t.get('hash')}") if t else '<span class="na">not seen: fitted before '
                                                                "instrument()</span>"),
            ("artifact", _e(f"{(r.artifact or {}).get('format')}, SHA-256 {(r.artifact or {}).get('sha256')}")
             if (r.artifact or {}).get("sha256") else '<span class="na">not saved</span>'),
        ]
        if r.source_uri:
            rows.insert(2, ("source", f"<code>{_e(r.source_uri)}</code>"))
        out.append(f'<table class="model-record" data-fingerprint="{_e(r.fingerprint)}"><tbody>')
        out += [f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows]
        out.append("</tbody></table>")
        params = sorted(r.flat_params().items())
        if params:
            out.append("<details><summary>Parameters (get_params, deep)</summary><table><tbody>")
            out += [f'<tr><td><code>{_e(k)}</code></td><td data-param="{_e(k)}">{_e(_cut(display(v)))}</td></tr>'
                    for k, v in params]
            out.append("</tbody></table></details>")
    return out
