"""The JSON encoder for the bodies sent to Herald: orjson when it is installed, else the standard
library's. ``HERALD_PYTHON_JSON=stdlib`` forces the standard library, ``=orjson`` requires orjson.

Both write the same JSON for what the standard library accepts: ``uuid.UUID`` as its string,
other mappings as objects, sets as arrays, a ``datetime`` as RFC 3339 in UTC (naive meaning local
time). orjson is used as far as it agrees; a body it refuses (non-str dict keys, integers beyond
64 bits, nesting deeper than 254, lone surrogates) or writes with a ``null`` in it (orjson writes
NaN and infinities as null, where the standard library writes ``NaN``, which Herald refuses) is
encoded again by the standard library. orjson also accepts what the standard library refuses with
TypeError: dataclasses, enums, ``date`` and ``time``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

__all__ = ["ENCODER", "encode", "encode_stdlib"]


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive means local time, as datetime.timestamp() reads it
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# Compact, no per-call encoder construction; NaN let through so Herald (which refuses it) reports
# it as InvalidArgumentError.
_stdlib = json.JSONEncoder(separators=(",", ":"), default=_default, check_circular=False).encode


def encode_stdlib(value: Any) -> bytes:
    return _stdlib(value).encode()


encode: Callable[[Any], bytes] = encode_stdlib
ENCODER = "stdlib"

_choice = os.environ.get("HERALD_PYTHON_JSON", "").strip().lower()
if _choice not in ("", "auto", "orjson", "stdlib"):
    raise ValueError(f'HERALD_PYTHON_JSON must be "orjson", "stdlib" or "auto", not {_choice!r}')
if _choice != "stdlib":
    try:
        import orjson
    except ImportError:
        if _choice == "orjson":
            raise
    else:
        _dumps = orjson.dumps
        _OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME  # datetimes through _default, as the stdlib writes them

        def encode_orjson(value: Any) -> bytes:
            try:
                body = _dumps(value, default=_default, option=_OPTIONS)
            except TypeError:  # orjson.JSONEncodeError
                return encode_stdlib(value)  # the stdlib's rules, or its error
            if b"null" in body:
                return encode_stdlib(value)  # a null may be a NaN
            return body

        encode, ENCODER = encode_orjson, "orjson"
