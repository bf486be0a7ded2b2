"""The system's lifetime and configuration, webhooks, metrics, durability across reopen, and
loading the library from its header."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import herald
from herald import _ffi

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def test_presets_and_config_errors(tmp_path: Path) -> None:
    """Bad presets, unknown keys and production without secrets are ConfigError naming the key."""
    with pytest.raises(herald.ConfigError, match="bogus") as raised:
        herald.System("bogus")
    assert raised.value.code == "HERALD_INVALID_CONFIG" and raised.value.status == 4
    with pytest.raises(herald.ConfigError, match="fsnyc"):
        herald.System.testing('[store]\nfsnyc = "never"\n')
    with pytest.raises(herald.ConfigError, match="auth.api_keys"):
        herald.System.production(f'[server]\ndata_dir = "{tmp_path}"\n')
    with pytest.raises(herald.ConfigError):
        herald.System.testing("this is not toml")
    production = herald.System.production(
        f'[server]\ndata_dir = "{tmp_path / "prod"}"\n[auth]\napi_keys = ["k1"]\njwt_secret = "0123456789abcdef0123456789abcdef"\n'
    )
    with production:
        assert production.publish_domain_event("A", "a", 1).position == 0
    with herald.System(config='preset = "testing"') as from_config:  # preset from the TOML
        assert from_config.publish_domain_event("A", "a", 1).position == 0


def test_close_is_idempotent_and_later_calls_raise(system: herald.System) -> None:
    """After close every call raises ClosedError (a ShuttingDownError); close() twice is fine."""
    system.close()
    system.close()
    assert system.closed
    for call in (
        lambda: system.publish_domain_event("A", "a", 1),
        lambda: system.publish_domain_events([{"type": "A", "aggregate_id": "a", "data": 1}]),
        lambda: system.read_all(),
        lambda: system.metrics(),
        lambda: system.subscribe(),
        lambda: system.shutdown(),
    ):
        with pytest.raises(herald.ClosedError) as raised:
            call()
        assert isinstance(raised.value, herald.ShuttingDownError)


def test_shutdown_refuses_publishes_but_reads_work(system: herald.System) -> None:
    """shutdown() drains and refuses later publishes (ShuttingDownError); reads go on."""
    system.publish_domain_event("A", "a", 1)
    assert system.shutdown(timeout=1.0) is True
    with pytest.raises(herald.ShuttingDownError) as raised:
        system.publish_domain_event("A", "a", 2)
    assert not isinstance(raised.value, herald.ClosedError)
    assert [e.data for e in system.read_all()] == [1]


def test_close_waits_for_calls_in_flight() -> None:
    """close() while other threads publish: each publish either lands or raises ClosedError."""
    system = herald.System.testing()
    outcomes: list[str] = []

    def hammer() -> None:
        for i in range(2000):
            try:
                system.publish_domain_event("A", "a", i)
            except herald.ClosedError:
                outcomes.append("closed")
                return
        outcomes.append("done")

    workers = [threading.Thread(target=hammer) for _ in range(2)]
    for worker in workers:
        worker.start()
    system.close()
    for worker in workers:
        worker.join()
    assert len(outcomes) == 2


def test_webhooks(system: herald.System) -> None:
    """register / list / delete webhook endpoints; a bad URL or unknown id is typed."""
    endpoint = system.register_webhook("https://hooks.example.com/herald", ["task.*", "project.#"], description="tasks")
    assert endpoint["id"].startswith("wh_") and endpoint["secret"].startswith("whsec_")
    assert endpoint["filter"] == ["task.*", "project.#"] and endpoint["enabled"] is True
    assert [w["id"] for w in system.list_webhooks()] == [endpoint["id"]]
    own_secret = system.register_webhook("https://hooks.example.com/b", "billing.#", secret=endpoint["secret"])
    assert own_secret["secret"] == endpoint["secret"]
    system.delete_webhook(endpoint["id"])
    assert [w["id"] for w in system.list_webhooks()] == [own_secret["id"]]
    with pytest.raises(herald.NotFoundError):
        system.delete_webhook(endpoint["id"])
    with pytest.raises(herald.InvalidArgumentError, match="url"):
        system.register_webhook("ftp://example.com", ["task.*"])
    with pytest.raises(herald.InvalidArgumentError, match="filter"):
        system.register_webhook("https://example.com", [])


def test_metrics_shape(system: herald.System) -> None:
    """metrics() keeps GET /v1/metrics' snake_case shape, as the seed's getMetrics() groups it."""
    system.publish_domain_event("A", "a", 1)
    metrics = system.metrics()
    assert set(metrics) >= {"domain_events", "integration_events", "websocket_events", "event_store"}
    assert set(metrics["domain_events"]) >= {"published", "handled", "failed", "average_handling_time_ms"}
    assert set(metrics["integration_events"]) >= {"published", "webhooks_delivered", "webhooks_failed"}
    assert set(metrics["websocket_events"]) >= {"broadcast", "delivered", "connections"}
    assert set(metrics["event_store"]) >= {"total_events", "total_snapshots", "storage_size"}
    assert metrics["domain_events"]["published"] == 1 and metrics["event_store"]["total_events"] == 1


def test_reopening_a_data_dir_keeps_everything(tmp_path: Path) -> None:
    """Events, stream versions, snapshots and webhooks survive close and reopen (disk store)."""
    data_dir = tmp_path / "herald-data"
    with herald.System.development(data_dir=data_dir) as system:
        batch = system.publish_domain_events(
            [{"type": "TaskCreated", "aggregate_id": f"task-{i}", "data": {"i": i}} for i in range(100)]
        )
        system.publish_domain_event("TaskCompleted", "task-1", {"done": True})
        system.save_snapshot("task-1", 2, b"snap")
        hook = system.register_webhook("https://example.com/h", ["task.*"])
    assert (data_dir / "segments").is_dir()
    config = '[server]\nlog_level = "warn"\n[store]\nfsync = "always"\n'
    with herald.System.development(data_dir=data_dir, config=config) as system:
        events = list(system.read_all())
        assert len(events) == 101 and events[0].id == batch.results()[0].id
        assert system.stream_version("task-1") == 2
        snapshot = system.load_snapshot("task-1")
        assert snapshot is not None and snapshot.state == b"snap"
        assert [w["id"] for w in system.list_webhooks()] == [hook["id"]]
        assert system.publish_domain_event("A", "a", 1).position == 101


def test_a_data_dir_is_locked(tmp_path: Path) -> None:
    """A second system on an open data dir is refused (StorageError), not corrupted."""
    with herald.System.development(data_dir=tmp_path), pytest.raises(herald.StorageError, match="in use"):
        herald.System.development(data_dir=tmp_path)


def test_header_becomes_a_cdef() -> None:
    """The C23 enum block becomes `typedef uint32_t` plus constants; nothing is hand-declared."""
    cdef = _ffi.cdef_from_header(_ffi.header_path.read_text())
    assert "typedef uint32_t herald_status;" in cdef
    assert "#define HERALD_VERSION_CONFLICT 5" in cdef
    assert "enum" not in cdef and "#if" not in cdef and "/*" not in cdef and "extern" not in cdef
    lib = _ffi.lib
    assert (
        herald.library_version() == f"{lib.HERALD_VERSION_MAJOR}.{lib.HERALD_VERSION_MINOR}.{lib.HERALD_VERSION_PATCH}"
    )
    c23 = "enum s\n#if __STDC_VERSION__ >= 202311L\n  : uint32_t\n#endif\n {\n  A = 0,\n  B = 3,\n  C,\n};\n"
    assert _ffi.cdef_from_header(c23).split("\n")[:4] == [
        "#define A 0",
        "#define B 3",
        "#define C 4",
        "typedef uint32_t s;",
    ]


def test_missing_library_is_a_clear_import_error(tmp_path: Path) -> None:
    """HERALD_LIBRARY pointing nowhere fails the import with a message naming it."""
    environment = dict(os.environ, HERALD_LIBRARY=str(tmp_path / "nope.so"), PYTHONPATH=str(PACKAGE_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", "import herald"],
        check=False,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "nope.so" in result.stderr


def test_exit_with_running_handlers_is_clean() -> None:
    """A script that exits while handlers still receive events ends with status 0 (an atexit hook
    closes open systems before Python stops its threads)."""
    script = """
import threading, time, herald
system = herald.System.testing()
system.on(lambda event: None)
system.on(lambda event: time.sleep(0.001))
def publish():
    for i in range(1_000_000):
        try:
            system.publish_domain_event("A", "a", i)
        except herald.HeraldError:
            return
threading.Thread(target=publish, daemon=True).start()
time.sleep(0.2)
"""
    environment = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", script], check=False, env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
