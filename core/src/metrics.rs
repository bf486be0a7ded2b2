//! Latency histograms shared by every layer: HdrHistogram over nanoseconds, 3 significant
//! digits, 1 ns to 10 minutes, and their summary.

use hdrhistogram::Histogram;

/// A latency distribution, summarized.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

/// An empty latency histogram.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that HdrHistogram accepts, so this cannot fail.
    Histogram::new_with_bounds(1, 600_000_000_000, 3).unwrap_or_else(|_| unreachable!("constant bounds"))
}

impl LatencySummary {
    /// Summarizes a histogram of nanoseconds.
    pub(crate) fn of(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: histogram.len(),
            mean_ns: histogram.mean(),
            p50_ns: histogram.value_at_quantile(0.5),
            p99_ns: histogram.value_at_quantile(0.99),
            max_ns: histogram.max(),
        }
    }
}
