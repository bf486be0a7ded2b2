//! The end-to-end test of the HTTP server: runs the pytest suites in `tests/e2e/` (the API in
//! `server_test.py`, webhooks with real receivers in `webhooks_test.py`, the WebSocket gateway
//! with the `websockets` client in `websocket_test.py` and with Node's `ws` in
//! `test_node_suite.py`) from
//! the repository root against the `herald` binary cargo built for this test
//! (`HERALD_BIN=$CARGO_BIN_EXE_herald`), with pytest's output streamed as it runs.
//!
//! It needs `python3` with `pytest` and `prometheus_client`
//! (`pip install pytest prometheus_client standardwebhooks websockets`, or
//! `pip install -r tests/e2e/requirements.txt`) and Node.js with npm, and
//! fails, saying so, when they are missing. The suite bounds every socket and subprocess itself;
//! this runner also kills it if it outlives [`SUITE_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const SUITE: &str = "tests/e2e";
/// The whole suite runs in well under a minute; this only stops a hung run.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);
/// Checking that the Python modules import.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
const INSTALL_HINT: &str =
    "run `pip install -r tests/e2e/requirements.txt` (pytest, prometheus_client, standardwebhooks, websockets)";

fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("core/ sits inside the repository root").to_path_buf()
}

/// Waits for `child` at most `timeout`; kills it and returns `None` past that.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => panic!("cannot wait for python3: {error}"),
        }
    }
}

/// Fails with an install hint unless python3 can import the suites' modules.
fn require_python_modules(root: &Path) {
    let probe = Command::new("python3")
        .args(["-c", "import pytest, prometheus_client, standardwebhooks, websockets"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn();
    let mut probe = match probe {
        Ok(child) => child,
        Err(error) => panic!(
            "the end-to-end suite needs python3, which cannot be run ({error}): install Python 3, then {INSTALL_HINT}"
        ),
    };
    match wait_bounded(&mut probe, PROBE_TIMEOUT) {
        Some(status) if status.success() => {}
        Some(status) => panic!("python3 cannot import the end-to-end suites' modules ({status}): {INSTALL_HINT}"),
        None => panic!("python3 did not import the end-to-end suites' modules within {PROBE_TIMEOUT:?}"),
    }
}

#[test]
fn http_server_end_to_end() {
    let root = repo_root();
    assert!(root.join(SUITE).is_dir(), "{} is missing", root.join(SUITE).display());
    require_python_modules(&root);
    let started = Instant::now();
    let mut suite = Command::new("python3")
        // Each test's server zero-fills a 64 MiB segment (and a spare) in its data directory:
        // only a failed test's directories are kept (pytest keeps every test's of the last 3
        // runs by default, 5 GB here).
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "tmp_path_retention_policy=failed", SUITE])
        .current_dir(&root)
        .env("HERALD_BIN", env!("CARGO_BIN_EXE_herald"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start python3 -m pytest: {error}"));
    match wait_bounded(&mut suite, SUITE_TIMEOUT) {
        Some(status) => assert!(
            status.success(),
            "the end-to-end suite failed ({status}) after {:.1?}: see pytest's output above",
            started.elapsed()
        ),
        None => panic!("the end-to-end suite did not finish within {SUITE_TIMEOUT:?} and was killed"),
    }
}
