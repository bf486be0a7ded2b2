"""Publishing domain events: single, batch, raw JSON, optimistic concurrency, idempotency, and
the typed errors Herald's validation surfaces."""

from __future__ import annotations

import math
import uuid

import pytest

import herald


def test_publish_single_returns_where_it_landed(system: herald.System) -> None:
    """One publish lands at the next position and version and reads back unchanged."""
    first = system.publish_domain_event(
        "TaskCreated", "task-123", {"title": "Implement feature X"}, metadata={"user_id": "user-456"}
    )
    second = system.publish_domain_event("TaskUpdated", "task-123", {"status": "started"})
    assert isinstance(first, herald.Appended)
    assert isinstance(first.id, uuid.UUID) and first.id.version == 7
    assert (first.position, first.aggregate_version, first.already_appended) == (0, 1, False)
    assert (second.position, second.aggregate_version) == (1, 2)
    [event, _] = list(system.read_stream("task-123"))
    assert event.id == first.id and event.kind == "domain" and event.type == "TaskCreated"
    assert event.data == {"title": "Implement feature X"}
    assert event.metadata == {"user_id": "user-456"}
    assert event.correlation_id == first.id and event.causation_id is None


def test_publish_with_given_ids(system: herald.System) -> None:
    """Client-chosen event, correlation and causation ids are stored as given (UUID or str)."""
    event_id, correlation, cause = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    appended = system.publish_domain_event(
        "TaskCreated", "t", {}, id=str(event_id), correlation_id=correlation, causation_id=cause
    )
    assert appended.id == event_id
    [event] = list(system.read_all())
    assert (event.id, event.correlation_id, event.causation_id) == (event_id, correlation, cause)


def test_batch_is_contiguous_and_atomic(system: herald.System) -> None:
    """A batch takes contiguous positions; results() lists each event without extra work upfront."""
    system.publish_domain_event("Seed", "s", 0)
    batch = system.publish_domain_events(
        {"type": "TaskCreated", "aggregate_id": f"task-{i % 3}", "data": {"i": i}} for i in range(10)
    )
    assert isinstance(batch, herald.BatchResult)
    assert (batch.first_position, batch.count, batch.already_appended) == (1, 10, False)
    results = batch.results()
    assert [r.position for r in results] == list(range(1, 11))
    assert [r.aggregate_version for r in results[:4]] == [1, 1, 1, 2]
    assert [e.data["i"] for e in system.read_all(from_position=1)] == list(range(10))


def test_batch_accepts_every_optional_field(system: herald.System) -> None:
    """Mappings carry the spec's optional fields; UUID objects and expected_version forms work."""
    ids = [uuid.uuid4() for _ in range(3)]
    batch = system.publish_domain_events(
        [
            {"type": "A", "aggregate_id": "x", "data": 1, "id": ids[0], "expected_version": 0},
            {"type": "A", "aggregate_id": "x", "data": 2, "id": ids[1], "expected_version": 1, "metadata": {"k": "v"}},
            {
                "type": "A",
                "aggregate_id": "y",
                "data": 3,
                "id": ids[2],
                "expected_version": "any",
                "causation_id": ids[0],
            },
        ]
    )
    assert [r.id for r in batch.results()] == ids
    events = list(system.read_all())
    assert events[1].metadata == {"k": "v"} and events[2].causation_id == ids[0]


def test_raw_json_body_is_the_fast_path(system: herald.System) -> None:
    """publish_json and publish_domain_events(bytes) take a ready POST /v1/events body."""
    single = system.publish_json(b'{"type":"A","aggregate_id":"a","data":{"n":1}}')
    assert (single.first_position, single.count) == (0, 1)
    body = b'{"events":[' + b",".join(b'{"type":"B","aggregate_id":"b","data":%d}' % i for i in range(5)) + b"]}"
    batch = system.publish_domain_events(body)
    assert (batch.first_position, batch.count) == (1, 5)
    assert len(batch.results()) == 1  # publish_json keeps `capacity` results (default 1)
    assert len(system.publish_json(body.replace(b'"B"', b'"C"'), capacity=5).results()) == 5
    assert [e.data for e in system.read_by_type("B")] == [0, 1, 2, 3, 4]


def test_null_data_is_published(system: herald.System) -> None:
    """`data=None` is a JSON null payload, alone, inside a batch and in an integration event."""
    system.publish_domain_event("Pinged", "p", None)
    system.publish_domain_events(
        [{"type": "Pinged", "aggregate_id": "p", "data": None}, {"type": "X", "aggregate_id": "p", "data": 1}]
    )
    system.publish_integration_event(routing_key="p.pinged", version="1", source="p", data=None)
    events = list(system.read_all())
    assert [e.data for e in events] == [None, None, 1, None]
    assert [e.raw_data for e in events] == [b"null", b"null", b"1", b"null"]
    assert events[3].kind == "integration"


def test_expected_version_conflict_stores_nothing(system: herald.System) -> None:
    """A failed expected_version raises VersionConflictError and leaves the log untouched."""
    system.publish_domain_event("A", "agg", 1, expected_version=0)  # must not exist yet: fine
    system.publish_domain_event("A", "agg", 2, expected_version=1)
    with pytest.raises(herald.VersionConflictError) as raised:
        system.publish_domain_event("A", "agg", 3, expected_version=1)
    assert raised.value.status == 5 and raised.value.code == "HERALD_VERSION_CONFLICT"
    assert "current version is 2" in raised.value.message
    with pytest.raises(herald.VersionConflictError):
        system.publish_domain_event("A", "agg", 3, expected_version=0)
    with pytest.raises(herald.VersionConflictError):  # the whole batch, not just the bad draft
        system.publish_domain_events(
            [
                {"type": "A", "aggregate_id": "other", "data": 0},
                {"type": "A", "aggregate_id": "agg", "data": 0, "expected_version": 7},
            ]
        )
    assert system.stream_version("agg") == 2
    assert system.stream_version("other") == 0
    assert len(list(system.read_all())) == 2


def test_republishing_an_id_is_idempotent(system: herald.System) -> None:
    """The same id again returns the original results with already_appended and appends nothing."""
    event_id = uuid.uuid4()
    first = system.publish_domain_event("A", "agg", {"v": 1}, id=event_id)
    again = system.publish_domain_event("A", "agg", {"v": 1}, id=event_id)
    assert again.already_appended and not first.already_appended
    assert (again.id, again.position, again.aggregate_version) == (first.id, first.position, first.aggregate_version)
    drafts = [{"type": "B", "aggregate_id": "agg", "data": i, "id": uuid.uuid4()} for i in range(3)]
    batch = system.publish_domain_events(drafts)
    retry = system.publish_domain_events(drafts)
    assert retry.already_appended and retry.first_position == batch.first_position
    assert [r.position for r in retry.results()] == [r.position for r in batch.results()]
    assert len(list(system.read_all())) == 4
    with pytest.raises(herald.DuplicateIdError):  # the same id on another aggregate
        system.publish_domain_event("A", "elsewhere", {"v": 1}, id=event_id)


def test_invalid_drafts_raise_typed_errors(system: herald.System) -> None:
    """Herald's validation comes back as InvalidArgumentError (a ValueError) naming the field."""
    with pytest.raises(herald.InvalidArgumentError) as raised:
        system.publish_domain_event("A", "a", math.nan)  # not JSON
    assert isinstance(raised.value, ValueError) and raised.value.code == "HERALD_INVALID_ARGUMENT"
    with pytest.raises(herald.InvalidArgumentError, match="type"):
        system.publish_domain_event("T" * 257, "a", 1)
    with pytest.raises(herald.InvalidArgumentError, match="aggregate_id"):
        system.publish_domain_event("T", "", 1)
    with pytest.raises(herald.InvalidArgumentError, match="metadata"):
        system.publish_domain_event("T", "a", 1, metadata={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(herald.InvalidArgumentError, match="expected_version"):
        system.publish_domain_event("T", "a", 1, expected_version=-1)
    with pytest.raises(herald.InvalidArgumentError, match="body"):
        system.publish_json(b'{"type": "A", "aggregate_id": "a", "data": {]}')
    with pytest.raises(herald.InvalidArgumentError, match="events"):
        system.publish_domain_events([])
    with pytest.raises(TypeError):  # not JSON-serializable: refused before Herald
        system.publish_domain_event("T", "a", object())
    assert list(system.read_all()) == []


def test_invalid_utf8_is_typed(system: herald.System) -> None:
    """Text that is not UTF-8 (bytes, or a str with lone surrogates) raises InvalidUtf8Error."""
    with pytest.raises(herald.InvalidUtf8Error) as raised:
        system.stream_version(b"\xff\xfe")
    assert raised.value.code == "HERALD_INVALID_UTF8" and isinstance(raised.value, ValueError)
    with pytest.raises(herald.InvalidUtf8Error):
        system.read_stream("bad\udc80")
    with pytest.raises(herald.InvalidUtf8Error):
        system.read_by_type(b"\xc3")
    with pytest.raises(herald.InvalidUtf8Error):
        system.save_snapshot(b"\x80", 1, b"")
