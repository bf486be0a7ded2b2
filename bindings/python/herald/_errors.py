"""Herald's statuses as Python exceptions.

Every failing C call returns a ``herald_status`` and leaves its message in a thread-local slot
(``herald_last_error``); :func:`check` turns the pair into the exception class of that status,
read on the same thread right after the call. ``HERALD_TIMEOUT`` and ``HERALD_END`` are not
errors: callers handle them before calling :func:`check`.
"""

from __future__ import annotations

from typing import NoReturn

from ._ffi import ffi, lib

__all__ = [
    "ClosedError",
    "ConfigError",
    "ConflictError",
    "DuplicateIdError",
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
    "StorageError",
    "TooLargeError",
    "VersionConflictError",
    "check",
    "error_for",
    "raise_status",
    "status_name",
]


def status_name(status: int) -> str:
    """The stable name of a status, e.g. ``"HERALD_VERSION_CONFLICT"``."""
    return str(ffi.string(lib.herald_status_name(status)).decode("ascii"))


class HeraldError(Exception):
    """A Herald call failed. ``status`` is the C status number, ``code`` its name, ``message``
    Herald's description (it names the field and the limit where one applies)."""

    status: int
    code: str
    message: str

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status if status is not None else _DEFAULT_STATUS.get(type(self), lib.HERALD_INTERNAL)
        self.code = status_name(self.status)
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} ({self.code})" if self.message else self.code


class NullParameterError(HeraldError):
    """A required pointer was NULL (a bug in these bindings if it ever surfaces)."""


class InvalidUtf8Error(HeraldError, ValueError):
    """A string argument was not UTF-8."""


class InvalidArgumentError(HeraldError, ValueError):
    """An argument broke a rule; the message names the field and the limit."""


class ConfigError(HeraldError, ValueError):
    """The preset name or the TOML config is invalid; the message names the key."""


class VersionConflictError(HeraldError):
    """``expected_version`` did not hold; nothing was stored."""


class DuplicateIdError(HeraldError):
    """Some event ids are stored already with other contents; nothing was stored."""


class NotFoundError(HeraldError):
    """No such stream, snapshot or webhook endpoint."""


class GoneError(HeraldError):
    """The position was removed by retention."""


class OverloadedError(HeraldError):
    """The dispatch ring stayed full; nothing was stored. Retry later."""


class ShuttingDownError(HeraldError):
    """The system is shutting down; nothing was stored."""


class ClosedError(ShuttingDownError):
    """The handle (system, reader or subscription) was closed on the Python side."""


class TooLargeError(HeraldError):
    """The batch does not fit in one store segment."""


class StorageError(HeraldError):
    """The store or a journal failed (I/O, corruption, read-only after an fsync error, locked)."""


class ConflictError(HeraldError):
    """The operation does not apply in the current state."""


class HeraldPanicError(HeraldError):
    """Herald panicked inside the call; the handle stays usable."""


class InternalError(HeraldError):
    """Anything else (a thread could not be started, …)."""


_CLASSES: dict[int, type[HeraldError]] = {
    lib.HERALD_NULL_PARAMETER: NullParameterError,
    lib.HERALD_INVALID_UTF8: InvalidUtf8Error,
    lib.HERALD_INVALID_ARGUMENT: InvalidArgumentError,
    lib.HERALD_INVALID_CONFIG: ConfigError,
    lib.HERALD_VERSION_CONFLICT: VersionConflictError,
    lib.HERALD_DUPLICATE_ID: DuplicateIdError,
    lib.HERALD_NOT_FOUND: NotFoundError,
    lib.HERALD_GONE: GoneError,
    lib.HERALD_OVERLOADED: OverloadedError,
    lib.HERALD_SHUTTING_DOWN: ShuttingDownError,
    lib.HERALD_TOO_LARGE: TooLargeError,
    lib.HERALD_STORAGE: StorageError,
    lib.HERALD_CONFLICT: ConflictError,
    lib.HERALD_PANIC: HeraldPanicError,
    lib.HERALD_INTERNAL: InternalError,
}
_DEFAULT_STATUS: dict[type[HeraldError], int] = {cls: status for status, cls in _CLASSES.items()}
_DEFAULT_STATUS[ClosedError] = lib.HERALD_SHUTTING_DOWN


def error_for(status: int) -> HeraldError:
    """The exception of a failed call; must run on the calling thread, right after it (the
    message is thread-local and the next failing call replaces it)."""
    message = ffi.string(lib.herald_last_error()).decode("utf-8", "replace")
    return _CLASSES.get(status, HeraldError)(message, status)


def raise_status(status: int) -> NoReturn:
    """Raises :func:`error_for` ``(status)``."""
    raise error_for(status)


def check(status: int) -> None:
    """Raises unless ``status`` is ``HERALD_OK``."""
    if status:
        raise_status(status)
