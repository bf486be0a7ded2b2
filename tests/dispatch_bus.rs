//! End-to-end tests of the domain event bus over a real log: typed handlers, patterns, error
//! isolation, dead letters, causation, durable handlers across a restart, synchronous mode,
//! backpressure and shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_core::dispatch::{
    Backpressure, BusConfig, BusError, DomainEvent, EventBus, HandlerResult, Subscription, WaitStrategy,
};
use herald_core::event::{EventDraft, Uuid};
use herald_core::store::{Durability, EventStore, Log, StoreConfig};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct TaskCreated {
    task_id: String,
    title: String,
}

impl DomainEvent for TaskCreated {
    const EVENT_TYPE: &'static str = "TaskCreated";
    fn aggregate_id(&self) -> String {
        self.task_id.clone()
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct TaskCompleted {
    task_id: String,
}

impl DomainEvent for TaskCompleted {
    const EVENT_TYPE: &'static str = "TaskCompletedEvent";
    fn aggregate_id(&self) -> String {
        self.task_id.clone()
    }
}

fn memory_store() -> Arc<dyn EventStore> {
    Arc::new(Log::in_memory(StoreConfig { segment_bytes: 1 << 20, ..StoreConfig::default() }).unwrap())
}

fn config() -> BusConfig {
    BusConfig { ring_capacity: 1024, wait: WaitStrategy::Yield, ..BusConfig::default() }
}

/// Polls `done` until it holds or 10 s pass.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn task(n: u64) -> TaskCreated {
    TaskCreated { task_id: format!("task-{n}"), title: format!("title {n}") }
}

#[test]
fn typed_pattern_and_catch_all_handlers_see_committed_events_in_order() {
    // Each handler gets exactly the events its filter selects, in position order, decoded.
    let typed = Arc::new(Mutex::new(Vec::new()));
    let pattern = Arc::new(Mutex::new(Vec::new()));
    let all = Arc::new(Mutex::new(Vec::new()));
    let (t, p, a) = (Arc::clone(&typed), Arc::clone(&pattern), Arc::clone(&all));
    let bus = EventBus::builder(memory_store(), config())
        .subscribe(Subscription::typed("typed", move |event: TaskCreated, view| -> HandlerResult {
            t.lock().unwrap().push((view.position, event));
            Ok(())
        }))
        .subscribe(
            Subscription::pattern("completions", "task.completed", move |view| -> HandlerResult {
                p.lock().unwrap().push(view.position);
                Ok(())
            })
            .group("other"),
        )
        .subscribe(Subscription::all("everything", move |view| -> HandlerResult {
            a.lock().unwrap().push(view.position);
            Ok(())
        }))
        .build()
        .unwrap();
    for n in 0..50 {
        bus.publish(&task(n)).unwrap();
        bus.publish(&TaskCompleted { task_id: format!("task-{n}") }).unwrap();
    }
    eventually("all handlers", || all.lock().unwrap().len() == 100 && pattern.lock().unwrap().len() == 50);
    eventually("typed handler", || typed.lock().unwrap().len() == 50);
    assert_eq!(*all.lock().unwrap(), (0..100).collect::<Vec<u64>>());
    assert_eq!(*pattern.lock().unwrap(), (0..50).map(|n| 2 * n + 1).collect::<Vec<u64>>());
    let typed = typed.lock().unwrap();
    assert!(typed
        .iter()
        .enumerate()
        .all(|(n, (position, event))| *position == 2 * n as u64 && *event == task(n as u64)));
    let metrics = bus.metrics();
    assert_eq!(metrics.published, 100);
    assert_eq!(metrics.handled, 200);
    assert_eq!(metrics.failed, 0);
    assert!(metrics.average_handling_time_ms >= 0.0);
    assert!(bus.shutdown(Duration::from_secs(5)));
}

#[test]
fn a_failing_or_panicking_handler_is_retried_then_dead_lettered_and_isolated() {
    // Errors and panics are counted and retried with backoff; the event is dead-lettered with its
    // id; the neighbour handler in the same group and the publisher are unaffected.
    let attempts = Arc::new(AtomicU64::new(0));
    let healthy = Arc::new(AtomicU64::new(0));
    let flaky_seen = Arc::new(AtomicU64::new(0));
    let (a, h, f) = (Arc::clone(&attempts), Arc::clone(&healthy), Arc::clone(&flaky_seen));
    let bus = EventBus::builder(memory_store(), config())
        .subscribe(
            Subscription::of_type("panics", "TaskCreated", move |view| -> HandlerResult {
                a.fetch_add(1, Ordering::SeqCst);
                if view.aggregate_id == "task-1" {
                    panic!("boom on {}", view.aggregate_id);
                }
                Ok(())
            })
            .retries(2)
            .backoff(Duration::from_millis(1)),
        )
        .subscribe(
            Subscription::of_type("errs-once", "TaskCreated", move |_view| -> HandlerResult {
                if f.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err("transient".into());
                }
                Ok(())
            })
            .backoff(Duration::from_millis(1)),
        )
        .subscribe(Subscription::all("healthy", move |_| -> HandlerResult {
            h.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }))
        .build()
        .unwrap();
    let poisoned = bus.publish(&task(1)).unwrap();
    for n in 2..6 {
        bus.publish(&task(n)).unwrap();
    }
    eventually("the healthy handler", || healthy.load(Ordering::SeqCst) == 5);
    eventually("the dead letter", || !bus.dead_letters().is_empty());
    let letters = bus.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].handler, "panics");
    assert_eq!(letters[0].event.id, poisoned.id);
    assert_eq!(letters[0].attempts, 3);
    assert!(letters[0].error.contains("boom on task-1"), "{}", letters[0].error);
    eventually("every handling", || bus.metrics().handled == 5 + 4 + 5);
    assert_eq!(attempts.load(Ordering::SeqCst), 3 + 4);
    let stats = bus.metrics().handlers;
    let panics = stats.iter().find(|s| s.name == "panics").unwrap();
    assert_eq!((panics.handled, panics.failed, panics.retried, panics.dead_lettered), (4, 3, 2, 1));
    let errs = stats.iter().find(|s| s.name == "errs-once").unwrap();
    assert_eq!((errs.handled, errs.failed, errs.retried, errs.dead_lettered), (5, 1, 1, 0));
}

#[test]
fn a_follow_up_published_by_a_handler_carries_the_causation_chain() {
    // Publishing inside a handler sets causation_id to the handled event and keeps its correlation.
    let store = memory_store();
    for synchronous in [false, true] {
        let followed = Arc::new(Mutex::new(Vec::new()));
        let bus_slot: Arc<Mutex<Option<Arc<EventBus>>>> = Arc::new(Mutex::new(None));
        let (slot, seen) = (Arc::clone(&bus_slot), Arc::clone(&followed));
        let bus = Arc::new(
            EventBus::builder(
                Arc::new(Log::in_memory(StoreConfig::default()).unwrap()),
                BusConfig { synchronous, ..config() },
            )
            .subscribe(Subscription::typed("completer", move |event: TaskCreated, _view| -> HandlerResult {
                let bus = slot.lock().unwrap().clone().ok_or("no bus yet")?;
                bus.publish(&TaskCompleted { task_id: event.task_id })?;
                Ok(())
            }))
            .subscribe(Subscription::typed("audit", move |_event: TaskCompleted, view| -> HandlerResult {
                seen.lock().unwrap().push((view.id, view.causation_id, view.correlation_id));
                Ok(())
            }))
            .build()
            .unwrap(),
        );
        *bus_slot.lock().unwrap() = Some(Arc::clone(&bus));
        let correlation = Uuid::now_v7();
        let mut draft = EventDraft::new("TaskCreated", "task-9", serde_json::to_vec(&task(9)).unwrap());
        draft.correlation_id = Some(correlation);
        let created = bus.publish_draft(draft).unwrap().events()[0];
        eventually("the follow-up", || followed.lock().unwrap().len() == 1);
        let (follow_up, causation, follow_correlation) = followed.lock().unwrap()[0];
        assert_eq!(causation, Some(created.id), "synchronous: {synchronous}");
        assert_eq!(follow_correlation, correlation);
        assert_ne!(follow_up, created.id);
        bus_slot.lock().unwrap().take();
        assert!(bus.shutdown(Duration::from_secs(5)));
    }
    drop(store);
}

#[test]
fn a_durable_handler_resumes_after_a_restart_without_a_gap() {
    // Events published while the handler was down are handled after restart, each exactly once.
    let data = tempfile::tempdir().unwrap();
    let checkpoints = data.path().join("handlers");
    let store_config = StoreConfig { durability: Durability::Never, ..StoreConfig::default() };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bus_config = BusConfig { checkpoint_dir: Some(checkpoints.clone()), ..config() };
    let durable = |seen: Arc<Mutex<Vec<u64>>>| {
        Subscription::all("projection", move |view| -> HandlerResult {
            seen.lock().unwrap().push(view.position);
            Ok(())
        })
        .durable()
    };
    // First life: 30 events handled.
    {
        let store: Arc<dyn EventStore> = Arc::new(Log::open(data.path().join("log"), store_config.clone()).unwrap());
        let bus = EventBus::builder(Arc::clone(&store), bus_config.clone())
            .subscribe(durable(Arc::clone(&seen)))
            .build()
            .unwrap();
        for n in 0..30 {
            bus.publish(&task(n)).unwrap();
        }
        eventually("first life", || seen.lock().unwrap().len() == 30);
        assert!(bus.shutdown(Duration::from_secs(5)));
    }
    // Down time: 20 events appended by a bus without the handler.
    {
        let store: Arc<dyn EventStore> = Arc::new(Log::open(data.path().join("log"), store_config.clone()).unwrap());
        let bus = EventBus::builder(store, bus_config.clone()).build().unwrap();
        for n in 30..50 {
            bus.publish(&task(n)).unwrap();
        }
        assert!(bus.shutdown(Duration::from_secs(5)));
    }
    // Second life: catches up 30..50, then live 50..60.
    let store: Arc<dyn EventStore> = Arc::new(Log::open(data.path().join("log"), store_config).unwrap());
    let bus = EventBus::builder(store, bus_config).subscribe(durable(Arc::clone(&seen))).build().unwrap();
    for n in 50..60 {
        bus.publish(&task(n)).unwrap();
    }
    eventually("second life", || seen.lock().unwrap().len() == 60);
    assert!(bus.shutdown(Duration::from_secs(5)));
    assert_eq!(*seen.lock().unwrap(), (0..60).collect::<Vec<u64>>(), "no gap, no duplicate");
}

#[test]
fn synchronous_mode_runs_handlers_on_the_publishers_thread() {
    // In the testing preset's mode the handler has run when publish returns, on the same thread.
    let caller = std::thread::current().id();
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&ran_on);
    let bus = EventBus::builder(memory_store(), BusConfig { synchronous: true, ..config() })
        .subscribe(Subscription::all("inline", move |view| -> HandlerResult {
            r.lock().unwrap().push((view.position, std::thread::current().id()));
            Ok(())
        }))
        .build()
        .unwrap();
    for n in 0..3 {
        bus.publish(&task(n)).unwrap();
        assert_eq!(ran_on.lock().unwrap().len(), n as usize + 1, "handled before publish returned");
    }
    assert!(ran_on.lock().unwrap().iter().all(|(_, thread)| *thread == caller));
}

#[test]
fn invalid_events_are_refused_and_nothing_is_dispatched() {
    // An invalid draft is a typed error; the store and the handlers see nothing.
    let handled = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&handled);
    let bus = EventBus::builder(memory_store(), config())
        .subscribe(Subscription::all("count", move |_| -> HandlerResult {
            h.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }))
        .build()
        .unwrap();
    let error = bus.publish_draft(EventDraft::new("", "a", "{}")).unwrap_err();
    assert!(matches!(error, BusError::Store(_)), "{error}");
    assert!(error.to_string().contains("type"), "{error}");
    bus.publish(&task(1)).unwrap();
    eventually("the valid event", || handled.load(Ordering::SeqCst) == 1);
    assert_eq!(bus.store().bounds(), (0, 1));
    assert_eq!(bus.metrics().published, 1);
}

#[test]
fn a_full_ring_rejects_and_hands_the_events_back() {
    // Under the reject policy a publish into a full ring is Overloaded, returns the drafts and stores nothing.
    let release = Arc::new(AtomicU64::new(0));
    let r = Arc::clone(&release);
    let bus = EventBus::builder(
        memory_store(),
        BusConfig { ring_capacity: 4, batch_size: 1, backpressure: Backpressure::Reject, ..config() },
    )
    .subscribe(Subscription::all("slow", move |_| -> HandlerResult {
        while r.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }))
    .build()
    .unwrap();
    let mut rejected = None;
    for n in 0..10 {
        match bus.publish_draft(EventDraft::new("TaskCreated", format!("t{n}"), "{}")) {
            Ok(_) => {}
            Err(BusError::Overloaded(drafts)) => {
                rejected = Some((n, drafts));
                break;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    let (n, drafts) = rejected.expect("the ring never filled");
    assert_eq!(drafts[0].aggregate_id, format!("t{n}"));
    assert_eq!(bus.store().bounds().1, n, "the refused event was not stored");
    assert_eq!(bus.metrics().overloaded, 1);
    release.store(1, Ordering::SeqCst);
    assert!(bus.shutdown(Duration::from_secs(5)));
    assert!(matches!(bus.publish(&task(0)), Err(BusError::ShuttingDown(_))));
}

#[test]
fn shutdown_drains_what_is_committed() {
    // Every event published before shutdown is handled before shutdown returns true.
    let handled = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&handled);
    let bus = EventBus::builder(memory_store(), BusConfig { wait: WaitStrategy::Blocking, ..config() })
        .subscribe(Subscription::all("count", move |_| -> HandlerResult {
            std::thread::sleep(Duration::from_micros(200));
            h.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }))
        .build()
        .unwrap();
    for n in 0..200 {
        bus.publish(&task(n)).unwrap();
    }
    assert!(bus.shutdown(Duration::from_secs(10)));
    assert_eq!(handled.load(Ordering::SeqCst), 200);
}
