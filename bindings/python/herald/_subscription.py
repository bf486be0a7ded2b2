"""Subscriptions: pull (an iterator with a blocking, interruptible ``next``) and callback.

A subscription sees every committed event after its start once, in position order, with no gap
between history and live events. Pull: ``herald_subscription_next`` is called in slices of at
most :data:`SLICE_MS`, so Ctrl-C, ``close()`` from another thread and the system's close are
noticed within one slice; cffi releases the GIL during each slice, so other Python threads run.

Callback: Herald calls a cffi callback on its own thread, in order. The Python callback runs
with the GIL taken by cffi; its exceptions never reach C (cffi reports them through
``sys.unraisablehook`` and the subscription goes on). The cffi callback object must outlive
every call Herald makes to it: it is kept by the subscription, and when a subscription is closed
from inside its own callback (Herald then stops its thread only after the callback returns), it
is parked in a module list for a while instead of being dropped mid-call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from ._errors import ClosedError, raise_status
from ._ffi import ffi, lib
from ._handle import OwnedHandle
from ._types import Event, event_from_view

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._system import System

__all__ = ["SLICE_MS", "Start", "Subscription"]

Start = Literal["beginning", "end"] | int
"""Where a subscription starts: the first retained event, only events after it is made, or a
log position."""

SLICE_MS = 100
"""The longest single wait in C; the bound on noticing Ctrl-C, close() and the system's close."""

# Callbacks closed from inside themselves, with when: kept until Herald's thread has surely
# returned from the call (it stops right after it).
_RETIRED: list[tuple[float, Any]] = []
_RETIRED_LOCK = threading.Lock()
_RETIRE_SECONDS = 60.0

_OK = lib.HERALD_OK
_TIMEOUT = lib.HERALD_TIMEOUT


def _retire(callback: Any) -> None:
    now = time.monotonic()
    with _RETIRED_LOCK:
        _RETIRED[:] = [entry for entry in _RETIRED if now - entry[0] < _RETIRE_SECONDS]
        _RETIRED.append((now, callback))


def start_arguments(start: Start) -> tuple[int, int]:
    """``start`` as the ABI's (``HERALD_START_*``, position)."""
    if start == "beginning":
        return lib.HERALD_START_BEGINNING, 0
    if start == "end":
        return lib.HERALD_START_END, 0
    if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        return lib.HERALD_START_POSITION, start
    raise ValueError(f"start must be 'beginning', 'end' or a position >= 0, got {start!r}")


class _CallbackState:
    """What the cffi callback needs; kept apart from the Subscription so no cycle holds it."""

    __slots__ = ("stopped", "thread_id")

    def __init__(self) -> None:
        self.thread_id = 0
        self.stopped = False


class Subscription(Iterator[Event]):
    """A live subscription; a context manager and an iterator of :class:`Event`.

    Made by :meth:`System.subscribe` (pull) or :meth:`System.on` (callback). Iterating blocks
    until the next event and ends when the subscription or its system is closed.
    """

    __slots__ = ("__weakref__", "_callback", "_owned", "_state", "_system", "_view")
    _system: System
    _owned: OwnedHandle
    _view: Any
    _callback: Any  # the cffi callback object (callback subscriptions), kept alive here
    _state: _CallbackState | None

    def __init__(self) -> None:
        raise TypeError("use System.subscribe() or System.on()")

    @classmethod
    def _pull(cls, system: System, handle: Any) -> Subscription:
        self = object.__new__(cls)
        self._system = system
        self._owned = OwnedHandle(handle, lib.herald_subscription_free)
        self._view = ffi.new("herald_event *")
        self._callback = None
        self._state = None
        return self

    @staticmethod
    def _make_callback(handler: Callable[[Event], Any]) -> tuple[Any, _CallbackState]:
        state = _CallbackState()

        def call(userdata: Any, view: Any) -> None:
            state.thread_id = threading.get_ident()
            if not state.stopped:
                handler(event_from_view(view))  # raising is reported by cffi, never reaches C

        name = getattr(handler, "__qualname__", None) or repr(handler)
        call.__qualname__ = call.__name__ = f"herald subscription handler {name}"
        return ffi.callback("herald_event_callback", call), state

    @classmethod
    def _with_callback(cls, system: System, handle: Any, callback: Any, state: _CallbackState) -> Subscription:
        self = cls._pull(system, handle)
        self._callback = callback
        self._state = state
        return self

    @property
    def closed(self) -> bool:
        closed: bool = self._owned.closed
        return closed

    def next(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting up to ``timeout`` seconds (``None``: until one comes, 0: not at
        all); ``None`` when none came in time, or when the system is closed and nothing is left.
        ``ClosedError`` once the subscription is closed; ``ConflictError`` on a callback one."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        owned = self._owned
        handle = owned.begin()
        try:
            if handle is None:
                raise ClosedError("the subscription is closed")
            view = self._view
            while True:
                if deadline is None:
                    wait_ms = SLICE_MS
                else:
                    wait_ms = min(SLICE_MS, max(int((deadline - time.monotonic()) * 1000), 0))
                if self._system.closed:
                    wait_ms = 0  # nothing new can come; hand out what is committed
                status = lib.herald_subscription_next(handle, wait_ms, view)
                if status == _OK:
                    return event_from_view(view)
                if status != _TIMEOUT:
                    raise_status(status)
                if owned.closed:
                    raise ClosedError("the subscription was closed")
                if self._system.closed or (deadline is not None and time.monotonic() >= deadline):
                    return None
        finally:
            owned.end()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Event:
        try:
            event = self.next(None)
        except ClosedError:
            raise StopIteration from None
        if event is None:  # the system was closed
            raise StopIteration
        return event

    def close(self) -> None:
        """Stops and frees the subscription (a callback one waits for a running callback to
        return, unless called from inside it). Idempotent."""
        state = self._state
        if state is not None:
            state.stopped = True
            if state.thread_id == threading.get_ident() and self._callback is not None:
                _retire(self._callback)  # Herald is still inside this very callback
        self._owned.close()
        self._system._forget(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
