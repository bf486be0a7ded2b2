"""Herald for Python: an event engine (event store, domain bus, webhooks, realtime hub) through
its C ABI, in process.

    import herald

    with herald.System.testing() as system:
        system.publish_domain_event("TaskCreated", "task-123", {"title": "Implement feature X"})
        for event in system.read_stream("task-123"):
            print(event.position, event.type, event.data)

The concepts are those of the TypeScript event system (``EventSystemFactory.createForDevelopment``,
``createForProduction``, ``createForTesting`` → :meth:`System.development`,
:meth:`System.production`, :meth:`System.testing`; ``publishDomainEvent`` →
:meth:`System.publish_domain_event`; ``getMetrics`` → :meth:`System.metrics`).
"""

from __future__ import annotations

from ._errors import (
    ClosedError,
    ConfigError,
    ConflictError,
    DuplicateIdError,
    GoneError,
    HeraldError,
    HeraldPanicError,
    InternalError,
    InvalidArgumentError,
    InvalidUtf8Error,
    NotFoundError,
    NullParameterError,
    OverloadedError,
    ShuttingDownError,
    StorageError,
    TooLargeError,
    VersionConflictError,
)
from ._ffi import ffi as _ffi_ffi
from ._ffi import lib as _ffi_lib
from ._json import ENCODER as _ENCODER
from ._reader import EventReader
from ._subscription import Start, Subscription
from ._system import System
from ._types import Appended, BatchResult, BroadcastResult, Event, EventKind, Snapshot

__version__ = "0.1.0"


def library_version() -> str:
    """The version of the loaded libherald (``herald_version()``)."""
    return str(_ffi_ffi.string(_ffi_lib.herald_version()).decode("ascii"))


def json_encoder() -> str:
    """The JSON encoder of the bodies sent to Herald: ``"orjson"`` when it is installed (unless
    ``HERALD_PYTHON_JSON=stdlib``), else ``"stdlib"``."""
    return _ENCODER


__all__ = [
    "Appended",
    "BatchResult",
    "BroadcastResult",
    "ClosedError",
    "ConfigError",
    "ConflictError",
    "DuplicateIdError",
    "Event",
    "EventKind",
    "EventReader",
    "GoneError",
    "HeraldError",
    "HeraldPanicError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidUtf8Error",
    "NotFoundError",
    "NullParameterError",
    "OverloadedError",
    "ShuttingDownError",
    "Snapshot",
    "Start",
    "StorageError",
    "Subscription",
    "System",
    "TooLargeError",
    "VersionConflictError",
    "json_encoder",
    "library_version",
]
