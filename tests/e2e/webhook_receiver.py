"""A webhook receiver for Herald's end-to-end tests: a real HTTP/1.1 server in its own process.

    python3 tests/e2e/webhook_receiver.py --port 0 --log FILE [--mode MODE] [--secret whsec_…]
        [--status 500] [--count N] [--delay-ms MS] [--retry-after S] [--fail-for-ms MS]
        [--control FILE]

It binds 127.0.0.1:PORT (0 picks a free port), prints the port on one stdout line, and serves
until SIGTERM. Every request it receives becomes one JSON line appended to `--log`:

    {"time", "mono", "method", "path", "headers", "body", "webhook_id", "attempt", "mode",
     "answer", "success", "late", "verified", "verify_error"}

- `time` is unix seconds at receipt and `mono` is `time.monotonic()` at receipt (CLOCK_MONOTONIC,
  comparable across processes on one machine, so tests can measure retry gaps with it);
- `attempt` counts the requests seen with this `webhook-id` (1 for the first);
- `answer` is the status sent (null when the request is never answered); `success` is true only
  when a 2xx was sent at once (a late 2xx after a timeout is not a success, and is marked `late`);
- `verified` is the Standard Webhooks check (`standardwebhooks.webhooks.Webhook(secret).verify`) of
  the body and headers with the configured secret; null when no secret is set yet.

Modes (how each request is answered):
- `ok`: 200 at once.
- `fail`: `--status` (default 500) on every request, with `Retry-After` when `--retry-after` is given.
- `fail-first`: the first `--count` requests of each webhook-id get `--status`, later ones 200.
- `slow-first`: the first `--count` requests of each webhook-id wait `--delay-ms`, then get 200
  (the sender has timed out by then); later ones get 200 at once.
- `fail-until`: `--status` until unix time `fail_until` (`--fail-for-ms` after start), then 200.
- `hang`: read the request and never answer; the connection is held until the peer closes it.

`--control FILE` names a JSON object re-read whenever the file changes; its keys (`mode`,
`secret`, `status`, `count`, `delay_ms`, `retry_after`, `fail_until`) override the flags, so a test
can hand over the secret the server made, or switch a failing receiver to success, without a
restart. Write it atomically (write a temporary file, then rename).
"""

import argparse
import http.server
import json
import os
import select
import socket
import sys
import threading
import time

from standardwebhooks.webhooks import Webhook

# A hung request is held at most this long, so a forgotten receiver cannot pin a thread forever.
HANG_MAX_SECONDS = 300.0
# Idle keep-alive connections are closed after this long.
IDLE_TIMEOUT_SECONDS = 60.0
# Largest body read; anything larger is refused with 413.
MAX_BODY_BYTES = 16 * 1024 * 1024


class Settings:
    """The receiver's behaviour: the flags, overridden by the control file when it changes."""

    KEYS = ("mode", "secret", "status", "count", "delay_ms", "retry_after", "fail_until")

    def __init__(self, args):
        self.base = {
            "mode": args.mode,
            "secret": args.secret,
            "status": args.status,
            "count": args.count,
            "delay_ms": args.delay_ms,
            "retry_after": args.retry_after,
            "fail_until": time.time() + args.fail_for_ms / 1000.0 if args.fail_for_ms is not None else 0.0,
        }
        self.control_path = args.control
        self.lock = threading.Lock()
        self.stamp = None
        self.current = dict(self.base)

    def get(self):
        """The settings in force now (re-reads the control file if it changed since the last call)."""
        with self.lock:
            if self.control_path:
                try:
                    st = os.stat(self.control_path)
                    stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                except FileNotFoundError:
                    stamp = None
                if stamp != self.stamp:
                    merged = dict(self.base)
                    if stamp is not None:
                        with open(self.control_path, encoding="utf-8") as f:
                            control = json.load(f)
                        merged.update({k: v for k, v in control.items() if k in self.KEYS})
                    self.current = merged
                    self.stamp = stamp
            return dict(self.current)


class Log:
    """Appends one JSON line per request; each line is written and flushed whole under a lock."""

    def __init__(self, path):
        self.file = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()

    def write(self, entry):
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self.lock:
            self.file.write(line)
            self.file.flush()


class Attempts:
    """Counts the requests seen per webhook-id."""

    def __init__(self):
        self.counts = {}
        self.lock = threading.Lock()

    def next(self, webhook_id):
        with self.lock:
            self.counts[webhook_id] = self.counts.get(webhook_id, 0) + 1
            return self.counts[webhook_id]


def verify(secret, body, headers):
    """(verified, error): the Standard Webhooks check of one request; (None, reason) without a secret."""
    if not secret:
        return None, "no secret configured"
    try:
        Webhook(secret).verify(body, headers)
        return True, None
    except Exception as error:  # WebhookVerificationError, or a malformed header/body
        return False, f"{type(error).__name__}: {error}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_SECONDS
    server_version = "herald-e2e-receiver"
    sys_version = ""
    # TCP_NODELAY, and each response goes out in one write (see `answer`): a head and a body in
    # two small writes meet the sender's delayed ACK and cost ~40 ms a request.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # every request is in the JSON log already

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline(1024)
                if len(body) > MAX_BODY_BYTES:
                    raise ValueError("body too large")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError("body too large")
        return self.rfile.read(length)

    def answer(self, status, extra_headers=None):
        """Sends the whole response (head and body) in one write, always with Content-Length."""
        payload = json.dumps({"status": status}).encode()
        reason = self.responses.get(status, ("Unknown",))[0]
        lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(payload)}"]
        lines += [f"{name}: {value}" for name, value in (extra_headers or {}).items()]
        if self.close_connection:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        self.wfile.flush()

    def hold(self):
        """Never answer: wait until the peer closes the connection (or HANG_MAX_SECONDS pass)."""
        deadline = time.monotonic() + HANG_MAX_SECONDS
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.5)
            if readable:
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        break
                except OSError:
                    break
                time.sleep(0.5)  # the peer sent more without an answer: keep holding, without spinning
        self.close_connection = True

    def do_POST(self):
        received_wall, received_mono = time.time(), time.monotonic()
        try:
            body = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        settings = self.server.settings.get()
        webhook_id = headers.get("webhook-id", "")
        attempt = self.server.attempts.next(webhook_id)
        verified, verify_error = verify(settings["secret"], body, headers)
        mode = settings["mode"]
        failing_status = int(settings["status"])
        retry_after = settings["retry_after"]

        status, delay, hang = 200, 0.0, False
        if mode == "fail":
            status = failing_status
        elif mode == "fail-first":
            if attempt <= int(settings["count"]):
                status = failing_status
        elif mode == "slow-first":
            if attempt <= int(settings["count"]):
                delay = int(settings["delay_ms"]) / 1000.0
        elif mode == "fail-until":
            if received_wall < float(settings["fail_until"]):
                status = failing_status
        elif mode == "hang":
            hang = True
        elif mode != "ok":
            status = 500  # an unknown mode is a test bug; answer something visible

        self.server.log.write(
            {
                "time": received_wall,
                "mono": received_mono,
                "method": self.command,
                "path": self.path,
                "headers": headers,
                "body": body.decode("utf-8", errors="replace"),
                "webhook_id": webhook_id,
                "attempt": attempt,
                "mode": mode,
                "answer": None if hang else status,
                "success": not hang and delay == 0 and 200 <= status < 300,
                "late": delay > 0,
                "verified": verified,
                "verify_error": verify_error,
            }
        )
        if hang:
            self.hold()
            return
        if delay:
            time.sleep(delay)
        extra = {"Retry-After": str(retry_after)} if retry_after is not None and status >= 300 else None
        try:
            self.answer(status, extra)
        except OSError:
            self.close_connection = True  # the sender gave up (a late answer after its timeout)

    def do_GET(self):
        self.answer(200)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # hung handlers must not hold up exit
    request_queue_size = 256


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True)
    parser.add_argument(
        "--mode", default="ok", choices=["ok", "fail", "fail-first", "slow-first", "fail-until", "hang"]
    )
    parser.add_argument("--secret", default=None)
    parser.add_argument("--status", type=int, default=500)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--delay-ms", type=int, default=1500)
    parser.add_argument("--retry-after", default=None)
    parser.add_argument("--fail-for-ms", type=int, default=None)
    parser.add_argument("--control", default=None)
    args = parser.parse_args()

    server = Server(("127.0.0.1", args.port), Handler)
    server.settings = Settings(args)
    server.log = Log(args.log)
    server.attempts = Attempts()
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
