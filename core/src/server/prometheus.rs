//! `GET /metrics`: the system's counters, gauges and latency histograms in the Prometheus text
//! format (0.0.4), encoded by the `prometheus-client` crate at each scrape from the same
//! numbers `GET /v1/metrics` shows. Every name has the `herald_` prefix; counters end in
//! `_total`, latencies are histograms in seconds.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::{LatencySummary, LATENCY_BUCKET_BOUNDS_NS};
use crate::system::System;

/// The metrics text of `system` now.
pub fn encode(system: &System) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot::of(system)));
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        // Writing into a String cannot fail; keep a visible trace if the encoder ever does.
        text = format!("# encoding failed: {error}\n");
    }
    text
}

/// One histogram series: name, help, labels, the distribution.
type Series = (&'static str, &'static str, Vec<(String, String)>, LatencySummary);

/// A counter with one label: name, help, label name, (label value, count) per series.
type Labeled = (&'static str, &'static str, &'static str, Vec<(&'static str, u64)>);

/// The numbers of one scrape.
#[derive(Debug)]
struct Snapshot {
    counters: Vec<(&'static str, &'static str, u64)>,
    labeled: Vec<Labeled>,
    gauges: Vec<(&'static str, &'static str, f64)>,
    histograms: Vec<Series>,
}

impl Snapshot {
    fn of(system: &System) -> Snapshot {
        let bus = system.bus_metrics();
        let store = system.store_metrics();
        let webhooks = system.webhook_metrics();
        let realtime = system.realtime_metrics();
        let domain_published = bus.published.saturating_sub(webhooks.published + realtime.persisted);
        let counters = vec![
            ("herald_domain_events_published", "Domain events published (appended and dispatched).", domain_published),
            ("herald_domain_events_handled", "Domain events handled successfully, over all handlers.", bus.handled),
            ("herald_domain_events_failed", "Domain event handlings that failed after their retries.", bus.failed),
            (
                "herald_domain_events_overloaded",
                "Publishes refused because the dispatch ring was full.",
                bus.overloaded,
            ),
            ("herald_integration_events_published", "Integration events published.", webhooks.published),
            ("herald_webhooks_delivered", "Webhook messages delivered (a 2xx answer).", webhooks.delivered),
            ("herald_webhooks_failed", "Webhook messages whose attempts ran out.", webhooks.failed),
            ("herald_webhook_retries", "Webhook retries scheduled.", webhooks.retried),
            ("herald_websocket_events_broadcast", "WebSocket events fanned out.", realtime.counters.broadcast),
            (
                "herald_websocket_events_delivered",
                "WebSocket event frames queued on connections.",
                realtime.counters.delivered,
            ),
            (
                "herald_websocket_events_persisted",
                "Persistent WebSocket events appended to the log.",
                realtime.persisted,
            ),
            (
                "herald_websocket_bridge_skipped",
                "Bridge rules skipped for an event whose room template named a missing field.",
                realtime.bridge_skipped,
            ),
            ("herald_event_store_events", "Records appended to the log over its life.", store.total_events),
            ("herald_event_store_snapshots", "Snapshots saved over the log's life.", store.total_snapshots),
        ];
        let gauges = vec![
            (
                "herald_event_store_storage_bytes",
                "Bytes of segment data and snapshots held.",
                store.storage_bytes as f64,
            ),
            ("herald_websocket_connections", "Open WebSocket connections.", realtime.connections as f64),
            ("herald_webhooks_pending", "Webhook deliveries waiting to be delivered.", webhooks.pending as f64),
            ("herald_webhook_endpoints", "Registered webhook endpoints.", webhooks.endpoints as f64),
            (
                "herald_domain_average_handling_time_ms",
                "Average handling time over all handlers, in milliseconds.",
                bus.average_handling_time_ms,
            ),
            ("herald_uptime_seconds", "Seconds since the system started.", system.uptime().as_secs_f64()),
        ];
        let mut histograms = vec![
            (
                "herald_event_store_append_latency",
                "Append calls, durability wait included.",
                Vec::new(),
                store.append_latency,
            ),
            ("herald_event_store_fsync_latency", "Fsyncs (one per group commit).", Vec::new(), store.fsync_latency),
            (
                "herald_websocket_fanout_latency",
                "Time to queue one broadcast on all its connections.",
                Vec::new(),
                realtime.fanout_latency,
            ),
            (
                "herald_webhook_delivery_latency",
                "From an integration event's timestamp to its successful delivery, per delivery.",
                Vec::new(),
                webhooks.delivery_latency,
            ),
        ];
        for handler in &bus.handlers {
            let labels =
                vec![("handler".to_string(), handler.name.clone()), ("group".to_string(), handler.group.clone())];
            histograms.push((
                "herald_domain_handling_latency",
                "Time handlers took per event.",
                labels,
                handler.handling_time,
            ));
        }
        let dropped = &realtime.counters;
        let labeled = vec![(
            "herald_websocket_frames_dropped",
            "WebSocket event frames not queued on a connection, by reason.",
            "reason",
            vec![
                ("low_priority", dropped.dropped_low_priority),
                ("slow_consumer", dropped.dropped_slow_consumer),
                ("excluded", dropped.dropped_excluded),
            ],
        )];
        Snapshot { counters, labeled, gauges, histograms }
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, value) in &self.counters {
            let counter = ConstCounter::new(*value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        for (name, help, label, series) in &self.labeled {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (value, count) in series {
                let labels = [(label.to_string(), value.to_string())];
                ConstCounter::new(*count).encode(metric.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in &self.gauges {
            let gauge = ConstGauge::new(*value);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        // One descriptor per histogram name, then one family per label set.
        let mut at = 0;
        while at < self.histograms.len() {
            let (name, help, _, _) = &self.histograms[at];
            let mut metric = encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
            while at < self.histograms.len() && self.histograms[at].0 == *name {
                let (_, _, labels, summary) = &self.histograms[at];
                let buckets = buckets_in_seconds(summary);
                let sum = summary.sum_ns() / 1e9;
                if labels.is_empty() {
                    metric.encode_histogram::<NoLabelSet>(sum, summary.count, &buckets, None)?;
                } else {
                    metric.encode_family(labels)?.encode_histogram::<NoLabelSet>(sum, summary.count, &buckets, None)?;
                }
                at += 1;
            }
        }
        Ok(())
    }
}

/// The summary's buckets as `(upper bound in seconds, count)`, the last one unbounded.
fn buckets_in_seconds(summary: &LatencySummary) -> Vec<(f64, u64)> {
    let bounds = LATENCY_BUCKET_BOUNDS_NS.iter().map(|&ns| ns as f64 / 1e9).chain([f64::INFINITY]);
    bounds.zip(summary.buckets).collect()
}
