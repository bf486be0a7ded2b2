"""The JSON encoders (orjson when installed, else the standard library's): the same bodies for
what the standard library accepts, and the same errors."""

from __future__ import annotations

import json
import math
import os
import types
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import herald
from herald import _json, _system

ENCODERS: dict[str, Callable[[Any], bytes]] = {"stdlib": _json.encode_stdlib}
if hasattr(_json, "encode_orjson"):
    ENCODERS["orjson"] = _json.encode_orjson


def test_the_selected_encoder_is_reported() -> None:
    """orjson when installed, unless HERALD_PYTHON_JSON=stdlib."""
    forced = os.environ.get("HERALD_PYTHON_JSON", "").strip().lower()
    try:
        import orjson  # noqa: F401
    except ImportError:
        installed = False
    else:
        installed = True
    expected = "orjson" if installed and forced != "stdlib" else "stdlib"
    assert herald.json_encoder() == expected
    assert _json.encode is ENCODERS[expected]


@pytest.fixture(params=sorted(ENCODERS))
def encoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Any], bytes]]:
    """Each available encoder in turn, as the one System publishes with."""
    chosen = ENCODERS[request.param]
    monkeypatch.setattr(_system, "encode", chosen)
    yield chosen


EVENT_ID = uuid.UUID("0191e0f4-5c4a-7b7e-9a53-3c1b2f8e4d21")
MOMENT = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
# What orjson writes itself: no null, str keys, 64-bit integers.
NATIVE = {
    "uuid": EVENT_ID,
    "when": MOMENT,
    "set": {3},
    "tuple": (1, "a"),
    "mapping": types.MappingProxyType({"k": "v"}),
    "text": "café ✓",
    "nested": [{"a": [1.5, -0.0, 1e300, -(2**63)]}],
}
NATIVE_DECODED = {
    "uuid": str(EVENT_ID),
    "when": "2024-05-06T05:08:09.123456Z",
    "set": [3],
    "tuple": [1, "a"],
    "mapping": {"k": "v"},
    "text": "café ✓",
    "nested": [{"a": [1.5, -0.0, 1e300, -(2**63)]}],
}
# What orjson refuses or may get wrong (null), so the standard library writes.
TRICKY = {**NATIVE, "keys": {1: "int", 2.5: "float", False: "bool", None: "none"}, "big": 2**70, "null": None}
TRICKY_DECODED = {
    **NATIVE_DECODED,
    "keys": {"1": "int", "2.5": "float", "false": "bool", "null": "none"},
    "big": 2**70,
    "null": None,
}


def test_encoders_agree(encoder: Callable[[Any], bytes], system: herald.System) -> None:
    """Each encoder's bodies are accepted by Herald and read back as the standard library wrote them."""
    native = encoder(NATIVE)
    assert json.loads(native) == NATIVE_DECODED
    assert ("café".encode() in native) == (encoder is ENCODERS.get("orjson"))  # the stdlib escapes it
    assert json.loads(encoder(TRICKY)) == TRICKY_DECODED
    system.publish_domain_event("T", "a", NATIVE, metadata=types.MappingProxyType({"m": "1"}), id=EVENT_ID)
    system.publish_domain_events([{"type": "T", "aggregate_id": "a", "data": NATIVE, "causation_id": EVENT_ID}] * 2)
    system.publish_integration_event(routing_key="t.x", version="1", source="s", data=NATIVE)
    broadcast = system.broadcast_websocket_event(
        type="t", event="e", data=NATIVE, target="all", persistent=True, timestamp=MOMENT
    )
    system.publish_domain_event("T", "b", TRICKY)
    system.publish_domain_events([{"type": "T", "aggregate_id": "b", "data": TRICKY}] * 2)
    events = list(system.read_all())
    assert [e.data for e in events[:4]] == [NATIVE_DECODED] * 4
    assert [e.data for e in events[5:]] == [TRICKY_DECODED] * 3
    assert events[0].id == EVENT_ID and events[0].metadata == {"m": "1"} and events[1].causation_id == EVENT_ID
    assert events[4].data["data"] == NATIVE_DECODED and events[4].data["id"] == broadcast.id
    assert events[4].data["timestamp"].startswith("2024-05-06T05:08:09.123")


def test_encoders_refuse_alike(encoder: Callable[[Any], bytes], system: herald.System) -> None:
    """NaN and infinities reach Herald as the invalid JSON they are (orjson would write null);
    what neither can encode is a TypeError before Herald."""
    for value in (math.nan, [1, {"x": math.inf}], -math.inf):
        with pytest.raises(herald.InvalidArgumentError):
            system.publish_domain_event("T", "a", value)
        with pytest.raises(herald.InvalidArgumentError):
            system.publish_domain_events([{"type": "T", "aggregate_id": "a", "data": {"v": value, "n": None}}])
    with pytest.raises(TypeError):
        system.publish_domain_event("T", "a", {"x": object()})
    with pytest.raises(TypeError):
        system.publish_domain_event("T", "a", {(1, 2): "tuple key"})
    assert list(system.read_all()) == []
