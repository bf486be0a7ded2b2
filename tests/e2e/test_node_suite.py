"""Runs the Node WebSocket suite (`tests/e2e/node`, the `ws` client library) against the same binary.

The suite is `node --test tests/e2e/node/` with `HERALD_BIN` passed through (resolved to an absolute
path, as `server_test.herald_bin()` resolves it). Its dependencies are installed with
`npm ci --prefix tests/e2e/node` when `node_modules` is missing. Without `node` the test fails with an
install hint (`.ci/run` installs Node.js and npm); a failing suite fails it with the suite's output.

Run from the repository root:

    cargo build -q -p herald-core --bin herald
    HERALD_BIN=target/debug/herald python3 -m pytest -q tests/e2e/test_node_suite.py
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_test import REPO_ROOT, herald_bin  # noqa: E402 - the shared server helpers live in server_test.py

NODE_DIR = Path(__file__).resolve().parent / "node"
NPM_CI_TIMEOUT_S = 300
# The suite itself aims at under 90 s; the rest is slack for a loaded 2-core machine.
NODE_SUITE_TIMEOUT_S = 240
OUTPUT_TAIL_CHARS = 30_000


def run_bounded(args, timeout_s, env=None):
    """Runs `args` from the repository root in its own process group, killing the whole group (the
    test runner's file workers and the herald servers they started) if it outlives `timeout_s`.
    Returns (exit code, stdout and stderr together)."""
    proc = subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=30)
        text = output.decode(errors="replace")[-OUTPUT_TAIL_CHARS:]
        raise AssertionError(f"`{' '.join(args)}` did not finish within {timeout_s}s:\n{text}") from None
    return proc.returncode, output.decode(errors="replace")


def node_major(node):
    code, output = run_bounded([node, "--version"], 30)
    match = re.match(r"v(\d+)\.", output.strip())
    assert code == 0 and match, output
    return int(match.group(1))


def test_node_websocket_suite():
    """The Node `ws` suite (tests/e2e/node/websocket.test.mjs) passes against the same herald binary."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` is not installed: install Node.js and npm (`apt-get install nodejs npm`) to run tests/e2e/node")
    if not (NODE_DIR / "node_modules").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "`node` is installed but `npm` is not: cannot install tests/e2e/node's dependencies"
        code, output = run_bounded(
            [npm, "ci", "--prefix", "tests/e2e/node", "--no-audit", "--no-fund"], NPM_CI_TIMEOUT_S
        )
        assert code == 0, f"npm ci --prefix tests/e2e/node failed ({code}):\n{output[-OUTPUT_TAIL_CHARS:]}"
    # Node 20 searches a directory argument for test files; from Node 21 on, arguments are globs and
    # a bare directory no longer matches its files, so name them.
    target = "tests/e2e/node/" if node_major(node) <= 20 else "tests/e2e/node/**/*.test.mjs"
    env = dict(os.environ, HERALD_BIN=str(herald_bin()))
    code, output = run_bounded([node, "--test", target], NODE_SUITE_TIMEOUT_S, env=env)
    assert code == 0, f"node --test {target} failed ({code}):\n{output[-OUTPUT_TAIL_CHARS:]}"
