"""The tamper-evident chain: sealed on every audit span, intact after every round trip, and broken in
exactly the way each kind of tampering breaks it."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import KEY, instrumented
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from fake_backends import FakeJaeger, FakeTempo
from recorded import data
from servers import attributes
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import otel_rai
from otel_rai import cli, semconv, store
from otel_rai._time import rfc3339
from otel_rai.chain import canonical as chain
from otel_rai.chain import keys as chain_keys
from otel_rai.chain import seal
from otel_rai.chain import verify as chaincheck
from otel_rai.codec import otlpjson
from otel_rai.codec.records import SpanRecord
from otel_rai.query import Query, jaeger, local, tempo
from otel_rai.query import trail as trail_reading

CHECKPOINT_KEY = "checkpoint-key-0123456789abcdef"


def _model() -> LogisticRegression:
    X, y = data()
    return LogisticRegression().fit(X, y)


def _decide(model, calls: int = 5, *, rows: int = 2, prefix: str = "d") -> None:
    X, _ = data()
    for i in range(calls):
        with otel_rai.decisions(ids=[f"{prefix}{i}-{r}" for r in range(rows)]):
            model.predict_proba(X[i : i + rows])


def _trail(path: Path, **options) -> Path:
    """A store holding a chained trail: single calls, a chunked call, a failed call, a signed checkpoint.
    No model record, so that the tests below can name records by position (records are chained like any
    span: test_model_records.py)."""
    options.setdefault("model_records", False)
    otel_rai.instrument(store=path, hash_key=KEY, checkpoint_key=CHECKPOINT_KEY, max_rows_per_span=100, **options)
    model = _model()
    _decide(model, 6)
    X, _ = data()
    model.predict(X[:250])  # a parent span and three chunks
    with pytest.raises(ValueError):
        model.predict(X[:2, :3])  # an ERROR span with a scrubbed message
    otel_rai.uninstrument()
    return path


def _check(path: Path, **options) -> chaincheck.Report:
    return trail_reading.verify(local.connect(str(path)), Query(), chain_keys.read_keys([CHECKPOINT_KEY], [], []),
                             **options)


def _sql(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)


def _attributes(path: Path, seq: int) -> dict:
    with sqlite3.connect(path) as conn:
        return json.loads(conn.execute("SELECT attributes FROM spans WHERE seq = ?", (seq,)).fetchone()[0])


def _set_attributes(path: Path, seq: int, attributes: dict) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE spans SET attributes = ? WHERE seq = ?", (json.dumps(attributes), seq))


def _insert_copy(path: Path, seq: int, attributes: dict, span_id: str | None = None) -> None:
    """Insert a span like `seq` with these attributes, and its decisions rows, as a careful forger would."""
    with sqlite3.connect(path) as conn:
        new = conn.execute(
            "INSERT INTO spans SELECT NULL, origin, trace_id, coalesce(?, span_id), parent_span_id, name, kind,"
            " start_ns, end_ns, status_code, status_message, model_name, model_version, model_fingerprint,"
            " operation, n_decisions, ?, extra FROM spans WHERE seq = ?", (span_id, json.dumps(attributes), seq),
        ).lastrowid
        ids = attributes.get(semconv.DECISION_IDS, [])
        hashes = attributes[semconv.INPUT_HASHES] if ids else []
        conn.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?)", [
            (new, i, ids[i], hashes[i], attributes[semconv.OUTPUTS][i], store.store.input_key(hashes[i]))
            for i in range(len(ids))])


# --- sealing ---------------------------------------------------------------------------------------


def test_every_span_is_sealed_in_order_and_the_last_is_a_signed_checkpoint(tmp_path):
    path = _trail(tmp_path / "audit.db")
    spans = [r for _, r in store.Store(path).spans_in_write_order()]
    assert len(spans) == 6 + 4 + 1 + 1
    assert [s.attributes[semconv.AUDIT_SEQ] for s in spans] == list(range(1, 13))
    assert len({s.attributes[semconv.AUDIT_STREAM] for s in spans}) == 1
    assert spans[0].attributes[semconv.AUDIT_PREV_HASH] == chain.GENESIS
    for before, after in zip(spans, spans[1:]):
        assert after.attributes[semconv.AUDIT_PREV_HASH] == before.attributes[semconv.AUDIT_RECORD_HASH]
    assert all(chain.matches(s) for s in spans)
    checkpoint = spans[-1]
    assert checkpoint.name == semconv.CHECKPOINT_SPAN
    assert checkpoint.attributes[semconv.CHECKPOINT_DECISIONS] == 6 * 2 + 250 + 2
    assert checkpoint.attributes[semconv.CHECKPOINT_ALGORITHM] == "hmac-sha256"
    assert checkpoint.attributes[semconv.CHECKPOINT_KEY_ID] == chain_keys.HmacKey(CHECKPOINT_KEY).key_id
    report = _check(path)
    assert report.ok, report.problems
    (stream,) = report.streams.values()
    assert (stream.records, stream.decisions, stream.signed_through) == (12, 264, 12)


def test_the_hash_changes_with_any_covered_part_and_ignores_the_rest():
    base = SpanRecord("a" * 32, "b" * 16, "predict m", 1_000_000_000, 1_000_900_000,
                      {"ml.outputs": [1, 0], "ml.output.scores.1": [0.25, 0.5], "ml.batch.size": 2})
    body = chain.record_body(base)
    attrs = base.attributes
    same = [
        {**attrs, "app.request": "x", "ml.input.value.income": [1.0, 2.0]},  # removed by the collector
        {**attrs, "ml.outputs": [1.0, 0.0], "ml.batch.size": 2.0},  # JSON round trips turn 1 into 1.0
        {**attrs, "ml.output.scores.1": "[0.25,0.5]", "ml.outputs": "[1,0]"},  # Jaeger v1 storage
        {**attrs, semconv.AUDIT_RECORD_HASH: "f" * 64, semconv.CHECKPOINT_SIGNATURE: "00"},
    ]
    for variant in same:
        assert chain.canonical_body(base.name, base.trace_id, base.span_id, None, 0, "", variant) == body
    different = [{**attrs, "ml.outputs": [0, 0]}, {**attrs, "ml.output.scores.1": [0.25, 0.5000001]},
                 {**attrs, "ml.batch.size": 3}, {**attrs, semconv.AUDIT_SEQ: 2}, {**attrs, "ml.extra": True}]
    for variant in different:
        assert chain.canonical_body(base.name, base.trace_id, base.span_id, None, 0, "", variant) != body
    assert chain.canonical_body("predict n", base.trace_id, base.span_id, None, 0, "", attrs) != body
    assert chain.canonical_body(base.name, base.trace_id, base.span_id, "c" * 16, 0, "", attrs) != body
    assert chain.canonical_body(base.name, base.trace_id, base.span_id, None, 2, "boom", attrs) != body
    assert chain.digest(body, 1, 2) != chain.digest(body, 1, 3) != chain.digest(body, 2, 3)


def test_times_are_checked_to_the_microsecond_with_one_microsecond_of_rounding(tmp_path):
    path = _trail(tmp_path / "audit.db")
    record = next(r for _, r in store.Store(path).spans_in_write_order())
    for shift_ns, intact in ((999, True), (-1000, True), (1_000, True), (2_000, False), (-2_500, False)):
        shifted = SpanRecord(**{**record.__dict__, "start_ns": record.start_ns + shift_ns})
        assert chain.matches(shifted) is intact, shift_ns


def test_sampled_out_spans_of_an_application_provider_are_not_sealed():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    otel_rai.instrument(tracer_provider=TracerProvider(sampler=ALWAYS_OFF), hash_key=KEY, store=False)
    _decide(_model(), 3)
    assert otel_rai.flush(10).complete
    assert otel_rai.flush(10).failures == {}


def test_an_application_provider_gets_sealed_spans_too():
    audit = instrumented()
    _decide(_model(), 3)
    spans = audit.spans()
    assert [s.attributes[semconv.AUDIT_SEQ] for s in spans] == [1, 2, 3]


# --- tampering with a local store --------------------------------------------------------------------


@pytest.fixture
def trail(tmp_path) -> Path:
    return _trail(tmp_path / "audit.db")


def _first(report: chaincheck.Report) -> tuple[str, int | None]:
    first = report.ordered_problems()[0]
    return first.kind, first.seq


def test_an_edited_attribute_is_found_at_its_record(trail):
    a = _attributes(trail, 4)
    a[semconv.OUTPUTS] = [1 - a[semconv.OUTPUTS][0], a[semconv.OUTPUTS][1]]
    _set_attributes(trail, 4, a)
    report = _check(trail)
    assert report.counts() == {"edited": 1} and _first(report) == ("edited", 4)


def test_an_edited_decisions_row_is_found_too(trail):
    _sql(trail, "UPDATE decisions SET output = 1 - output WHERE span = 2 AND idx = 1")
    report = _check(trail)
    assert report.counts() == {"edited": 1} and _first(report) == ("edited", 2)


def test_an_edited_time_status_or_name_is_found(trail):
    _sql(trail, "UPDATE spans SET start_ns = start_ns - 60000000000 WHERE seq = 3",
         "UPDATE spans SET status_message = 'fine' WHERE seq = 11",
         "UPDATE spans SET name = 'predict other' WHERE seq = 5")
    report = _check(trail)
    assert report.counts() == {"edited": 3}
    assert [p.seq for p in report.ordered_problems()] == [3, 5, 11]


def test_a_deleted_record_is_a_gap_named_at_the_record_after_it(trail):
    _sql(trail, "DELETE FROM decisions WHERE span IN (5, 6)", "DELETE FROM spans WHERE seq IN (5, 6)")
    report = _check(trail)
    assert report.counts() == {"deleted": 1} and _first(report) == ("deleted", 7)
    assert "2 record(s) before it are missing (seq 5-6)" in report.problems[0].detail


def test_deleting_the_first_records_is_found_unless_the_view_is_a_window(trail):
    _sql(trail, "DELETE FROM decisions WHERE span = 1", "DELETE FROM spans WHERE seq = 1")
    assert _first(_check(trail)) == ("deleted", 2)
    assert _check(trail, anchored=True).ok


def _swap(path: Path, first: int, second: int) -> None:
    """Swap two span rows, with every column and table that follows them."""
    with sqlite3.connect(path) as conn:
        columns = ("trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code, status_message, "
                   "attributes, model_name, model_version, model_fingerprint, operation, n_decisions")
        two = conn.execute(f"SELECT seq, {columns} FROM spans WHERE seq IN (?, ?) ORDER BY seq",
                           (first, second)).fetchall()
        for (seq, *_), (_, *content) in zip(two, reversed(two)):
            conn.execute(f"UPDATE spans SET ({columns}) = ({', '.join('?' * 15)}) WHERE seq = ?", (*content, seq))
        rows = conn.execute("SELECT span, idx, decision_id, input_hash, output, input_key FROM decisions "
                            "WHERE span IN (?, ?)", (first, second)).fetchall()
        conn.execute("DELETE FROM decisions WHERE span IN (?, ?)", (first, second))
        conn.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?)",
                         [(first + second - r[0], *r[1:]) for r in rows])
        conn.execute("UPDATE input_index SET span = ? - span WHERE span IN (?, ?)", (first + second, first, second))


def test_reordered_records_are_found_in_the_store(trail):
    _swap(trail, 2, 3)
    report = _check(trail)
    assert report.counts() == {"reordered": 1} and _first(report) == ("reordered", 3)


def test_an_unchained_record_is_foreign(trail):
    a = _attributes(trail, 2)
    del a[semconv.AUDIT_SEQ]
    _insert_copy(trail, 2, a, "ffffffffffffffff")
    report = _check(trail)
    assert report.counts() == {"foreign": 1}
    assert report.problems[0].record.span_id == "ffffffffffffffff"


def _recomputed(attributes: dict, record: SpanRecord) -> str:
    body = chain.canonical_body(record.name, record.trace_id, record.span_id, record.parent_span_id,
                                record.status_code, record.status_message, attributes)
    return chain.digest(body, record.start_ns // 1000, record.end_ns // 1000)


def test_a_record_rewritten_with_a_recomputed_hash_breaks_the_next_link(trail):
    record = dict(store.Store(trail).spans_in_write_order())[4]
    a = dict(record.attributes)
    a[semconv.OUTPUTS] = [1 - a[semconv.OUTPUTS][0], a[semconv.OUTPUTS][1]]
    a[semconv.AUDIT_RECORD_HASH] = _recomputed(a, record)
    _set_attributes(trail, 4, a)
    report = _check(trail)
    assert report.counts() == {"edited": 1} and _first(report) == ("edited", 4)
    assert "the next record committed to another" in report.problems[0].detail


def test_an_inserted_record_claiming_a_taken_place_is_foreign(trail):
    record = dict(store.Store(trail).spans_in_write_order())[3]
    a = dict(record.attributes)
    a[semconv.OUTPUTS] = [0, 0]
    a[semconv.AUDIT_RECORD_HASH] = _recomputed(a, record)
    _insert_copy(trail, 3, a)
    report = _check(trail)
    assert report.counts() == {"foreign": 1} and report.problems[0].seq == 3
    assert report.problems[0].position == 13


def test_a_rewritten_history_fails_the_signed_checkpoint(trail):
    """Whoever rewrites every hash after an edit keeps the chain consistent: only the signature tells."""
    records = [r for _, r in store.Store(trail).spans_in_write_order()]
    head = chain.GENESIS
    with sqlite3.connect(trail) as conn:
        for seq, r in enumerate(records, 1):
            a = dict(r.attributes)
            if seq == 2:
                a[semconv.OUTPUTS] = [1 - a[semconv.OUTPUTS][0], a[semconv.OUTPUTS][1]]
            a[semconv.AUDIT_PREV_HASH] = head
            a[semconv.AUDIT_RECORD_HASH] = head = _recomputed(a, r)
            conn.execute("UPDATE spans SET attributes = ? WHERE seq = ?", (json.dumps(a), seq))
        conn.execute("UPDATE decisions SET output = 1 - output WHERE span = 2 AND idx = 0")
    report = _check(trail)
    assert report.counts() == {"bad-signature": 1} and _first(report) == ("bad-signature", 12)
    assert _check(trail, require_signed=True).counts() == {"bad-signature": 1, "unsigned": 1}


def _tampered(path: Path, rng: random.Random) -> None:
    """One to three edits of the kinds the tests above make one at a time, at random records."""
    seqs = [seq for seq, _ in store.Store(path).spans_in_write_order()]
    for _ in range(rng.randint(1, 3)):
        seq = rng.choice(seqs)
        a = _attributes(path, seq)
        edit = rng.randrange(7)
        if edit in (2, 3) and a.get(semconv.DECISION_IDS) and semconv.OUTPUTS not in a:
            continue  # the failed call's span: a copy of it would need decisions rows without outputs
        if edit == 0 and a.get(semconv.OUTPUTS):  # an output changed
            a[semconv.OUTPUTS] = [v if i else 1 - v for i, v in enumerate(a[semconv.OUTPUTS])]
            _set_attributes(path, seq, a)
        elif edit == 1:  # deleted, with its decisions
            _sql(path, f"DELETE FROM decisions WHERE span = {seq}", f"DELETE FROM spans WHERE seq = {seq}")
            seqs.remove(seq)
        elif edit == 2:  # a copy (not a problem) or an unchained copy (foreign)
            if rng.random() < 0.5:
                a.pop(semconv.AUDIT_SEQ)
            _insert_copy(path, seq, a, rng.choice([None, f"{rng.getrandbits(64):016x}"]))
        elif edit == 3:  # a record claiming a taken place
            a[semconv.AUDIT_RECORD_HASH] = f"{rng.getrandbits(256):064x}"
            _insert_copy(path, seq, a)
        elif edit == 4:  # its time or name
            _sql(path, f"UPDATE spans SET start_ns = start_ns - 1000000000, name = 'other' WHERE seq = {seq}")
        elif edit == 5:  # the decisions table
            _sql(path, f"UPDATE decisions SET output = 1 - output WHERE span = {seq}")
        elif seq + 1 in seqs:  # stored out of chain order
            _swap(path, seq, seq + 1)


def test_a_check_that_lets_records_go_reports_what_one_that_holds_them_reports(trail, tmp_path):
    """Generated tamperings of the local store, checked twice: holding every record, and holding a few fields
    of each, reading again the records it reports. Same problems, each with its whole record, and same
    streams and counts."""
    rng = random.Random(11)
    keys = chain_keys.read_keys([CHECKPOINT_KEY], [], [])
    kinds = set()
    for case in range(40):
        path = tmp_path / f"case{case}.db"
        shutil.copy(trail, path)
        _tampered(path, rng)
        stored = store.Store(path)
        held = chaincheck.check(list(stored.spans_in_write_order()), keys)
        let_go = chaincheck.check(stored.spans_in_write_order(), keys, read_again=stored.spans_at)
        stored.close()
        assert let_go.problems == held.problems and all(p.record is not None for p in let_go.problems), case
        assert (let_go.streams, let_go.records, let_go.duplicates) == (held.streams, held.records, held.duplicates)
        kinds |= set(held.counts())
    assert kinds == {"edited", "deleted", "foreign", "reordered"}  # each kind that these edits can provoke


def test_the_local_check_holds_no_record_but_the_checkpoints(trail):
    """Verifying the local store holds a few fields a record, not the records: once the whole trail is read
    (the walk has not begun), only the checkpoints (their signatures are checked in the walk) are alive,
    with or without a window. The problem found has its whole record, read again."""
    import gc
    import weakref

    a = _attributes(trail, 4)
    a[semconv.OUTPUTS] = [1 - a[semconv.OUTPUTS][0], a[semconv.OUTPUTS][1]]
    _set_attributes(trail, 4, a)
    keys = chain_keys.read_keys([CHECKPOINT_KEY], [], [])
    backend = local.connect(str(trail))
    for query in (Query(), Query(start_ns=0)):
        refs: list = []
        alive: list = []

        def tracked(items, refs=refs, alive=alive):
            for position, record in items:
                refs.append(weakref.ref(record))
                yield position, record
            del record
            gc.collect()
            alive.extend(r() for r in refs if r() is not None)

        report = chaincheck.check(tracked(trail_reading.records(backend, query, [])), keys, anchored=True,
                                  read_again=backend.store.spans_at)
        assert len(refs) == 12 and [r.name for r in alive] == [semconv.CHECKPOINT_SPAN]
        assert [(p.kind, p.record.attributes) for p in report.problems] == [("edited", a)]


def test_a_record_read_again_must_still_be_there(trail):
    """The records of problems are read again by write position; one deleted meanwhile is a one-line store
    error naming it, not a problem without its record."""
    stored = store.Store(trail)
    assert {seq: r.span_id for seq, r in stored.spans_at([3, 1, 3]).items()} == {
        seq: r.span_id for seq, r in stored.spans_in_write_order() if seq in (1, 3)}
    with pytest.raises(store.StoreError, match=r"the span written at seq 99 is gone"):
        stored.spans_at([2, 99])


def test_copies_of_a_record_are_not_a_problem(trail):
    _insert_copy(trail, 6, _attributes(trail, 6))
    report = _check(trail)
    assert report.ok and report.duplicates == 1


def test_unsigned_tails_are_reported_only_when_signatures_are_required(tmp_path):
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY)  # no checkpoint key
    _decide(_model(), 3)
    otel_rai.uninstrument()
    assert _check(path).ok
    report = _check(path, require_signed=True)
    assert report.counts() == {"unsigned": 1} and _first(report) == ("unsigned", 1)


# --- keys --------------------------------------------------------------------------------------------


def test_rotated_checkpoint_keys_each_verify_their_own_checkpoints(tmp_path):
    path = tmp_path / "audit.db"
    for key in ("old-checkpoint-key-0123456789", "new-checkpoint-key-0123456789"):
        otel_rai.instrument(store=path, hash_key=KEY, checkpoint_key=key)
        _decide(_model(), 2, prefix=key[:3])
        otel_rai.uninstrument()
    keys_file = tmp_path / "keys"
    keys_file.write_text("old-checkpoint-key-0123456789\nnew-checkpoint-key-0123456789\n")
    both = chain_keys.read_keys([], [str(keys_file)], [])
    report = chaincheck.check(trail_reading.records(local.connect(str(path)), Query(), []), both)
    assert report.ok and report.unverified_checkpoints == 0
    assert [s.signed for s in report.streams.values()] == [1, 1]
    only_new = chain_keys.read_keys(["new-checkpoint-key-0123456789"], [], [])
    report = chaincheck.check(trail_reading.records(local.connect(str(path)), Query(), []), only_new)
    assert report.ok and report.unverified_checkpoints == 1
    wrong = {chain_keys.HmacKey("old-checkpoint-key-0123456789").key_id: chain_keys.HmacKey("a guess")}
    report = chaincheck.check(trail_reading.records(local.connect(str(path)), Query(), []), wrong)
    assert report.counts() == {"bad-signature": 1}


def test_ed25519_checkpoints_verify_with_the_public_key(tmp_path, capsys):
    private = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY, checkpoint_key=private)
    _decide(_model(), 2)
    otel_rai.uninstrument()
    pem = tmp_path / "public.pem"
    pem.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    assert cli.main(["verify-chain", "--store", str(path), "--public-key", str(pem), "--require-signed"]) == 0
    other = tmp_path / "other.pem"
    other.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert cli.main(["verify-chain", "--store", str(path), "--public-key", str(other), "--require-signed"]) == 3
    assert "not verified (no key for their key id)" in capsys.readouterr().err


# --- round trips: OTLP, Jaeger, Tempo ------------------------------------------------------------


def test_the_chain_survives_otlp_to_a_real_receiver(receiver, tmp_path):
    otel_rai.instrument(endpoint=receiver.endpoint, hash_key=KEY, checkpoint_key=CHECKPOINT_KEY,
                        max_rows_per_span=100, spool=tmp_path / "spool.db")
    model = _model()
    _decide(model, 4)
    model.predict(data()[0][:150])
    otel_rai.uninstrument()
    received = receiver.records()
    assert len(received) == 4 + 3 + 1 + 1  # decisions, a chunked call, the model record, the checkpoint
    assert [r.name for r in received].count(semconv.MODEL_RECORD_SPAN) == 1
    report = chaincheck.check(((None, r) for r in received), chain_keys.read_keys([CHECKPOINT_KEY], [], []))
    assert report.ok and [s.signed_through for s in report.streams.values()] == [9]
    received[2].attributes[semconv.OUTPUTS] = [2, 2]
    assert chaincheck.check(((None, r) for r in received)).counts() == {"edited": 1}


@pytest.mark.parametrize("variant", ["v3", "v3-stringified-arrays", "legacy", "tempo", "tempo-before-2.5"])
def test_the_chain_survives_jaeger_and_tempo(trail, variant):
    spans = list(store.Store(trail).spans())
    if variant.startswith("tempo"):
        server = FakeTempo(spans, before_v2_5=variant.endswith("2.5"))
        backend = tempo.connect(server.url)
    else:
        server = FakeJaeger(spans, legacy_only=variant == "legacy", stringified_arrays="stringified" in variant)
        backend = jaeger.connect(server.url)
    try:
        query = Query(start_ns=min(s.start_ns for s in spans) // 1000 * 1000,
                      end_ns=max(s.start_ns for s in spans) + 1000)
        if variant.startswith("tempo"):  # Tempo finds spans by attributes: decision and checkpoint spans alike
            query = Query(model_name="LogisticRegression", start_ns=query.start_ns, end_ns=query.end_ns)
        got = list(trail_reading.records(backend, query, []))
    finally:
        server.stop()
    report = chaincheck.check(got, chain_keys.read_keys([CHECKPOINT_KEY], [], []), anchored=True)
    assert report.ok, report.problems
    assert report.records == (12 if not variant.startswith("tempo") else 11)


# --- processes -------------------------------------------------------------------------------------


def _child(path: str) -> None:
    _decide(_model(), 3, prefix="child")
    os._exit(0 if otel_rai.flush(30).complete else 1)


def test_a_forked_child_writes_its_own_stream(tmp_path):
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY)
    _decide(_model(), 2, prefix="parent")
    child = multiprocessing.get_context("fork").Process(target=_child, args=(str(path),))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    _decide(_model(), 2, prefix="after")
    otel_rai.uninstrument()
    report = _check(path)
    assert report.ok, report.problems
    # The child ended with os._exit after its flush: no closing checkpoint (see test_reliability for that).
    # Each stream has the model's record: the child's 3 decisions and record; the parent's 4 (one fitted
    # model, so one record) and checkpoint.
    assert sorted(s.records for s in report.streams.values()) == [4, 6]


# --- the command -----------------------------------------------------------------------------------


def test_the_command_names_the_first_bad_record_and_prints_no_key(trail, capsys):
    assert cli.main(["verify-chain", "--store", str(trail), "--checkpoint-key", CHECKPOINT_KEY]) == 0
    out = capsys.readouterr()
    assert "chain intact: 12 records in 1 streams" in out.err and CHECKPOINT_KEY not in out.out + out.err
    _sql(trail, "DELETE FROM spans WHERE seq = 9")
    a = _attributes(trail, 3)
    a[semconv.MODEL_VERSION] = "other"
    _set_attributes(trail, 3, a)
    assert cli.main(["verify-chain", "--store", str(trail), "--checkpoint-key", CHECKPOINT_KEY]) == 3
    out = capsys.readouterr()
    assert "chain broken: 1 edited, 1 deleted" in out.err
    assert "first bad record: edited, stream" in out.err and "seq 3," in out.err and "decision d2-0" in out.err
    assert CHECKPOINT_KEY not in out.out + out.err
    assert cli.main(["verify-chain", "--store", str(trail), "--format", "json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert [(p["kind"], p["seq"]) for p in report["problems"]] == [("edited", 3), ("deleted", 10)]


# --- a window's edges: records are sealed as their spans end, not as they start ---


def _sealed_out_of_start_order(rng: random.Random, streams: int = 3, records: int = 200) -> list:
    """(None, record) of a few chains, in the order they were sealed, a few ms apart. Each record started
    some time before it was sealed: mostly a few ms, now and then up to seconds (a slow call, a model
    record's artifact save), so that a record that started earlier is often sealed later."""
    chains = [seal.Chain() for _ in range(streams)]
    items, now = [], 1_800_000_000 * 10**9
    for _ in range(streams * records):
        now += rng.randint(1, 5) * 10**6
        lasted = rng.randint(0, 3 * 10**9) if rng.random() < 0.1 else rng.randint(0, 8 * 10**6)
        record = SpanRecord(os.urandom(16).hex(), os.urandom(8).hex(), "predict_proba", now - lasted, now,
                            {semconv.MODEL_NAME: "m"}, scope_name=semconv.SCOPE)
        rng.choice(chains).seal_record(record)
        items.append((None, record))
    return items


def _place(record: SpanRecord) -> tuple[str, int]:
    return record.attributes[semconv.AUDIT_STREAM], record.attributes[semconv.AUDIT_SEQ]


def _neighbours(record: SpanRecord) -> set[tuple[str, int]]:
    stream, seq = _place(record)
    return {(stream, seq - 1), (stream, seq + 1)}


def test_a_window_puts_in_view_each_streams_stretch_and_finds_what_was_deleted_inside_it():
    """Generated trails and windows, with and without an end. In view: every record that started in the
    window, and each stream's records from the first of those to the last in chain order, also those sealed
    among them that started outside it; the view verifies intact. Selecting by start time alone reports
    such records as deleted, which these cases provoke. A record deleted from inside a stretch is found."""
    rng = random.Random(7)
    keys = chain_keys.read_keys([CHECKPOINT_KEY], [], [])
    by_start_alone_broken = 0
    for case in range(60):
        items = _sealed_out_of_start_order(rng)
        starts = sorted(r.start_ns for _, r in items)
        start = starts[rng.randrange(len(starts) // 2)]
        end = rng.choice([None, starts[rng.randrange(len(starts) // 2, len(starts))]])

        def started_in(record: SpanRecord, start: int = start, end: int | None = end) -> bool:
            return record.start_ns >= start and (end is None or record.start_ns < end)

        view = list(chaincheck.in_view(lambda items=items: items, start, end))
        assert {r.span_id for _, r in items if started_in(r)} <= {r.span_id for _, r in view}
        for stream in {r.attributes[semconv.AUDIT_STREAM] for _, r in view}:
            mine = sorted((r.attributes[semconv.AUDIT_SEQ], r) for _, r in view
                          if r.attributes[semconv.AUDIT_STREAM] == stream)
            assert [seq for seq, _ in mine] == list(range(mine[0][0], mine[-1][0] + 1))
            assert started_in(mine[0][1]) and started_in(mine[-1][1])  # the least stretch that covers them
        assert chaincheck.check(view, keys, anchored=True).problems == []
        by_start_alone_broken += not chaincheck.check([i for i in items if started_in(i[1])], keys,
                                                      anchored=True).ok
        # Inside a stretch: both neighbours in view. Deleting a stretch's first or last record moves its edge.
        places = {_place(r) for _, r in view}
        gone = rng.choice([r for _, r in view if _neighbours(r) <= places])
        kept = [i for i in items if i[1] is not gone]
        report = chaincheck.check(chaincheck.in_view(lambda kept=kept: kept, start, end), keys, anchored=True)
        assert [(p.kind, p.seq) for p in report.problems] == [
            ("deleted", gone.attributes[semconv.AUDIT_SEQ] + 1)], case
    assert by_start_alone_broken >= 30  # all 60 with this seed


def test_verify_chain_keeps_a_call_that_straddles_a_window_edge_in_view(tmp_path, capsys, chdb_dir):
    """Two threads: a slow call starts before the window's start and ends after a call that starts in it;
    another starts before the window's end and ends after a call that starts after it. Sealed as they end,
    each sits among records of the other side. An outcome comes in the window, another after it.
    `verify-chain --start --end` finds the chain intact, on the local store and on ClickHouse, and finds
    the straddling record deleted when it is."""
    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY, model_records=False, sensitive_features=["g"])
    X, y = data()
    fast = LogisticRegression().fit(X, y)
    slow = make_pipeline(FunctionTransformer(_slowly), LogisticRegression()).fit(X, y)
    marks = []
    for edge in range(2):
        with otel_rai.decisions(groups={"g": "a"}):
            fast.predict(X[:1])
            straddling = threading.Thread(target=slow.predict, args=(X[:1],))
            straddling.start()
            time.sleep(0.1)
            marks.append(time.time_ns())
            time.sleep(0.05)
            with otel_rai.decisions(ids=[f"edge-{edge}"]):
                fast.predict(X[1:2])
            straddling.join()
            fast.predict(X[2:3])
        assert otel_rai.record_outcome(f"edge-{edge}", 1)
        otel_rai.flush(30)
    otel_rai.uninstrument()
    window = ["--start", rfc3339(marks[0]), "--end", rfc3339(marks[1])]
    assert cli.main(["verify-chain", "--store", str(path), *window]) == 0, capsys.readouterr().err
    url = f"chdb://{chdb_dir}?database=edges_{os.urandom(3).hex()}"
    assert cli.main(["export", "--to", "clickhouse", "--url", url, "--store", str(path)]) == 0
    assert cli.main(["verify-chain", "--backend", "clickhouse", "--url", url, *window]) == 0, \
        capsys.readouterr().err
    capsys.readouterr()
    (seq,) = [seq for seq, r in store.Store(path).spans_in_write_order() if r.start_ns < marks[0] and
              r.end_ns > marks[0] and "Pipeline" in r.name]
    _sql(path, f"DELETE FROM decisions WHERE span = {seq}", f"DELETE FROM spans WHERE seq = {seq}")
    assert cli.main(["verify-chain", "--store", str(path), *window, "--format", "json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert [(p["kind"], p["seq"]) for p in report["problems"]] == [("deleted", seq + 1)]


def test_a_trace_backends_own_search_window_keeps_a_record_that_straddles_its_start(capsys):
    """Without a window, a trace backend is searched over the last 7 days: a record that started before that
    edge and was sealed among records that started after it is in view, and verifies."""
    edge = time.time_ns() - 7 * 86_400 * 10**9
    chained, spans = seal.Chain(), []
    for started, ended in ((-10, -9), (5, 6), (-5, 7), (8, 9)):  # the third one straddles the edge
        record = SpanRecord(os.urandom(16).hex(), os.urandom(8).hex(), "predict_proba", edge + started * 10**9,
                            edge + ended * 10**9, {semconv.MODEL_NAME: "m"}, scope_name=semconv.SCOPE,
                            resource={semconv.SERVICE_NAME: "edge-service"})
        chained.seal_record(record)
        spans.append(record)
    server = FakeJaeger(spans)
    try:
        code = cli.main(["verify-chain", "--backend", "jaeger", "--url", server.url, "--service", "edge-service",
                         "--format", "json"])
    finally:
        server.stop()
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["problems"] == [], report
    assert report["records"] == 3  # the first one, sealed and started before the edge, is out of view


def _slowly(X):
    time.sleep(0.3)
    return X


def test_the_command_reads_a_window_and_bad_arguments_are_one_line(trail, capsys):
    assert cli.main(["verify-chain", "--store", str(trail), "--since", "1h"]) == 0
    assert cli.main(["verify-chain", "--store", str(trail), "--since", "soon"]) == 2
    assert cli.main(["verify-chain", "--store", str(trail), "--checkpoint-key-file", str(trail.parent / "nope")]) == 1
    assert cli.main(["verify-chain", "--store", str(trail.parent / "missing.db")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"cannot read {trail.parent / 'nope'}" in err
    assert "no audit store at" in err


def test_a_whole_store_copied_elsewhere_still_verifies(trail, tmp_path):
    copy = tmp_path / "copy.db"
    shutil.copy(trail, copy)
    assert _check(copy).ok


def test_json_records_from_otlp_json_files_verify(trail, tmp_path, capsys):
    out = tmp_path / "audit.jsonl"
    assert cli.main(["export", "--store", str(trail), "--format", "otlp-json", "-o", str(out)]) == 0
    records = [r for line in out.read_text().splitlines() for r in otlpjson.decode(json.loads(line))]
    assert chaincheck.check((None, r) for r in records).ok
    assert all(semconv.AUDIT_RECORD_HASH in attributes_of for attributes_of in (r.attributes for r in records))


def test_alert_spans_are_chained_too(tmp_path):
    from otel_rai import FairnessConfig

    path = tmp_path / "audit.db"
    otel_rai.instrument(store=path, hash_key=KEY, sensitive_features=["g"],
                        fairness=FairnessConfig(min_group_size=5))
    X = np.random.default_rng(0).normal(size=(40, 2))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    g = np.where(X[:, 0] > 0, "a", "b")  # a perfectly biased model
    with otel_rai.decisions(groups={"g": list(g)}):
        model.predict(X)
    otel_rai.uninstrument()
    names = [r.name for _, r in store.Store(path).spans_in_write_order()]
    assert semconv.ALERT_SPAN in names
    assert _check(path).ok


def test_received_attributes_include_the_chain(receiver, tmp_path):
    otel_rai.instrument(endpoint=receiver.endpoint, hash_key=KEY, spool=False)
    _decide(_model(), 1)
    otel_rai.uninstrument()
    first = attributes(receiver.spans()[0][1])
    assert first[semconv.AUDIT_SEQ] == 1 and len(first[semconv.AUDIT_RECORD_HASH]) == 64


def test_checkpoints_come_periodically_even_when_idle(tmp_path):
    import time

    path = tmp_path / "audit.db"
    model = _model()  # fitted first, so that both decisions come well inside the first interval
    otel_rai.instrument(store=path, hash_key=KEY, checkpoint_interval=0.3, model_records=False)
    _decide(model, 2)
    deadline = time.monotonic() + 30  # idle: the worker still cycles once a second
    while len(names := [r.name for _, r in store.Store(path).spans_in_write_order()]) < 3:
        assert time.monotonic() < deadline, names
        time.sleep(0.1)
    assert names == ["predict_proba LogisticRegression"] * 2 + [semconv.CHECKPOINT_SPAN]
    time.sleep(1.5)  # nothing new: no new checkpoint
    otel_rai.uninstrument()
    assert [r.name for _, r in store.Store(path).spans_in_write_order()][3:] == []
