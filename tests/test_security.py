"""Security: OTLP over mutual TLS with headers from the environment, secrets that never show, rotated hash
keys, and damaged stores or malformed backend answers that give a clear error, never a crash."""

from __future__ import annotations

import datetime
import ipaddress
import json
import logging
import random
import re
import shutil
import sqlite3
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import KEY
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fake_backends import FakeServer
from servers import OtlpReceiver, attributes
from sklearn.linear_model import LogisticRegression

import otel_rai
from otel_rai import cli, semconv, store
from otel_rai.query import BackendError, find_decisions
from otel_rai.session.instrumentor import RaiInstrumentor

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "Bearer tok-5ecret-0123456789"
CHECKPOINT_KEY = "ckpt-5ecret-0123456789abcdef"
X = np.random.default_rng(0).normal(size=(64, 4))
MODEL = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


# --- certificates made here: a CA, a server certificate for 127.0.0.1, a client certificate ---------


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(subject: str, key, issuer=None, issuer_key=None, *, ca: bool = False, server: bool = False):
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("otel-rai test CA", ca_key, ca=True)
    files = {"ca.pem": ca.public_bytes(serialization.Encoding.PEM)}
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(who, key, ca.subject, ca_key, server=who == "server")
        files[f"{who}.pem"] = cert.public_bytes(serialization.Encoding.PEM)
        files[f"{who}.key"] = _pem_key(key)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


@pytest.fixture
def tls_receiver(pki):
    credentials = grpc.ssl_server_credentials([((pki / "server.key").read_bytes(), (pki / "server.pem").read_bytes())],
                                              root_certificates=(pki / "ca.pem").read_bytes(),
                                              require_client_auth=True)
    server = OtlpReceiver(credentials=credentials).start()
    yield server
    server.stop()


def test_mutual_tls_with_a_custom_ca_and_headers_from_the_environment(pki, tls_receiver, tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"https://127.0.0.1:{tls_receiver.port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", str(pki / "ca.pem"))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization={TOKEN.replace(' ', '%20')}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    otel_rai.instrument(hash_key=KEY, spool=tmp_path / "spool.db")
    MODEL.predict(X[:3])
    # No client certificate: the server refuses the handshake; the decision waits in the spool.
    assert not otel_rai.flush(3).complete and tls_receiver.spans() == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", str(pki / "client.pem"))
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_CLIENT_KEY", str(pki / "client.key"))
    MODEL.predict(X[:2])
    assert otel_rai.flush(30).complete  # the next attempt connects with the certificate: nothing lost
    otel_rai.uninstrument()
    got = [attributes(span).get(semconv.BATCH_SIZE) for _, span in tls_receiver.spans()
           if semconv.DECISION_IDS in attributes(span)]
    assert got == [3, 2]
    assert all(m.get("authorization") == TOKEN for m in tls_receiver.metadata)


# --- secrets never show ------------------------------------------------------------------------------


def _damaged_call() -> None:
    bad = X[:2].astype(object)
    bad[0, 0] = "not a number"
    with pytest.raises(ValueError):
        MODEL.predict(bad)


def test_keys_and_tokens_appear_in_no_span_log_error_or_file(receiver, tmp_path, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization={TOKEN.replace(' ', '%20')}")
    monkeypatch.setenv("OTEL_RAI_CHECKPOINT_KEY", CHECKPOINT_KEY)
    spool = tmp_path / "spool.db"
    stored = tmp_path / "audit.db"
    # A dead endpoint first (errors get logged), then the receiver; and a store of its own.
    otel_rai.instrument(endpoint="http://127.0.0.1:9", hash_key=KEY, spool=spool)
    MODEL.predict(X[:3])
    _damaged_call()
    otel_rai.flush(1)
    RaiInstrumentor().uninstrument(timeout=1)  # what is spooled stays for the next session
    otel_rai.instrument(endpoint=receiver.endpoint, hash_key=KEY, spool=spool, max_rows_per_span=2)
    MODEL.predict(X[:5])
    otel_rai.uninstrument()
    otel_rai.instrument(store=stored, hash_key=KEY)
    MODEL.predict(X[:3])
    _damaged_call()
    otel_rai.uninstrument()
    (tmp_path / "rows.json").write_text(json.dumps(X[:3].tolist()))
    for argv in (["verify", "--input", str(tmp_path / "rows.json"), "--key", KEY, "--store", str(stored)],
                 ["verify", "--input", str(tmp_path / "rows.json"), "--key", "", "--store", str(stored)],
                 ["verify-chain", "--store", str(stored), "--checkpoint-key", CHECKPOINT_KEY],
                 ["verify-chain", "--store", str(stored), "--checkpoint-key-file", str(stored)],
                 ["replay", str(stored), "--endpoint", "http://127.0.0.1:9", "--headers", f"authorization={TOKEN}"],
                 ["query", "--store", str(stored), "--format", "json"],
                 ["show", "nope", "--store", str(stored)]):
        cli.main(argv)
    out = capsys.readouterr()
    texts = {
        "the wire": "".join(r.SerializeToString().decode("latin-1") for r in receiver.requests),
        "logs": "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records),
        "cli": out.out + out.err,
        **{p.name: p.read_bytes().decode("latin-1") for p in tmp_path.glob("*.db*")},
    }
    assert len(receiver.spans()) >= 5 and "spool.db" in texts and "audit.db-wal" in texts
    for where, text in texts.items():
        for secret in (KEY, CHECKPOINT_KEY, TOKEN, "tok-5ecret", "not a number"):
            assert secret not in text, (secret, where)


def test_store_files_are_owner_only(tmp_path, receiver):
    otel_rai.instrument(endpoint=receiver.endpoint, hash_key=KEY, spool=tmp_path / "new" / "spool.db")
    MODEL.predict(X[:2])
    otel_rai.uninstrument()
    for p in (tmp_path / "new").iterdir():
        assert p.stat().st_mode & 0o077 == 0, p
    assert (tmp_path / "new").stat().st_mode & 0o077 == 0


# --- key rotation ----------------------------------------------------------------------------------


def test_old_decisions_stay_verifiable_with_the_old_key(tmp_path, capsys):
    path = tmp_path / "audit.db"
    keys = ["old-hash-key-0123456789abcdef", "new-hash-key-0123456789abcdef"]
    for i, key in enumerate(keys):
        otel_rai.instrument(store=path, hash_key=key)
        with otel_rai.decisions(ids=[f"k{i}-{j}" for j in range(3)]):
            MODEL.predict(X[3 * i : 3 * i + 3])
        otel_rai.uninstrument()
    ids = {d.attributes[semconv.INPUT_HASH_KEY_ID] for d in find_decisions(url=str(path))}
    assert ids == {otel_rai.HashKey.from_material(k).key_id for k in keys}  # a new key, a new key id
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(X[:6].tolist()))
    key_file = tmp_path / "keys"
    key_file.write_text("\n".join(keys) + "\n")

    def verify(*key_args: str) -> tuple[int, list]:
        code = cli.main(["verify", "--input", str(rows), "--store", str(path), "--format", "json", *key_args])
        lines = capsys.readouterr().out.splitlines()
        found = [[d["decision_id"] for d in json.loads(line)["decisions"]] for line in lines]
        return code, found

    everything = [[f"k{i}-{j}"] for i in range(2) for j in range(3)]
    assert verify("--key", keys[0], "--key", keys[1]) == (0, everything)
    assert verify("--key-file", str(key_file)) == (0, everything)
    assert verify("--key", keys[1]) == (3, [[]] * 3 + everything[3:])
    assert verify("--key", keys[0]) == (3, everything[:3] + [[]] * 3)


# --- damaged stores ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "audit.db"
    store_ = store.Store(path, create=True)
    store_.close()
    otel_rai.instrument(store=path, hash_key=KEY)
    for i in range(30):
        MODEL.predict(X[i : i + 2])
    MODEL.predict(np.tile(X, (20, 1)))
    otel_rai.uninstrument()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _damaged_variants(good: Path, tmp_path: Path):
    data = good.read_bytes()
    rng = random.Random(7)
    yield "truncated-header", data[:100]
    yield "truncated-half", data[: len(data) // 2]
    yield "garbage-after-header", data[:16] + bytes(rng.randrange(256) for _ in range(8192))
    for n in range(6):  # flipped bytes anywhere past the first page
        flipped = bytearray(data)
        for _ in range(40):
            flipped[rng.randrange(4096, len(data))] ^= 1 << rng.randrange(8)
        yield f"bit-flips-{n}", bytes(flipped)
    yield "zeroed-pages", data[:8192] + bytes(len(data) - 8192)


def _edited_variants(good: Path, tmp_path: Path):
    for name, sql in (
        ("attributes-not-json", "UPDATE spans SET attributes = 'not json {'"),
        ("attributes-nested-deep", "UPDATE spans SET attributes = '" + "[" * 100_000 + "]" * 100_000 + "'"),
        ("attributes-wrong-types", "UPDATE spans SET attributes = '{\"ml.decision.ids\": {\"a\": 1}, "
                                   "\"ml.batch.offset\": \"x\", \"ml.outputs\": 5}'"),
        ("extra-not-json", "UPDATE spans SET extra = '{\"events\": 5}'"),
        ("origin-missing", "DELETE FROM origins"),
        ("resource-not-json", "UPDATE origins SET resource = 'x'"),
        ("meta-version-text", "UPDATE meta SET value = 'abc' WHERE key = 'schema_version'"),
        ("meta-gone", "DROP TABLE meta"),
        ("pickled-attributes", "UPDATE spans SET attributes = X'80049500000000000000008c08627569'"),
    ):
        path = tmp_path / f"{name}.db"
        shutil.copy(good, path)
        with sqlite3.connect(path) as conn:
            conn.execute(sql)
        yield name, path


def test_damaged_store_files_give_a_clear_error_never_a_traceback(good_store, tmp_path, capsys):
    variants = [(name, tmp_path / f"{name}.db") for name, _ in _damaged_variants(good_store, tmp_path)]
    for (_, path), (_, data) in zip(variants, _damaged_variants(good_store, tmp_path)):
        path.write_bytes(data)
    variants += list(_edited_variants(good_store, tmp_path))
    outcomes = {}
    for name, path in variants:
        for command in (["query", "--limit", "0"], ["export"], ["verify-chain"], ["show", "x"]):
            code = cli.main([*command, "--store", str(path)])
            err = capsys.readouterr().err
            assert code in (0, 1, 3), (name, command, err)
            assert "Traceback" not in err and "internal error" not in err, (name, command, err)
            assert len(err.strip().splitlines()) <= 3, (name, command, err)
            outcomes[name, command[0]] = code
        try:  # the library: a StoreError or nothing
            list(store.Store(path).spans())
        except store.StoreError:
            pass
    assert all(outcomes[name, "query"] == 1 for name in ("truncated-header", "garbage-after-header",
                                                        "attributes-not-json", "meta-version-text"))
    assert outcomes["attributes-wrong-types", "verify-chain"] == 3


def test_nothing_is_ever_unpickled_or_evaluated():
    """Outside the artifact store, nothing; the artifact store unpickles a model file (joblib) in one place,
    `artifacts.loads`, which `load` reaches only after the store, digest and type checks
    (test_artifacts.py tampers with each and sees nothing deserialised)."""
    artifacts = ROOT / "otel_rai" / "provenance" / "artifacts.py"
    source = "\n".join(p.read_text() for p in (ROOT / "otel_rai").rglob("*.py") if p != artifacts)
    for forbidden in (r"^\s*(import|from)\s+(pickle|cPickle|marshal|shelve|dill|cloudpickle)\b",
                      r"\b(pickle|marshal|dill|joblib)\.loads?\(", r"(?<![\w.])(eval|exec)\(", r"yaml\.load\("):
        assert not re.search(forbidden, source, re.MULTILINE), forbidden
    text = artifacts.read_text()
    assert len(re.findall(r"\b(pickle|joblib)\.loads?\(", text)) == 1
    unsafe = r"^\s*(import|from)\s+(pickle|cPickle|marshal|shelve|dill|cloudpickle)\b|(?<![\w.])(eval|exec)\("
    assert not re.search(unsafe, text, re.MULTILINE)
    loads = text.index("\ndef loads(")
    assert text.index("joblib.load(") > loads and text.index("joblib.load(") < text.index("\ndef serialize(")


# --- malformed backend answers ------------------------------------------------------------------------


def _random_json(rng: random.Random, depth: int = 0):
    keys = ["resourceSpans", "scopeSpans", "spans", "batches", "result", "data", "traces", "trace", "attributes",
            "key", "value", "traceId", "spanId", "startTimeUnixNano", "context", "trace_id", "span_id", "start_time",
            "end_time", "tags", "processes", "spanSets", "traceID", "services", "next_cursor", "stringValue",
            "arrayValue", "values", "intValue", "doubleValue", "status", "code", "events", "name", "spanID"]
    kind = rng.randrange(8 if depth < 5 else 4)
    if kind == 0:
        return rng.choice([None, True, 0, -1, 1e308, "NaN", "", "x" * 40, "00" * 16, "AAAAAAAAAAAAAAAAAAAAAA=="])
    if kind == 1:
        return rng.randrange(-10**20, 10**20)
    if kind == 2:
        return rng.choice(["2026-01-01T00:00:00Z", "not-a-time", "1e9", "12345678901234567890"])
    if kind == 3:
        return rng.random()
    if kind in (4, 5):
        return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randrange(1, 5))}
    return [_random_json(rng, depth + 1) for _ in range(rng.randrange(0, 4))]


@pytest.mark.parametrize("backend", ["jaeger", "tempo", "phoenix"])
def test_malformed_backend_answers_give_a_clear_error(backend, capsys):
    rng = random.Random(backend)
    answers = []

    def route(path, query):
        answer = _random_json(rng)
        if rng.random() < 0.5 and isinstance(answer, dict):  # shaped like a real answer, wrong inside
            answer = {"resourceSpans": [answer], "result": answer, "data": [answer], "traces": [answer],
                      "services": ["svc"], "trace": answer, "batches": [answer]}
        answers.append(answer)
        return 200, answer

    server = FakeServer(route)
    try:
        for _ in range(60):
            try:
                list(find_decisions(backend=backend, url=server.url, since="1h", limit=50))
            except (BackendError, ValueError):
                pass
            code = cli.main(["query", "--backend", backend, "--url", server.url, "--since", "1h"])
            err = capsys.readouterr().err
            assert code in (0, 1, 2) and "internal error" not in err, (answers[-1], err)
    finally:
        server.stop()
