//! The C ABI benchmark: publishing through `herald_publish*` against the same loop in Rust on
//! `System::publish`. Figures: `docs/benchmarks.md`.
//!
//! Group `ffi_publish`, ids `<case>/<impl>` with impl `rust` (the engine's API) or `c_abi` (the
//! exported functions, called exactly as C calls them: the same `extern "C"` calling
//! convention, argument checks, UTF-8 checks, panic boundary and draft conversion). Both use a
//! testing-preset system (in-memory store, no handlers), so the ratio isolates what the ABI
//! layer adds. Cases: `single` (one event per call), `batch_1000` (one atomic batch of 1,000
//! drafts per call), `json_batch_1000/c_abi` (the spec's JSON body, the bindings' path) and
//! `json_batch_1000_mmap/c_abi` (the same on a development-preset mmap log, fsync never).
//! First it prints `ffi_publish/paired` lines: the two sides in alternating rounds and the median
//! of the per-round ratios, the figure that holds on a noisy machine.

use std::hint::black_box;
use std::ptr;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald::event::{herald_appended, herald_draft, HERALD_EXPECT_ANY};
use herald::status::herald_status;
use herald::system::{
    herald_publish, herald_publish_batch, herald_publish_json, herald_system, herald_system_free, herald_system_new,
};
use herald_core::event::EventDraft;
use herald_core::system::{System, SystemBuilder};

const BATCH: usize = 1_000;
const TYPE: &str = "TaskCreated";
const AGGREGATE: &str = "task-1";
const DATA: &str = r#"{"title":"Implement feature X","assignee":"user-456"}"#;

fn draft() -> herald_draft {
    herald_draft {
        event_type: TYPE.as_ptr().cast(),
        event_type_len: TYPE.len(),
        aggregate_id: AGGREGATE.as_ptr().cast(),
        aggregate_id_len: AGGREGATE.len(),
        data: DATA.as_ptr(),
        data_len: DATA.len(),
        metadata_json: ptr::null(),
        metadata_json_len: 0,
        id: ptr::null(),
        correlation_id: ptr::null(),
        causation_id: ptr::null(),
        expect: HERALD_EXPECT_ANY,
        expected_version: 0,
    }
}

fn c_system() -> *mut herald_system {
    let mut system = ptr::null_mut();
    // SAFETY: valid preset text and out-pointer.
    let status = unsafe { herald_system_new(c"testing".as_ptr(), 7, ptr::null(), 0, &mut system) };
    assert_eq!(status, herald_status::HERALD_OK);
    system
}

/// A development-preset system on an mmap log in `dir` (fsync never).
fn c_disk_system(dir: &std::path::Path) -> *mut herald_system {
    let toml = format!("[server]\ndata_dir = {:?}\n", dir.display().to_string());
    let mut system = ptr::null_mut();
    // SAFETY: valid preset and config text and out-pointer.
    let status =
        unsafe { herald_system_new(c"development".as_ptr(), 11, toml.as_ptr().cast(), toml.len(), &mut system) };
    assert_eq!(status, herald_status::HERALD_OK);
    system
}

fn rust_system() -> System {
    SystemBuilder::testing().build().expect("testing system")
}

/// The Rust loop's drafts. Like the C caller, it starts from the payload's bytes and hands
/// Herald an owned copy (a Rust program gets one from `serde_json::to_vec`); a `&'static` payload
/// would skip the allocation every real publish pays. The strings go through `black_box`: a
/// publisher's type, aggregate id and payload are runtime values, and constants let the compiler
/// specialize the Rust loop's copies (measured: 40–60 ns of the 100–150 ns it takes to build a
/// draft).
fn rust_drafts(count: usize) -> Vec<EventDraft> {
    let (event_type, aggregate, data) = (black_box(TYPE), black_box(AGGREGATE), black_box(DATA.as_bytes()));
    (0..count).map(|_| EventDraft::new(event_type, aggregate, data.to_vec())).collect()
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("ffi_publish");

    group.throughput(Throughput::Elements(1));
    let system = rust_system();
    group.bench_function(BenchmarkId::new("single", "rust"), |b| {
        b.iter(|| system.publish(rust_drafts(1)).expect("publish"));
    });
    drop(system);
    let system = c_system();
    let one = draft();
    group.bench_function(BenchmarkId::new("single", "c_abi"), |b| {
        let mut appended = herald_appended::default();
        // SAFETY: live handle, valid draft and out-pointer.
        b.iter(|| assert_eq!(unsafe { herald_publish(system, &one, &mut appended) }, herald_status::HERALD_OK));
    });
    // SAFETY: freed once.
    unsafe { herald_system_free(system) };

    group.throughput(Throughput::Elements(BATCH as u64));
    let system = rust_system();
    group.bench_function(BenchmarkId::new("batch_1000", "rust"), |b| {
        b.iter(|| system.publish(rust_drafts(BATCH)).expect("publish"));
    });
    drop(system);
    let system = c_system();
    let drafts: Vec<herald_draft> = (0..BATCH).map(|_| draft()).collect();
    group.bench_function(BenchmarkId::new("batch_1000", "c_abi"), |b| {
        // SAFETY: live handle, BATCH drafts, no result array.
        b.iter(|| {
            let status = unsafe { herald_publish_batch(system, drafts.as_ptr(), BATCH, ptr::null_mut()) };
            assert_eq!(status, herald_status::HERALD_OK);
        });
    });
    let events: Vec<String> =
        (0..BATCH).map(|_| format!(r#"{{"type":"{TYPE}","aggregate_id":"{AGGREGATE}","data":{DATA}}}"#)).collect();
    let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
    group.bench_function(BenchmarkId::new("json_batch_1000", "c_abi"), |b| {
        // SAFETY: live handle, valid buffer, no outputs.
        b.iter(|| {
            let status =
                unsafe { herald_publish_json(system, body.as_ptr(), body.len(), ptr::null_mut(), 0, ptr::null_mut()) };
            assert_eq!(status, herald_status::HERALD_OK);
        });
    });
    // SAFETY: freed once.
    unsafe { herald_system_free(system) };
    let dir = tempfile::tempdir().expect("temp dir");
    let system = c_disk_system(dir.path());
    group.bench_function(BenchmarkId::new("json_batch_1000_mmap", "c_abi"), |b| {
        // SAFETY: live handle, valid buffer, no outputs.
        b.iter(|| {
            let status =
                unsafe { herald_publish_json(system, body.as_ptr(), body.len(), ptr::null_mut(), 0, ptr::null_mut()) };
            assert_eq!(status, herald_status::HERALD_OK);
        });
    });
    // SAFETY: freed once.
    unsafe { herald_system_free(system) };
    group.finish();
}

/// Rounds of the paired comparison, and publishes per round and side.
const PAIRED_ROUNDS: usize = 16;
const PAIRED_EVENTS: usize = 50_000;

/// The ratio on a noisy machine: `rust` and `c_abi` publish in alternating rounds (each on its
/// own fresh system, the same number of events), so load that comes and goes hits both alike;
/// prints each side's median ns per event and the median of the per-round ratios. Criterion's
/// separate groups, minutes apart, can differ by ±40% on shared cores.
fn paired(batch: usize) {
    let c = c_system();
    let rust = rust_system();
    let drafts: Vec<herald_draft> = (0..batch).map(|_| draft()).collect();
    let (mut rust_ns, mut c_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let run_rust = || {
        let started = std::time::Instant::now();
        for _ in 0..PAIRED_EVENTS / batch {
            rust.publish(rust_drafts(batch)).expect("publish");
        }
        started.elapsed().as_nanos() as f64 / PAIRED_EVENTS as f64
    };
    let run_c = || {
        let started = std::time::Instant::now();
        for _ in 0..PAIRED_EVENTS / batch {
            // SAFETY: live handle, `batch` drafts, no result array.
            let status = unsafe { herald_publish_batch(c, drafts.as_ptr(), batch, ptr::null_mut()) };
            assert_eq!(status, herald_status::HERALD_OK);
        }
        started.elapsed().as_nanos() as f64 / PAIRED_EVENTS as f64
    };
    for round in 0..PAIRED_ROUNDS {
        // Who goes first alternates, so neither side always inherits the other's cache state.
        let (r, x) = if round % 2 == 0 {
            let r = run_rust();
            (r, run_c())
        } else {
            let x = run_c();
            (run_rust(), x)
        };
        rust_ns.push(r);
        c_ns.push(x);
        ratios.push(x / r);
    }
    // SAFETY: freed once.
    unsafe { herald_system_free(c) };
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "ffi_publish/paired batch={batch}: rust {:.0} ns/event, c_abi {:.0} ns/event, c_abi/rust median ratio {:.3} (rounds {PAIRED_ROUNDS} x {PAIRED_EVENTS} events)",
        median(&mut rust_ns),
        median(&mut c_ns),
        median(&mut ratios)
    );
}

fn paired_ratios(_: &mut Criterion) {
    paired(1);
    paired(BATCH);
}

criterion_group!(benches, paired_ratios, publish);
criterion_main!(benches);
