"""How the command line writes decisions: a terminal table, JSON lines, CSV, OTLP JSON lines, the
``show`` report, and a progress bar for long exports."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
import time
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from otel_rai import semconv
from otel_rai.codec import otlpjson
from otel_rai.codec.records import SpanRecord
from otel_rai.query import Decision

CSV_FIELDS = (
    "timestamp", "decision_id", "service", "model_name", "model_version", "model_fingerprint", "operation",
    "input_hash", "output", "scores", "error", "trace_id", "span_id", "row",
)
#: Spans per OTLP JSON line; with ``ml.batch.size`` ≤ 1000, a line stays near OTLP's 4 MiB message limit.
SPANS_PER_LINE = 64
#: The progress bar is drawn at most this often (seconds), and only once an export has run this long.
_REDRAW_S = 0.1
_SHOW_AFTER_S = 1.0


def _json_value(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as strings, as OTLP JSON does."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """`value` as one line of JSON; NaN and infinities as strings."""
    return json.dumps(_json_value(value), ensure_ascii=False, allow_nan=False)


def write_json_lines(decisions: Iterable[Decision], out: IO[str], *, full: bool = False) -> Iterator[int]:
    """One JSON object per decision and line; yields after each decision (for progress)."""
    for d in decisions:
        out.write(dumps(d.to_dict(full=full)) + "\n")
        yield 1


def write_csv(decisions: Iterable[Decision], out: IO[str]) -> Iterator[int]:
    """A header line of `CSV_FIELDS`, then one row per decision; yields after each decision (for progress)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for d in decisions:
        row = d.to_dict()
        row["scores"] = dumps(row["scores"]) if row["scores"] else ""
        writer.writerow(["" if row[f] is None else row[f] for f in CSV_FIELDS])
        yield 1


def write_otlp_json(spans: Iterable[SpanRecord], out: IO[str]) -> Iterator[int]:
    """OTLP JSON lines, as the Collector's file exporter writes them; yields decisions per line written."""
    batch: list[SpanRecord] = []

    def flush() -> int:
        out.write(dumps(otlpjson.encode(batch)) + "\n")
        rows = sum(len(s.attributes.get(semconv.DECISION_IDS) or ()) for s in batch)
        batch.clear()
        return rows

    for span in spans:
        batch.append(span)
        if len(batch) == SPANS_PER_LINE:
            yield flush()
    if batch:
        yield flush()


def _cell(value: Any, width: int) -> str:
    text = "" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
    return text if len(text) <= width else text[: width - 1] + "…"


#: The score the table shows for each operation, and its column's name: the predicted label's probability
#: or log-probability, or the decision function's value (binary: the second class's score, whatever the label).
SCORE_COLUMNS = {
    "predict_proba": "P(OUTPUT)",
    "predict_log_proba": "LOG P(OUTPUT)",
    "decision_function": "DECISION VALUE",
}
#: The column's name when the rows come from several of those operations.
MIXED_SCORE_COLUMN = "SCORE OF OUTPUT"


def output_score(d: Decision) -> Any:
    """The score of the decision's output: its class's score, or a binary decision function's one value."""
    scores = d.scores
    if str(d.output) in scores:
        return scores[str(d.output)]
    if d.operation == "decision_function" and len(scores) == 1:
        return next(iter(scores.values()))
    return None


def score_column(operations: Iterable[str]) -> str:
    """The name of the score column for rows of these operations (see `SCORE_COLUMNS`)."""
    names = {SCORE_COLUMNS[o] for o in operations if o in SCORE_COLUMNS}
    return names.pop() if len(names) == 1 else MIXED_SCORE_COLUMN


#: The table's columns: name (None: the score's, named by `score_column`), cell, width before shortening.
_TABLE: list[tuple[str | None, Callable[[Decision], Any], int]] = [
    ("TIME (UTC)", lambda d: d.timestamp[:23].replace("T", " "), 23),
    ("DECISION", lambda d: d.decision_id, 34),
    ("MODEL", lambda d: d.model_name, 16),
    ("VERSION", lambda d: d.model_version, 12),
    ("OUTPUT", lambda d: "ERROR" if d.error else d.output, 12),
    (None, output_score, 10),
    ("INPUT HASH", lambda d: d.input_hash, 32),
]


def write_table(decisions: Iterable[Decision], out: IO[str]) -> int:
    """A table for a terminal; returns the number of rows. The widths need every row first: each decision
    is kept as its cells only."""
    rows, operations = [], set()
    for d in decisions:
        rows.append([_cell(get(d), width) for _, get, width in _TABLE])
        operations.add(d.operation)
    if not rows:
        return 0
    names = [score_column(operations) if name is None else name for name, _, _ in _TABLE]
    widths = [max([len(name)] + [len(r[i]) for r in rows]) for i, name in enumerate(names)]
    available = shutil.get_terminal_size((160, 24)).columns
    if sum(widths) + 2 * len(widths) > available:  # narrow terminal: shorten the hash column first
        widths[-1] = max(12, widths[-1] - (sum(widths) + 2 * len(widths) - available))
    out.write("  ".join(name.ljust(w) for name, w in zip(names, widths)).rstrip() + "\n")
    for r in rows:
        out.write("  ".join(_cell(c, w).ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")
    return len(rows)


def show(d: Decision, sections: Sequence[str] = ()) -> str:
    """Everything recorded about one decision, for a reader."""
    a = d.attributes
    lines = [
        ("decision", d.decision_id),
        ("time", d.timestamp),
        ("service", d.service),
        ("model", f"{d.model_name} {d.model_version}  ({a.get(semconv.MODEL_CLASS, '?')})"),
        ("fingerprint", d.model_fingerprint),
        ("operation", f"{d.operation}, row {d.row} of the call"),
        ("input hash", f"{d.input_hash}  "
                       f"(key id {a.get(semconv.INPUT_HASH_KEY_ID)}, {a.get(semconv.INPUT_HASH_SCHEME)})"),
        ("output", "ERROR: " + d.error if d.error else d.output),
    ]
    if d.scores:
        lines.append(("scores", "  ".join(f"{k}: {_cell(v, 12)}" for k, v in d.scores.items())))
    if d.features:
        lines.append(("raw inputs", "  ".join(f"{k}={v}" for k, v in d.features.items())))
    lines.append(("trace", f"{d.trace_id}  span {d.span_id}"))
    text = [f"{k:<12} {'' if v is None else v}" for k, v in lines]
    # Shown above, or the trace-UI view of what is (its input and output repeat the lines above).
    shown = {semconv.MODEL_CLASS, semconv.INPUT_HASH_KEY_ID, semconv.INPUT_HASH_SCHEME, semconv.MODEL_NAME,
             semconv.MODEL_VERSION, semconv.MODEL_FINGERPRINT, semconv.OPERATION, semconv.BATCH_OFFSET,
             *semconv.UI_SPAN_ATTRIBUTES}
    others = {k: v for k, v in a.items() if k not in shown}
    others.update({k: v for k, v in d.values.items() if not k.startswith(semconv.PER_ROW_PREFIXES)})
    if others:
        text.append("attributes")
        text += [f"  {k}: {dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in sorted(others.items())]
    for section in sections:
        text += ["", section.rstrip()]
    return "\n".join(text) + "\n"


class Progress:
    """A progress bar on stderr, drawn at most every `_REDRAW_S` seconds once `after` seconds have passed."""

    def __init__(self, total: int | None, *, enabled: bool, after: float = _SHOW_AFTER_S, stream: IO[str] | None = None,
                 verb: str = "exporting", noun: str = "decisions") -> None:
        self.total = total
        self.done = 0
        self._enabled = enabled
        self._stream = stream or sys.stderr
        self._verb = verb
        self._noun = noun
        self._start = time.monotonic()
        self._after = after
        self._drawn_at: float | None = None

    def advance(self, n: int) -> None:
        """Count `n` more done, and redraw if it is time."""
        self.done += n
        now = time.monotonic()
        due = self._drawn_at is None or now - self._drawn_at >= _REDRAW_S
        if self._enabled and due and now - self._start >= self._after:
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self._start, 1e-9)
        if self.total:
            fraction = min(1.0, self.done / self.total)
            bar = "#" * int(30 * fraction)
            text = f"[{bar:<30}] {fraction:4.0%}  {self.done:,}/{self.total:,} {self._noun}"
        else:
            text = f"{self.done:,} {self._noun}"
        self._stream.write(f"\r{self._verb} {text}  {rate:,.0f}/s ")
        self._stream.flush()
        self._drawn_at = now

    def close(self) -> None:
        """Draw the final state and end the line, if the bar was ever drawn."""
        if self._drawn_at is not None:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()
