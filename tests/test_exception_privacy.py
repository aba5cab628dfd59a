"""No exception text carries an input value out of the process: not on a span (status, events,
attributes), in the store or the spool, on the OTLP wire, in the output of `query`, `show` and
`export`, or in a log line. Thousands of failures are generated: real scikit-learn, pandas and numpy
errors on bad inputs that embed secret values, and synthetic messages that embed them in every format.
"""

from __future__ import annotations

import json
import logging
import random
import warnings
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import pytest
from conftest import KEY, instrumented
from leaks import Secrets, everything_of, file_texts
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

import otel_rai
from otel_rai import cli, semconv
from otel_rai.audit import redaction

rng0 = np.random.RandomState(0)
X = rng0.randn(80, 4)
y = (X[:, 0] > 0).astype(int)
LR = LogisticRegression().fit(X, y)
HGB = HistGradientBoostingClassifier(max_iter=3).fit(X, y)
FRAME = pd.DataFrame({"n": rng0.randn(80), "c": rng0.choice(["a", "b"], 80), "k": rng0.choice([1, 2, 3], 80)})
ONE_HOT = make_pipeline(ColumnTransformer([("oh", OneHotEncoder(), ["c", "k"])], remainder="passthrough"),
                        LogisticRegression()).fit(FRAME, y)
ORDINAL = make_pipeline(ColumnTransformer([("oe", OrdinalEncoder(), ["c"]), ("s", StandardScaler(), ["n"])]),
                        LogisticRegression()).fit(FRAME, y)


# --- real library errors ---------------------------------------------------------------------------


def _numbers(s: Secrets, n: int) -> list[float]:
    return [s.number() for _ in range(n)]


def real_failures(s: Secrets) -> Iterator[tuple[Any, Any]]:
    """(model, input) pairs that make scikit-learn, pandas or numpy raise, each input holding secrets."""
    r = s.rng
    yield LR, np.array(_numbers(s, 4))                                       # 1-D: array=[...]
    yield LR, np.array(_numbers(s, 2))                                       # 1-D, wrong width
    yield LR, s.number()                                                     # scalar: array=1.2e+08
    yield LR, s.text()                                                       # scalar string: array=abc.
    yield LR, np.int64(s.integer())
    yield LR, {s.text(): [s.number()]}                                       # a dict: array={...}
    yield LR, np.array([[s.text(), *_numbers(s, 3)]], dtype=object)          # could not convert ...
    yield HGB, np.array([[*_numbers(s, 3), s.text()]], dtype=object)
    yield LR, np.array(_numbers(s, 8)).reshape(2, 2, 2)                      # 3-D
    yield LR, np.array([_numbers(s, 3)])                                     # wrong width
    yield LR, np.array([[np.nan, *_numbers(s, 3)]])                          # NaN
    yield LR, np.array([[np.inf, *_numbers(s, 3)]])                          # infinity
    yield LR, np.array([[1e308 * 10, s.number(), s.number(), s.number()]])
    yield LR, [[s.text(), s.number()]]                                       # list of lists, wrong width
    yield LR, pd.Series(_numbers(s, 3))                                      # a Series is 1-D
    frame = FRAME.head(2).copy()
    yield ONE_HOT, frame.assign(c=[s.text(), "a"])                           # unknown string category
    yield ONE_HOT, frame.assign(k=[np.int64(s.integer()), 1])                # unknown numeric category
    yield ONE_HOT, frame.assign(k=[s.number(), 2])
    yield ORDINAL, frame.assign(c=[s.unicode(), "b"])
    yield ORDINAL, frame.assign(n=[s.text(), s.number()])                    # a string in a numeric column
    yield ONE_HOT, frame.assign(c=[None, s.text()])
    yield ONE_HOT, frame.drop(columns="c").assign(extra=[s.number(), s.number()])
    yield ONE_HOT, frame.assign(k=[s.text(), r.choice([1, 2])])


# --- synthetic messages ----------------------------------------------------------------------------


class _Custom(Exception):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def __str__(self) -> str:
        return self.text


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


def _formats(s: Secrets) -> list[Callable[[], str]]:
    """Ways a message may embed a value."""
    return [
        lambda: repr(s.number()), lambda: str(s.number()), lambda: f"{s.number():e}", lambda: f"{s.number():.12E}",
        lambda: f"{s.number():.2f}", lambda: hex(s.integer()), lambda: s.number().hex(), lambda: str(s.integer()),
        lambda: repr(s.text()), lambda: str(s.text()), lambda: repr(s.text().encode("utf-8")),
        lambda: repr([s.number(), s.text()]), lambda: str({s.text(): s.number()}), lambda: repr((s.integer(),)),
        lambda: repr(np.array(_numbers(s, 3))), lambda: str(np.array(_numbers(s, 5))),
        lambda: repr(np.int64(s.integer())), lambda: repr(np.float64(s.number())), lambda: repr(np.float32(1.5)),
        lambda: str(pd.Series(_numbers(s, 2))), lambda: repr(s.unicode()), lambda: s.unicode(),
        lambda: f"value {s.text()} at {s.number()}", lambda: json.dumps({"x": s.text()}),
        lambda: f"<{s.text()}>", lambda: f"({s.text()})", lambda: f"{s.text()}:{s.integer()}",
    ]


def synthetic_errors(s: Secrets, n: int) -> Iterator[BaseException]:
    """`n` exceptions whose messages (and causes) embed secrets."""
    formats = _formats(s)
    r = s.rng
    for _ in range(n):
        text = " ".join(r.choice(formats)() for _ in range(r.randint(1, 4)))
        kind = r.randrange(8)
        if kind == 0:
            error: BaseException = KeyError(s.text())
        elif kind == 1:
            error = _Custom(text)
        elif kind == 2:
            error = ValueError(text, s.number())                    # str() is the repr of the args
        elif kind == 3:
            error = _Unprintable()
        elif kind == 4:  # chained: the secret is in the cause
            try:
                try:
                    raise TypeError(text)
                except TypeError as cause:
                    raise ValueError(r.choice(formats)()) from cause
            except ValueError as chained:
                error = chained
        elif kind == 5:  # raised while handling another
            try:
                try:
                    raise KeyError(text)
                except KeyError:
                    raise RuntimeError(r.choice(formats)()) from None if r.random() < 0.3 else RuntimeError(text)
            except RuntimeError as handled:
                error = handled
        else:
            error = ValueError(text)
        yield error


class Raiser(ClassifierMixin, BaseEstimator):
    """A model whose predictions raise the next exception of `errors`."""

    errors: list[BaseException] = []

    def fit(self, X: Any, y: Any) -> Raiser:
        self.classes_ = np.array([0, 1])
        return self

    def predict(self, X: Any) -> Any:
        raise Raiser.errors.pop()


def _run(calls: list[tuple[Any, Any]], errors: list[BaseException]) -> list[str]:
    """Make every call (each must raise); returns the decision ids given to them."""
    Raiser.errors = list(reversed(errors))
    raiser = Raiser().fit(X, y)
    calls = calls + [(raiser, X[:1])] * len(errors)
    ids = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (model, data) in enumerate(calls):
            two_d = getattr(data, "ndim", None) == 2  # others get generated ids (one per len(), as sklearn sees it)
            decision_ids = [f"fail-{i}-{j}" for j in range(len(data))] if two_d else None
            try:  # not pytest.raises: matching would call str() on exceptions whose __str__ raises
                with otel_rai.decisions(ids=decision_ids):
                    model.predict(data)
            except Exception:
                pass
            else:
                pytest.fail(f"call {i} did not raise")
            ids += decision_ids or []
    return ids


def _workload(seed: int, real: int, synthetic: int) -> tuple[Secrets, list[tuple[Any, Any]], list[BaseException]]:
    s = Secrets(random.Random(seed))
    calls = [c for _ in range(real) for c in real_failures(s)]
    return s, calls, list(synthetic_errors(s, synthetic))


# --- the redaction itself ----------------------------------------------------------------------------


def test_no_template_or_stack_trace_keeps_a_secret():
    s = Secrets(random.Random(1))
    errors = list(synthetic_errors(s, 5000))
    for model, data in [c for _ in range(60) for c in real_failures(s)]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.predict(data)
        except Exception as exc:
            errors.append(exc)
    assert len(errors) > 6000
    for error in errors:
        described = redaction.describe(error)
        text = "\n".join([described.type, described.message, described.stacktrace, described.status])
        assert s.found_in(text) == [], (repr(str(error))[:300], text)


def test_templates_keep_what_says_what_went_wrong():
    cases = {
        "Found unknown categories ['Atlantis'] in column 0 during transform":
            "Found unknown categories […] in column … during transform",
        "X has 3 features, but LogisticRegression is expecting 4 features as input.":
            "X has … features, but LogisticRegression is expecting … features as input.",
        "could not convert string to float: 'a\\'b\"c'": "could not convert string to float: '…'",
        "Expected 2D array, got scalar array instead:\narray=Atlantis.":
            "Expected … array, got scalar array instead:\narray=….",
        "Input X contains infinity or a value too large for dtype('float64').":
            "Input X contains infinity or a value too large for dtype('…').",
        "the quote 'runs to the end": "the quote '…'",
        "the group [1, [2, 3] and the rest": "the group […]",
    }
    for message, expected in cases.items():
        assert redaction.template(message) == expected


def test_stack_traces_keep_frames_and_chain_but_no_source_line():
    def inner(secret: str) -> None:
        raise KeyError(secret)

    try:
        try:
            inner("ZqXwVmKpLo")
        except KeyError as exc:
            raise ValueError("bad row 'ZqXwVmKpLo'") from exc
    except ValueError as raised:
        error = raised
    described = redaction.describe(error)
    trace = described.stacktrace
    assert "ZqXwVmKpLo" not in trace and "raise KeyError" not in trace  # neither the value nor a source line
    assert ", in inner\n" in trace and __file__ in trace
    assert trace.index("KeyError: '…'") < trace.index("direct cause") < trace.index("ValueError: bad row '…'")
    assert described.status == "ValueError: bad row '…'"
    full = redaction.describe(error, full_messages=True)
    assert "ZqXwVmKpLo" in full.status and "raise KeyError(secret)" in full.stacktrace


# --- every place an exception can leave --------------------------------------------------------------


def test_nothing_raw_on_any_span_of_thousands_of_failures():
    s, calls, errors = _workload(seed=2, real=40, synthetic=2500)
    audit = instrumented()
    _run(calls, errors)
    spans = audit.spans()
    assert len(spans) == len(calls) + len(errors)
    assert all(span.status.description and span.events for span in spans)
    for span in spans:
        assert s.found_in(everything_of(span)) == [], everything_of(span)[:2000]
    described = {e.attributes[semconv.EXCEPTION_TYPE] for span in spans for e in span.events}
    assert {"ValueError", "KeyError", f"{__name__}._Custom"} <= described


def test_nothing_raw_in_the_store_the_cli_or_the_logs(tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    s, calls, errors = _workload(seed=3, real=12, synthetic=600)
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY)
    ids = _run(calls, errors)
    wal = file_texts([path.with_name(path.name + "-wal")])  # before close checkpoints it into the file
    result = otel_rai.flush(60)
    otel_rai.uninstrument()
    assert result.complete and result.decisions >= len(ids)
    texts = {**wal, **file_texts(tmp_path.iterdir())}
    for command in (["query", "--limit", "0", "--format", "json"], ["query", "--limit", "0"],
                    ["export", "--format", "jsonl"], ["export", "--format", "csv"], ["export", "--format", "otlp-json"],
                    *(["show", decision_id, "--format", fmt] for decision_id in ids[::25] for fmt in ("text", "json"))):
        assert cli.main([*command, "--store", str(path)]) == 0, command
        out = capsys.readouterr()
        texts[" ".join(command)] = out.out + out.err
    texts["logs"] = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "Found unknown categories […]" in texts["export --format jsonl"]
    for where, text in texts.items():
        assert s.found_in(text) == [], where


def test_nothing_raw_in_the_spool_or_on_the_wire(receiver, tmp_path):
    s, calls, errors = _workload(seed=4, real=6, synthetic=300)
    spool = tmp_path / "spool.db"
    otel_rai.instrument(endpoint=receiver.endpoint, spool=spool, hash_key=KEY)
    _run(calls, errors)
    spooled = file_texts(tmp_path.iterdir())
    assert otel_rai.flush(60).complete
    otel_rai.uninstrument()
    wire = "".join(r.SerializeToString().decode("latin-1") for r in receiver.requests)
    assert len(receiver.spans()) >= len(calls) + len(errors)
    for where, text in {**spooled, "wire": wire}.items():
        assert s.found_in(text) == [], where


def test_full_messages_only_when_asked_for():
    s = Secrets(random.Random(5))
    secret = s.text()
    audit = instrumented(record_exception_messages=True)
    Raiser.errors = [ValueError(f"bad value {secret!r}")]
    with pytest.raises(ValueError):
        Raiser().fit(X, y).predict(X[:1])
    (span,) = audit.spans()
    assert s.found_in(span.status.description) and s.found_in(span.events[0].attributes[semconv.EXCEPTION_STACKTRACE])
