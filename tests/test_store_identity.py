"""A store that is gone or replaced is unavailable: SQLite would write on into the old file, and every
such commit would be lost. Fail-closed refuses the decision at once; fail-open counts and logs it."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import KEY
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import AuditUnavailableError
from otel_rai.session.instrumentor import RaiInstrumentor
from otel_rai.store import Store

rng = np.random.RandomState(0)
X = rng.randn(40, 3)
MODEL = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


def _wal(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _unlink(path: Path) -> None:
    path.unlink()


def _rename_away(path: Path) -> None:
    path.rename(path.with_name("moved.db"))


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _copy_over(path: Path) -> None:
    """Another file with the same content (a restore from backup, or a copy moved into place)."""
    copy = path.with_name("copy.db")
    shutil.copy(path, copy)
    os.replace(copy, path)


def _other_store(path: Path) -> None:
    other = path.with_name("other.db")
    Store(other, create=True).close()
    os.replace(other, path)


def _garbage(path: Path) -> None:
    path.unlink()
    path.write_bytes(os.urandom(8192))


def _wal_unlinked(path: Path) -> None:
    _wal(path).unlink()


def _wal_replaced(path: Path) -> None:
    wal = _wal(path)
    data = wal.read_bytes()
    wal.unlink()
    wal.write_bytes(data)


WAYS: dict[str, Callable[[Path], None]] = {f.__name__.lstrip("_"): f for f in (
    _unlink, _rename_away, _directory, _copy_over, _other_store, _garbage, _wal_unlinked, _wal_replaced)}


@pytest.mark.parametrize("way", WAYS)
def test_fail_closed_refuses_every_decision_once_the_store_is_gone_or_replaced(tmp_path, way):
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY, on_audit_failure="raise")
    for i in range(20):
        MODEL.predict(X[i : i + 1])  # committed: returns
    WAYS[way](path)
    refused = 0
    for i in range(50):
        with pytest.raises(AuditUnavailableError, match="could not be written durably"):
            MODEL.predict(X[i % 40 : i % 40 + 1])
        refused += 1
    result = otel_rai.flush(1)
    assert not result.complete and result.failures.get("commit", 0) >= 1
    RaiInstrumentor().uninstrument(timeout=1)  # what is pending cannot be written
    assert refused == 50


@pytest.mark.parametrize("way", ["unlink", "copy_over", "wal_unlinked"])
def test_fail_open_keeps_predicting_and_says_the_records_are_pending(tmp_path, way, caplog):
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY)
    MODEL.predict(X[:1])
    assert otel_rai.flush(10).complete
    WAYS[way](path)
    got = MODEL.predict(X[:5])
    assert len(got) == 5  # the prediction is unaffected
    result = otel_rai.flush(1)
    assert not result.complete and result.pending >= 1 and result.failures.get("commit", 0) >= 1
    assert any("since it was opened" in r.getMessage() for r in caplog.records)
    RaiInstrumentor().uninstrument(timeout=1)


def test_a_store_that_stays_is_written_as_before(tmp_path):
    """The check is no false alarm: checkpoints of the WAL, other processes' writes and a fork leave
    the file and its WAL as they were."""
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY, on_audit_failure="raise")
    for i in range(30):
        MODEL.predict(X[i : i + 1])
        if i % 10 == 0:
            with sqlite3.connect(path) as conn:  # another connection checkpoints and truncates the WAL
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert otel_rai.flush(10).complete
    otel_rai.uninstrument()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == 30
