"""One C handle that one thread at a time may use, freed exactly once.

Readers and subscriptions are "used by one thread at a time" in the ABI, and freeing one while
a call on it runs is a use-after-free. :class:`OwnedHandle` makes both impossible from Python:

- ``begin()`` takes the handle for a call without waiting; a second thread gets
  ``RuntimeError`` (as a running generator does), never a data race;
- ``close()`` frees at once when the handle is idle; when another thread is inside a call it
  waits for that call to end (subscription calls are bounded slices, so this is short); when
  the caller itself is inside a call (a signal handler closing during ``next()``), it only
  marks the handle, and the call frees it on its way out;
- the garbage collector frees a handle nobody closed (``ffi.gc``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ._ffi import ffi

__all__ = ["OwnedHandle"]


class OwnedHandle:
    __slots__ = ("_closing", "_handle", "_lock", "_owner")

    def __init__(self, handle: Any, free: Callable[[Any], None]) -> None:
        self._handle: Any = ffi.gc(handle, free) if handle is not None else None
        self._lock = threading.Lock()
        self._owner = 0
        self._closing = False

    @property
    def closed(self) -> bool:
        return self._handle is None or self._closing

    def begin(self) -> Any:
        """The handle for one call (``None`` when closed); pair with :meth:`end`."""
        if not self._lock.acquire(False):
            raise RuntimeError("this handle is in use by another thread")
        self._owner = threading.get_ident()
        if self._closing:
            self._free()
        return self._handle

    def end(self) -> None:
        if self._closing:
            self._free()
        self._owner = 0
        self._lock.release()

    def close(self) -> None:
        """Frees the handle now, or as soon as the call in progress ends (see the module docs)."""
        self._closing = True
        if self._lock.acquire(False):
            try:
                self._free()
            finally:
                self._lock.release()
        elif self._owner != threading.get_ident():
            with self._lock:  # the running call frees it on its way out
                self._free()

    def _free(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            ffi.release(handle)  # runs the destructor given to ffi.gc now
