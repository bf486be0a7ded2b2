//! The C ABI benchmark: publishing through `herald_publish*` against the same loop in Rust on
//! `System::publish`. Figures: `docs/benchmarks.md`.
//!
//! Group `ffi_publish`, ids `<case>/<impl>` with impl `rust` (the engine's API) or `c_abi` (the
//! exported functions, called exactly as C calls them: the same `extern "C"` calling
//! convention, argument checks, UTF-8 checks, panic boundary and draft conversion). Both use a
//! testing-preset system (in-memory store, no handlers), so the ratio isolates what the ABI
//! layer adds. Cases: `single` (one event per call), `batch_1000` (one atomic batch of 1,000
//! drafts per call) and `json_batch_1000/c_abi` (the spec's JSON body, the bindings' path).

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

fn rust_system() -> System {
    SystemBuilder::testing().build().expect("testing system")
}

fn rust_drafts(count: usize) -> Vec<EventDraft> {
    (0..count).map(|_| EventDraft::new(TYPE, AGGREGATE, DATA)).collect()
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
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
