//! Latency histograms shared by every layer: HdrHistogram over nanoseconds, 3 significant
//! digits, 1 ns to 10 minutes, and their summary (with fixed buckets, for Prometheus).

use hdrhistogram::Histogram;

/// Upper bounds (inclusive, ns) of the fixed latency buckets; a last bucket takes the rest.
pub const LATENCY_BUCKET_BOUNDS_NS: [u64; 15] = [
    1_000,
    5_000,
    10_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
];

/// A latency distribution, summarized.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Samples per bucket of [`LATENCY_BUCKET_BOUNDS_NS`] (not cumulative); the last entry
    /// counts the samples above the last bound.
    pub buckets: [u64; LATENCY_BUCKET_BOUNDS_NS.len() + 1],
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
        let mut buckets = [0u64; LATENCY_BUCKET_BOUNDS_NS.len() + 1];
        let mut below = 0u64;
        for (bucket, &bound) in buckets.iter_mut().zip(&LATENCY_BUCKET_BOUNDS_NS) {
            let up_to = histogram.count_between(0, bound);
            *bucket = up_to.saturating_sub(below);
            below = up_to.max(below);
        }
        buckets[LATENCY_BUCKET_BOUNDS_NS.len()] = histogram.len().saturating_sub(below);
        LatencySummary {
            count: histogram.len(),
            mean_ns: histogram.mean(),
            p50_ns: histogram.value_at_quantile(0.5),
            p99_ns: histogram.value_at_quantile(0.99),
            max_ns: histogram.max(),
            buckets,
        }
    }

    /// The sum of the samples in ns (from the mean; HdrHistogram keeps no exact sum).
    pub fn sum_ns(&self) -> f64 {
        self.mean_ns * self.count as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_partition_the_samples() {
        // Every sample lands in exactly one bucket, by its bound.
        let mut histogram = latency_histogram();
        for value in [500, 1_000, 1_001, 7_000, 2_000_000, 20_000_000_000] {
            histogram.record(value).unwrap();
        }
        let summary = LatencySummary::of(&histogram);
        assert_eq!(summary.buckets.iter().sum::<u64>(), 6);
        assert_eq!(summary.buckets[0], 2, "≤ 1 µs");
        assert_eq!(summary.buckets[1], 1, "≤ 5 µs");
        assert_eq!(summary.buckets[2], 1, "≤ 10 µs");
        assert_eq!(summary.buckets[8], 1, "≤ 2.5 ms");
        assert_eq!(summary.buckets[15], 1, "above 10 s");
    }
}
