//! Data-quality measures per source, from what the stages report per batch: volume,
//! validity ratio, dead letters by reason, completeness per field, freshness quantiles, late
//! records and the schema-version mix, in fixed time slots with a bounded history (the
//! baseline anomaly detection and incident timelines read). Pure: time is passed in.
use super::sketch::QuantileSketch;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// What one batch of one source showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchQuality {
    /// Source topic.
    pub source: String,
    /// Records read.
    pub records: u64,
    /// Records that passed validation.
    pub valid: u64,
    /// Dead letters by reason.
    pub dlq: BTreeMap<String, u64>,
    /// Decoded records missing each watched field (absent or null).
    pub missing: BTreeMap<String, u64>,
    /// Decoded records, the denominator of completeness.
    pub decoded: u64,
    /// Freshness of valid records, ms (now − event time).
    pub freshness_ms: Vec<f64>,
    /// Records later than the allowed lateness.
    pub late: u64,
    /// Valid records per (subject, version).
    pub versions: BTreeMap<(String, u32), u64>,
    /// Records whose id was seen before (duplicate detector).
    pub duplicates: u64,
    /// End-to-end latency of batches, ms (ingest poll → sink done).
    pub latency_ms: Vec<f64>,
    /// Consumer lag seen (the slot keeps the highest).
    pub max_lag: i64,
    /// Event-time span of the valid records, ms (`None`: no valid record).
    pub event_time: Option<(i64, i64)>,
}

/// One source's measures over a slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Agg {
    records: u64,
    valid: u64,
    decoded: u64,
    late: u64,
    dlq: BTreeMap<String, u64>,
    missing: BTreeMap<String, u64>,
    versions: BTreeMap<String, u64>,
    freshness: QuantileSketch,
    #[serde(default)]
    duplicates: u64,
    #[serde(default = "new_sketch")]
    latency: QuantileSketch,
    #[serde(default)]
    max_lag: i64,
    #[serde(default)]
    event_time: Option<(i64, i64)>,
}

fn new_sketch() -> QuantileSketch {
    QuantileSketch::new(0.01, 1.0, 1024)
}

impl Default for Agg {
    fn default() -> Self {
        Self {
            records: 0,
            valid: 0,
            decoded: 0,
            late: 0,
            dlq: BTreeMap::new(),
            missing: BTreeMap::new(),
            versions: BTreeMap::new(),
            freshness: new_sketch(),
            duplicates: 0,
            latency: new_sketch(),
            max_lag: 0,
            event_time: None,
        }
    }
}

impl Agg {
    /// One batch as an aggregate (versions keyed `subject/version`).
    fn of(b: &BatchQuality) -> Agg {
        let (mut freshness, mut latency) = (new_sketch(), new_sketch());
        b.freshness_ms.iter().for_each(|f| freshness.add(*f));
        b.latency_ms.iter().for_each(|f| latency.add(*f));
        Agg {
            duplicates: b.duplicates,
            max_lag: b.max_lag,
            event_time: b.event_time,
            latency,
            records: b.records,
            valid: b.valid,
            decoded: b.decoded,
            late: b.late,
            dlq: b.dlq.clone(),
            missing: b.missing.clone(),
            versions: b.versions.iter().map(|((s, v), n)| (format!("{s}/{v}"), *n)).collect(),
            freshness,
        }
    }

    fn merge(&mut self, o: &Agg) {
        self.records += o.records;
        self.valid += o.valid;
        self.decoded += o.decoded;
        self.late += o.late;
        self.duplicates += o.duplicates;
        self.max_lag = self.max_lag.max(o.max_lag);
        self.event_time = span(self.event_time, o.event_time);
        for (into, from) in [(&mut self.dlq, &o.dlq), (&mut self.missing, &o.missing), (&mut self.versions, &o.versions)] {
            for (k, n) in from {
                *into.entry(k.clone()).or_default() += n;
            }
        }
        self.freshness.merge(&o.freshness);
        self.latency.merge(&o.latency);
    }
}

/// One time slot of measures, per source: the unit kept in history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    /// Start of the slot, ms since epoch.
    pub start_ms: i64,
    sources: BTreeMap<String, Agg>,
}

/// A source's quality over a window, as `vigil dq` and `vigil_dq_*` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceQuality {
    /// Source topic.
    pub source: String,
    /// Records per second.
    pub records_per_sec: f64,
    /// Valid / read; 1 when nothing was read.
    pub validity_ratio: f64,
    /// Dead letters per second by reason.
    pub dlq_per_sec: BTreeMap<String, f64>,
    /// Fraction of decoded records that have each watched field.
    pub completeness: BTreeMap<String, f64>,
    /// Median freshness, seconds.
    pub freshness_p50_seconds: Option<f64>,
    /// 99th percentile freshness, seconds.
    pub freshness_p99_seconds: Option<f64>,
    /// Late records.
    pub late: u64,
    /// Late records per second.
    pub late_per_sec: f64,
    /// Records per second whose id was seen before.
    pub duplicates_per_sec: f64,
    /// Median end-to-end latency (ingest → sink), seconds.
    pub latency_p50_seconds: Option<f64>,
    /// 99th percentile end-to-end latency, seconds.
    pub latency_p99_seconds: Option<f64>,
    /// Share of valid records per `subject/version`.
    pub version_mix: BTreeMap<String, f64>,
    /// Consumer lag over the source's partitions (set by the quality actor).
    pub lag: i64,
    /// Partitions without progress while they have lag or their broker is silent (set by the
    /// quality actor).
    pub stalled_partitions: u32,
    /// Event-time span of the valid records, ms.
    #[serde(default)]
    pub event_time: Option<(i64, i64)>,
}

impl SourceQuality {
    /// A source that read nothing in the window.
    pub fn empty(source: &str) -> Self {
        Self {
            source: source.into(),
            records_per_sec: 0.0,
            validity_ratio: 1.0,
            dlq_per_sec: BTreeMap::new(),
            completeness: BTreeMap::new(),
            freshness_p50_seconds: None,
            freshness_p99_seconds: None,
            late: 0,
            late_per_sec: 0.0,
            duplicates_per_sec: 0.0,
            latency_p50_seconds: None,
            latency_p99_seconds: None,
            version_mix: BTreeMap::new(),
            lag: 0,
            stalled_partitions: 0,
            event_time: None,
        }
    }
}

/// The span covering both.
pub fn span(a: Option<(i64, i64)>, b: Option<(i64, i64)>) -> Option<(i64, i64)> {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (x, None) | (None, x) => x,
    }
}

/// Per-source quality of aggregates covering `secs` seconds.
fn summarize(total: BTreeMap<String, Agg>, secs: f64) -> Vec<SourceQuality> {
    total
        .into_iter()
        .map(|(source, a)| SourceQuality {
            records_per_sec: a.records as f64 / secs,
            validity_ratio: if a.records == 0 { 1.0 } else { a.valid as f64 / a.records as f64 },
            dlq_per_sec: a.dlq.iter().map(|(k, n)| (k.clone(), *n as f64 / secs)).collect(),
            completeness: a.missing.iter().map(|(k, n)| (k.clone(), if a.decoded == 0 { 1.0 } else { 1.0 - *n as f64 / a.decoded as f64 })).collect(),
            freshness_p50_seconds: a.freshness.quantile(0.5).map(|v| v / 1000.0),
            freshness_p99_seconds: a.freshness.quantile(0.99).map(|v| v / 1000.0),
            late: a.late,
            late_per_sec: a.late as f64 / secs,
            duplicates_per_sec: a.duplicates as f64 / secs,
            latency_p50_seconds: a.latency.quantile(0.5).map(|v| v / 1000.0),
            latency_p99_seconds: a.latency.quantile(0.99).map(|v| v / 1000.0),
            lag: a.max_lag,
            stalled_partitions: 0,
            event_time: a.event_time,
            version_mix: {
                let n: u64 = a.versions.values().sum();
                a.versions.iter().map(|(k, c)| (k.clone(), *c as f64 / n.max(1) as f64)).collect()
            },
            source,
        })
        .collect()
}

/// Quality per source in fixed slots, keeping at most `history_max` slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    slot_ms: i64,
    history_max: usize,
    slots: VecDeque<Slot>,
}

impl Tracker {
    /// Slots of `slot_ms` (e.g. 10 s), keeping `history_max` of them (8640 = 24 h at 10 s).
    pub fn new(slot_ms: i64, history_max: usize) -> Self {
        Self { slot_ms: slot_ms.max(1), history_max: history_max.max(1), slots: VecDeque::new() }
    }

    /// Record a batch seen at `now_ms`.
    pub fn observe(&mut self, now_ms: i64, b: &BatchQuality) {
        let start = now_ms.div_euclid(self.slot_ms) * self.slot_ms;
        if self.slots.back().is_none_or(|s| s.start_ms < start) {
            self.slots.push_back(Slot { start_ms: start, sources: BTreeMap::new() });
            while self.slots.len() > self.history_max {
                self.slots.pop_front();
            }
        }
        // A batch reported late for an older slot counts in the newest one: totals stay right.
        if let Some(slot) = self.slots.back_mut() {
            slot.sources.entry(b.source.clone()).or_default().merge(&Agg::of(b));
        }
    }

    /// Quality per source over the last `window_ms` before `now_ms`.
    pub fn snapshot(&self, now_ms: i64, window_ms: i64) -> Vec<SourceQuality> {
        let from = now_ms - window_ms;
        let mut total: BTreeMap<String, Agg> = BTreeMap::new();
        let mut oldest = now_ms;
        for slot in self.slots.iter().filter(|s| s.start_ms + self.slot_ms > from && s.start_ms <= now_ms) {
            oldest = oldest.min(slot.start_ms);
            for (src, agg) in &slot.sources {
                total.entry(src.clone()).or_default().merge(agg);
            }
        }
        // Rates are over the time the included slots cover (whole slots up to now).
        let secs = ((now_ms - oldest.max(now_ms - window_ms - self.slot_ms)) as f64 / 1000.0).max(0.001);
        summarize(total, secs)
    }

    /// Each slot on its own, oldest first: `(slot start ms, quality per source)` — the
    /// history incident timelines read.
    pub fn per_slot(&self) -> Vec<(i64, Vec<SourceQuality>)> {
        let secs = self.slot_ms as f64 / 1000.0;
        self.slots.iter().map(|s| (s.start_ms, summarize(s.sources.clone(), secs))).collect()
    }

    /// Slots that ended before `now_ms` and start after `after_ms` (to persist them once).
    pub fn finished_since(&self, after_ms: i64, now_ms: i64) -> impl Iterator<Item = &Slot> {
        let slot_ms = self.slot_ms;
        self.slots.iter().filter(move |s| s.start_ms > after_ms && s.start_ms + slot_ms <= now_ms)
    }

    /// Put back persisted slots (oldest first), keeping the newest `history_max`.
    pub fn restore(&mut self, slots: impl IntoIterator<Item = Slot>) {
        let mut all: Vec<Slot> = slots.into_iter().chain(self.slots.drain(..)).collect();
        all.sort_by_key(|s| s.start_ms);
        all.dedup_by_key(|s| s.start_ms);
        let skip = all.len().saturating_sub(self.history_max);
        self.slots = all.into_iter().skip(skip).collect();
    }

    /// Slot length, ms.
    pub fn slot_ms(&self) -> i64 {
        self.slot_ms
    }

    /// Slots held (bounded by `history_max`).
    pub fn history_len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(source: &str, records: u64, valid: u64, fresh: &[f64]) -> BatchQuality {
        let mut b = BatchQuality { source: source.into(), records, valid, decoded: records, ..BatchQuality::default() };
        if records > valid {
            b.dlq.insert("bad_framing".into(), records - valid);
        }
        b.missing.insert("country".into(), records / 10);
        b.freshness_ms = fresh.to_vec();
        b.versions.insert(("events-value".into(), 1), valid / 2);
        b.versions.insert(("events-value".into(), 2), valid - valid / 2);
        b
    }

    #[test]
    fn measures_over_a_window() {
        let mut t = Tracker::new(10_000, 100);
        // 60 s of a source: 100 records per second, 80 % valid, freshness 1..=100 ms.
        let fresh: Vec<f64> = (1..=100).map(f64::from).collect();
        for s in 0..60 {
            t.observe(s * 1000, &batch("events", 100, 80, &fresh));
            if s == 5 {
                t.observe(s * 1000, &batch("other", 10, 10, &[]));
            }
        }
        let q = t.snapshot(60_000, 60_000);
        let e = q.iter().find(|s| s.source == "events").unwrap();
        assert!((e.records_per_sec - 100.0).abs() < 1e-9);
        assert!((e.validity_ratio - 0.8).abs() < 1e-9);
        assert!((e.dlq_per_sec["bad_framing"] - 20.0).abs() < 1e-9);
        assert!((e.completeness["country"] - 0.9).abs() < 1e-9);
        let p50 = e.freshness_p50_seconds.unwrap();
        assert!((p50 - 0.050).abs() <= 0.001, "p50 {p50}");
        assert!((e.version_mix["events-value/1"] - 0.5).abs() < 1e-9);
        // A shorter window sees only its slots.
        let last10 = t.snapshot(60_000, 10_000);
        assert!(last10.iter().all(|s| s.source != "other"));
        // Per slot: six slots of 10 s, each at 100 records/s; `other` only in the first.
        let slots = t.per_slot();
        assert_eq!(slots.len(), 6);
        assert!(slots.iter().all(|(_, q)| q.iter().any(|s| s.source == "events" && (s.records_per_sec - 100.0).abs() < 1e-9)));
        assert_eq!(slots[0].1.len(), 2);
        assert_eq!(slots[1].1.len(), 1);
    }

    #[test]
    fn history_is_bounded() {
        let mut t = Tracker::new(10_000, 8640);
        for s in 0..10_000i64 {
            t.observe(s * 10_000, &batch("events", 1, 1, &[]));
        }
        assert_eq!(t.history_len(), 8640, "24 h at 10 s");
    }
}
