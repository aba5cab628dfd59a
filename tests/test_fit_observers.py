"""The fit observers of the patcher: each outermost successful fit is reported once, with its arguments."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from otel_rai.capture.patching import Patcher


def passthrough(original, name):
    """A decision wrapper that records nothing (a new function: the patcher marks the wrapper it installs)."""
    return functools.wraps(original)(lambda *args, **kwargs: original(*args, **kwargs))


@pytest.fixture
def observed():
    seen: list[tuple] = []
    patcher = Patcher(passthrough, [lambda m, name, a, k, ns: seen.append((m, name, a, k, ns))])
    patcher.install()
    try:
        yield seen
    finally:
        patcher.remove()


def test_a_pipeline_fit_is_one_fit_and_its_steps_are_not_reported(observed):
    X, y = np.random.default_rng(0).normal(size=(40, 3)), np.arange(40) % 2
    pipe = make_pipeline(StandardScaler(), LogisticRegression())
    pipe.fit(X, y, logisticregression__sample_weight=np.ones(40))
    assert [(m, name) for m, name, *_ in observed] == [(pipe, "fit")]
    _, _, args, kwargs, ns = observed[0]
    assert args[0] is X and args[1] is y and "logisticregression__sample_weight" in kwargs and ns > 0
    StandardScaler().fit_transform(X)
    assert [name for _, name, *_ in observed] == ["fit", "fit_transform"]


def test_a_failed_fit_is_not_reported_and_a_failing_observer_does_not_break_training(caplog):
    seen = []

    def broken(*args):
        seen.append(args)
        raise RuntimeError("secret value 123")

    patcher = Patcher(passthrough, [broken])
    patcher.install()
    try:
        with pytest.raises(ValueError):
            LogisticRegression().fit(np.zeros((4, 2)), [0, 0, 0, 0])  # one class: sklearn refuses
        assert seen == []
        model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
        assert len(seen) == 1 and model.coef_.shape == (1, 4)
        assert "RuntimeError" in caplog.text and "123" not in caplog.text
    finally:
        patcher.remove()


def test_before_change_hooks_announce_each_outermost_fit_and_set_params_before_they_start(caplog):
    events = []

    def before(model, name):
        events.append(("before", name, hasattr(model, "coef_")))  # nothing fitted yet at the first fit
        if len(events) == 3:
            raise RuntimeError("secret value 456")

    patcher = Patcher(passthrough, [lambda m, name, a, k, ns: events.append(("after", name))],
                      before_change=[before])
    patcher.install()
    try:
        X, y = np.random.default_rng(1).normal(size=(30, 2)), np.arange(30) % 2
        model = LogisticRegression()
        model.fit(X, y)
        make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)  # its steps' fits are not announced
        model.set_params(C=0.5).fit(X, y)  # the first hook fails: set_params goes ahead
        assert events == [("before", "fit", False), ("after", "fit"), ("before", "fit", False), ("after", "fit"),
                          ("before", "set_params", True), ("before", "fit", True), ("after", "fit")]
        assert model.C == 0.5 and "RuntimeError" in caplog.text and "456" not in caplog.text
        with pytest.raises(ValueError):
            LogisticRegression().fit(np.zeros((4, 2)), [0, 0, 0, 0])
        assert events[-1] == ("before", "fit", False)  # announced, never reported: it failed
    finally:
        patcher.remove()
