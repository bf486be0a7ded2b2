"""End-to-end tests of Herald's HTTP server, run against the real `herald` binary.

Each test starts `herald serve` on a free loopback port (`--listen 127.0.0.1:0`, the port read
from the `listening on http://…` line on stderr) in a fresh data directory, talks to it over
real sockets, and stops it with SIGTERM (SIGKILL after a timeout). The binary is `$HERALD_BIN`,
default `target/debug/herald` relative to the repository root.

Run from the repository root:

    cargo build -q -p herald-core --bin herald
    HERALD_BIN=target/debug/herald python3 -m pytest -q tests/e2e/server_test.py

Every socket and subprocess call has a timeout and every loop a bound, so a hung server fails a
test instead of hanging the suite. The contract under test is `PROTOCOL.md` (Conventions, Events,
HTTP API, CLI and config) and `docs/config.md`.
"""

import http.client
import json
import os
import random
import re
import resource
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
IO_TIMEOUT = 10.0
LISTEN_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
SPEC_EVENT_KEYS = [
    "kind",
    "id",
    "type",
    "aggregate_id",
    "aggregate_version",
    "position",
    "timestamp",
    "correlation_id",
    "causation_id",
    "metadata",
    "data",
]
# The spec's codes, plus the server's documented choices for statuses the spec has no code for.
ERROR_CODES = {
    "invalid_json",
    "invalid_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "version_conflict",
    "duplicate_id",
    "conflict",
    "gone",
    "too_large",
    "overloaded",
    "shutting_down",
    "method_not_allowed",
    "request_timeout",
}
API_KEY = "k1"
JWT_SECRET = "e2e-test-secret-0123456789abcdef0123456789"
PRODUCTION_AUTH = f'[auth]\napi_keys = ["{API_KEY}"]\njwt_secret = "{JWT_SECRET}"\n'


def herald_bin():
    path = Path(os.environ.get("HERALD_BIN", "target/debug/herald"))
    return path if path.is_absolute() else REPO_ROOT / path


def raise_nofile_limit(wanted=4096):
    """Raises this process's open-file limit (children inherit it) so 1000 sockets fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


raise_nofile_limit()


# ---------------------------------------------------------------------------------------------
# The server process


class Herald:
    """One `herald serve` process on a loopback port; restartable on the same data dir."""

    _runs = 0

    def __init__(self, workdir, data_dir, preset=None, config=None, api_key=None):
        self.workdir = Path(workdir)
        self.data_dir = Path(data_dir)
        self.preset = preset
        self.api_key = api_key
        self.config_path = None
        if config is not None:
            Herald._runs += 1
            self.config_path = self.workdir / f"herald-{Herald._runs}.toml"
            self.config_path.write_text(config)
        self.proc = None
        self.port = None
        self.log_path = None

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        Herald._runs += 1
        self.log_path = self.workdir / f"herald-{Herald._runs}.stderr"
        args = [str(herald_bin()), "serve", "--listen", "127.0.0.1:0", "--data", str(self.data_dir)]
        if self.preset:
            args += ["--preset", self.preset]
        if self.config_path:
            args += ["--config", str(self.config_path)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir, start_new_session=True
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            match = LISTEN_RE.search(self.stderr())
            if match:
                self.port = int(match.group(1))
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"herald exited with {self.proc.returncode} before listening:\n{self.stderr()}")
            if time.monotonic() > deadline:
                self.kill9()
                raise AssertionError(f"herald did not listen within {STARTUP_TIMEOUT}s:\n{self.stderr()}")
            time.sleep(0.02)

    def stderr(self):
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait; SIGKILL if it outlives `timeout`. Returns (exit code, seconds taken)."""
        if not self.running():
            return (self.proc.returncode if self.proc else None), 0.0
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)
            raise AssertionError(f"herald ignored SIGTERM for {timeout}s:\n{self.stderr()}")
        return code, time.monotonic() - started

    def kill9(self):
        if self.running():
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)

    def client(self, api_key=None, timeout=IO_TIMEOUT):
        return Client(self.port, api_key if api_key is not None else self.api_key, timeout)

    def connection(self, timeout=IO_TIMEOUT):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)


@pytest.fixture
def start_herald(tmp_path):
    """A factory: start_herald(preset=, config=, api_key=, data_dir=) → a started Herald."""
    servers = []

    def start(preset=None, config=None, api_key=None, data_dir=None):
        data = Path(data_dir) if data_dir else tmp_path / f"data-{len(servers)}"
        server = Herald(tmp_path, data, preset=preset, config=config, api_key=api_key)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        if server.running():
            try:
                server.terminate(timeout=10)
            except AssertionError:
                pass


@pytest.fixture
def server(start_herald):
    """A development-preset server in a fresh data dir."""
    return start_herald()


# ---------------------------------------------------------------------------------------------
# HTTP helpers


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:500]!r}>"


def exchange(conn, method, path, body=None, headers=None, api_key=None):
    """One request on an http.client connection; returns a Resp (body read whole)."""
    hdrs = dict(headers or {})
    if api_key:
        hdrs.setdefault("Authorization", f"Bearer {api_key}")
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=body, headers=hdrs)
    response = conn.getresponse()
    raw = response.read()
    return Resp(response.status, {k.lower(): v for k, v in response.getheaders()}, raw)


class Client:
    """A fresh connection per request (use `exchange` on one connection to test keep-alive)."""

    def __init__(self, port, api_key=None, timeout=IO_TIMEOUT):
        self.port = port
        self.api_key = api_key
        self.timeout = timeout

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            return exchange(conn, method, path, body, headers, self.api_key)
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def append(self, body, status=201):
        resp = self.post("/v1/events", body)
        assert resp.status == status, resp
        return resp.json()["events"]

    def read(self, **params):
        resp = self.get("/v1/events?" + urllib.parse.urlencode(params))
        assert resp.status == 200, resp
        return resp.json()

    def read_all(self, **params):
        """Every record from position 0 (pages of 10000), as a list."""
        events, position = [], 0
        for _ in range(1000):
            page = self.read(from_position=position, limit=10000, **params)
            events += page["events"]
            if not page["events"]:
                return events
            assert page["next_position"] > position, page["next_position"]
            position = page["next_position"]
        raise AssertionError("the log did not end within 1000 pages")


def draft(aggregate_id="agg-1", event_type="TaskCreated", data=None, **extra):
    value = {"type": event_type, "aggregate_id": aggregate_id, "data": data if data is not None else {"n": 1}}
    value.update(extra)
    return value


def assert_error(resp, status, code):
    """The response is `status` with the spec's error body and `code`; returns the error object."""
    assert resp.status == status, resp
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert error["code"] == code, body
    assert error["code"] in ERROR_CODES, body
    assert isinstance(error["message"], str) and error["message"], body
    return error


def names_field(error, field):
    """The error names `field`, or a path inside it (`metadata.user_id` names `metadata`)."""
    named = error.get("field") or ""
    return (
        named == field
        or named.startswith(field + ".")
        or f"{field}:" in error["message"]
        or f"`{field}`" in error["message"]
    )


class RawReader:
    """Reads HTTP/1.1 responses (Content-Length framed) off a raw socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buffer += chunk

    def response(self):
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Resp(status, headers, body)

    def closed(self, timeout=5.0):
        """Whether the peer closes (EOF or reset) within `timeout` with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def raw_connect(port, timeout=IO_TIMEOUT):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def raw_probe(port, payload, timeout=5.0):
    """Sends `payload` on a new connection; returns (Resp or None, closed-after)."""
    sock = raw_connect(port, timeout)
    try:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reader = RawReader(sock)
        try:
            resp = reader.response()
        except (EOFError, ConnectionResetError):
            return None, True
        return resp, reader.closed(timeout)
    finally:
        sock.close()


def assert_serves(port, within=2.0):
    """A normal client gets GET /healthz → 200 within `within` seconds."""
    started = time.monotonic()
    resp = Client(port, timeout=within + 1).get("/healthz")
    elapsed = time.monotonic() - started
    assert resp.status == 200 and resp.json() == {"status": "ok"}, resp
    assert elapsed < within, f"healthz took {elapsed:.2f}s"


def metric_families(client):
    resp = client.get("/metrics")
    assert resp.status == 200, resp
    return {family.name: family for family in text_string_to_metric_families(resp.body.decode())}


def sample(families, family_name, sample_name, labels=None):
    for s in families[family_name].samples:
        if s.name == sample_name and (labels is None or s.labels == labels):
            return s.value
    raise AssertionError(f"no sample {sample_name} {labels} in {family_name}")


# ---------------------------------------------------------------------------------------------
# Appends


def test_healthz(server):
    """GET /healthz answers 200 {"status": "ok"}."""
    resp = server.client().get("/healthz")
    assert resp.status == 200 and resp.json() == {"status": "ok"}, resp


def test_append_single_returns_201_with_spec_shape(server):
    """One draft → 201 {"events":[{"id","position","aggregate_version"}]} with a server-made UUIDv7."""
    resp = server.client().post("/v1/events", draft("task-1"))
    assert resp.status == 201, resp
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert list(body) == ["events"] and len(body["events"]) == 1, body
    result = body["events"][0]
    assert set(result) == {"id", "position", "aggregate_version"}, result
    assert result["position"] == 0 and result["aggregate_version"] == 1, result
    assert uuid.UUID(result["id"]).version == 7, result


def test_append_batch_is_atomic(server):
    """A batch → 201 with one result per draft in order; a batch with a bad draft stores nothing."""
    client = server.client()
    first = client.append(draft("a"))
    ids = [str(uuid.uuid4()) for _ in range(3)]
    results = client.append(
        {"events": [draft("a", id=ids[0]), draft("b", id=ids[1]), draft("a", id=ids[2], event_type="TaskDone")]}
    )
    assert [r["id"] for r in results] == ids
    assert [r["position"] for r in results] == [1, 2, 3]
    assert [r["aggregate_version"] for r in results] == [2, 1, 3]
    assert first[0]["position"] == 0
    # A version conflict on the second draft: nothing of the batch is stored.
    resp = client.post("/v1/events", {"events": [draft("c"), draft("a", expected_version=1)]})
    error = assert_error(resp, 409, "version_conflict")
    assert error["current_version"] == 3, error
    # A validation error in one draft: nothing stored, the error names the draft's field.
    resp = client.post("/v1/events", {"events": [draft("c"), {"type": "T", "aggregate_id": "c"}]})
    error = assert_error(resp, 400, "invalid_request")
    assert names_field(error, "events[1].data"), error
    assert_error(client.post("/v1/events", {"events": []}), 400, "invalid_request")
    log = client.read_all()
    assert [e["position"] for e in log] == [0, 1, 2, 3]
    assert client.get("/v1/streams/c").status == 404


def test_expected_version(server):
    """expected_version: integer must match, 0 means the stream must not exist, "any" always appends."""
    client = server.client()
    assert client.append(draft("s", expected_version=0))[0]["aggregate_version"] == 1
    error = assert_error(client.post("/v1/events", draft("s", expected_version=0)), 409, "version_conflict")
    assert error["current_version"] == 1, error
    assert client.append(draft("s", expected_version=1))[0]["aggregate_version"] == 2
    error = assert_error(client.post("/v1/events", draft("s", expected_version=5)), 409, "version_conflict")
    assert error["current_version"] == 2, error
    error = assert_error(client.post("/v1/events", draft("s", expected_version=1)), 409, "version_conflict")
    assert error["current_version"] == 2, error
    error = assert_error(client.post("/v1/events", draft("new", expected_version=3)), 409, "version_conflict")
    assert error["current_version"] == 0, error
    assert client.append(draft("s", expected_version="any"))[0]["aggregate_version"] == 3
    assert client.append(draft("s"))[0]["aggregate_version"] == 4
    for bad in ["some", -1, 1.5, [1], {"v": 1}]:
        error = assert_error(client.post("/v1/events", draft("s", expected_version=bad)), 400, "invalid_request")
        assert names_field(error, "expected_version"), (bad, error)
    assert [e["aggregate_version"] for e in client.read_all()] == [1, 2, 3, 4]


def test_idempotent_retry_returns_original_results(server):
    """Re-sending stored ids (same type and aggregate) → 200 with the original results, nothing appended."""
    client = server.client()
    client.append(draft("other"))
    batch = {"events": [draft("r", id=str(uuid.uuid4()), data={"i": i}) for i in range(3)]}
    original = client.append(batch)
    single = draft("r", id=str(uuid.uuid4()), data={"single": True})
    original_single = client.append(single)
    before = client.get("/v1/metrics").json()["event_store"]["total_events"]
    for _ in range(2):
        resp = client.post("/v1/events", batch)
        assert resp.status == 200, resp
        assert resp.json() == {"events": original}
        resp = client.post("/v1/events", single)
        assert resp.status == 200, resp
        assert resp.json() == {"events": original_single}
    # A retry of a stored id with an expected_version that no longer holds is still the original.
    retry = dict(single, expected_version=0)
    resp = client.post("/v1/events", retry)
    assert resp.status in (200, 409), resp
    assert len(client.read_all()) == 5
    assert client.get("/v1/metrics").json()["event_store"]["total_events"] == before


def test_duplicate_ids_partial_or_mismatched_are_409(server):
    """A batch with only some ids stored, or an id stored under another type or aggregate → 409 duplicate_id."""
    client = server.client()
    stored = str(uuid.uuid4())
    client.append(draft("d", id=stored))
    fresh = str(uuid.uuid4())
    resp = client.post("/v1/events", {"events": [draft("d", id=stored), draft("d", id=fresh)]})
    error = assert_error(resp, 409, "duplicate_id")
    assert error["ids"] == [stored], error
    resp = client.post("/v1/events", draft("d", id=stored, event_type="SomethingElse"))
    assert assert_error(resp, 409, "duplicate_id")["ids"] == [stored]
    resp = client.post("/v1/events", draft("elsewhere", id=stored))
    assert assert_error(resp, 409, "duplicate_id")["ids"] == [stored]
    log = client.read_all()
    assert [e["id"] for e in log] == [stored], log
    assert client.get("/v1/streams/elsewhere").status == 404


# ---------------------------------------------------------------------------------------------
# The event JSON


def test_event_json_shape(server):
    """A stored event reads back with exactly the spec's fields, order, timestamp format and defaults."""
    client = server.client()
    data = {"title": "Implement feature X", "n": [1, 2.5, None, True], "nested": {"é": "☃"}}
    metadata = {"user_id": "user-456", "project_id": "project-101"}
    before = time.time()
    [result] = client.append(draft("task-123", "TaskCreated", data, metadata=metadata))
    after = time.time()
    correlation, causation = str(uuid.uuid4()), str(uuid.uuid4())
    client.append(draft("task-123", "TaskUpdated", {"x": 1}, correlation_id=correlation, causation_id=causation))
    events = client.read()["events"]
    assert len(events) == 2
    event = events[0]
    assert list(event) == SPEC_EVENT_KEYS, list(event)
    assert event["kind"] == "domain"
    assert event["id"] == result["id"]
    assert event["type"] == "TaskCreated"
    assert event["aggregate_id"] == "task-123"
    assert event["aggregate_version"] == 1 and event["position"] == 0
    assert TIMESTAMP_RE.match(event["timestamp"]), event["timestamp"]
    stamp = time.mktime(time.strptime(event["timestamp"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert before - 2 <= stamp <= after + 2, (event["timestamp"], before)
    assert event["correlation_id"] == event["id"]
    assert event["causation_id"] is None
    assert event["metadata"] == metadata
    assert event["data"] == data
    second = events[1]
    assert list(second) == SPEC_EVENT_KEYS
    assert second["correlation_id"] == correlation and second["causation_id"] == causation
    assert second["metadata"] == {}
    assert client.get("/v1/streams/task-123").json()["events"] == events


# ---------------------------------------------------------------------------------------------
# Reads


def test_read_events_paging_default_limit_and_next_position(server):
    """GET /v1/events: default limit 100, from_position/limit paging, next_position never rescans."""
    client = server.client()
    client.append({"events": [draft(f"p{i % 7}", data={"i": i}) for i in range(250)]})
    page = client.read()
    assert [e["position"] for e in page["events"]] == list(range(100))
    assert page["next_position"] == 100
    page = client.read(from_position=100, limit=7)
    assert [e["position"] for e in page["events"]] == list(range(100, 107))
    assert page["next_position"] == 107
    seen, position = [], 0
    for _ in range(100):
        page = client.read(from_position=position, limit=33)
        if not page["events"]:
            break
        seen += [e["position"] for e in page["events"]]
        position = page["next_position"]
    assert seen == list(range(250))
    end = client.read(from_position=250)
    assert end == {"events": [], "next_position": 250}
    assert client.read(from_position=10_000)["events"] == []
    for params in ["limit=0", "limit=abc", "limit=-1", "from_position=-1", "from_position=x"]:
        error = assert_error(client.get("/v1/events?" + params), 400, "invalid_request")
        assert params.split("=")[0] in error["message"], error


def test_read_limit_is_clamped_at_10000(server):
    """A limit above 10000 is clamped to 10000, not refused."""
    client = server.client()
    for _ in range(3):
        client.append({"events": [{"type": "T", "aggregate_id": "c", "data": 0} for _ in range(3400)]})
    page = client.read(limit=50_000)
    assert len(page["events"]) == 10_000
    assert page["events"][-1]["position"] == 9_999
    assert page["next_position"] == 10_000
    rest = client.read(from_position=page["next_position"], limit=10_000_000_000)
    assert [e["position"] for e in rest["events"]] == list(range(10_000, 10_200))
    stream = client.get("/v1/streams/c?limit=99999").json()
    assert stream["version"] == 10_200 and len(stream["events"]) == 10_000
    stream = client.get("/v1/streams/c?from_version=10").json()
    assert [e["aggregate_version"] for e in stream["events"]] == list(range(10, 1010)), "stream limit default 1000"


def test_read_filters_by_type_and_kind(server):
    """type and kind filter the log; next_position is after the last record examined, so reading on never rescans."""
    client = server.client()
    client.append({"events": [draft(f"f{i}", "Alpha" if i % 3 == 0 else "Beta", {"i": i}) for i in range(30)]})
    alphas = [i for i in range(30) if i % 3 == 0]
    page = client.read(type="Alpha", limit=2)
    assert [e["position"] for e in page["events"]] == [0, 3]
    assert page["next_position"] == 4
    assert all(e["type"] == "Alpha" for e in page["events"])
    seen, position = [], 0
    for _ in range(100):
        page = client.read(type="Alpha", from_position=position, limit=3)
        assert page["next_position"] > position or not page["events"], page
        if not page["events"]:
            assert page["next_position"] == 30, page
            break
        assert all(e["position"] >= position and e["type"] == "Alpha" for e in page["events"]), page
        seen += [e["position"] for e in page["events"]]
        position = page["next_position"]
    assert seen == alphas
    assert position == 30, "the last page examined the rest of the log"
    assert client.read(type="Missing") == {"events": [], "next_position": 30}
    assert client.read(type="Missing", from_position=12, limit=5) == {"events": [], "next_position": 30}
    domain = client.read(limit=1000)
    assert client.read(kind="domain", limit=1000) == domain
    every = client.read(kind="all", limit=1000)
    assert [e["position"] for e in every["events"]] == list(range(30))
    assert all(e["kind"] == "domain" for e in every["events"])
    for kind in ["integration", "websocket"]:
        assert client.read(kind=kind) == {"events": [], "next_position": 30}
    error = assert_error(client.get("/v1/events?kind=bogus"), 400, "invalid_request")
    assert "kind" in error["message"], error


def test_read_since_is_inclusive(server):
    """since (RFC 3339, µs) keeps records at or after the instant; a bad timestamp is 400."""
    client = server.client()
    client.append(draft("t", data={"n": 1}))
    time.sleep(0.02)
    client.append(draft("t", data={"n": 2}))
    time.sleep(0.02)
    client.append(draft("t", data={"n": 3}))
    events = client.read()["events"]
    second = events[1]["timestamp"]
    assert events[0]["timestamp"] < second < events[2]["timestamp"]
    page = client.read(since=second)
    assert [e["data"]["n"] for e in page["events"]] == [2, 3]
    assert page["next_position"] == 3
    # The same instant with a +01:00 offset.
    hour = int(second[11:13])
    shifted = f"{second[:11]}{(hour + 1) % 24:02d}{second[13:-1]}+01:00"
    if hour < 23:
        assert [e["data"]["n"] for e in client.read(since=shifted)["events"]] == [2, 3]
    assert client.read(since="2500-01-01T00:00:00.000000Z") == {"events": [], "next_position": 3}
    assert len(client.read(since="2000-01-01T00:00:00Z")["events"]) == 3
    for bad in ["yesterday", "2026-13-01T00:00:00Z", "2026-01-01"]:
        error = assert_error(client.get("/v1/events?since=" + urllib.parse.quote(bad)), 400, "invalid_request")
        assert "since" in error["message"], error


def test_retention_answers_410_gone(start_herald):
    """A from_position that retention removed answers 410 gone with first_position; reading from there works."""
    config = "[store]\nsegment_bytes = 4096\n[store.retention]\nmax_bytes = 16384\n"
    client = start_herald(config=config).client()
    for i in range(200):
        client.append(draft("kept", data={"i": i, "pad": "p" * 80}))
    error = assert_error(client.get("/v1/events?from_position=0"), 410, "gone")
    first = error["first_position"]
    assert 0 < first < 200, error
    page = client.read(from_position=first, limit=10_000)
    assert [e["position"] for e in page["events"]] == list(range(first, 200))
    assert page["next_position"] == 200
    assert_error(client.get(f"/v1/events?from_position={first - 1}"), 410, "gone")


def test_read_stream(server):
    """GET /v1/streams/{id}: version order, from_version and limit; 404 not_found for an unknown stream."""
    client = server.client()
    for i in range(5):
        client.append(draft("s1", data={"i": i}))
        client.append(draft("noise", data={"i": i}))
    body = client.get("/v1/streams/s1").json()
    assert set(body) == {"aggregate_id", "version", "events"}
    assert body["aggregate_id"] == "s1" and body["version"] == 5
    assert [e["aggregate_version"] for e in body["events"]] == [1, 2, 3, 4, 5]
    assert [e["data"]["i"] for e in body["events"]] == [0, 1, 2, 3, 4]
    assert [e["position"] for e in body["events"]] == [0, 2, 4, 6, 8]
    assert all(list(e) == SPEC_EVENT_KEYS for e in body["events"])

    def versions(query):
        resp = client.get("/v1/streams/s1?" + query)
        assert resp.status == 200, resp
        assert resp.json()["version"] == 5
        return [e["aggregate_version"] for e in resp.json()["events"]]

    assert versions("from_version=3") == [3, 4, 5]
    assert versions("limit=2") == [1, 2]
    assert versions("from_version=2&limit=2") == [2, 3]
    assert versions("from_version=0") == [1, 2, 3, 4, 5]
    assert versions("from_version=6") == []
    error = assert_error(client.get("/v1/streams/unknown"), 404, "not_found")
    assert "unknown" in error["message"]
    assert_error(client.get("/v1/streams/s1?limit=0"), 400, "invalid_request")
    assert_error(client.get("/v1/streams/s1?from_version=x"), 400, "invalid_request")


# ---------------------------------------------------------------------------------------------
# Snapshots


def test_snapshots(server):
    """PUT/GET /v1/snapshots: 204, 404 without stream, 409 past its version, GET returns highest (last among equals)."""
    client = server.client()
    assert_error(client.put("/v1/snapshots/snap", {"version": 1, "state": {}}), 404, "not_found")
    for i in range(3):
        client.append(draft("snap", data={"i": i}))
    assert_error(client.get("/v1/snapshots/snap"), 404, "not_found")
    error = assert_error(client.put("/v1/snapshots/snap", {"version": 4, "state": {}}), 409, "version_conflict")
    assert error.get("current_version", 3) == 3
    resp = client.put("/v1/snapshots/snap", {"version": 2, "state": {"count": 2}})
    assert resp.status == 204 and resp.body == b"", resp
    got = client.get("/v1/snapshots/snap")
    assert got.status == 200, got
    body = got.json()
    assert set(body) == {"aggregate_id", "version", "state", "timestamp"}, body
    assert body["aggregate_id"] == "snap" and body["version"] == 2 and body["state"] == {"count": 2}
    assert TIMESTAMP_RE.match(body["timestamp"]), body
    assert client.put("/v1/snapshots/snap", {"version": 3, "state": "three"}).status == 204
    assert client.put("/v1/snapshots/snap", {"version": 1, "state": "one"}).status == 204
    body = client.get("/v1/snapshots/snap").json()
    assert (body["version"], body["state"]) == (3, "three"), body
    assert client.put("/v1/snapshots/snap", {"version": 3, "state": [3, "again"]}).status == 204
    body = client.get("/v1/snapshots/snap").json()
    assert (body["version"], body["state"]) == (3, [3, "again"]), body
    assert_error(client.get("/v1/snapshots/nothing"), 404, "not_found")
    assert_error(client.put("/v1/snapshots/snap", b"{not json"), 400, "invalid_json")
    error = assert_error(client.put("/v1/snapshots/snap", {"state": 1}), 400, "invalid_request")
    assert names_field(error, "version") or "version" in error["message"], error
    error = assert_error(client.put("/v1/snapshots/snap", {"version": "x", "state": 1}), 400, "invalid_request")
    assert "version" in error["message"], error
    error = assert_error(client.put("/v1/snapshots/snap", {"version": 1}), 400, "invalid_request")
    assert "state" in error["message"], error
    assert client.get("/v1/metrics").json()["event_store"]["total_snapshots"] == 4


# ---------------------------------------------------------------------------------------------
# Metrics


def test_v1_metrics_shape(server):
    """GET /v1/metrics has the spec's sections with at least the spec's fields (webhooks add
    `webhooks_retried` and `webhooks_pending`, see docs/webhooks.md), and its counters follow
    appends."""
    client = server.client()
    expected = {
        "domain_events": {"published", "handled", "failed", "average_handling_time_ms"},
        "integration_events": {"published", "webhooks_delivered", "webhooks_failed"},
        "websocket_events": {"broadcast", "delivered", "connections"},
        "event_store": {"total_events", "total_snapshots", "storage_size"},
    }
    before = client.get("/v1/metrics")
    assert before.status == 200 and before.headers["content-type"].startswith("application/json")
    body = before.json()
    assert set(body) == set(expected), body
    for section, fields in expected.items():
        assert fields <= set(body[section]), (section, body)
    assert set(body["integration_events"]) - expected["integration_events"] <= {"webhooks_retried", "webhooks_pending"}
    for section in body.values():
        for value in section.values():
            assert isinstance(value, (int, float)) and not isinstance(value, bool), body
    client.append({"events": [draft("m"), draft("m")]})
    client.append(draft("m2"))
    after = client.get("/v1/metrics").json()
    assert after["event_store"]["total_events"] == body["event_store"]["total_events"] + 3
    assert after["domain_events"]["published"] == body["domain_events"]["published"] + 3
    assert after["event_store"]["storage_size"] > body["event_store"]["storage_size"]


def test_prometheus_metrics(server):
    """/metrics parses as Prometheus text; herald_ families exist; counters grow by exactly the events appended."""
    client = server.client()
    resp = client.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain"), resp.headers
    before = metric_families(client)
    assert before and all(name.startswith("herald_") for name in before), sorted(before)
    assert before["herald_event_store_events"].type == "counter"
    assert before["herald_domain_events_published"].type == "counter"
    latency = "herald_event_store_append_latency_seconds"
    assert before[latency].type == "histogram"
    events_before = sample(before, "herald_event_store_events", "herald_event_store_events_total")
    published_before = sample(before, "herald_domain_events_published", "herald_domain_events_published_total")
    count_before = sample(before, latency, latency + "_count")
    client.append({"events": [draft("prom", data={"i": i}) for i in range(4)]})
    for i in range(3):
        client.append(draft("prom", data={"single": i}))
    after = metric_families(client)
    assert sample(after, "herald_event_store_events", "herald_event_store_events_total") == events_before + 7
    published = sample(after, "herald_domain_events_published", "herald_domain_events_published_total")
    assert published == published_before + 7
    assert sample(after, latency, latency + "_count") > count_before
    assert sample(after, latency, latency + "_sum") > 0
    assert sample(after, latency, latency + "_bucket", {"le": "+Inf"}) == sample(after, latency, latency + "_count")


def test_prometheus_histograms_have_one_unbounded_bucket(server):
    """Every latency histogram has increasing finite bounds and exactly one unbounded bucket, le="+Inf"."""
    client = server.client()
    client.append(draft("h"))
    families = metric_families(client)
    histograms = [f for f in families.values() if f.type == "histogram"]
    assert histograms
    for family in histograms:
        bounds = [float(s.labels["le"]) for s in family.samples if s.name.endswith("_bucket")]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), (family.name, bounds)
        assert bounds[-1] == float("inf"), (family.name, bounds)
        finite = bounds[:-1]
        assert all(b < 1e6 for b in finite), f"{family.name}: a finite bucket stands in for +Inf: {finite[-1]}"


# ---------------------------------------------------------------------------------------------
# Errors and connections


def test_unknown_paths_and_wrong_methods(server):
    """Unknown paths are 404 not_found; a known path with another method is 405 with Allow."""
    client = server.client()
    for path in ["/", "/nope", "/v1", "/v1/", "/v1/nope", "/v1/events/extra", "/v1/streams/", "/v2/events"]:
        assert_error(client.get(path), 404, "not_found")
    for method, path in [
        ("DELETE", "/v1/events"),
        ("PUT", "/v1/events"),
        ("POST", "/v1/metrics"),
        ("POST", "/healthz"),
        ("POST", "/v1/streams/x"),
        ("DELETE", "/v1/snapshots/x"),
        ("POST", "/metrics"),
    ]:
        resp = client.request(method, path)
        assert_error(resp, 405, "method_not_allowed")
        assert "allow" in resp.headers, resp.headers


def test_invalid_json_is_400_invalid_json(server):
    """A body that is not JSON is 400 invalid_json."""
    client = server.client()
    for body in [b"{", b"not json", b'{"type": "T", "aggregate_id": "a", "data": }', b"", b'{"events": [}']:
        assert_error(client.post("/v1/events", body), 400, "invalid_json")
    assert client.read()["events"] == []


def test_missing_fields_are_400_invalid_request_naming_the_field(server):
    """A draft without type, aggregate_id or data, or with an out-of-range value, is 400 invalid_request naming it."""
    client = server.client()
    full = draft("a")
    for field in ["type", "aggregate_id", "data"]:
        body = {k: v for k, v in full.items() if k != field}
        error = assert_error(client.post("/v1/events", body), 400, "invalid_request")
        assert names_field(error, field), (field, error)
        error = assert_error(client.post("/v1/events", {"events": [full, body]}), 400, "invalid_request")
        assert names_field(error, f"events[1].{field}"), (field, error)
    for field, value in [("type", ""), ("type", "T" * 257), ("aggregate_id", ""), ("aggregate_id", "a" * 257)]:
        error = assert_error(client.post("/v1/events", dict(full, **{field: value})), 400, "invalid_request")
        assert names_field(error, field), (field, error)
    for field in ["id", "correlation_id", "causation_id"]:
        error = assert_error(client.post("/v1/events", dict(full, **{field: "not-a-uuid"})), 400, "invalid_request")
        assert names_field(error, field), (field, error)
    assert client.append(dict(full, type="T" * 256, aggregate_id="a" * 256, unknown_field=[1]))
    error = assert_error(client.post("/v1/events", {"events": "x"}), 400, "invalid_request")
    assert "events" in error["message"], error


def test_wrong_types_are_400_invalid_request_naming_the_field(server):
    """Valid JSON with a field of the wrong type is 400 invalid_request naming the field, not invalid_json."""
    client = server.client()
    full = draft("a")
    cases = []
    for field, value in [
        ("aggregate_id", 5),
        ("type", ["T"]),
        ("metadata", {"user_id": 7}),
        ("metadata", "text"),
        ("id", 12),
    ]:
        body = dict(full, **{field: value})
        cases.append((json.dumps(body), field))
        cases.append((json.dumps({"events": [full, body]}), f"events[1].{field}"))
    # A JSON body that is not an object is a bad request too, not bad JSON.
    cases += [("5", None), ('"text"', None), ("true", None)]
    wrong = []
    for body, field in cases:
        resp = client.post("/v1/events", body)
        error = resp.json().get("error", {}) if resp.status >= 400 else {}
        if resp.status != 400 or error.get("code") != "invalid_request" or (field and not names_field(error, field)):
            wrong.append(f"{body} -> {resp.status} {resp.body.decode()} (wanted invalid_request naming {field})")
    assert not wrong, "\n".join(wrong)
    assert client.read()["events"] == []


def test_read_since_accepts_far_future_timestamps(server):
    """since far in the future (a valid RFC 3339 time past 2554) answers an empty page, not 400."""
    client = server.client()
    client.append(draft("future"))
    for since in ["2600-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"]:
        resp = client.get("/v1/events?since=" + since)
        assert resp.status == 200, (since, resp)
        assert resp.json() == {"events": [], "next_position": 1}, (since, resp)


def test_oversized_body_is_413(server):
    """A body over server.max_body_bytes (1 MiB) is 413 too_large, announced or sent, and the server goes on."""
    head = "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    resp, closed = raw_probe(server.port, head.format(1024 * 1024 + 1).encode())
    assert resp is not None, "no answer to an oversized Content-Length"
    assert_error(resp, 413, "too_large")
    assert closed
    body = json.dumps(draft("big", data={"blob": "x" * (1024 * 1024)})).encode()
    resp, _ = raw_probe(server.port, head.format(len(body)).encode() + body)
    assert resp is not None, "no answer to an oversized body"
    assert_error(resp, 413, "too_large")
    # Exactly at the limit is accepted.
    filler = 1024 * 1024 - len(json.dumps(draft("big", data={"blob": ""})))
    body = json.dumps(draft("big", data={"blob": "x" * filler}))
    assert len(body) == 1024 * 1024
    assert server.client().post("/v1/events", body).status == 201
    assert_serves(server.port)


def test_keep_alive_survives_api_errors(server):
    """After 400/404/405/409 answers the same keep-alive connection serves the next request."""
    conn = server.connection()
    try:
        ok = exchange(conn, "POST", "/v1/events", draft("k", expected_version=0))
        assert ok.status == 201, ok
        local = conn.sock.getsockname()
        steps = [
            (("POST", "/v1/events", b"{oops"), 400, "invalid_json"),
            (("POST", "/v1/events", {"type": "T"}), 400, "invalid_request"),
            (("GET", "/v1/events?limit=zero", None), 400, "invalid_request"),
            (("GET", "/v1/streams/none", None), 404, "not_found"),
            (("GET", "/nowhere", None), 404, "not_found"),
            (("DELETE", "/v1/events", None), 405, "method_not_allowed"),
            (("POST", "/v1/events", draft("k", expected_version=0)), 409, "version_conflict"),
            (("PUT", "/v1/snapshots/k", {"version": 9, "state": 1}), 409, "version_conflict"),
        ]
        for (method, path, body), status, code in steps:
            resp = exchange(conn, method, path, body)
            assert_error(resp, status, code)
            assert resp.headers.get("connection", "").lower() != "close", (method, path, resp.headers)
            assert conn.sock is not None and conn.sock.getsockname() == local, f"reconnected after {method} {path}"
        resp = exchange(conn, "POST", "/v1/events", draft("k", expected_version=1))
        assert resp.status == 201, resp
        resp = exchange(conn, "GET", "/v1/streams/k")
        assert resp.status == 200 and resp.json()["version"] == 2, resp
        assert conn.sock.getsockname() == local, "the connection was not kept"
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(server):
    """Several requests in one sendall on a raw socket get their answers in order; reads see earlier writes."""
    body = json.dumps(draft("pipe", data={"p": 1})).encode()
    post = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    requests = [
        post,
        b"GET /v1/streams/pipe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n",
        post.replace(b'"p": 1', b'"p": 2'),
        b"GET /v1/events?from_position=0 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    sock = raw_connect(server.port)
    try:
        sock.sendall(b"".join(requests))
        reader = RawReader(sock)
        answers = [reader.response() for _ in requests]
    finally:
        sock.close()
    assert [a.status for a in answers] == [201, 200, 200, 404, 201, 200, 200], answers
    assert answers[0].json()["events"][0]["position"] == 0
    assert answers[1].json()["version"] == 1
    assert answers[2].json() == {"status": "ok"}
    assert_error(answers[3], 404, "not_found")
    assert answers[4].json()["events"][0]["aggregate_version"] == 2
    assert [e["data"]["p"] for e in answers[5].json()["events"]] == [1, 2]
    assert answers[6].json()["event_store"]["total_events"] == 2


def test_long_pipeline_is_answered_completely(server):
    """A pipeline of 1000 requests (more than one reactor turn answers per connection) is answered whole, in order."""
    count = 1000
    requests = b"".join(
        b"GET /v1/events?from_position=%d&limit=1 HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count)
    )
    server.client().append({"events": [draft("long", data={"i": i}) for i in range(count)]})
    sock = raw_connect(server.port)
    try:
        sock.sendall(requests)
        reader = RawReader(sock)
        positions = []
        for _ in range(count):
            resp = reader.response()
            assert resp.status == 200, resp
            positions.append(resp.json()["events"][0]["position"])
    finally:
        sock.close()
    assert positions == list(range(count))


def test_half_closed_pipeline_is_answered_completely(server):
    """A client that pipelines more than a turn's worth and then shuts its sending side gets every answer."""
    import socket as socket_module

    count = 600
    requests = b"".join(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" for _ in range(count))
    sock = raw_connect(server.port)
    try:
        sock.sendall(requests)
        sock.shutdown(socket_module.SHUT_WR)
        reader = RawReader(sock)
        statuses = [reader.response().status for _ in range(count)]
    finally:
        sock.close()
    assert statuses == [200] * count


def test_head_is_answered_like_get_without_body(server):
    """HEAD is accepted wherever GET is: same status and length, no body."""
    conn = server.connection()
    try:
        for path, status in [("/healthz", 200), ("/v1/events", 200), ("/v1/streams/none", 404), ("/metrics", 200)]:
            got = exchange(conn, "GET", path)
            head = exchange(conn, "HEAD", path)
            assert head.status == status == got.status, (path, head, got)
            assert head.body == b"", (path, head)
            if path != "/metrics":  # its uptime gauge changes between the two
                assert head.headers["content-length"] == str(len(got.body)), (path, head.headers)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Auth and config


def test_api_keys_guard_v1_only(start_herald):
    """With auth.api_keys set, /v1/* needs the Bearer key (else 401 unauthorized); /healthz and /metrics stay open."""
    server = start_herald(config=f'[auth]\napi_keys = ["{API_KEY}", "second-key"]\n')
    anonymous = server.client()
    for method, path, body in [
        ("GET", "/v1/events", None),
        ("POST", "/v1/events", draft("auth")),
        ("GET", "/v1/metrics", None),
        ("GET", "/v1/streams/auth", None),
        ("GET", "/v1/snapshots/auth", None),
        ("PUT", "/v1/snapshots/auth", {"version": 1, "state": 1}),
        ("GET", "/v1/nope", None),
    ]:
        assert_error(anonymous.request(method, path, body), 401, "unauthorized")
        for header in [f"Bearer {API_KEY}x", "Bearer ", f"Basic {API_KEY}", API_KEY, f"Bearer {API_KEY[:-1]}"]:
            resp = anonymous.request(method, path, body, headers={"Authorization": header})
            assert_error(resp, 401, "unauthorized")
    assert server.client(api_key=API_KEY).append(draft("auth"))[0]["position"] == 0
    assert server.client(api_key="second-key").get("/v1/streams/auth").json()["version"] == 1
    assert server.client(api_key=API_KEY).get("/v1/metrics").status == 200
    assert anonymous.get("/healthz").status == 200
    assert anonymous.get("/metrics").status == 200
    assert len(server.client(api_key=API_KEY).read_all()) == 1


def test_production_preset_refuses_to_start_without_secrets(tmp_path):
    """The production preset refuses to start without auth.api_keys and auth.jwt_secret, naming what is missing."""
    for config, missing in [
        ("", ["auth.api_keys", "auth.jwt_secret"]),
        (f'[auth]\napi_keys = ["{API_KEY}"]\n', ["auth.jwt_secret"]),
        (f'[auth]\njwt_secret = "{JWT_SECRET}"\n', ["auth.api_keys"]),
    ]:
        path = tmp_path / "prod.toml"
        path.write_text(config)
        args = [str(herald_bin()), "serve", "--preset", "production", "--config", str(path)]
        args += ["--listen", "127.0.0.1:0", "--data", str(tmp_path / "data")]
        done = subprocess.run(args, capture_output=True, text=True, timeout=STARTUP_TIMEOUT, cwd=tmp_path)
        assert done.returncode != 0, done
        assert "listening" not in done.stderr
        for key in missing:
            assert key in done.stderr, (config, done.stderr)


# ---------------------------------------------------------------------------------------------
# Crash and shutdown


def verify_data_dir(data_dir):
    done = subprocess.run(
        [str(herald_bin()), "verify", "--data", str(data_dir)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"herald verify failed ({done.returncode}):\n{done.stderr}"
    return done


class Appender(threading.Thread):
    """Appends on one keep-alive connection until stopped or the server goes away; records every 201."""

    def __init__(self, port, api_key, name, stop, deadline):
        super().__init__(daemon=True)
        self.port, self.api_key, self.tag, self.stop, self.deadline = port, api_key, name, stop, deadline
        self.acked = []  # (id, position, aggregate_id, aggregate_version, type, data)
        self.refusals = []  # statuses other than 201, with bodies
        self.failures = 0

    def run(self):
        conn = None
        rng = random.Random(self.tag)
        seq = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            count = 3 if seq % 5 == 4 else 1
            drafts = [
                {
                    "id": str(uuid.uuid4()),
                    "type": "Crashed" if seq % 2 else "Appended",
                    "aggregate_id": f"{self.tag}-{seq % 3}",
                    "data": {"writer": self.tag, "seq": seq, "k": k, "blob": "z" * rng.randrange(0, 300)},
                    "metadata": {"writer": self.tag},
                }
                for k in range(count)
            ]
            body = drafts[0] if count == 1 else {"events": drafts}
            try:
                resp = exchange(conn, "POST", "/v1/events", body, api_key=self.api_key)
            except (OSError, http.client.HTTPException):
                self.failures += 1
                conn.close()
                conn = None
                if self.failures >= 3:
                    return  # the server is gone
                time.sleep(0.01)
                continue
            if resp.status == 201:
                results = resp.json()["events"]
                if [r["id"] for r in results] != [d["id"] for d in drafts]:
                    self.refusals.append(("results do not match the drafts", resp.body))
                for d, result in zip(drafts, results):
                    self.acked.append(
                        (d["id"], result["position"], d["aggregate_id"], result["aggregate_version"], d["type"], d["data"])
                    )
            else:
                self.refusals.append((resp.status, resp.body))
                if resp.headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            seq += 1
        if conn is not None:
            conn.close()


def check_acknowledged(client, acked):
    """Every acknowledged event is at its position with identical content; the log is gap-free."""
    log = client.read_all(kind="all")
    assert [e["position"] for e in log] == list(range(len(log))), "positions are not gap-free"
    ids = [e["id"] for e in log]
    assert len(set(ids)) == len(ids), "an id is stored twice"
    for event_id, position, aggregate_id, version, event_type, data in acked:
        assert position < len(log), f"acknowledged event {event_id} at {position} lost (log has {len(log)})"
        event = log[position]
        assert event["id"] == event_id, (position, event, event_id)
        assert event["aggregate_id"] == aggregate_id and event["aggregate_version"] == version, event
        assert event["type"] == event_type and event["data"] == data, event
    return log


def test_kill9_loses_no_acknowledged_event(start_herald, tmp_path):
    """Under the production preset, SIGKILL at random moments loses or changes no acknowledged event."""
    data_dir = tmp_path / "crash-data"
    server = start_herald(preset="production", config=PRODUCTION_AUTH, api_key=API_KEY, data_dir=data_dir)
    rng = random.Random(int(os.environ.get("HERALD_E2E_SEED", str(time.time_ns()))))
    acked = []
    test_deadline = time.monotonic() + 20
    for cycle in range(3):
        if cycle:
            server.start()
            check_acknowledged(server.client(), acked)
        stop = threading.Event()
        writers = [Appender(server.port, API_KEY, f"w{cycle}-{i}", stop, time.monotonic() + 8) for i in range(3)]
        for writer in writers:
            writer.start()
        time.sleep(rng.uniform(0.3, 1.0))
        server.kill9()
        stop.set()
        for writer in writers:
            writer.join(timeout=15)
            assert not writer.is_alive(), "a writer did not stop"
            assert not writer.refusals, writer.refusals[:3]
            acked += writer.acked
        assert time.monotonic() < test_deadline, "the crash cycles took too long"
    assert len(acked) > 10, f"too few acknowledged appends to prove anything: {len(acked)}"
    server.start()
    log = check_acknowledged(server.client(), acked)
    assert len(log) >= len(acked)
    code, _ = server.terminate()
    assert code == 0, server.stderr()
    verify_data_dir(data_dir)


def test_sigterm_under_load_exits_cleanly_and_keeps_acknowledged_events(start_herald, tmp_path):
    """SIGTERM under load: exit 0 within shutdown_timeout; requests during shutdown get 503 or a close, never a lost 2xx."""
    data_dir = tmp_path / "term-data"
    shutdown_ms = 2000
    server = start_herald(config=f"[server]\nshutdown_timeout_ms = {shutdown_ms}\n", data_dir=data_dir)
    stop = threading.Event()
    writers = [Appender(server.port, None, f"t{i}", stop, time.monotonic() + 10) for i in range(4)]
    for writer in writers:
        writer.start()
    time.sleep(0.5)
    # A request whose head is in before the signal and whose body comes after it.
    body = json.dumps(draft("late", data={"late": True})).encode()
    probe = raw_connect(server.port)
    probe.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    time.sleep(0.1)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    late = None
    try:
        probe.sendall(body)
        late = RawReader(probe).response()
    except (OSError, EOFError):
        late = None  # closed: allowed
    finally:
        probe.close()
    try:
        code = server.proc.wait(timeout=shutdown_ms / 1000 + 10)
    except subprocess.TimeoutExpired:
        server.kill9()
        raise AssertionError("herald did not exit after SIGTERM")
    elapsed = time.monotonic() - started
    stop.set()
    for writer in writers:
        writer.join(timeout=15)
        assert not writer.is_alive()
    assert code == 0, f"exit code {code}:\n{server.stderr()}"
    assert elapsed <= shutdown_ms / 1000 + 1.5, f"shutdown took {elapsed:.2f}s"
    if late is not None:
        assert_error(late, 503, "shutting_down")
    acked = [a for w in writers for a in w.acked]
    for writer in writers:
        for status, raw in writer.refusals:
            assert status == 503 and json.loads(raw)["error"]["code"] == "shutting_down", (status, raw)
    assert len(acked) > 10, len(acked)
    server.start()
    log = check_acknowledged(server.client(), acked)
    assert all(not (e["data"] or {}).get("late") for e in log if isinstance(e["data"], dict)), "a 503 was stored"
    code, _ = server.terminate()
    assert code == 0
    verify_data_dir(data_dir)


# ---------------------------------------------------------------------------------------------
# Malformed and hostile input


def test_malformed_requests_are_refused_and_the_server_keeps_serving(start_herald):
    """Garbage, oversized heads, huge lengths, bad chunking and a missing Host get their error or a close."""
    server = start_herald(config="[server]\nshutdown_timeout_ms = 2000\n")
    port = server.port
    cases = [
        ("garbage", b"\x00\xff\x13\x37 garbage\r\n\r\n", {400}),
        ("bad request line", b"GET\r\n\r\n", {400}),
        ("no Host", b"GET /healthz HTTP/1.1\r\n\r\n", {400}),
        ("two Hosts", b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
        ("HTTP/2.0 line", b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", {400, 505}),
        ("head over 16 KiB", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n", {431}),
        ("100 headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-H: v\r\n" * 100 + b"\r\n", {431}),
        ("huge Content-Length", b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n", {413}),
        ("bad Content-Length", b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", {400}),
        (
            "bad chunk size",
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            {400},
        ),
        (
            "chunk longer than its size",
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
            {400},
        ),
        (
            "huge chunk",
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\nab",
            {413, 400},
        ),
        (
            "length and chunked",
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            {400},
        ),
        ("bad percent escape", b"GET /v1/events?x=%zz HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ]
    for name, payload, statuses in cases:
        resp, closed = raw_probe(port, payload)
        if resp is not None:
            assert resp.status in statuses, (name, resp)
            error = resp.json()["error"]
            assert error["code"] in ERROR_CODES and error["message"], (name, resp)
            if resp.status in (413, 431):
                assert error["code"] == "too_large", (name, resp)
        assert closed, f"{name}: the connection was not closed after a framing error"
        assert_serves(port)
    # A good chunked request is fine.
    body = json.dumps(draft("chunked")).encode()
    chunked = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
    resp, _ = raw_probe(port, chunked + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert resp is not None and resp.status == 201, resp
    # Half-sent requests whose clients go away leave no trace.
    for payload in [
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"ty",
        b"GET /v1/eve",
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ]:
        sock = raw_connect(port)
        sock.sendall(payload)
        assert_serves(port)
        sock.close()
        assert_serves(port)
    assert [e["aggregate_id"] for e in server.client().read()["events"]] == ["chunked"]


def test_abandoned_half_requests_free_their_connection(start_herald):
    """A client that sends half a request and closes frees its connection slot at once (not after request_timeout)."""
    server = start_herald(config="[server]\nmax_connections = 4\nshutdown_timeout_ms = 1000\n")
    for payload in [
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
        b"GET /v1/eve",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ]:
        sock = raw_connect(server.port)
        sock.sendall(payload)
        time.sleep(0.05)
        sock.close()
    time.sleep(0.5)
    # All four slots are free again: four clients at once are served (the default request timeout is 10 s).
    conns = [server.connection(timeout=3) for _ in range(4)]
    try:
        for conn in conns:
            conn.connect()
        time.sleep(0.2)
        for conn in conns:
            assert exchange(conn, "GET", "/healthz").status == 200
    except (OSError, http.client.HTTPException) as error:
        raise AssertionError(f"a slot is still held by a client that went away: {error!r}") from error
    finally:
        for conn in conns:
            conn.close()
    code, elapsed = server.terminate()
    assert code == 0 and elapsed < 1.0, f"SIGTERM took {elapsed:.2f}s"


def test_idle_connections_do_not_block_a_normal_client(server):
    """1000 idle connections opened at once do not stop a normal client from being served quickly."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft == resource.RLIM_INFINITY or soft >= 1100, f"RLIMIT_NOFILE {soft} is too low for 1000 sockets"
    idle = []
    try:
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        assert_serves(server.port, within=2.0)
        started = time.monotonic()
        client = server.client(timeout=3)
        assert client.append(draft("busy"))[0]["position"] == 0
        assert client.get("/v1/streams/busy").status == 200
        assert time.monotonic() - started < 2.0
        # The idle connections were accepted and are live: the last one opened answers too.
        for sock in (idle[-1], idle[0]):
            sock.settimeout(5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert RawReader(sock).response().status == 200
    finally:
        for sock in idle:
            sock.close()
    assert_serves(server.port)


def test_slow_clients_are_cut_off_after_request_timeout(start_herald):
    """A partial or trickled request gets 408 or a close after server.request_timeout_ms; others are served meanwhile."""
    server = start_herald(config="[server]\nrequest_timeout_ms = 500\n")
    port = server.port
    # Half a head, then silence.
    sock = raw_connect(port, timeout=5)
    try:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert_serves(port, within=1.0)
        reader = RawReader(sock)
        try:
            resp = reader.response()
            assert resp.status == 408, resp
            assert reader.closed(3)
        except (EOFError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - started
        assert 0.4 <= elapsed <= 2.5, f"cut off after {elapsed:.2f}s"
    finally:
        sock.close()
    # A complete head with a body that never finishes.
    sock = raw_connect(port, timeout=5)
    try:
        started = time.monotonic()
        sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
        reader = RawReader(sock)
        try:
            assert reader.response().status == 408
        except (EOFError, ConnectionResetError):
            pass
        assert time.monotonic() - started <= 2.5
    finally:
        sock.close()
    # Slowloris: one byte every 100 ms never completes a request, and is cut off all the same.
    sock = raw_connect(port, timeout=5)
    payload = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200
    try:
        started = time.monotonic()
        cut = False
        for byte in payload:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                cut = True
                break
            if time.monotonic() - started > 5:
                break
        elapsed = time.monotonic() - started
        assert cut, "a trickling client was never cut off"
        assert elapsed <= 2.5, f"slowloris cut off after {elapsed:.2f}s"
    finally:
        sock.close()
    # An idle keep-alive connection between complete requests is not a slow request.
    conn = server.connection()
    try:
        assert exchange(conn, "GET", "/healthz").status == 200
        local = conn.sock.getsockname()
        time.sleep(1.0)
        assert exchange(conn, "GET", "/healthz").status == 200
        assert conn.sock.getsockname() == local, "an idle keep-alive connection was closed by the request timeout"
    finally:
        conn.close()
    assert_serves(port)


# ---------------------------------------------------------------------------------------------
# Helpers the other suites share (webhooks_test.py, websocket_test.py)

POLL_INTERVAL_S = 0.05
SERVER_STOP_TIMEOUT_S = 10.0


def wait_until(predicate, timeout_s, what):
    """Polls `predicate` every POLL_INTERVAL_S until it is truthy (returned) or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s}s: {what() if callable(what) else what}")
        time.sleep(POLL_INTERVAL_S)


def stop_quietly(server):
    """SIGTERM (SIGKILL after SERVER_STOP_TIMEOUT_S); for teardown, where how it stops is not under test."""
    if server.running():
        try:
            server.terminate(timeout=SERVER_STOP_TIMEOUT_S)
        except AssertionError:
            pass
