"""The values the API hands back, and their conversion from the C views.

A C view (``herald_event``, ``herald_appended``) borrows from its handle and is only valid until
the next call on that handle, so everything here copies the bytes out at once.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from ._ffi import ffi

__all__ = ["Appended", "BatchResult", "BroadcastResult", "Event", "EventKind", "Snapshot"]

EventKind = Literal["domain", "integration", "websocket"]

_KINDS: dict[int, EventKind] = {1: "domain", 2: "integration", 3: "websocket"}
_UUID = uuid.UUID
_buffer = ffi.buffer
_unpack = ffi.unpack
_loads = json.loads


def _datetime_from_ns(timestamp_ns: int) -> datetime:
    seconds, nanoseconds = divmod(timestamp_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=nanoseconds // 1000)


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a published event landed. ``already_appended``: the id was stored before (an
    idempotent retry); nothing was appended and these are the original results."""

    id: uuid.UUID
    position: int
    aggregate_version: int
    already_appended: bool


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of an atomic batch: ``count`` events at ``first_position`` onwards (a batch's
    positions are contiguous). For an idempotent retry (``already_appended``) the positions are
    the original ones; ``results()`` lists each event's."""

    first_position: int
    count: int
    already_appended: bool
    _results: Any = field(default=None, repr=False, compare=False)
    _available: int = field(default=0, repr=False, compare=False)

    def results(self) -> list[Appended]:
        """Each event's result, in draft order (all of them for ``publish_domain_events``; for
        ``publish_json`` as many as its ``capacity``)."""
        return [appended_from(self._results[i]) for i in range(min(self._available, self.count))]


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    """The outcome of a WebSocket broadcast: ``position`` is set when it was persistent (stored);
    ``delivered`` counts the connections it was queued on."""

    id: str
    persisted: bool
    position: int | None
    delivered: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's saved state at ``aggregate_version``."""

    aggregate_version: int
    timestamp_ns: int
    state: bytes

    @property
    def timestamp(self) -> datetime:
        return _datetime_from_ns(self.timestamp_ns)


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event of any kind.

    For integration events ``type`` is the routing key and ``metadata`` holds ``version`` and
    ``source``; for persistent WebSocket events ``type`` is the room and ``data`` the whole
    WebSocket event. ``aggregate_id`` is empty and ``aggregate_version`` 0 for both.
    """

    kind: EventKind
    id: uuid.UUID
    type: str
    aggregate_id: str
    aggregate_version: int
    position: int
    timestamp_ns: int
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None
    metadata: dict[str, str]
    data: Any
    raw_data: bytes = field(repr=False)

    @property
    def timestamp(self) -> datetime:
        """``timestamp_ns`` as an aware UTC datetime (microsecond precision)."""
        return _datetime_from_ns(self.timestamp_ns)


def _slow_uuid(raw: bytes) -> uuid.UUID:
    return _UUID(bytes=raw)


_new_object = object.__new__
_set_uuid_int = _UUID.__dict__["int"].__set__
_set_uuid_safe = _UUID.__dict__["is_safe"].__set__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown
_from_bytes = int.from_bytes


def _fast_uuid(raw: bytes) -> uuid.UUID:
    # UUID(bytes=...) validates and dispatches on four keyword forms; 16 bytes from Herald need
    # none of it. Filling UUID's two slots directly is 2-3x faster (checked at import below).
    value = _new_object(_UUID)
    _set_uuid_int(value, _from_bytes(raw, "big"))
    _set_uuid_safe(value, _UNKNOWN_SAFETY)
    return value


_sample = bytes(range(16))
_make_uuid = (
    _fast_uuid
    if _fast_uuid(_sample) == _UUID(bytes=_sample) and str(_fast_uuid(_sample)) == str(_UUID(bytes=_sample))
    else _slow_uuid
)


def _uuid(raw: Any) -> uuid.UUID:
    return _make_uuid(_buffer(raw.bytes)[:])


def event_from_view(view: Any) -> Event:
    """Copies a borrowed ``herald_event *`` into an :class:`Event`."""
    raw_data = _buffer(view.data, view.data_len)[:]
    metadata_len = view.metadata_json_len
    metadata = _loads(_buffer(view.metadata_json, metadata_len)[:]) if metadata_len > 2 else {}
    return Event(
        _KINDS.get(view.kind, "domain"),
        _uuid(view.id),
        _unpack(view.event_type, view.event_type_len).decode(),
        _unpack(view.aggregate_id, view.aggregate_id_len).decode(),
        view.aggregate_version,
        view.position,
        view.timestamp_ns,
        _uuid(view.correlation_id),
        _uuid(view.causation_id) if view.has_causation_id else None,
        metadata,
        _loads(raw_data),
        raw_data,
    )


def appended_from(raw: Any) -> Appended:
    """Copies a ``herald_appended`` into an :class:`Appended`."""
    return Appended(_uuid(raw.id), raw.position, raw.aggregate_version, bool(raw.already_appended))
