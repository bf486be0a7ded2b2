//! The C ABI called as C calls it: statuses, messages, outputs only on success, borrowed views,
//! subscriptions across threads and causation inside callbacks.

use std::ffi::{c_void, CStr};
use std::ptr;
use std::sync::mpsc;
use std::time::Duration;

use herald::event::{herald_appended, herald_draft, herald_event, herald_uuid, HERALD_EXPECT_ANY, HERALD_EXPECT_EXACT};
use herald::read::{herald_read_all, herald_read_stream, herald_reader, herald_reader_free, herald_reader_next};
use herald::snapshot::*;
use herald::status::{herald_last_error, herald_status, herald_status::*};
use herald::subscription::*;
use herald::system::*;

struct System(*mut herald_system);

impl System {
    fn testing() -> System {
        let mut system = ptr::null_mut();
        // SAFETY: valid preset text and out-pointer.
        let status = unsafe { herald_system_new(c"testing".as_ptr(), 7, ptr::null(), 0, &mut system) };
        assert_eq!(status, HERALD_OK, "{}", last_error());
        System(system)
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // SAFETY: the handle came from herald_system_new and is freed once.
        unsafe { herald_system_free(self.0) };
    }
}

fn last_error() -> String {
    // SAFETY: herald_last_error never returns NULL and the text lives until the next failure.
    unsafe { CStr::from_ptr(herald_last_error()) }.to_string_lossy().into_owned()
}

fn draft(event_type: &'static str, aggregate_id: &'static str, data: &'static str) -> herald_draft {
    herald_draft {
        event_type: event_type.as_ptr().cast(),
        event_type_len: event_type.len(),
        aggregate_id: aggregate_id.as_ptr().cast(),
        aggregate_id_len: aggregate_id.len(),
        data: data.as_ptr(),
        data_len: data.len(),
        metadata_json: ptr::null(),
        metadata_json_len: 0,
        id: ptr::null(),
        correlation_id: ptr::null(),
        causation_id: ptr::null(),
        expect: HERALD_EXPECT_ANY,
        expected_version: 0,
    }
}

fn publish(system: &System, draft: &herald_draft) -> Result<herald_appended, herald_status> {
    let mut appended = herald_appended::default();
    // SAFETY: live handle, valid draft and out-pointer.
    match unsafe { herald_publish(system.0, draft, &mut appended) } {
        HERALD_OK => Ok(appended),
        status => Err(status),
    }
}

/// The view's text fields, copied.
fn text(ptr: *const std::ffi::c_char, len: usize) -> String {
    // SAFETY: views hand out pointers valid for their lengths until the next call.
    String::from_utf8(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }.to_vec()).expect("UTF-8")
}

fn read_stream(system: &System, aggregate_id: &str) -> Vec<(String, u64, String)> {
    let mut reader: *mut herald_reader = ptr::null_mut();
    // SAFETY: live handle, valid text and out-pointer.
    let status =
        unsafe { herald_read_stream(system.0, aggregate_id.as_ptr().cast(), aggregate_id.len(), 1, 0, &mut reader) };
    assert_eq!(status, HERALD_OK, "{}", last_error());
    let mut events = Vec::new();
    loop {
        let mut event = std::mem::MaybeUninit::<herald_event>::uninit();
        // SAFETY: live reader and a writable out-struct.
        match unsafe { herald_reader_next(reader, event.as_mut_ptr()) } {
            HERALD_OK => {
                // SAFETY: HERALD_OK means the struct was written.
                let event = unsafe { event.assume_init() };
                let data = text(event.data.cast(), event.data_len);
                events.push((text(event.event_type, event.event_type_len), event.aggregate_version, data));
            }
            HERALD_END => break,
            other => panic!("reader_next: {other:?} {}", last_error()),
        }
    }
    // SAFETY: freed once.
    unsafe { herald_reader_free(reader) };
    events
}

#[test]
fn publish_then_read_the_stream_back_through_views() {
    let system = System::testing();
    let first = publish(&system, &draft("TaskCreated", "task-1", r#"{"title":"x"}"#)).expect("publish");
    assert_eq!((first.position, first.aggregate_version, first.already_appended), (0, 1, false));
    let mut again = draft("TaskCompleted", "task-1", "{}");
    again.id = &first.id as *const herald_uuid;
    let retry = publish(&system, &again).expect_err("same id, other type: a conflict");
    assert_eq!(retry, HERALD_DUPLICATE_ID, "{}", last_error());
    // Payloads of different lengths: the ABI copies a batch's payloads into one buffer.
    let batch = [draft("TaskStarted", "task-1", "[1,2,3]"), draft("TaskCompleted", "task-1", "2")];
    let mut results = [herald_appended::default(); 2];
    // SAFETY: live handle, two drafts, room for two results.
    let status = unsafe { herald_publish_batch(system.0, batch.as_ptr(), 2, results.as_mut_ptr()) };
    assert_eq!(status, HERALD_OK, "{}", last_error());
    assert_eq!(results.map(|r| r.position), [1, 2]);
    assert_eq!(
        read_stream(&system, "task-1"),
        [
            ("TaskCreated".into(), 1, r#"{"title":"x"}"#.into()),
            ("TaskStarted".into(), 2, "[1,2,3]".into()),
            ("TaskCompleted".into(), 3, "2".into())
        ]
    );
}

#[test]
fn failures_return_a_status_and_a_message_and_write_nothing() {
    let system = System::testing();
    publish(&system, &draft("TaskCreated", "task-1", "{}")).expect("publish");
    let mut stale = draft("TaskCompleted", "task-1", "{}");
    stale.expect = HERALD_EXPECT_EXACT;
    stale.expected_version = 5;
    let mut appended = herald_appended { position: 77, ..Default::default() };
    // SAFETY: live handle, valid draft and out-pointer.
    let status = unsafe { herald_publish(system.0, &stale, &mut appended) };
    assert_eq!(status, HERALD_VERSION_CONFLICT);
    assert!(last_error().contains("version conflict"), "{}", last_error());
    assert_eq!(appended.position, 77, "outputs are written only on success");

    let bad_utf8: &'static str = "ok";
    let mut broken = draft("TaskCreated", bad_utf8, "{}");
    let invalid = [0xff_u8, 0xfe];
    broken.aggregate_id = invalid.as_ptr().cast();
    broken.aggregate_id_len = 2;
    assert_eq!(publish(&system, &broken), Err(HERALD_INVALID_UTF8));
    assert!(last_error().contains("draft: `aggregate_id`"), "{}", last_error());
    assert_eq!(publish(&system, &draft("TaskCreated", "task-1", "{not json")), Err(HERALD_INVALID_ARGUMENT));
    assert!(last_error().contains("data"), "{}", last_error());
    let batch = [draft("TaskStarted", "task-1", "{}"), draft("TaskCompleted", "task-1", "[1,")];
    // SAFETY: live handle, two drafts, no result array.
    let status = unsafe { herald_publish_batch(system.0, batch.as_ptr(), 2, ptr::null_mut()) };
    assert_eq!(status, HERALD_INVALID_ARGUMENT, "{}", last_error());
    assert!(last_error().contains("data"), "{}", last_error());
    let mut null_data = draft("TaskCompleted", "task-1", "{}");
    null_data.data = ptr::null();
    let batch = [draft("TaskStarted", "task-1", "{}"), null_data];
    // SAFETY: as above; a NULL payload is checked.
    let status = unsafe { herald_publish_batch(system.0, batch.as_ptr(), 2, ptr::null_mut()) };
    assert_eq!(status, HERALD_NULL_PARAMETER);
    assert!(last_error().contains("drafts[1]: `data`"), "{}", last_error());
    // SAFETY: a NULL draft is checked.
    assert_eq!(unsafe { herald_publish(system.0, ptr::null(), ptr::null_mut()) }, HERALD_NULL_PARAMETER);
    let mut other = ptr::null_mut();
    // SAFETY: valid text and out-pointer.
    let status = unsafe { herald_system_new(c"staging".as_ptr(), 7, ptr::null(), 0, &mut other) };
    assert_eq!(status, HERALD_INVALID_CONFIG);
    assert!(other.is_null());
    assert_eq!(read_stream(&system, "task-1").len(), 1, "nothing was stored by the failures");

    let mut drained = false;
    // SAFETY: live handle and out-pointer.
    assert_eq!(unsafe { herald_system_shutdown(system.0, 1_000, &mut drained) }, HERALD_OK);
    assert_eq!(publish(&system, &draft("TaskCreated", "task-2", "{}")), Err(HERALD_SHUTTING_DOWN));
    assert_eq!(read_stream(&system, "task-1").len(), 1, "reads still work after shutdown");
}

#[test]
fn json_publish_reports_every_result_up_to_the_capacity() {
    let system = System::testing();
    let body = br#"{"events":[{"type":"A","aggregate_id":"a","data":1},{"type":"B","aggregate_id":"a","data":2},{"type":"C","aggregate_id":"b","data":3}]}"#;
    let mut results = [herald_appended::default(); 2];
    let mut count = 0usize;
    // SAFETY: live handle, valid buffer, room for two results, a count out-pointer.
    let status =
        unsafe { herald_publish_json(system.0, body.as_ptr(), body.len(), results.as_mut_ptr(), 2, &mut count) };
    assert_eq!(status, HERALD_OK, "{}", last_error());
    assert_eq!(count, 3);
    assert_eq!(results.map(|r| (r.position, r.aggregate_version)), [(0, 1), (1, 2)]);
    let data = |aggregate| read_stream(&system, aggregate).into_iter().map(|(_, _, data)| data).collect::<Vec<_>>();
    assert_eq!((data("a"), data("b")), (vec!["1".to_owned(), "2".to_owned()], vec!["3".to_owned()]));
    let bad = br#"{"events":[{"type":"A","aggregate_id":"a","data":1},{"type":"B","data":2}]}"#;
    // SAFETY: as above, with no result array.
    let status = unsafe { herald_publish_json(system.0, bad.as_ptr(), bad.len(), ptr::null_mut(), 0, ptr::null_mut()) };
    assert_eq!(status, HERALD_INVALID_ARGUMENT);
    assert!(last_error().contains("events[1].aggregate_id"), "{}", last_error());
}

#[test]
fn snapshots_round_trip_and_a_missing_one_is_not_found() {
    let system = System::testing();
    publish(&system, &draft("TaskCreated", "task-1", "{}")).expect("publish");
    let state = b"state-at-1";
    // SAFETY: live handle and valid buffers.
    let status = unsafe { herald_snapshot_save(system.0, c"task-1".as_ptr(), 6, 1, state.as_ptr(), state.len()) };
    assert_eq!(status, HERALD_OK, "{}", last_error());
    let mut snapshot = ptr::null_mut();
    // SAFETY: live handle, valid text and out-pointer.
    assert_eq!(unsafe { herald_snapshot_load(system.0, c"task-1".as_ptr(), 6, &mut snapshot) }, HERALD_OK);
    let mut view = std::mem::MaybeUninit::<herald_snapshot_view>::uninit();
    // SAFETY: live snapshot and writable view.
    assert_eq!(unsafe { herald_snapshot_get(snapshot, view.as_mut_ptr()) }, HERALD_OK);
    // SAFETY: written on HERALD_OK; the state lives until the free below.
    let view = unsafe { view.assume_init() };
    assert_eq!(view.aggregate_version, 1);
    // SAFETY: the view's state pointer is valid for its length until the free.
    assert_eq!(unsafe { std::slice::from_raw_parts(view.state, view.state_len) }, state);
    // SAFETY: freed once.
    unsafe { herald_snapshot_free(snapshot) };
    let mut missing = ptr::null_mut();
    // SAFETY: as above.
    assert_eq!(unsafe { herald_snapshot_load(system.0, c"task-2".as_ptr(), 6, &mut missing) }, HERALD_NOT_FOUND);
    assert!(missing.is_null());
}

#[test]
fn a_pull_subscription_sees_history_then_events_from_another_thread() {
    let system = System::testing();
    publish(&system, &draft("TaskCreated", "task-1", "{}")).expect("publish");
    publish(&system, &draft("UserRegistered", "user-1", "{}")).expect("publish");
    let mut subscription = ptr::null_mut();
    // SAFETY: live handle, valid pattern and out-pointer.
    let status = unsafe {
        herald_subscription_new(system.0, c"task.#".as_ptr(), 6, HERALD_START_BEGINNING, 0, &mut subscription)
    };
    assert_eq!(status, HERALD_OK, "{}", last_error());
    let raw = system.0 as usize;
    let publisher = std::thread::spawn(move || {
        let system = System(raw as *mut herald_system);
        for _ in 0..20 {
            publish(&system, &draft("TaskUpdated", "task-1", "{}")).expect("publish");
        }
        std::mem::forget(system); // the test's own handle frees it
    });
    let mut positions = Vec::new();
    while positions.len() < 21 {
        let mut event = std::mem::MaybeUninit::<herald_event>::uninit();
        // SAFETY: live subscription, used by this thread only, and a writable out-struct.
        match unsafe { herald_subscription_next(subscription, 10_000, event.as_mut_ptr()) } {
            // SAFETY: written on HERALD_OK.
            HERALD_OK => positions.push(unsafe { event.assume_init() }.position),
            other => panic!("next: {other:?} {}", last_error()),
        }
    }
    publisher.join().expect("publisher");
    let mut expected = vec![0];
    expected.extend(2..22);
    assert_eq!(positions, expected, "the user event is filtered out; the rest once, in order");
    let mut event = std::mem::MaybeUninit::<herald_event>::uninit();
    // SAFETY: as above.
    assert_eq!(unsafe { herald_subscription_next(subscription, 10, event.as_mut_ptr()) }, HERALD_TIMEOUT);
    // SAFETY: freed once.
    unsafe { herald_subscription_free(subscription) };
}

struct Seen {
    system: usize,
    sender: mpsc::Sender<(herald_uuid, bool, herald_uuid, String)>,
}

unsafe extern "C" fn on_event(userdata: *mut c_void, event: *const herald_event) {
    // SAFETY: userdata is the `Seen` the test keeps alive; the event is valid during the call.
    let (seen, event) = unsafe { (&*(userdata as *const Seen), &*event) };
    let event_type = text(event.event_type, event.event_type_len);
    if event_type == "TaskCreated" {
        let system = System(seen.system as *mut herald_system);
        publish(&system, &draft("NotificationQueued", "task-1", "{}")).expect("publish from the callback");
        std::mem::forget(system);
    }
    let _ = seen.sender.send((event.id, event.has_causation_id, event.causation_id, event_type));
}

#[test]
fn a_callback_subscription_runs_on_herald_thread_and_chains_causation() {
    let system = System::testing();
    let (sender, received) = mpsc::channel();
    let seen = Box::new(Seen { system: system.0 as usize, sender });
    let mut subscription = ptr::null_mut();
    // SAFETY: live handle; the callback and its userdata outlive the subscription.
    let status = unsafe {
        herald_subscription_callback_new(
            system.0,
            ptr::null(),
            0,
            HERALD_START_END,
            0,
            Some(on_event),
            &*seen as *const Seen as *mut c_void,
            &mut subscription,
        )
    };
    assert_eq!(status, HERALD_OK, "{}", last_error());
    let created = publish(&system, &draft("TaskCreated", "task-1", "{}")).expect("publish");
    let first = received.recv_timeout(Duration::from_secs(10)).expect("the created event");
    let second = received.recv_timeout(Duration::from_secs(10)).expect("the follow-up");
    assert_eq!((first.0, first.3.as_str()), (created.id, "TaskCreated"));
    assert_eq!(second.3, "NotificationQueued");
    assert!(second.1 && second.2 == created.id, "the follow-up is caused by the handled event");
    let mut event = std::mem::MaybeUninit::<herald_event>::uninit();
    // SAFETY: live subscription; pulling from a callback subscription is refused.
    assert_eq!(unsafe { herald_subscription_next(subscription, 0, event.as_mut_ptr()) }, HERALD_CONFLICT);
    // SAFETY: freed once; this joins the callback thread before `seen` is dropped.
    unsafe { herald_subscription_free(subscription) };
    drop(seen);
}

#[test]
fn a_log_reader_is_a_snapshot_of_the_end_when_made() {
    let system = System::testing();
    for _ in 0..300 {
        publish(&system, &draft("TaskCreated", "task-1", "{}")).expect("publish");
    }
    let mut reader = ptr::null_mut();
    // SAFETY: live handle and out-pointer.
    assert_eq!(unsafe { herald_read_all(system.0, 10, 0, &mut reader) }, HERALD_OK);
    publish(&system, &draft("TaskCreated", "task-1", "{}")).expect("publish");
    let mut count = 0;
    let mut event = std::mem::MaybeUninit::<herald_event>::uninit();
    // SAFETY: live reader and a writable out-struct.
    while unsafe { herald_reader_next(reader, event.as_mut_ptr()) } == HERALD_OK {
        count += 1;
    }
    // SAFETY: freed once.
    unsafe { herald_reader_free(reader) };
    assert_eq!(count, 290, "positions 10..300, not the event appended after");
}
