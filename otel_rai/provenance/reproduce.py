"""`reproduce`: make a recorded decision again from its input and the saved model, and say whether it
came out the same, bit for bit.

1. The decision and its model record come from a query backend (the local store, Jaeger, Tempo,
   Phoenix, ...); the input's keyed hash must equal the decision's ``ml.input.hashes`` entry, else
   `InputMismatchError`: this is not the input the model saw.
2. The model is loaded from the artifact store by the decision's fingerprint, with every check of
   `artifacts` (trusted store, the record's SHA-256, the loaded model's fingerprint), else `ArtifactError`.
3. Library versions are compared with the record's; each difference is a warning.
4. The recorded operation runs on the row, as the decision ran it: a decision that was row r of an
   n-row call is re-run as row r of n rows (copies of the input), because a batch's floating-point
   operations depend on its shape (a linear model's matrix product on 20 rows rounds some rows
   differently than on one). The label and every class score are compared bit for bit (the largest
   difference is stated), and so is the explanation (its top attributions as recorded, and its base
   value), recomputed with the recorded method.

The verdict is REPRODUCED when everything compared is identical, else DIFFERS. What this proves and
what it does not: ``docs/audit-trail.md``.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from otel_rai import semconv, settings, store
from otel_rai._time import window
from otel_rai.audit import outputs
from otel_rai.audit.hashing import HashKey, hash_rows
from otel_rai.capture.fingerprint import fingerprint
from otel_rai.capture.recorder import run_quietly
from otel_rai.codec.reasons import encode_top, parse_top
from otel_rai.errors import InputError, InputMismatchError, UnknownDecision
from otel_rai.explanations import engine
from otel_rai.provenance import artifacts, environment, lookup
from otel_rai.provenance.record import ModelRecord
from otel_rai.query import Backend, Decision, Query, connect, decisions, find_spans
from otel_rai.query import inputs as input_files

REPRODUCED, DIFFERS = "REPRODUCED", "DIFFERS"
#: The largest call re-run whole; a decision from a larger call is re-run alone (and says so).
MAX_CALL_ROWS = 100_000
#: How far apart a backend may place the start of a call's spans (Phoenix keeps float seconds).
_TIME_SLACK_NS = 2_000


@dataclass(frozen=True)
class Comparison:
    """One recorded value and its value now. `difference`: |recorded - now| for numbers that differ."""

    what: str
    recorded: Any
    reproduced: Any
    equal: bool
    difference: float | None = None


@dataclass(frozen=True)
class Reproduction:
    """The outcome of `reproduce`: every comparison, and what the verdict rests on."""

    decision: Decision
    record: ModelRecord | None
    input_hash: str
    artifact: str
    artifact_format: str
    comparisons: tuple[Comparison, ...]
    #: Library versions that differ from the record's.
    warnings: tuple[str, ...] = ()
    #: What was not compared, and why.
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reproduced(self) -> bool:
        """Whether everything compared is identical."""
        return all(c.equal for c in self.comparisons)

    @property
    def verdict(self) -> str:
        """REPRODUCED or DIFFERS."""
        return REPRODUCED if self.reproduced else DIFFERS

    @property
    def largest_difference(self) -> float | None:
        """The largest numeric difference among the values that differ (None if none or not numeric)."""
        found = [c.difference for c in self.comparisons if not c.equal and c.difference is not None]
        return max(found) if found else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``otel-rai reproduce --format json``)."""
        return {
            "verdict": self.verdict,
            "decision_id": self.decision.decision_id,
            "model_name": self.decision.model_name,
            "model_version": self.decision.model_version,
            "model_fingerprint": self.decision.model_fingerprint,
            "operation": self.decision.operation,
            "input_hash": self.input_hash,
            "record": None if self.record is None else {"stream": self.record.stream, "seq": self.record.seq,
                                                        "time": self.record.timestamp},
            "artifact": self.artifact,
            "artifact_format": self.artifact_format,
            "comparisons": [{"what": c.what, "recorded": c.recorded, "reproduced": c.reproduced, "equal": c.equal,
                             "difference": c.difference} for c in self.comparisons],
            "largest_difference": self.largest_difference,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


# --- the pieces ------------------------------------------------------------------------------------


def _keys(key: Any) -> list[HashKey]:
    """The candidate hash keys: those given, else OTEL_RAI_HASH_KEY, else the key file (never generated)."""
    if key is None:
        material = settings.from_env("hash_key")
        if material is None:
            path = settings.hash_key_file()
            try:
                material = path.read_text(encoding="utf-8").strip()
            except OSError:
                raise InputError(f"no hash key: give one, set OTEL_RAI_HASH_KEY, or keep the key file {path}") from None
        key = material
    given = [key] if isinstance(key, (str, bytes, HashKey)) else list(key)
    return [k if isinstance(k, HashKey) else HashKey.from_material(k) for k in given]


def _the_key(keys: list[HashKey], decision: Decision) -> HashKey:
    wanted = decision.attributes.get(semconv.INPUT_HASH_KEY_ID)
    for k in keys:
        if wanted is None or k.key_id == wanted:
            return k
    ids = ", ".join(k.key_id for k in keys)
    raise InputError(f"decision {decision.decision_id} was hashed with key id {wanted}; the key given has id {ids}")


def _row(given: Any, features: Sequence[str] | None) -> list[Any]:
    """The input row: a file (one row), a mapping of feature name to value, or the values in order."""
    if isinstance(given, (str, os.PathLike)):
        path = Path(given)
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = None  # read_rows says what is wrong with the file
            if isinstance(data, list) and data and not any(isinstance(v, (list, dict)) for v in data):
                return data  # one row as an array of values
        rows = input_files.read_rows(path)
        if len(rows) != 1:
            raise InputError(f"{given}: give the one input row of the decision, not {len(rows)}")
        given = rows[0]
    if isinstance(given, Mapping):
        if not features:
            raise InputError("the decision recorded no feature names: give the row as a list of values in order")
        missing = [f for f in features if f not in given]
        if missing:
            raise InputError(f"the input has no value for {', '.join(map(str, missing))}")
        return [given[f] for f in features]
    if hasattr(given, "iloc") and hasattr(given, "columns"):
        if len(given) != 1:
            raise InputError(f"give the one input row of the decision, not {len(given)}")
        return list(given.iloc[0]) if not features else [given.iloc[0][f] for f in features]
    return list(np.asarray(given, dtype=object).reshape(-1)) if hasattr(given, "shape") else list(given)


def model_input(row: Sequence[Any], features: Sequence[str] | None, schema: Mapping[str, Any] | None) -> Any:
    """The one-row input in the container and dtypes the model saw at its first call (the record's
    schema): a DataFrame with the recorded columns, or a 2-D array."""
    call = (schema or {}).get("call") or {}
    dtypes = list(call.get("dtypes") or [])
    container = call.get("container")
    if container == "pandas.DataFrame" or (container is None and features):
        import pandas as pd

        frame = pd.DataFrame([list(row)], columns=list(features) if features else None)
        for column, dtype in zip(frame.columns, dtypes):
            try:
                frame[column] = frame[column].astype(dtype)
            except (TypeError, ValueError):  # the value does not fit the dtype: the hash check then says so
                pass
        return frame
    dtype = dtypes[0] if dtypes and len(set(dtypes)) == 1 else object
    try:
        return np.array([list(row)], dtype=dtype)
    except (TypeError, ValueError):
        return np.array([list(row)], dtype=object)


def _bits(x: Any) -> bytes | None:
    try:
        return struct.pack("<d", float(x))
    except (TypeError, ValueError, OverflowError):
        return None


def _same(a: Any, b: Any) -> tuple[bool, float | None]:
    """(identical, |a - b|): floats bit for bit (NaN equals NaN of the same bits), anything else by value."""
    if isinstance(a, float) or isinstance(b, float):
        x, y = _bits(a), _bits(b)
        if x is not None and y is not None:
            fa, fb = float(a), float(b)
            return x == y, (None if x == y else (math.inf if math.isnan(fa) != math.isnan(fb) else abs(fa - fb)))
    return bool(a == b), None


def _classes(model: Any) -> np.ndarray | None:
    try:
        classes = getattr(model, "classes_", None)
    except Exception:  # a property that raises when the model is no classifier
        return None
    return classes if isinstance(classes, np.ndarray) else None


def call_rows(decision: Decision, backend: Backend) -> int:
    """How many rows the decision's call had: its span's, or, for a chunk of a larger call, its parent's."""
    size = decision.attributes.get(semconv.BATCH_SIZE)
    rows = int(size) if isinstance(size, (int, float)) else 1
    q = Query(model_version=decision.model_version, model_name=decision.model_name,
              start_ns=decision.time_ns - _TIME_SLACK_NS, end_ns=decision.time_ns + _TIME_SLACK_NS)
    spans = [s for s in find_spans(q, backend) if s.trace_id == decision.trace_id]
    mine = next((s for s in spans if s.span_id == decision.span_id), None)
    parent = next((s for s in spans if mine is not None and s.span_id == mine.parent_span_id
                   and semconv.BATCH_CHUNKS in s.attributes), None)
    if parent is not None and isinstance(parent.attributes.get(semconv.BATCH_SIZE), (int, float)):
        rows = int(parent.attributes[semconv.BATCH_SIZE])
    return max(rows, decision.row + 1)


def _repeated(X: Any, n: int) -> Any:
    """`n` copies of the one-row input `X`, in its container."""
    if n == 1:
        return X
    if hasattr(X, "iloc"):
        import pandas as pd

        return pd.concat([X] * n, ignore_index=True)
    return np.repeat(X, n, axis=0)


def _outputs(decision: Decision, model: Any, X: Any, row: int) -> list[Comparison]:
    operation = str(decision.operation)
    result = run_quietly(getattr(model, operation), X)
    values, scores = outputs.encode(operation, result, _classes(model))
    equal, difference = _same(decision.output, values[row])
    out = [Comparison("output", decision.output, values[row], equal, difference)]
    recorded = decision.scores
    now = {label: column[row] for label, column in (scores or {}).items()}
    for label in list(recorded) + [x for x in now if x not in recorded]:
        a, b = recorded.get(label), now.get(label)
        if a is None or b is None:
            out.append(Comparison(f"score {label}", a, b, False))
            continue
        equal, difference = _same(float(a), float(b))
        out.append(Comparison(f"score {label}", a, b, equal, difference))
    return out


def _explanation(decision: Decision, model: Any, background: Any, X: Any) -> tuple[list[Comparison], list[str]]:
    top = decision.values.get(semconv.EXPLANATION_TOP)
    method = decision.attributes.get(semconv.EXPLANATION_METHOD)
    if top is None or method is None:
        error = decision.attributes.get(semconv.EXPLANATION_ERROR)
        return [], [f"explanation: none was recorded{f' ({error})' if error else ''}, so none was compared"]
    options = engine.Options(
        budget_us=settings.from_env("explain_budget_us") or settings.default("explain_budget_us"),
        max_evals=settings.from_env("explain_max_evals") or settings.default("explain_max_evals"),
    )
    try:
        explainer = engine.build(model, background, str(method), options)
        explained = run_quietly(explainer.explain, X)
    except Exception as exc:
        return [Comparison("explanation", top, None, False)], [
            f"explanation: could not be recomputed with method {method} ({type(exc).__name__}"
            f"{'; the background rows were not saved with the model' if background is None else ''})"]
    k = max(len(parse_top(str(top))), 1)
    again = encode_top(explained.feature_names, explained.values, k)[0]
    out = [Comparison("explanation", top, again, again == top)]
    base = decision.values.get(semconv.EXPLANATION_BASE_VALUES)
    if base is not None:
        equal, difference = _same(float(base), float(explained.base_values[0]))
        out.append(Comparison("explanation base value", base, float(explained.base_values[0]), equal, difference))
    return out, []


# --- reproduce -------------------------------------------------------------------------------------


def reproduce(
    decision_id: str,
    input: Any,
    *,
    backend: str | Backend = "local",
    url: str | None = None,
    artifacts_store: str | os.PathLike[str] | artifacts.ArtifactStore | None = None,
    key: str | bytes | HashKey | Sequence[str | bytes | HashKey] | None = None,
    trust_remote_artifacts: bool = False,
    trusted_types: Sequence[str] = (),
    since: Any = None,
    start: Any = None,
    end: Any = None,
) -> Reproduction:
    """Make decision `decision_id` again from `input` and its saved model (see the module docstring).

    input: a .json/.jsonl/.csv file of the one row (objects matched by feature name), a mapping of feature
        name to value, or the values in column order.
    backend, url: where the decision and its record are (as `otel_rai.query.find_decisions`).
    artifacts_store: the artifact store (default ``OTEL_RAI_ARTIFACTS``, else ``artifacts`` beside the
        local audit store).
    key: the input hash key, or several (rotated keys): default ``OTEL_RAI_HASH_KEY``, else the key file.
    trust_remote_artifacts: load from a remote (fsspec) store; trusted_types: further types a skops file
        may hold (see `otel_rai.provenance.artifacts`).
    since, start, end: the window to search (remote backends search the 7 days before `end` by default).

    Raises `InputMismatchError` when the input is not the one the model saw, `ArtifactError` when the
    model cannot be loaded safely, `UnknownDecision` when the decision is not found.
    """
    source = connect(backend, url) if isinstance(backend, str) else backend
    start_ns, end_ns = window(since, start, end)
    found = next(decisions(Query(start_ns=start_ns, end_ns=end_ns, decision_ids=frozenset([str(decision_id)])),
                           source, 1), None)
    if found is None:
        where = f"the {backend} backend" if isinstance(backend, str) else "the backend given"
        raise UnknownDecision(f"no decision {str(decision_id)!r} in {where}")
    if found.error is not None:
        raise UnknownDecision(f"decision {found.decision_id} recorded an error ({found.error[:80]}); "
                              "there is no output to reproduce")
    if not found.model_fingerprint or not found.input_hash:
        raise UnknownDecision(f"decision {found.decision_id} recorded no model fingerprint or no input hash")
    record = lookup.record_of(found, source, start_ns)
    features = found.attributes.get(semconv.INPUT_FEATURES) or (
        (record.schema or {}).get("features") if record is not None else None)
    X = model_input(_row(input, features), features, record.schema if record is not None else None)
    hash_key = _the_key(_keys(key), found)
    if hash_rows(X, hash_key)[0] != found.input_hash:
        raise InputMismatchError(f"this is not the input the model saw: its keyed hash is not decision "
                                 f"{found.decision_id}'s {found.input_hash}")
    notes: list[str] = []
    recorded_artifact = (record.artifact or {}) if record is not None else {}
    if record is None:
        notes.append("no model record of this fingerprint was found: library versions were not compared, and the "
                     "artifact's digest was checked against the store's manifest only")
    elif recorded_artifact.get("sha256") is None:
        notes.append("the model record names no artifact digest "
                     f"({recorded_artifact.get('error', 'no artifact store was configured')}): checked against the "
                     "store's manifest only")
    store_ = artifacts_store if isinstance(artifacts_store, artifacts.ArtifactStore) else _artifact_store(
        artifacts_store, source)
    loaded = store_.load(found.model_fingerprint, fingerprint_of=fingerprint, sha=recorded_artifact.get("sha256"),
                         background_sha=recorded_artifact.get("background_sha256"),
                         trust_remote=trust_remote_artifacts, trusted_types=trusted_types)
    warnings = []
    if record is not None:
        for name, then, now in environment.differences(record.libraries):
            warnings.append(f"{name} is {now or 'not installed'} here, {then} when the model was recorded")
    n_rows = call_rows(found, source)
    if n_rows > MAX_CALL_ROWS:
        notes.append(f"the decision was row {found.row} of a {n_rows}-row call, more than {MAX_CALL_ROWS} rows: "
                     "re-run alone, which can change the last bits of a batch computation")
        comparisons = _outputs(found, loaded.model, X, 0)
    else:
        if n_rows > 1:
            notes.append(f"re-run as row {found.row} of {n_rows} rows (copies of the input), as the call ran it")
        comparisons = _outputs(found, loaded.model, _repeated(X, n_rows), found.row if n_rows > 1 else 0)
    explained, explanation_notes = _explanation(found, loaded.model, loaded.background, X)
    return Reproduction(found, record, found.input_hash, loaded.uri, loaded.format,
                        tuple(comparisons + explained), tuple(warnings), tuple(notes + explanation_notes))


def _artifact_store(given: str | os.PathLike[str] | None, source: Backend) -> artifacts.ArtifactStore:
    if given is not None:
        return artifacts.ArtifactStore(given)
    configured = settings.from_env("artifacts")
    if isinstance(configured, str):
        return artifacts.ArtifactStore(configured)
    local = getattr(source, "store", None)
    path = local.path if isinstance(local, store.Store) else store.default_path()
    return artifacts.ArtifactStore(artifacts.default_location(path))
