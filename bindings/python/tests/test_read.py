"""Reads (all, by type, since a time, one stream), snapshots, and the other event kinds."""

from __future__ import annotations

import gc
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import herald


def _seed(system: herald.System) -> None:
    system.publish_domain_event("TaskCreated", "task-1", {"n": 0})
    system.publish_domain_event("TaskCreated", "task-2", {"n": 1})
    system.publish_domain_event("TaskCompleted", "task-1", {"n": 2})
    system.publish_domain_event("TaskCreated", "task-3", {"n": 3})


def test_read_all_from_and_limit(system: herald.System) -> None:
    """read_all walks every position; from_position and limit bound it."""
    _seed(system)
    assert [e.position for e in system.read_all()] == [0, 1, 2, 3]
    assert [e.position for e in system.read_all(from_position=2)] == [2, 3]
    assert [e.position for e in system.read_all(from_position=1, limit=2)] == [1, 2]
    assert list(system.read_all(limit=0)) == []
    assert list(system.read_all(from_position=99)) == []
    with pytest.raises(ValueError):
        system.read_all(limit=-1)


def test_read_by_type(system: herald.System) -> None:
    """read_by_type returns one type's events in position order."""
    _seed(system)
    assert [e.aggregate_id for e in system.read_by_type("TaskCreated")] == ["task-1", "task-2", "task-3"]
    assert [e.position for e in system.read_by_type("TaskCreated", from_position=2)] == [3]
    assert [e.position for e in system.read_by_type("TaskCreated", limit=1)] == [0]
    assert list(system.read_by_type("Nothing")) == []


def test_read_since(system: herald.System) -> None:
    """read_since takes a datetime or unix nanoseconds and includes events at that instant."""
    system.publish_domain_event("Old", "a", 1)
    time.sleep(0.01)
    middle = datetime.now(timezone.utc)
    time.sleep(0.01)
    system.publish_domain_event("New", "a", 2)
    system.publish_domain_event("New", "a", 3)
    events = list(system.read_since(middle))
    assert [e.type for e in events] == ["New", "New"]
    assert [e.position for e in system.read_since(events[0].timestamp_ns)] == [1, 2]
    assert len(list(system.read_since(middle - timedelta(days=1), limit=2))) == 2
    assert events[0].timestamp > middle


def test_read_stream(system: herald.System) -> None:
    """read_stream follows one aggregate in version order; an unknown one reads as empty."""
    _seed(system)
    assert [(e.aggregate_version, e.type) for e in system.read_stream("task-1")] == [
        (1, "TaskCreated"),
        (2, "TaskCompleted"),
    ]
    assert [e.aggregate_version for e in system.read_stream("task-1", from_version=2)] == [2]
    assert [e.aggregate_version for e in system.read_stream("task-1", limit=1)] == [1]
    assert list(system.read_stream("nobody")) == []
    assert system.stream_version("task-1") == 2 and system.stream_version("nobody") == 0


def test_reader_is_freed_when_done(system: herald.System) -> None:
    """A reader frees its C handle when exhausted, closed, left by `with`, or collected."""
    _seed(system)
    reader = system.read_all()
    assert len(list(reader)) == 4 and reader.closed
    assert list(reader) == []  # stays exhausted
    reader = system.read_all()
    next(reader)
    reader.close()
    assert reader.closed and list(reader) == []
    with system.read_all() as reader:
        next(reader)
    assert reader.closed
    for _ in range(200):  # dropped half-read: the garbage collector frees them
        next(system.read_all())
    gc.collect()


def test_reader_outlives_the_system() -> None:
    """A reader made before close keeps reading (it shares the store)."""
    system = herald.System.testing()
    system.publish_domain_event("A", "a", 1)
    reader = system.read_all()
    system.close()
    assert [e.data for e in reader] == [1]


def test_snapshots(system: herald.System) -> None:
    """save_snapshot / load_snapshot round-trip bytes; the newest wins; errors are typed."""
    assert system.load_snapshot("task-1") is None
    with pytest.raises(herald.NotFoundError):
        system.save_snapshot("task-1", 1, b"state")  # no such stream
    _seed(system)
    system.save_snapshot("task-1", 1, b"\x00state-v1")
    system.save_snapshot("task-1", 2, bytearray(b"state-v2"))
    snapshot = system.load_snapshot("task-1")
    assert snapshot is not None
    assert (snapshot.aggregate_version, snapshot.state) == (2, b"state-v2")
    assert abs(snapshot.timestamp - datetime.now(timezone.utc)) < timedelta(minutes=1)
    with pytest.raises(herald.VersionConflictError):
        system.save_snapshot("task-1", 3, b"ahead of the stream")
    assert system.metrics()["event_store"]["total_snapshots"] >= 1


def test_integration_event(system: herald.System) -> None:
    """An integration event is stored (kind integration) and lands at the next position."""
    system.publish_domain_event("A", "a", 1)
    appended = system.publish_integration_event(
        routing_key="task.completed",
        version="1.0.0",
        source={"service": "task-management", "user_id": "user-456"},
        data={"task_id": "task-123"},
    )
    assert (appended.position, appended.aggregate_version) == (1, 0)
    mapping = system.publish_integration_event(
        {"routing_key": "task.deleted", "version": "1.0.0", "source": "tasks", "data": {}}
    )
    assert mapping.position == 2
    event = next(iter(system.read_all(from_position=1)))
    assert (event.kind, event.type, event.id, event.data) == (
        "integration",
        "task.completed",
        appended.id,
        {"task_id": "task-123"},
    )
    assert event.metadata["version"] == "1.0.0"
    with pytest.raises(herald.InvalidArgumentError, match="routing_key"):
        system.publish_integration_event(routing_key="Not A Key", version="1", source="s", data={})
    with pytest.raises(herald.InvalidArgumentError, match="source"):
        system.publish_integration_event(routing_key="a.b", version="1", data={})


def test_broadcast(system: herald.System) -> None:
    """A persistent broadcast is stored and gets a position; a transient one does not."""
    system.publish_domain_event("A", "a", 1)
    stored = system.broadcast_websocket_event(
        type="task",
        event="task.updated",
        data={"task_id": "task-123", "status": "completed"},
        source={"user_id": "user-456"},
        target={"type": "project", "id": "project-101", "exclude_users": ["user-456"]},
        priority="high",
        persistent=True,
    )
    assert (stored.persisted, stored.position, stored.delivered) == (True, 1, 0)
    assert uuid.UUID(stored.id).version == 7  # made by the bindings, as Herald would
    transient = system.broadcast_websocket_event(
        {"type": "presence", "event": "user.typing", "data": {}, "target": {"type": "all"}, "id": "ws-1"}
    )
    assert (transient.persisted, transient.position, transient.id) == (False, None, "ws-1")
    [event] = list(system.read_all(from_position=1))
    assert event.kind == "websocket" and event.data["id"] == stored.id
    assert event.data["event"] == "task.updated" and event.data["priority"] == "high"
    with pytest.raises(herald.InvalidArgumentError, match="priority"):
        system.broadcast_websocket_event(type="t", event="e", data={}, target="all", priority="urgent")
    assert system.metrics()["websocket_events"]["broadcast"] == 2
