//! Live node counters shared by the stages, the status line and the admin API. Every
//! update also increments the matching Prometheus metric, so both always agree.
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Pipeline stages as they appear in `vigil_records_total{stage=...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Records consumed from source topics.
    Ingest,
    /// Records that passed validation.
    Validate,
    /// Records aggregated into windows.
    Process,
    /// Output records (closed windows) written.
    Sink,
    /// Records written to the DLQ.
    Dlq,
}

impl Stage {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Validate => "validate",
            Stage::Process => "process",
            Stage::Sink => "sink",
            Stage::Dlq => "dlq",
        }
    }
}

/// Summary of the last completed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointSummary {
    /// Id.
    pub id: u64,
    /// Completion time, ms since epoch.
    pub completed_ms: i64,
    /// Duration, µs.
    pub duration_us: u64,
}

/// Node-wide counters.
#[derive(Default)]
pub struct NodeStats {
    stages: [AtomicU64; 5],
    window_records: AtomicU64,
    lost_to_retention: AtomicU64,
    lag: AtomicI64,
    position: AtomicI64,
    ready: AtomicBool,
    last_checkpoint: Mutex<Option<CheckpointSummary>>,
    progress: Mutex<Progress>,
    /// Produce → processed latency of every record read.
    pub latency: LatencyHistogram,
}

/// Upper bounds (ms) of the latency buckets; the last bucket is unbounded.
const LATENCY_BOUNDS_MS: [i64; 36] = [
    0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1500, 2000, 3000, 5000, 10_000,
    30_000, 60_000,
];

/// A lock-free histogram of record latencies (ms) in fixed buckets: quantiles are reported
/// as their bucket's upper bound, so they err high (by at most one bucket, ≤ 25% above 10 ms).
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self { buckets: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl LatencyHistogram {
    fn bucket(ms: i64) -> usize {
        LATENCY_BOUNDS_MS.partition_point(|b| *b < ms)
    }

    /// Record latencies (ms), counted locally first so a batch costs one atomic add per bucket.
    pub fn record_all(&self, latencies_ms: impl IntoIterator<Item = i64>) {
        let mut local = [0u64; LATENCY_BOUNDS_MS.len() + 1];
        for ms in latencies_ms {
            local[Self::bucket(ms)] += 1;
        }
        for (b, n) in self.buckets.iter().zip(local) {
            if n > 0 {
                b.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Records counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in ms, as its bucket's upper bound (`None` when empty;
    /// `i64::MAX` beyond the last bound).
    pub fn quantile(&self, q: f64) -> Option<i64> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(i64::MAX));
            }
        }
        Some(i64::MAX)
    }

    /// Forget everything recorded.
    pub fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }
}

/// Where the consumer is per partition, as Ingest last saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Per source partition.
    pub partitions: Vec<PartitionProgress>,
    /// Brokers the consumer sees UP (`None` before the first statistics report).
    pub brokers_up: Option<i64>,
}

/// One source partition in a [`Progress`] report.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionProgress {
    /// The partition.
    pub tp: crate::envelope::TopicPartition,
    /// Next offset to read (-1 until known).
    pub position: i64,
    /// Records behind the high watermark of the last statistics report (0 until reported).
    pub lag: i64,
    /// How long the broker it is fetched from has sent nothing, ms, while the consumer fetches
    /// it (`None`: paused or held back by the node, or unknown). A fetch is answered within
    /// `kafka.fetch_wait` even when there is nothing to read, so a long silence means the
    /// broker cannot be heard: the lag it would report is unknown.
    pub silent_ms: Option<i64>,
}

/// A point-in-time copy of [`NodeStats`] (the admin API's `/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Records consumed.
    pub ingested: u64,
    /// Records that passed validation.
    pub validated: u64,
    /// Records aggregated into windows.
    pub processed: u64,
    /// Windows written.
    pub windows_out: u64,
    /// Input records represented by the windows written.
    pub window_records_out: u64,
    /// Records sent to the DLQ.
    pub dlq: u64,
    /// Records the log start moved past before they were read.
    pub lost_to_retention: u64,
    /// Consumer lag (records).
    pub lag: i64,
    /// Sum over source partitions of the next offset to read, including what was restored
    /// from the checkpoint: how far through its input the node is.
    pub position: i64,
    /// Whether the pipeline is running.
    pub ready: bool,
    /// Last checkpoint.
    pub last_checkpoint: Option<CheckpointSummary>,
}

impl NodeStats {
    /// Count `n` records at `stage` (and in `vigil_records_total`).
    pub fn add(&self, stage: Stage, n: u64) {
        if n == 0 {
            return;
        }
        self.stages[stage as usize].fetch_add(n, Ordering::Relaxed);
        metrics::counter!("vigil_records_total", "stage" => stage.as_str()).increment(n);
    }

    /// Records counted at `stage` so far.
    pub fn count(&self, stage: Stage) -> u64 {
        self.stages[stage as usize].load(Ordering::Relaxed)
    }

    /// Count input records represented by emitted windows.
    pub fn add_window_records(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.window_records.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("vigil_window_records_emitted_total").increment(n);
    }

    /// Count records lost to retention on a partition.
    pub fn add_lost(&self, topic: &str, partition: i32, n: u64) {
        self.lost_to_retention.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("vigil_records_lost_to_retention_total", "topic" => topic.to_string(), "partition" => partition.to_string()).increment(n);
    }

    /// Set current consumer lag.
    pub fn set_lag(&self, lag: i64) {
        self.lag.store(lag, Ordering::Relaxed);
    }

    /// Publish per-partition progress (Ingest, after each poll).
    pub fn set_progress(&self, p: Progress) {
        if let Ok(mut g) = self.progress.lock() {
            *g = p;
        }
    }

    /// Last published per-partition progress.
    pub fn progress(&self) -> Progress {
        self.progress.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Set the summed source position.
    pub fn set_position(&self, position: i64) {
        self.position.store(position, Ordering::Relaxed);
    }

    /// Mark the pipeline ready / not ready.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the pipeline is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Record a completed checkpoint (and its metrics) whose stage state is `size_bytes`.
    pub fn checkpointed(&self, s: CheckpointSummary, size_bytes: u64) {
        metrics::counter!("vigil_checkpoints_total", "outcome" => "ok").increment(1);
        metrics::gauge!("vigil_checkpoint_last_success_timestamp_seconds").set(s.completed_ms as f64 / 1000.0);
        metrics::histogram!("vigil_checkpoint_duration_seconds").record(s.duration_us as f64 / 1e6);
        metrics::gauge!("vigil_checkpoint_size_bytes").set(size_bytes as f64);
        metrics::gauge!("vigil_last_checkpoint_id").set(s.id as f64);
        if let Ok(mut l) = self.last_checkpoint.lock() {
            *l = Some(s);
        }
    }

    /// Record a checkpoint that failed (outputs unacknowledged or store write failed).
    pub fn checkpoint_failed(&self) {
        metrics::counter!("vigil_checkpoints_total", "outcome" => "failed").increment(1);
        metrics::counter!("vigil_checkpoint_failures_total").increment(1);
    }

    /// Copy all counters.
    pub fn snapshot(&self) -> StatusSnapshot {
        let g = |s: Stage| self.stages[s as usize].load(Ordering::Relaxed);
        StatusSnapshot {
            ingested: g(Stage::Ingest),
            validated: g(Stage::Validate),
            processed: g(Stage::Process),
            windows_out: g(Stage::Sink),
            window_records_out: self.window_records.load(Ordering::Relaxed),
            dlq: g(Stage::Dlq),
            lost_to_retention: self.lost_to_retention.load(Ordering::Relaxed),
            lag: self.lag.load(Ordering::Relaxed),
            position: self.position.load(Ordering::Relaxed),
            ready: self.is_ready(),
            last_checkpoint: self.last_checkpoint.lock().ok().and_then(|l| l.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_err_high_by_at_most_a_bucket() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        h.record_all((1..=100).map(|i| i as i64));
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), Some(50));
        assert_eq!(h.quantile(0.99), Some(100));
        assert_eq!(h.quantile(0.0), Some(1));
        h.record_all([-5, 100_000]);
        assert_eq!(h.quantile(1.0), Some(i64::MAX));
        h.reset();
        assert_eq!(h.count(), 0);
    }
}
