"""Subscriptions: pull from the beginning, the end or a position, across threads, interruptible;
callbacks with causation, error isolation and clean stops."""

from __future__ import annotations

import _thread
import sys
import threading
import time
from typing import Any

import pytest

import herald


def test_pull_from_beginning_sees_history_then_live(system: herald.System) -> None:
    """start="beginning" replays what is stored, then follows new events without a gap."""
    system.publish_domain_event("TaskCreated", "t1", 0)
    system.publish_domain_event("TaskCreated", "t2", 1)
    with system.subscribe(start="beginning") as subscription:
        assert [subscription.next(1).data for _ in range(2)] == [0, 1]  # type: ignore[union-attr]
        assert subscription.next(0) is None
        system.publish_domain_event("TaskCreated", "t3", 2)
        event = subscription.next(1)
        assert event is not None and (event.data, event.position) == (2, 2)
    assert subscription.closed
    with pytest.raises(herald.ClosedError):
        subscription.next(0)


def test_pull_from_end_and_from_position(system: herald.System) -> None:
    """start="end" skips history; an int starts at that position; patterns filter routing keys."""
    for i in range(3):
        system.publish_domain_event("TaskCreated", "t", i)
    from_end = system.subscribe(start="end")
    from_one = system.subscribe(start=1)
    tasks_only = system.subscribe("task.#", start="beginning")
    assert from_end.next(0) is None
    system.publish_domain_event("ProjectCreated", "p", 3)
    assert from_end.next(1).data == 3  # type: ignore[union-attr]
    assert [from_one.next(1).data for _ in range(3)] == [1, 2, 3]  # type: ignore[union-attr]
    assert [tasks_only.next(1).data for _ in range(3)] == [0, 1, 2]  # type: ignore[union-attr]
    assert tasks_only.next(0.05) is None  # project.created does not match task.#
    for subscription in (from_end, from_one, tasks_only):
        subscription.close()
    with pytest.raises(ValueError):
        system.subscribe(start="middle")  # type: ignore[arg-type]


def test_subscription_receives_from_another_thread(system: herald.System) -> None:
    """A blocking iteration wakes for events another Python thread publishes (GIL released)."""
    subscription = system.subscribe("order.*")

    def publish_later() -> None:
        for i in range(5):
            time.sleep(0.02)
            system.publish_domain_event("OrderPlaced", f"order-{i}", {"i": i})

    publisher = threading.Thread(target=publish_later)
    publisher.start()
    received = []
    for event in subscription:
        received.append(event.data["i"])
        if len(received) == 5:
            break
    publisher.join()
    subscription.close()
    assert received == [0, 1, 2, 3, 4]


def test_blocking_iteration_ends_on_close_from_another_thread(system: herald.System) -> None:
    """close() from another thread ends a blocked `for` within one slice."""
    subscription = system.subscribe()
    threading.Timer(0.15, subscription.close).start()
    started = time.monotonic()
    assert list(subscription) == []
    assert time.monotonic() - started < 2


def test_blocking_iteration_ends_when_the_system_closes() -> None:
    """Closing the system ends iteration once the committed events are handed out."""
    system = herald.System.testing()
    subscription = system.subscribe(start="beginning")
    system.publish_domain_event("A", "a", 1)
    threading.Timer(0.15, system.close).start()
    assert [e.data for e in subscription] == [1]
    subscription.close()


def test_ctrl_c_interrupts_a_blocking_iteration(system: herald.System) -> None:
    """KeyboardInterrupt reaches a thread blocked in `for event in subscription` (bounded waits)."""
    subscription = system.subscribe()
    timer = threading.Timer(0.15, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for _ in subscription:
            pass
    assert time.monotonic() - started < 2
    subscription.close()


def test_one_thread_at_a_time(system: herald.System) -> None:
    """A second thread pulling while one waits gets RuntimeError, not a data race."""
    subscription = system.subscribe()
    waiter = threading.Thread(target=subscription.next, args=(0.5,))
    waiter.start()
    time.sleep(0.1)
    with pytest.raises(RuntimeError):
        subscription.next(0)
    waiter.join()
    subscription.close()


def test_callback_with_causation(system: herald.System) -> None:
    """Handlers run on Herald's thread; what they publish is caused by the handled event."""
    received: list[herald.Event] = []
    done = threading.Event()

    def on_task(event: herald.Event) -> None:
        received.append(event)
        if event.type == "TaskCreated":
            system.publish_domain_event("TaskNotificationSent", event.aggregate_id, {"for": str(event.id)})
        else:
            done.set()

    subscription = system.on(on_task, pattern="task.#")
    created = system.publish_domain_event("TaskCreated", "task-123", {"title": "x"})
    assert done.wait(5)
    subscription.close()
    handled, caused = received
    assert handled.id == created.id and handled.causation_id is None
    assert caused.causation_id == created.id and caused.correlation_id == created.id
    assert threading.get_ident() != getattr(subscription._state, "thread_id")  # noqa: B009
    stored = list(system.read_stream("task-123"))[1]
    assert stored.causation_id == created.id


def test_callback_exception_is_reported_and_delivery_goes_on(
    system: herald.System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in a handler goes to sys.unraisablehook; the next event is still delivered."""
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: reported.append(unraisable.exc_value))
    seen: list[int] = []
    done = threading.Event()

    def flaky(event: herald.Event) -> None:
        seen.append(event.data)
        if event.data == 0:
            raise RuntimeError("handler failed")
        done.set()

    with system.on(flaky, start="beginning"):
        system.publish_domain_event("A", "a", 0)
        system.publish_domain_event("A", "a", 1)
        assert done.wait(5)
    assert seen == [0, 1]
    assert [type(error) for error in reported] == [RuntimeError]


def test_callback_closing_itself_and_pull_conflict(system: herald.System) -> None:
    """A handler may close its own subscription; pulling from a callback one is ConflictError."""
    calls: list[int] = []
    closed = threading.Event()

    def once(event: herald.Event) -> None:
        calls.append(event.data)
        subscription.close()
        closed.set()

    subscription = system.on(once)
    with pytest.raises(herald.ConflictError):
        subscription.next(0)
    system.publish_domain_event("A", "a", 1)
    assert closed.wait(5)
    system.publish_domain_event("A", "a", 2)
    time.sleep(0.1)
    assert calls == [1] and subscription.closed


def test_system_close_stops_callbacks() -> None:
    """Closing the system closes its callback subscriptions first."""
    system = herald.System.testing()
    seen: list[Any] = []
    subscription = system.on(lambda event: seen.append(event.data))
    system.publish_domain_event("A", "a", 1)
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    system.close()
    assert seen == [1] and subscription.closed


def test_a_handler_may_close_the_system(system: herald.System) -> None:
    """close() from inside a handler stops every handler and frees the system without deadlock."""
    closed = threading.Event()

    def close_everything(event: herald.Event) -> None:
        system.close()
        closed.set()

    system.on(close_everything)
    other = system.on(lambda event: None)
    system.publish_domain_event("A", "a", 1)
    assert closed.wait(5)
    assert system.closed and other.closed
