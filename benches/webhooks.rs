//! The webhook benchmark. Figures: `docs/benchmarks.md`.
//!
//! - `filter_1000/<impl>`: routing one integration event against 1,000 endpoints' filters (one
//!   pattern each, three shapes: `svcN.*.created`, `svcN.#`, `*.orderN.#`). `herald_trie` is the
//!   compiled [`PatternSet`] (what the outbox routes with); `regex_loop` is the naive peer: one
//!   compiled `regex::Regex` per pattern, tried in a loop. Keys cycle through 1,024 samples that
//!   match zero, one or two patterns; the setup checks both agree on every sample.
//! - `deliver/<impl>`: deliveries per second to a fast local receiver (a std-thread HTTP/1.1
//!   server in this process, keep-alive, answering `200` with no body). `herald` publishes
//!   integration events through a [`System`] (development preset, journal on disk, fsync never,
//!   4 workers, one endpoint) and waits until all are delivered: append, routing, journaling,
//!   signing, the POST and the outcome record are all inside the measured time. `raw_ureq` is
//!   the peer: 4 threads, each with its own ureq agent, signing and posting the same bodies in
//!   a loop — the HTTP cost without the outbox.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_core::integration::signing::{generate_secret, secret_key, sign};
use herald_core::integration::{EndpointDraft, IntegrationEvent};
use herald_core::routing::PatternSet;
use herald_core::system::{System, SystemBuilder};

const ENDPOINTS: usize = 1_000;
const WORKERS: usize = 4;

fn pattern(i: usize) -> (String, String) {
    match i % 3 {
        0 => (format!("svc{i}.*.created"), format!(r"^svc{i}\.[a-z0-9_-]*\.created$")),
        1 => (format!("svc{i}.#"), format!(r"^svc{i}(\..*)?$")),
        _ => (format!("*.order{i}.#"), format!(r"^[a-z0-9_-]*\.order{i}(\..*)?$")),
    }
}

fn sample_key(n: usize) -> String {
    let i = (n * 7919) % ENDPOINTS;
    match n % 4 {
        0 => format!("svc{i}.x.created"),
        1 => format!("svc{i}.a.b"),
        2 => format!("t.order{i}.paid"),
        _ => "nothing.here".to_string(),
    }
}

fn filters(c: &mut Criterion) {
    let mut set = PatternSet::new();
    let mut regexes = Vec::new();
    for i in 0..ENDPOINTS {
        let (amqp, regex) = pattern(i);
        set.insert(&amqp).expect("valid pattern");
        regexes.push(regex::Regex::new(&regex).expect("valid regex"));
    }
    let keys: Vec<String> = (0..1024).map(sample_key).collect();
    let regex_matches = |key: &str| -> Vec<usize> {
        regexes.iter().enumerate().filter(|(_, r)| r.is_match(key)).map(|(i, _)| i).collect()
    };
    for key in &keys {
        assert_eq!(set.matches(key), regex_matches(key), "the two matchers disagree on {key}");
    }
    let mut group = c.benchmark_group("webhooks");
    group.throughput(Throughput::Elements(1));
    let mut at = 0;
    group.bench_function(BenchmarkId::new("filter_1000", "herald_trie"), |b| {
        b.iter(|| {
            at = (at + 1) % keys.len();
            std::hint::black_box(set.matches(&keys[at]))
        })
    });
    group.bench_function(BenchmarkId::new("filter_1000", "regex_loop"), |b| {
        b.iter(|| {
            at = (at + 1) % keys.len();
            std::hint::black_box(regex_matches(&keys[at]))
        })
    });
    group.finish();
}

/// A minimal keep-alive HTTP/1.1 receiver: reads each request (head, then `content-length`
/// bytes) and answers `200`; counts requests.
fn receiver() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let count = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || serve(stream, &counter));
        }
    });
    (port, count)
}

fn serve(mut stream: TcpStream, count: &AtomicU64) {
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = request.parse(&buffer) {
            let length = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buffer.len() >= head + length {
                buffer.drain(..head + length);
                count.fetch_add(1, Ordering::Relaxed);
                if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_err() {
                    return;
                }
                continue;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn herald_system(dir: &std::path::Path, port: u16) -> System {
    let config = format!(
        "[webhooks]\nworkers = {WORKERS}\nmax_in_flight_per_endpoint = {WORKERS}\ntimeout_ms = 5000\nretry_delay_ms = 100\n"
    );
    let system = SystemBuilder::development().config_toml(config).data_dir(dir).build().expect("system");
    let draft = EndpointDraft {
        url: Some(format!("http://127.0.0.1:{port}/hook")),
        filter: Some(vec!["bench.#".into()]),
        ..EndpointDraft::default()
    };
    system.webhooks().create(draft).expect("endpoint");
    system
}

fn deliveries(c: &mut Criterion) {
    let (port, received) = receiver();
    let dir = tempfile::tempdir().expect("temporary directory");
    let system = herald_system(dir.path(), port);
    let data = r#"{"order_id":"o-123","amount":4200,"currency":"EUR"}"#;
    let mut group = c.benchmark_group("webhooks");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function(BenchmarkId::new("deliver", "herald"), |b| {
        b.iter_custom(|iters| {
            let start_count = system.webhook_metrics().delivered;
            let started = Instant::now();
            for _ in 0..iters {
                let event = IntegrationEvent::new("bench.order.paid", "1.0.0", "bench", data);
                system.publish_integration(event).expect("publish");
            }
            let deadline = Instant::now() + Duration::from_secs(120);
            while system.webhook_metrics().delivered < start_count + iters {
                assert!(Instant::now() < deadline, "deliveries stalled");
                std::thread::sleep(Duration::from_micros(200));
            }
            started.elapsed()
        })
    });
    let key: Arc<[u8]> = secret_key(&generate_secret()).expect("secret").into();
    let url = format!("http://127.0.0.1:{port}/hook");
    let body = format!(r#"{{"id":"x","type":"bench.order.paid","version":"1.0.0","source":{{}},"data":{data}}}"#);
    let agents: Vec<ureq::Agent> = (0..WORKERS).map(|_| ureq::Agent::new_with_defaults()).collect();
    group.bench_function(BenchmarkId::new("deliver", "raw_ureq"), |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            std::thread::scope(|scope| {
                for (index, agent) in agents.iter().enumerate() {
                    let share = iters / WORKERS as u64 + u64::from((index as u64) < iters % WORKERS as u64);
                    let (key, url, body) = (&key, &url, &body);
                    scope.spawn(move || {
                        for n in 0..share {
                            let id = format!("msg-{index}-{n}");
                            let signature = sign(key, &id, 1_800_000_000, body.as_bytes());
                            let response = agent
                                .post(url)
                                .header("webhook-id", &id)
                                .header("webhook-timestamp", "1800000000")
                                .header("webhook-signature", &signature)
                                .header("content-type", "application/json")
                                .send(body.as_bytes())
                                .expect("post");
                            assert_eq!(response.status().as_u16(), 200);
                        }
                    });
                }
            });
            started.elapsed()
        })
    });
    group.finish();
    eprintln!("receiver saw {} requests", received.load(Ordering::Relaxed));
    let _ = system.shutdown(Duration::from_secs(5));
}

criterion_group!(benches, filters, deliveries);
criterion_main!(benches);
