"""The Tempo backend, against Tempo's documented search and trace responses."""

from __future__ import annotations

import pytest
from fake_backends import FakeServer, FakeTempo
from recorded import record

from otel_rai.query import BackendError, Query, find_decisions, tempo


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    versions = {"1.4.1": 500, "1.4.2": 7, **{f"v{i:02}": 1 for i in range(12)}}
    return record(tmp_path_factory.mktemp("tempo") / "audit.db", versions)


def test_traceql_of_a_query():
    assert tempo.traceql(Query(model_version="1.4.2", model_name='cr"edit', service="svc")) == (
        '{ span.ml.model.version = "1.4.2" && span.ml.model.name = "cr\\"edit" && resource.service.name = "svc" }')
    assert tempo.traceql(Query()) == "{ span.ml.model.version != nil }"


@pytest.mark.parametrize("before_v2_5", [False, True], ids=["api v2", "api v1 (batches)"])
def test_one_version_yields_exactly_its_decisions_like_the_local_store(recorded, before_v2_5):
    server = FakeTempo(recorded.spans(), before_v2_5=before_v2_5)
    try:
        for version, n in (("1.4.1", 500), ("1.4.2", 7)):
            local = [d.to_dict(full=True) for d in find_decisions(model_version=version, url=str(recorded.path))]
            remote = [d.to_dict(full=True) for d in find_decisions(
                model_version=version, backend="tempo", url=server.url, **recorded.window())]
            assert remote == local and len(remote) == n
        searches = [q for path, q in server.requests if path == "/api/search"]
        assert searches[-1]["q"] == ['{ span.ml.model.version = "1.4.2" }']
    finally:
        server.stop()


def test_more_traces_than_the_search_limit_are_all_found_by_splitting_the_window(recorded):
    spans = recorded.spans()
    second = 10**9
    # Half past a whole second: a search's window is sent in whole seconds, rounded outwards, and Tempo matches
    # the traces that overlap it, ends included. A trace starting late in its second (and lasting up to 0.1 s)
    # would meet a narrowest window rounded out to two seconds together with the two traces after it: as many
    # as the search limit, so the search would fail, about one run in ten.
    base = min(s.start_ns for s in spans) // second * second + second // 2
    for i, s in enumerate(spans):  # spread the traces over seconds, one each: Tempo searches by the second
        # A model record lasts as long as its artifact takes to save (seconds on a loaded machine), and is
        # written that much later, yet starts with its model's first call: shifting each span by its place
        # would land such a record on the second of a later trace, and on a loaded machine more than the
        # search limit of them in one second. Each span gets its own second, and is made short.
        duration = min(s.end_ns - s.start_ns, second // 10)
        s.start_ns = base + i * second
        s.end_ns = s.start_ns + duration
    server = FakeTempo(spans)
    try:
        start = min(s.start_ns for s in spans)
        backend = tempo.Tempo(server.url, search_limit=3)
        found = list(find_decisions(backend=backend, start=start, end=start + (len(spans) + 1) * second))
        assert len(found) == 519
        assert [d.time_ns for d in found] == sorted(d.time_ns for d in found)
        assert sum(path == "/api/search" for path, _ in server.requests) > 3
    finally:
        server.stop()


def test_unreachable_and_broken_tempo_are_clear_errors():
    server = FakeServer(lambda path, query: (200, {"traces": [{"no traceID": 1}]}))
    try:
        with pytest.raises(BackendError, match="unexpected response from tempo"):
            list(find_decisions(backend="tempo", url=server.url, since="1h"))
    finally:
        server.stop()
    with pytest.raises(BackendError, match="cannot reach tempo"):
        list(find_decisions(backend="tempo", url=server.url, since="1h"))
