"""Iterators over stored events (``herald_reader``).

A reader stops at the end the log had when it was made (a consistent snapshot); follow new
events with a subscription. The C reader is freed when the iterator is exhausted, closed, left
by a ``with`` block, or garbage collected.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._errors import error_for
from ._ffi import ffi, lib
from ._handle import OwnedHandle
from ._types import Event, event_from_view

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["EventReader"]

_OK = lib.HERALD_OK
_END = lib.HERALD_END


class EventReader(Iterator[Event]):
    """An iterator of :class:`Event` over a ``herald_reader``; also a context manager."""

    __slots__ = ("_owned", "_view")

    def __init__(self, handle: Any) -> None:
        self._owned = OwnedHandle(handle, lib.herald_reader_free)
        self._view = ffi.new("herald_event *")

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Event:
        owned = self._owned
        handle = owned.begin()
        try:
            if handle is None:
                raise StopIteration
            status = lib.herald_reader_next(handle, self._view)
            if status == _OK:
                # Copied before the next call on the reader invalidates the view.
                return event_from_view(self._view)
            error = None if status == _END else error_for(status)
        finally:
            owned.end()
        self.close()
        if error is None:
            raise StopIteration
        raise error

    def close(self) -> None:
        """Frees the C reader; the iterator then ends. Idempotent."""
        self._owned.close()

    @property
    def closed(self) -> bool:
        return self._owned.closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
