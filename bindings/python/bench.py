"""Publish throughput of the Python bindings, single events and atomic batches of 1,000.

    python3 bindings/python/bench.py [--seconds 2] [--batch 1000]

Stores: the testing preset (in-memory) and the development preset on a temporary directory
(mmap segments, `[store] fsync = "never"`). Uses target/release/libherald.so when it exists
(unless HERALD_LIBRARY says otherwise). Each row runs for about `--seconds`.

Rows: "dicts built per batch" counts building the drafts too; "same list of dicts" reuses one
list (what the bindings cost: one JSON encoding and one C call per batch); "pre-encoded bytes"
publishes one ready JSON body (Herald's own cost through the JSON ABI). The peer rows append the
same rows (type, aggregate id, JSON data) to sqlite3 from the standard library, in memory and in
a WAL file with synchronous=OFF, one transaction per batch; "encoding alone" is the JSON encoder's
share of the bindings' batched path (orjson when installed; HERALD_PYTHON_JSON=stdlib forces the
standard library's json, see the header line "json encoder").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
RELEASE = HERE.parent.parent / "target" / "release" / "libherald.so"
if "HERALD_LIBRARY" not in os.environ and RELEASE.is_file():
    os.environ["HERALD_LIBRARY"] = str(RELEASE)
sys.path.insert(0, str(HERE))

import herald
from herald import _ffi, _json


def measure(seconds: float, step: Callable[[], int]) -> tuple[int, float]:
    """Runs `step` (which returns how many events it published) for about `seconds`."""
    step()  # warm up: first segment, first allocation
    events = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        events += step()
        now = time.perf_counter()
        if now >= deadline:
            return events, now - started


def run(system: herald.System, seconds: float, batch_size: int) -> list[tuple[str, int, float]]:
    counter = iter(range(1 << 62))

    def single() -> int:
        for _ in range(100):
            i = next(counter)
            system.publish_domain_event("TaskCreated", f"task-{i % 1000}", {"title": "Implement feature X", "n": i})
        return 100

    def batched() -> int:
        base = next(counter) * batch_size
        system.publish_domain_events(
            [
                {
                    "type": "TaskCreated",
                    "aggregate_id": f"task-{j % 1000}",
                    "data": {"title": "Implement feature X", "n": base + j},
                }
                for j in range(batch_size)
            ]
        )
        return batch_size

    drafts = [
        {"type": "TaskCreated", "aggregate_id": f"task-{j % 1000}", "data": {"title": "Implement feature X", "n": j}}
        for j in range(batch_size)
    ]

    def batched_ready_dicts() -> int:
        system.publish_domain_events(drafts)
        return batch_size

    body = json.dumps({"events": drafts}, separators=(",", ":")).encode()

    def pre_encoded() -> int:
        system.publish_json(body)
        return batch_size

    return [
        ("single", *measure(seconds, single)),
        (f"batch of {batch_size} (dicts built per batch)", *measure(seconds, batched)),
        (f"batch of {batch_size} (same list of dicts)", *measure(seconds, batched_ready_dicts)),
        (f"batch of {batch_size} (pre-encoded bytes)", *measure(seconds, pre_encoded)),
    ]


def run_sqlite(connection: sqlite3.Connection, seconds: float, batch_size: int) -> list[tuple[str, int, float]]:
    connection.execute("CREATE TABLE events (position INTEGER PRIMARY KEY, type TEXT, aggregate_id TEXT, data TEXT)")
    counter = iter(range(1 << 62))

    def single() -> int:
        for _ in range(100):
            i = next(counter)
            with connection:
                connection.execute(
                    "INSERT INTO events (type, aggregate_id, data) VALUES (?, ?, ?)",
                    ("TaskCreated", f"task-{i % 1000}", json.dumps({"title": "Implement feature X", "n": i})),
                )
        return 100

    def batched() -> int:
        base = next(counter) * batch_size
        with connection:
            connection.executemany(
                "INSERT INTO events (type, aggregate_id, data) VALUES (?, ?, ?)",
                [
                    ("TaskCreated", f"task-{j % 1000}", json.dumps({"title": "Implement feature X", "n": base + j}))
                    for j in range(batch_size)
                ],
            )
        return batch_size

    return [("single", *measure(seconds, single)), (f"batch of {batch_size}", *measure(seconds, batched))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per row (default 2)")
    parser.add_argument("--batch", type=int, default=1000, help="events per atomic batch (default 1000)")
    arguments = parser.parse_args()
    seconds: float = arguments.seconds
    batch_size: int = arguments.batch

    print(f"library: {_ffi.library_path} (herald {herald.library_version()})")
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    encoder = herald.json_encoder()
    if encoder == "orjson":
        import orjson

        encoder = f"orjson {orjson.__version__}"
    print(f"json encoder: {encoder}")
    rows: list[tuple[str, str, int, float]] = []
    with herald.System.testing() as system:
        rows += [("testing (in-memory)", *row) for row in run(system, seconds, batch_size)]
    with (
        tempfile.TemporaryDirectory(prefix="herald-bench-") as data_dir,
        herald.System.development(data_dir=data_dir, config='[store]\nfsync = "never"\n') as system,
    ):
        rows += [("mmap, fsync never", *row) for row in run(system, seconds, batch_size)]

    connection = sqlite3.connect(":memory:")
    rows += [("sqlite3 :memory:", *row) for row in run_sqlite(connection, seconds, batch_size)]
    connection.close()
    with tempfile.TemporaryDirectory(prefix="herald-bench-sqlite-") as directory:
        connection = sqlite3.connect(str(Path(directory) / "events.db"))
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=OFF")
        rows += [("sqlite3 WAL, sync off", *row) for row in run_sqlite(connection, seconds, batch_size)]
        connection.close()

    drafts = [
        {"type": "TaskCreated", "aggregate_id": f"task-{j % 1000}", "data": {"title": "Implement feature X", "n": j}}
        for j in range(batch_size)
    ]

    def encode_only() -> int:
        _json.encode({"events": drafts})
        return batch_size

    rows.append(("(no store)", f"{herald.json_encoder()} encoding alone, same list", *measure(seconds, encode_only)))

    print()
    print(f"{'store':<22} {'publish':<42} {'events':>10} {'seconds':>8} {'events/s':>12} {'us/event':>9}")
    print("-" * 108)
    for store, name, events, elapsed in rows:
        print(
            f"{store:<22} {name:<42} {events:>10,} {elapsed:>8.2f} {events / elapsed:>12,.0f} "
            f"{elapsed / events * 1e6:>9.2f}"
        )


if __name__ == "__main__":
    main()
