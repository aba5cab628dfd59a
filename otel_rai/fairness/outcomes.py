"""Positive and negative outcomes, and what a delayed ground-truth label needs to be counted.

`OutcomeRule` turns a call's output into one positive/negative flag per row:

* ``predict`` of a classifier, and the scored operations (``predict_proba``, ``predict_log_proba``,
  ``decision_function``) without a threshold: positive when the predicted label (the label of
  ``ml.outputs``) is the positive label;
* with ``score_threshold``: positive when the score of the positive class is at or above it (for
  ``predict`` of a regressor and for ``score_samples``: when the value is);
* the positive label is ``positive_label``, else the second of two ``classes_`` (scikit-learn's
  positive class), else ``1``. A multi-class model needs ``positive_label``.

`DecisionBook` is the bounded map from decision id to what `otel_rai.record_outcome` needs. When it
does not know an id, an `OutcomeLookup` (the session's: the local audit store) is asked. A
`DecisionJournal` (the local audit store's sink) keeps every decision's groups and outcome for the
audit report, beyond the book's memory.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field, replace
from itertools import repeat
from numbers import Real
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
from sklearn.base import is_regressor

from otel_rai.audit.outputs import SCORED
from otel_rai.capture.recorder import DecisionCall
from otel_rai.errors import UnknownDecision


def _is_regressor(model: Any) -> bool:
    try:
        return bool(is_regressor(model))
    except Exception:  # an estimator-like object without scikit-learn tags
        return False


@dataclass(frozen=True)
class Positive:
    """What makes a ground-truth value positive: equal to `label`, or (no label) at least `threshold`."""

    label: Any = None
    threshold: float | None = None

    def __call__(self, value: Any) -> bool:
        if self.label is None:
            return bool(value >= self.threshold)
        return bool(value == self.label)


@dataclass(frozen=True)
class OutcomeRule:
    """What makes a decision positive: the `positive_label` (default: the second of two classes, or 1),
    or, for scores, at least `score_threshold`."""

    positive_label: Any = None
    score_threshold: float | None = None

    def label_for(self, classes: np.ndarray | None) -> Any | None:
        """The positive label of a model with these classes; None when it cannot be told."""
        if self.positive_label is not None:
            return self.positive_label
        if classes is None:
            return 1
        return classes.tolist()[1] if len(classes) == 2 else None

    def predicted(self, call: DecisionCall) -> list[bool] | None:
        """One flag per row: was the decision positive? None when the rule does not apply."""
        out = call.output
        if isinstance(out, list) and out and isinstance(out[0], np.ndarray):
            return None  # multi-output
        out = np.asarray(out)
        classes = call.info.classes
        label = self.label_for(classes)
        threshold = self.score_threshold
        if out.ndim == 2 and call.operation in SCORED:
            matching = classes is not None and len(classes) == out.shape[1]
            names = (classes if matching else np.arange(out.shape[1])).tolist()
            if label not in names:
                return None
            column = names.index(label)
            if threshold is None:
                return (out.argmax(axis=1) == column).tolist()
            return (out[:, column] >= threshold).tolist()
        if out.ndim != 1:
            return None
        if call.operation == "decision_function" and classes is not None and len(classes) == 2:
            if threshold is None:
                return (classes[(out > 0).astype(int)] == label).tolist()
            # The binary score is the second class's: a threshold only applies when it is the positive one.
            return (out >= threshold).tolist() if label == classes.tolist()[1] else None
        if call.operation == "predict" and classes is not None:
            return None if label is None else (out == label).tolist()
        if threshold is not None and out.dtype.kind in "biuf":
            return (out >= threshold).tolist()
        if _is_regressor(call.model):
            return None  # a value is neither positive nor negative without a threshold
        if call.operation == "predict" and label is not None:
            return (out == label).tolist()
        return None

    def predicted_many(self, calls: Sequence[DecisionCall]) -> list[list[bool] | None]:
        """`predicted` of each call: in one numpy pass for the calls of one model and operation whose outputs
        are arrays of one width and dtype. The same flags: a row's flag depends on that row alone, and
        whether the rule applies on the model, the operation and the output's width and dtype only."""
        flags: list[list[bool] | None] = [None] * len(calls)
        runs: dict[tuple, list[int]] = {}
        for i, call in enumerate(calls):
            out = call.output
            if type(out) is np.ndarray and out.ndim:
                runs.setdefault((id(call.info), id(call.model), call.operation, out.shape[1:], out.dtype), []).append(i)
            else:
                flags[i] = self.predicted(call)
        for members in runs.values():
            first = calls[members[0]]
            if len(members) == 1:
                flags[members[0]] = self.predicted(first)
                continue
            joined = self.predicted(replace(first, output=np.concatenate([calls[i].output for i in members])))
            at = 0
            for i in members:
                n = len(calls[i].output)
                flags[i] = None if joined is None else joined[at : at + n]
                at += n
        return flags

    def truth_for(self, call: DecisionCall) -> Positive:
        """How the ground truth of this call's decisions is read."""
        if call.info.classes is None and self.score_threshold is not None and self.positive_label is None:
            return Positive(threshold=self.score_threshold)  # a regressor's value against the threshold
        return Positive(label=self.label_for(call.info.classes))

    def predicted_from_value(self, prediction: Any, classes: Sequence[Any] | None = None) -> bool | None:
        """Whether a prediction passed to `record_outcome` (a label, or a score with a threshold) is positive."""
        is_score = isinstance(prediction, Real) and not isinstance(prediction, (bool, int, np.integer))
        if self.score_threshold is not None and is_score:
            return bool(prediction >= self.score_threshold)
        label = self.label_for(None if classes is None else np.asarray(classes))
        return None if label is None else bool(prediction == label)

    def default_truth(self, classes: Sequence[Any] | None = None) -> Positive:
        """How ground truth is read when its decision is not remembered; `UnknownDecision` when no positive
        label can be told."""
        label = self.label_for(None if classes is None else np.asarray(classes))
        if label is None:
            raise UnknownDecision("no positive label: set FairnessConfig(positive_label=...)")
        return Positive(label=label)


@dataclass(frozen=True)
class KnownDecision:
    """What an outcome needs to know about its decision. `OutcomeLookup` returns one.

    prediction: the predicted label (``ml.outputs``), or a score when ``score_threshold`` is set.
    classes: the model's ``classes_`` (``ml.output.classes``), to find its positive label.
    groups: {sensitive attribute: group value}; empty when the source does not know them.
    """

    model: str
    version: str
    prediction: Any
    classes: Sequence[Any] | None = None
    groups: Mapping[str, Any] = field(default_factory=dict)


#: The fallback for ids the `DecisionBook` no longer (or never) held: the local audit store provides it.
OutcomeLookup = Callable[[str], "KnownDecision | None"]


class DecisionJournal(Protocol):
    """Keeps the groups and outcomes of decisions for the audit report (the local audit store)."""

    def note_groups(self, ids: Sequence[str], groups: Mapping[str, Sequence[str]]) -> None:
        """Keep the group of each decision of `ids` ({attribute: one group per row})."""

    def note_outcome(self, decision_id: str, y_true: Any, time_ns: int) -> None:
        """Keep the ground truth of `decision_id`, recorded at `time_ns`."""


@dataclass(frozen=True)
class Remembered:
    """A decision as the monitor saw it: enough to count its outcome later."""

    model: str
    version: str
    groups: dict[str, str]
    predicted: bool
    truth: Positive


#: Distinct entries a `DecisionBook` shares, at most (a few a model version and group): beyond, it starts over.
_MAX_SHARED = 4096


class DecisionBook:
    """Decision id → `Remembered`, for the newest `capacity` decisions that had groups.

    Entries are plain tuples of strings, bools and ints, written a call at a time by C loops; a
    `Remembered` is built when an outcome pops its decision. Holding only atomic values, the entries are
    not tracked by the garbage collector: 100k tracked entries (an object and a dict each, before) made
    every full collection of the process slower by about 100 ms. Equal entries are one tuple, shared
    (an entry holds no id or time, so a model version has a few): a decision adds no object of its own,
    which would count towards the collector's next young pass and live as long as the book holds it."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        # id -> (model, version, attribute names, one label per name, predicted, truth: its index in _truths)
        self._entries: collections.OrderedDict[str, tuple] = collections.OrderedDict()
        self._truths: list[Positive] = []
        self._truth_index: dict[tuple, int] = {}
        self._shared: dict[tuple, tuple] = {}  # each distinct entry, itself

    def _truth(self, truth: Positive) -> Any:
        """The number of `truth` in this book (a positive label that cannot be hashed stays an object).
        Types are part of the key: ``Positive(label=1)`` equals ``Positive(label=True)``."""
        key = (type(truth.label), truth.label, type(truth.threshold), truth.threshold)
        try:
            index = self._truth_index.get(key)
        except TypeError:
            return truth
        if index is None:
            index = self._truth_index[key] = len(self._truths)
            self._truths.append(truth)
        return index

    def remember(self, ids: Sequence[str], model: str, version: str, groups: Mapping[str, list[str]],
                 predicted: Sequence[bool], truth: Positive) -> None:
        """Remember the decisions of one call (their groups and predictions); the oldest beyond `capacity`
        are forgotten."""
        entries = self._entries
        truth_index = self._truth(truth)
        made = zip(repeat(model), repeat(version), repeat(tuple(groups)), zip(*groups.values()), predicted,
                   repeat(truth_index))
        if type(truth_index) is int:  # else an unhashable label's object, in entries of their own
            shared = self._shared
            if len(shared) > _MAX_SHARED:
                shared.clear()
            made = map(lambda entry: shared.setdefault(entry, entry), made)
        entries.update(zip(ids, made))
        excess = len(entries) - self._capacity
        if excess > 0:
            collections.deque(map(entries.popitem, repeat(False, excess)), maxlen=0)  # oldest first, in C

    def pop(self, decision_id: str) -> Remembered | None:
        """The decision, forgotten: a decision's first outcome is the one that counts."""
        entry = self._entries.pop(decision_id, None)
        if entry is None:
            return None
        model, version, names, labels, flag, truth = entry
        return Remembered(model, version, dict(zip(names, labels)), flag,
                          self._truths[truth] if type(truth) is int else truth)

    def __len__(self) -> int:
        return len(self._entries)
