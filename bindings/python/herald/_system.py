"""The running Herald system: publish, read, snapshots, subscriptions, webhooks, metrics.

Lifetime: the C handle may be used from many threads at once, but ``herald_system_free`` must be
the last call on it. Every method therefore counts itself in and out around its C call, and
:meth:`System.close` waits for calls in flight before freeing; a call after ``close`` raises
:class:`ClosedError`. Readers and pull subscriptions outlive the system (they share the store);
callback subscriptions are closed first, so no handler runs against a freed system. Systems left
open are closed at interpreter exit (atexit), before Python stops its threads.

Publishing goes through the spec's JSON (``herald_publish_json``): one encoding per call (orjson
when installed, see ``_json``), however many events, and one C call.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._errors import ClosedError, NotFoundError, check, error_for
from ._ffi import ffi, lib
from ._json import encode
from ._reader import EventReader
from ._subscription import Start, Subscription, start_arguments
from ._types import Appended, BatchResult, BroadcastResult, Event, Snapshot, appended_from

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["System"]

Text = str | bytes
"""A string argument; ``bytes`` are passed to Herald as they are (it checks the UTF-8)."""

_MISSING: Any = object()


# Systems still open when the interpreter exits are closed by an atexit hook, while threads can
# still run: at finalization Python ends any thread that asks for the GIL with pthread_exit, and
# a callback thread ended that way inside Herald aborts the process ("exception not rethrown").
_OPEN_SYSTEMS: weakref.WeakSet[System] = weakref.WeakSet()


@atexit.register
def _close_open_systems() -> None:
    for system in list(_OPEN_SYSTEMS):
        with contextlib.suppress(Exception):
            system.close()


def _request(base: Mapping[str, Any] | None, data: Any, **fields: Any) -> dict[str, Any]:
    """A request body: ``base``'s fields, then the keyword fields that are not None, then
    ``data`` unless it was not given (``None`` is a valid payload)."""
    body: dict[str, Any] = dict(base) if base is not None else {}
    body.update((key, value) for key, value in fields.items() if value is not None)
    if data is not _MISSING:
        body["data"] = data
    return body


def _text(value: Text) -> bytes:
    if isinstance(value, bytes):
        return value
    # Lone surrogates reach Herald as the invalid UTF-8 they are, and come back InvalidUtf8Error.
    return value.encode("utf-8", "surrogatepass")


def _limit(limit: int | None) -> int:
    if limit is None:
        return 0  # the ABI's "no limit"
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return limit


def _nanoseconds(moment: datetime | int) -> int:
    if isinstance(moment, int):
        return moment
    if moment.tzinfo is None:
        moment = moment.astimezone()
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _uuid7() -> uuid.UUID:
    """A UUIDv7 (RFC 9562): 48 bits of unix milliseconds, then random bits."""
    milliseconds = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10), "big")
    value = (
        (milliseconds & (1 << 48) - 1) << 80 | 0x7 << 76 | (random >> 68) << 64 | 0b10 << 62 | random & (1 << 62) - 1
    )
    return uuid.UUID(int=value)


def _with_data_dir(config: str | None, data_dir: str | os.PathLike[str]) -> str:
    """``config`` with ``server.data_dir`` set (inside its ``[server]`` table if it has one)."""
    line = f"data_dir = {json.dumps(os.fspath(data_dir))}"  # a JSON string is a TOML basic string
    config = config or ""
    header = re.search(r"^[ \t]*\[[ \t]*server[ \t]*\][ \t]*(#.*)?$", config, flags=re.MULTILINE)
    if header is None:
        return f"{config}\n[server]\n{line}\n"
    return f"{config[: header.end()]}\n{line}{config[header.end() :]}"


class System:
    """A running Herald: event store, domain bus, webhook service and realtime hub.

    ``preset`` is ``"development"``, ``"production"`` or ``"testing"`` (``None``: the config's
    ``preset`` key, else development); ``config`` is TOML text as in ``docs/config.md``.
    Use it as a context manager, or call :meth:`close`.
    """

    _ptr: Any = None  # so __del__ works when __init__ failed

    def __init__(self, preset: str | None = None, config: str | None = None) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._inflight = 0
        self._closing = False
        self._callbacks: set[Subscription] = set()
        preset_bytes = _text(preset) if preset is not None else b""
        config_bytes = _text(config) if config is not None else b""
        out = ffi.new("herald_system **")
        check(
            lib.herald_system_new(
                preset_bytes if preset is not None else ffi.NULL,
                len(preset_bytes),
                config_bytes if config is not None else ffi.NULL,
                len(config_bytes),
                out,
            )
        )
        self._ptr = out[0]
        _OPEN_SYSTEMS.add(self)

    # -- presets, as the seed's EventSystemFactory.createFor* ---------------------------------

    @classmethod
    def development(cls, data_dir: str | os.PathLike[str] | None = None, config: str | None = None) -> Self:
        """Disk store under ``data_dir`` (default ``./herald-data``), fsync never, no auth."""
        if data_dir is not None:
            config = _with_data_dir(config, data_dir)
        return cls("development", config)

    @classmethod
    def production(cls, config: str) -> Self:
        """fsync always with group commit; ``config`` must set ``auth.api_keys`` and ``auth.jwt_secret``."""
        return cls("production", config)

    @classmethod
    def testing(cls, config: str | None = None) -> Self:
        """In-memory store, synchronous dispatch."""
        return cls("testing", config)

    # -- lifetime ---------------------------------------------------------------------------

    def _enter(self) -> Any:
        with self._lock:
            ptr = self._ptr
            if ptr is None or self._closing:
                raise ClosedError("the system is closed")
            self._inflight += 1
            return ptr

    def _leave(self) -> None:
        with self._lock:
            self._inflight -= 1
            if self._closing and not self._inflight:
                self._idle.set()

    @property
    def closed(self) -> bool:
        return self._ptr is None or self._closing

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Stops accepting publishes (later ones raise ShuttingDownError), lets dispatch drain
        for up to ``timeout`` seconds and makes everything appended durable. Reads keep working
        until :meth:`close`. Returns whether dispatch drained in time."""
        drained = ffi.new("bool *")
        self._call(lambda ptr: lib.herald_system_shutdown(ptr, max(int(timeout * 1000), 0), drained))
        return bool(drained[0])

    def close(self) -> None:
        """Closes callback subscriptions, shuts down (5 s drain) and frees the system; waits for
        calls in flight on other threads. Idempotent."""
        with self._lock:
            if self._ptr is None or self._closing:
                return
            self._closing = True
            if not self._inflight:
                self._idle.set()
        for subscription in list(self._callbacks):
            subscription.close()
        while not self._idle.wait(0.1):  # in slices, so Ctrl-C still works
            pass
        with self._lock:
            ptr, self._ptr = self._ptr, None
        _OPEN_SYSTEMS.discard(self)
        lib.herald_system_free(ptr)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Never raise from a finalizer (at interpreter exit the library may be gone already).
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"<herald.System {'closed' if self.closed else 'open'}>"

    # -- publishing ---------------------------------------------------------------------------

    def publish_domain_event(
        self,
        type: str,
        aggregate_id: str,
        data: Any,
        *,
        metadata: Mapping[str, str] | None = None,
        id: uuid.UUID | str | None = None,
        expected_version: int | str | None = None,
        correlation_id: uuid.UUID | str | None = None,
        causation_id: uuid.UUID | str | None = None,
    ) -> Appended:
        """Appends one domain event, then dispatches it (durable per ``store.fsync`` first).

        ``expected_version``: ``None`` or ``"any"`` no condition, 0 the aggregate must not exist,
        n it must be at exactly n (else VersionConflictError; nothing stored). Re-publishing a
        stored ``id`` is an idempotent retry: ``already_appended`` and the original results.
        """
        draft: dict[str, Any] = {"type": type, "aggregate_id": aggregate_id, "data": data}
        if metadata is not None:
            draft["metadata"] = metadata
        if id is not None:
            draft["id"] = id
        if expected_version is not None:
            draft["expected_version"] = expected_version
        if correlation_id is not None:
            draft["correlation_id"] = correlation_id
        if causation_id is not None:
            draft["causation_id"] = causation_id
        body = encode(draft)
        result = ffi.new("herald_appended *")
        self._call(lambda ptr: lib.herald_publish_json(ptr, body, len(body), result, 1, ffi.NULL))
        return appended_from(result[0])

    def publish_domain_events(self, events: Iterable[Mapping[str, Any]] | bytes) -> BatchResult:
        """Appends events atomically (all or none), then dispatches them.

        Each mapping has ``type``, ``aggregate_id``, ``data`` and optionally ``metadata``,
        ``id``, ``expected_version``, ``correlation_id``, ``causation_id`` (the spec's draft;
        UUIDs may be ``uuid.UUID``). ``bytes`` are taken as a ready JSON body (see
        :meth:`publish_json`).
        """
        if isinstance(events, (bytes, bytearray, memoryview)):
            return self.publish_json(events)
        drafts = events if isinstance(events, list) else list(events)
        count = len(drafts)
        body = encode({"events": drafts})
        results = ffi.new("herald_appended[]", count or 1)
        self._call(lambda ptr: lib.herald_publish_json(ptr, body, len(body), results, count, ffi.NULL))
        first = results[0]
        return BatchResult(first.position, count, bool(first.already_appended), results, count)

    def publish_json(self, body: bytes | bytearray | memoryview, *, capacity: int = 1) -> BatchResult:
        """Publishes a ready JSON body of ``POST /v1/events``: one draft object, or
        ``{"events": [...]}`` for an atomic batch; the fastest path. ``capacity`` bounds how many
        per-event results :meth:`BatchResult.results` can list."""
        capacity = max(capacity, 1)
        results = ffi.new("herald_appended[]", capacity)
        count = ffi.new("size_t *")
        data = body if isinstance(body, bytes) else ffi.from_buffer(body)
        self._call(lambda ptr: lib.herald_publish_json(ptr, data, len(data), results, capacity, count))
        first = results[0]
        return BatchResult(first.position, count[0], bool(first.already_appended), results, capacity)

    def publish_integration_event(
        self,
        event: Mapping[str, Any] | None = None,
        /,
        *,
        routing_key: str | None = None,
        version: str | None = None,
        source: Mapping[str, Any] | str | None = None,
        data: Any = _MISSING,
        id: uuid.UUID | str | None = None,
        correlation_id: uuid.UUID | str | None = None,
        causation_id: uuid.UUID | str | None = None,
    ) -> Appended:
        """Stores an integration event (``POST /v1/integration-events``), then routes it to
        every webhook whose filter matches its ``routing_key``. Give the fields as one mapping,
        as keywords, or both (keywords win). ``source`` may be a service name."""
        body = _request(
            event,
            data,
            routing_key=routing_key,
            version=version,
            source=source,
            id=id,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )
        if isinstance(body.get("source"), str):
            body["source"] = {"service": body["source"]}
        encoded = encode(body)
        result = ffi.new("herald_appended *")
        self._call(lambda ptr: lib.herald_publish_integration_json(ptr, encoded, len(encoded), result))
        return appended_from(result[0])

    def broadcast_websocket_event(
        self,
        message: Mapping[str, Any] | None = None,
        /,
        *,
        type: str | None = None,
        event: str | None = None,
        data: Any = _MISSING,
        target: Mapping[str, Any] | str | None = None,
        source: Mapping[str, Any] | None = None,
        priority: str | None = None,
        persistent: bool | None = None,
        id: str | None = None,
        timestamp: datetime | str | None = None,
    ) -> BroadcastResult:
        """Broadcasts a WebSocket event (``POST /v1/broadcast``): a persistent one is stored
        first (then ``position`` is set), then it is queued on every connection it targets.
        ``target`` is ``{"type", "id"?, "exclude_users"?}``, or ``"project:p1"`` / ``"all"``."""
        body = _request(
            message,
            data,
            type=type,
            event=event,
            target=target,
            source=source,
            priority=priority,
            persistent=persistent,
            id=id,
            timestamp=timestamp,
        )
        if isinstance(body.get("target"), str):
            kind, _, target_id = body["target"].partition(":")
            body["target"] = {"type": kind, "id": target_id} if target_id else {"type": kind}
        if body.get("id") is None:
            # The ABI does not hand back the id Herald would make, so make it here (a UUIDv7, as
            # Herald does) to be able to return it.
            body["id"] = str(_uuid7())
        encoded = encode(body)
        result = ffi.new("herald_broadcast_result *")
        self._call(lambda ptr: lib.herald_broadcast_json(ptr, encoded, len(encoded), result))
        persisted = bool(result.persisted)
        return BroadcastResult(str(body["id"]), persisted, result.position if persisted else None, result.delivered)

    # -- reading ------------------------------------------------------------------------------

    def _reader(self, open_reader: Callable[[Any, Any], int], limit: int | None) -> EventReader:
        if limit == 0:
            return EventReader(None)  # the ABI reads 0 as "no limit"
        out = ffi.new("herald_reader **")
        self._call(lambda ptr: open_reader(ptr, out))
        return EventReader(out[0])

    def read_all(self, from_position: int = 0, limit: int | None = None) -> EventReader:
        """Every event (all kinds) from ``from_position`` in position order, up to the log's end
        when called. GoneError if retention removed ``from_position``."""
        max_events = _limit(limit)
        return self._reader(lambda ptr, out: lib.herald_read_all(ptr, from_position, max_events, out), limit)

    def read_by_type(self, type: Text, from_position: int = 0, limit: int | None = None) -> EventReader:
        """The domain events of one type from ``from_position`` (by the type index)."""
        event_type = _text(type)
        max_events = _limit(limit)
        return self._reader(
            lambda ptr, out: lib.herald_read_by_type(ptr, event_type, len(event_type), from_position, max_events, out),
            limit,
        )

    def read_since(self, when: datetime | int, limit: int | None = None) -> EventReader:
        """Every event appended at or after ``when`` (a datetime, naive meaning local time, or
        unix nanoseconds)."""
        timestamp_ns = _nanoseconds(when)
        max_events = _limit(limit)
        return self._reader(lambda ptr, out: lib.herald_read_since(ptr, timestamp_ns, max_events, out), limit)

    def read_stream(self, aggregate_id: Text, from_version: int = 1, limit: int | None = None) -> EventReader:
        """One aggregate's events from ``from_version`` (1-based) in version order; an unknown
        aggregate reads as empty."""
        aggregate = _text(aggregate_id)
        max_events = _limit(limit)
        return self._reader(
            lambda ptr, out: lib.herald_read_stream(ptr, aggregate, len(aggregate), from_version, max_events, out),
            limit,
        )

    def stream_version(self, aggregate_id: Text) -> int:
        """The aggregate's current version (0: no such stream)."""
        aggregate = _text(aggregate_id)
        version = ffi.new("uint64_t *")
        self._call(lambda ptr: lib.herald_stream_version(ptr, aggregate, len(aggregate), version))
        return int(version[0])

    # -- snapshots ----------------------------------------------------------------------------

    def save_snapshot(self, aggregate_id: Text, version: int, state: bytes | bytearray | memoryview) -> None:
        """Saves ``state`` as the aggregate's snapshot at ``version``. NotFoundError if the
        stream does not exist; VersionConflictError if it is not at ``version`` yet."""
        aggregate = _text(aggregate_id)
        data = state if isinstance(state, bytes) else ffi.from_buffer(state)
        self._call(lambda ptr: lib.herald_snapshot_save(ptr, aggregate, len(aggregate), version, data, len(data)))

    def load_snapshot(self, aggregate_id: Text) -> Snapshot | None:
        """The aggregate's newest snapshot, or ``None`` if it has none."""
        aggregate = _text(aggregate_id)
        out = ffi.new("herald_snapshot **")
        try:
            self._call(lambda ptr: lib.herald_snapshot_load(ptr, aggregate, len(aggregate), out))
        except NotFoundError:
            return None
        handle = out[0]
        try:
            view = ffi.new("herald_snapshot_view *")
            check(lib.herald_snapshot_get(handle, view))
            return Snapshot(view.aggregate_version, view.timestamp_ns, ffi.buffer(view.state, view.state_len)[:])
        finally:
            lib.herald_snapshot_free(handle)

    # -- subscriptions ------------------------------------------------------------------------

    def subscribe(self, pattern: str | None = None, start: Start = "end") -> Subscription:
        """A pull subscription: iterate it, or call ``next(timeout)``. ``pattern`` (``None``:
        every event of every kind) is an AMQP topic pattern over domain events' routing keys
        (``TaskCreated`` → ``task.created``; ``*`` one word, ``#`` any number)."""
        start_kind, position = start_arguments(start)
        pattern_bytes = _text(pattern) if pattern is not None else ffi.NULL
        pattern_len = len(pattern_bytes) if pattern is not None else 0
        out = ffi.new("herald_subscription **")
        self._call(lambda ptr: lib.herald_subscription_new(ptr, pattern_bytes, pattern_len, start_kind, position, out))
        return Subscription._pull(self, out[0])

    def on(self, callback: Callable[[Event], Any], pattern: str | None = None, start: Start = "end") -> Subscription:
        """Calls ``callback(event)`` on Herald's subscription thread for each matching event, in
        order, until the subscription (or the system) is closed. Events published from inside
        the callback are caused by the event it handles (``causation_id``, ``correlation_id``).
        An exception in the callback goes to ``sys.unraisablehook``; the next event still comes."""
        start_kind, position = start_arguments(start)
        pattern_bytes = _text(pattern) if pattern is not None else ffi.NULL
        pattern_len = len(pattern_bytes) if pattern is not None else 0
        c_callback, state = Subscription._make_callback(callback)
        out = ffi.new("herald_subscription **")
        self._call(
            lambda ptr: lib.herald_subscription_callback_new(
                ptr, pattern_bytes, pattern_len, start_kind, position, c_callback, ffi.NULL, out
            )
        )
        subscription = Subscription._with_callback(self, out[0], c_callback, state)
        with self._lock:
            self._callbacks.add(subscription)
        return subscription

    def _forget(self, subscription: Subscription) -> None:
        with self._lock:
            self._callbacks.discard(subscription)

    # -- webhooks and metrics -----------------------------------------------------------------

    def _call(self, call: Callable[[Any], int]) -> None:
        """Runs one C call on the live handle (counted in, so ``close`` waits for it) and raises
        the exception of a failed status."""
        ptr = self._enter()
        try:
            status = call(ptr)
            error = error_for(status) if status else None
        finally:
            self._leave()
        if error is not None:
            raise error

    def _buffer_json(self, call: Callable[[Any, Any], int]) -> Any:
        out = ffi.new("herald_buffer **")
        self._call(lambda ptr: call(ptr, out))
        buffer = out[0]
        try:
            data = ffi.new("const uint8_t **")
            length = ffi.new("size_t *")
            check(lib.herald_buffer_data(buffer, data, length))
            return json.loads(ffi.buffer(data[0], length[0])[:])
        finally:
            lib.herald_buffer_free(buffer)

    def register_webhook(
        self,
        url: str,
        filters: Iterable[str] | str,
        *,
        description: str | None = None,
        secret: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Registers a webhook endpoint for integration events whose routing key matches one of
        ``filters`` (``"task.*"``, ``"project.#"``). Returns the endpoint (``id``, ``secret``
        ``whsec_…`` for verifying signatures, …). InvalidArgumentError for a bad URL or filter."""
        body: dict[str, Any] = {"url": url, "filter": [filters] if isinstance(filters, str) else list(filters)}
        if description is not None:
            body["description"] = description
        if secret is not None:
            body["secret"] = secret
        if metadata is not None:
            body["metadata"] = metadata  # accepted by the spec's body; Herald stores none today
        encoded = encode(body)
        result: dict[str, Any] = self._buffer_json(
            lambda ptr, out: lib.herald_webhook_create_json(ptr, encoded, len(encoded), out)
        )
        return result

    def list_webhooks(self) -> list[dict[str, Any]]:
        """The registered webhook endpoints."""
        listing = self._buffer_json(lambda ptr, out: lib.herald_webhook_list_json(ptr, out))
        webhooks: list[dict[str, Any]] = listing["webhooks"]
        return webhooks

    def delete_webhook(self, id: Text) -> None:
        """Removes an endpoint and its pending deliveries; NotFoundError if there is none."""
        endpoint = _text(id)
        self._call(lambda ptr: lib.herald_webhook_delete(ptr, endpoint, len(endpoint)))

    def metrics(self) -> dict[str, Any]:
        """``{"domain_events", "integration_events", "websocket_events", "event_store"}`` as
        ``GET /v1/metrics`` gives them (snake_case keys)."""
        metrics: dict[str, Any] = self._buffer_json(lambda ptr, out: lib.herald_metrics_json(ptr, out))
        return metrics
