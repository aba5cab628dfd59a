"""Files and keys: every directory otel-rai creates is 0700 and every file it writes 0600, whatever the
umask and whatever was there before; the generated key lives outside the data directory; decisions
and checkpoints recorded under the earlier key scheme stay verifiable."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from conftest import KEY
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import cli
from otel_rai.audit import hashing
from otel_rai.chain import keys as chain_keys

rng = np.random.RandomState(0)
X = rng.randn(30, 3)
MODEL = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


@pytest.fixture(params=[0o000, 0o002, 0o022, 0o077])
def umask(request) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _created(root: Path) -> list[Path]:
    return [root, *sorted(root.rglob("*"))]


def test_everything_created_is_private_whatever_the_umask(tmp_path, umask, monkeypatch):
    monkeypatch.delenv("OTEL_RAI_HASH_KEY", raising=False)
    home = tmp_path / "deep" / "data" / "otel-rai"
    config = tmp_path / "deep" / "config"
    monkeypatch.setenv("OTEL_RAI_HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    otel_rai.instrument()  # the default store and a generated key
    MODEL.predict(X[:3])
    otel_rai.uninstrument()
    assert (config / "otel-rai" / "hash.key").exists() and not (home / "hash.key").exists()
    for path in _created(tmp_path / "deep"):
        expected = 0o700 if path.is_dir() else 0o600
        assert _mode(path) == expected, (oct(umask), path, oct(_mode(path)))


def test_audit_files_written_over_loose_files_become_private(tmp_path, umask, capsys):
    store = tmp_path / "audit.db"
    otel_rai.instrument(store=store, hash_key=KEY, sensitive_features=["g"])
    with otel_rai.decisions(groups={"g": ["a", "b", "a"]}):
        MODEL.predict(X[:3])
    otel_rai.uninstrument()
    for name, argv in (("export.jsonl", ["export", "--format", "jsonl"]), ("export.csv", ["export", "--format", "csv"]),
                       ("report.html", ["report", "--model-version", "*", "--sensitive-feature", "g"])):
        target = tmp_path / name
        target.write_text("old")
        os.chmod(target, 0o666)
        version = next(otel_rai.query.find_decisions(url=str(store))).model_version
        argv = [a if a != "*" else version for a in argv]
        flag = "--out" if argv[0] == "report" else "--output"
        assert cli.main([*argv, "--store", str(store), flag, str(target)]) == 0, capsys.readouterr().err
        assert _mode(target) == 0o600 and target.read_text() != "old"


def test_decisions_recorded_under_the_earlier_key_scheme_still_verify(tmp_path, capsys):
    path = tmp_path / "audit.db"
    material = "an-old-deployment-key-0123456789"
    legacy = hashing.HashKey.from_material(material, hashing.LEGACY_SCHEME)
    for key, ids in ((legacy, ["old-0", "old-1"]), (material, ["new-0", "new-1"])):
        otel_rai.instrument(store=path, hash_key=key)
        with otel_rai.decisions(ids=ids):
            MODEL.predict(X[:2] if ids[0].startswith("old") else X[2:4])
        otel_rai.uninstrument()
    schemes = {d.attributes["ml.input.hash.scheme"] for d in otel_rai.query.find_decisions(url=str(path))}
    assert schemes == {hashing.SCHEME, hashing.LEGACY_SCHEME}
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(X[:4].tolist()))
    code = cli.main(["verify", "--input", str(rows), "--store", str(path), "--key", material, "--format", "json"])
    found = [[d["decision_id"] for d in json.loads(line)["decisions"]] for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and found == [["old-0"], ["old-1"], ["new-0"], ["new-1"]]


def test_checkpoints_signed_under_the_earlier_key_scheme_still_verify(tmp_path, capsys):
    path = tmp_path / "audit.db"
    secret = "checkpoint-secret-0123456789abcdef"
    for key in (chain_keys.HmacKey(secret, chain_keys.LEGACY), secret):
        otel_rai.instrument(store=path, hash_key=KEY, checkpoint_key=key)
        MODEL.predict(X[:2])
        otel_rai.uninstrument()
    code = cli.main(["verify-chain", "--store", str(path), "--checkpoint-key", secret, "--require-signed",
                     "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] and report["unverified_checkpoints"] == 0
    assert [s["signed"] for s in report["streams"]] == [1, 1]


def test_a_weak_checkpoint_key_is_refused():
    with pytest.raises(ValueError, match="checkpoint key is too weak"):
        otel_rai.instrument(hash_key=KEY, checkpoint_key="secret", store=False)
