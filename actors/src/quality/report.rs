//! The quality report a node publishes each interval: per-source measures plus lag, stalls
//! and broker reachability, as `vigil dq` shows it, as `vigil_dq_*` gauges, and as the
//! series alert rules evaluate. Pure.
use super::anomaly::StallDetector;
use super::tracker::SourceQuality;
use crate::alerting::engine::Sample;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use vigil_runtime::envelope::TopicPartition;
use vigil_runtime::stats::Progress;

/// The current data quality of a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DqReport {
    /// When it was computed, ms since epoch.
    pub at_ms: i64,
    /// Trailing window the rates and quantiles are over, seconds.
    pub window_seconds: f64,
    /// Per source.
    pub sources: Vec<SourceQuality>,
    /// Kafka brokers the consumer sees up (`None` before the first report).
    pub brokers_up: Option<i64>,
    /// Batch reports the quality actor could not take (queue full or restarting).
    pub dropped_reports: u64,
    /// Actor restarts by supervisors in the last minute.
    #[serde(default)]
    pub restarts_per_min: u32,
    /// Checkpoints that failed in the last minute.
    #[serde(default)]
    pub checkpoint_failures_per_min: u32,
    /// Admin and metrics calls refused (bad, missing, revoked or insufficient credentials)
    /// in the last minute.
    #[serde(default)]
    pub access_denied_per_min: u32,
    /// The node started after a crash of its previous run, within the last window.
    #[serde(default)]
    pub unclean_restart: bool,
}

/// Per-partition stall detection over successive [`Progress`] reports.
#[derive(Debug, Clone)]
pub struct Stalls {
    after: Duration,
    detectors: BTreeMap<TopicPartition, StallDetector>,
}

impl Stalls {
    /// Partitions stall after `after` without progress while they have lag or their broker
    /// is silent.
    pub fn new(after: Duration) -> Self {
        Self { after, detectors: BTreeMap::new() }
    }

    /// Stalled partitions per topic at `now_ms`.
    pub fn observe(&mut self, now_ms: i64, progress: &Progress) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for p in &progress.partitions {
            let d = self.detectors.entry(p.tp.clone()).or_insert_with(|| StallDetector::new(self.after));
            let stalled = d.observe(now_ms, p.position, p.lag, p.silent_ms).is_some();
            *out.entry(p.tp.topic.clone()).or_default() += u32::from(stalled);
        }
        out
    }
}

impl DqReport {
    /// Fill in lag and stalls per source from the consumer's progress.
    pub fn add_progress(&mut self, progress: &Progress, stalled: &BTreeMap<String, u32>) {
        let mut lag: BTreeMap<&str, i64> = BTreeMap::new();
        for p in &progress.partitions {
            *lag.entry(p.tp.topic.as_str()).or_default() += p.lag;
        }
        for s in &mut self.sources {
            s.lag = lag.get(s.source.as_str()).copied().unwrap_or(0);
            s.stalled_partitions = stalled.get(&s.source).copied().unwrap_or(0);
        }
        self.brokers_up = progress.brokers_up;
    }

    /// The series alert rules see (names as in `vigil_config::METRICS`).
    pub fn samples(&self) -> Vec<Sample> {
        let mut out = Vec::new();
        for s in &self.sources {
            let base = |extra: &[(&str, &str)]| {
                let mut l = BTreeMap::from([("source".to_string(), s.source.clone())]);
                l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
                l
            };
            let mut push = |metric: &str, labels: BTreeMap<String, String>, value: f64| out.push(Sample { metric: metric.into(), labels, value });
            push("records_per_sec", base(&[]), s.records_per_sec);
            push("validity_ratio", base(&[]), s.validity_ratio);
            for (reason, v) in &s.dlq_per_sec {
                push("dlq_per_sec", base(&[("reason", reason)]), *v);
            }
            for (field, v) in &s.completeness {
                push("completeness", base(&[("field", field)]), *v);
            }
            for (metric, v) in [
                ("freshness_p50_seconds", s.freshness_p50_seconds),
                ("freshness_p99_seconds", s.freshness_p99_seconds),
                ("latency_p50_seconds", s.latency_p50_seconds),
                ("latency_p99_seconds", s.latency_p99_seconds),
            ] {
                if let Some(v) = v {
                    push(metric, base(&[]), v);
                }
            }
            push("lag", base(&[]), s.lag as f64);
            push("duplicates_per_sec", base(&[]), s.duplicates_per_sec);
            push("late_per_sec", base(&[]), s.late_per_sec);
            push("stalled_partitions", base(&[]), f64::from(s.stalled_partitions));
            for (schema, v) in &s.version_mix {
                push("schema_version_share", base(&[("schema", schema)]), *v);
            }
        }
        if let Some(up) = self.brokers_up {
            out.push(Sample { metric: "brokers_up".into(), labels: BTreeMap::new(), value: up as f64 });
        }
        out.push(Sample { metric: "restarts_per_min".into(), labels: BTreeMap::new(), value: f64::from(self.restarts_per_min) });
        out.push(Sample { metric: "checkpoint_failures_per_min".into(), labels: BTreeMap::new(), value: f64::from(self.checkpoint_failures_per_min) });
        out.push(Sample { metric: "access_denied_per_min".into(), labels: BTreeMap::new(), value: f64::from(self.access_denied_per_min) });
        out.push(Sample { metric: "unclean_restart".into(), labels: BTreeMap::new(), value: f64::from(u8::from(self.unclean_restart)) });
        out
    }

    /// Set the `vigil_dq_*` gauges from [`Self::samples`]: one gauge per series, with the
    /// series' labels.
    pub fn export(samples: &[Sample]) {
        for s in samples {
            if let Some(name) = gauge_name(&s.metric) {
                let labels: Vec<metrics::Label> = s.labels.iter().map(|(k, v)| metrics::Label::new(k.clone(), v.clone())).collect();
                metrics::gauge!(name, labels).set(s.value);
            }
        }
    }
}

/// The Prometheus gauge of a rule series; `None` for series exported elsewhere
/// (`brokers_up` is `vigil_kafka_brokers_up`, set from librdkafka's statistics). Quantiles
/// are separate gauges, not a `quantile` label: that label is reserved for summaries.
fn gauge_name(series: &str) -> Option<&'static str> {
    Some(match series {
        "records_per_sec" => "vigil_dq_records_per_second",
        "validity_ratio" => "vigil_dq_validity_ratio",
        "dlq_per_sec" => "vigil_dq_dlq_per_second",
        "completeness" => "vigil_dq_completeness_ratio",
        "freshness_p50_seconds" => "vigil_dq_freshness_p50_seconds",
        "freshness_p99_seconds" => "vigil_dq_freshness_p99_seconds",
        "latency_p50_seconds" => "vigil_dq_latency_p50_seconds",
        "latency_p99_seconds" => "vigil_dq_latency_p99_seconds",
        "lag" => "vigil_dq_lag_records",
        "duplicates_per_sec" => "vigil_dq_duplicates_per_second",
        "late_per_sec" => "vigil_dq_late_per_second",
        "stalled_partitions" => "vigil_dq_stalled_partitions",
        "schema_version_share" => "vigil_dq_schema_version_share",
        "restarts_per_min" => "vigil_node_restarts_last_minute",
        "checkpoint_failures_per_min" => "vigil_node_checkpoint_failures_last_minute",
        "unclean_restart" => "vigil_node_unclean_restart",
        "access_denied_per_min" => "vigil_node_access_denied_last_minute",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_runtime::stats::PartitionProgress;

    #[test]
    fn stalls_and_lag_per_source() {
        let tp = |p| TopicPartition { topic: "events".into(), partition: p };
        let mut st = Stalls::new(Duration::from_secs(60));
        let part = |partition, position, lag| PartitionProgress { tp: tp(partition), position, lag, silent_ms: Some(100) };
        let prog = |pos0, lag0| Progress { partitions: vec![part(0, pos0, lag0), part(1, 5, 0)], brokers_up: Some(1) };
        assert_eq!(st.observe(0, &prog(10, 3)).get("events"), Some(&0));
        assert_eq!(st.observe(61_000, &prog(10, 3)).get("events"), Some(&1), "no progress with lag for 61 s");
        assert_eq!(st.observe(62_000, &prog(11, 3)).get("events"), Some(&0), "progress clears it");
        let mut r = DqReport { sources: vec![SourceQuality::empty("events")], ..DqReport::default() };
        r.add_progress(&prog(11, 3), &BTreeMap::from([("events".to_string(), 1)]));
        assert_eq!((r.sources[0].lag, r.sources[0].stalled_partitions), (3, 1));
        let samples = r.samples();
        assert!(samples.iter().any(|s| s.metric == "brokers_up" && s.value == 1.0));
        assert!(samples.iter().any(|s| s.metric == "lag" && s.value == 3.0 && s.labels["source"] == "events"));
    }
}
