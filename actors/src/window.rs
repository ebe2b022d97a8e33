//! Per-key tumbling event-time windows (count, sum, min, max) with per-partition
//! watermarks. Pure logic: no actors, no I/O; time is passed in.
//!
//! The watermark of a partition is the largest event time seen there minus the allowed
//! lateness; the node's watermark is the minimum over its active partitions (as in Flink),
//! so results do not depend on how partitions interleave. A partition silent for
//! `idle_timeout` stops holding the watermark back; if all are idle the watermark is the
//! largest of theirs. A window closes when the watermark reaches its end. A record whose
//! window has already closed is late and is rejected (the caller sends it to the DLQ).
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vigil_runtime::envelope::TopicPartition;

/// Aggregate of one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Agg {
    /// Records.
    pub count: u64,
    /// Sum of values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Agg {
    fn new(v: f64) -> Self {
        Self { count: 1, sum: v, min: v, max: v }
    }

    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// A closed window, ready to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    /// Window key.
    pub key: String,
    /// Start, ms since epoch (inclusive).
    pub window_start: i64,
    /// End, ms since epoch (exclusive).
    pub window_end: i64,
    /// Records.
    pub count: u64,
    /// Sum.
    pub sum: f64,
    /// Min.
    pub min: f64,
    /// Max.
    pub max: f64,
}

/// Avro schema of window results (`pipeline.sink_format = "avro"`), registered under
/// `<sink_topic>-value`.
pub const WINDOW_AVRO_SCHEMA: &str = r#"{"type":"record","name":"WindowResult","namespace":"vigil","doc":"One closed tumbling window of one key","fields":[
{"name":"key","type":"string","doc":"Window key"},
{"name":"window_start","type":"long","doc":"Start, ms since epoch (inclusive)"},
{"name":"window_end","type":"long","doc":"End, ms since epoch (exclusive)"},
{"name":"count","type":"long","doc":"Records"},
{"name":"sum","type":"double","doc":"Sum of values"},
{"name":"min","type":"double","doc":"Smallest value"},
{"name":"max","type":"double","doc":"Largest value"}]}"#;

impl WindowResult {
    /// The result as an Avro record of [`WINDOW_AVRO_SCHEMA`].
    pub fn to_avro(&self) -> apache_avro::types::Value {
        use apache_avro::types::Value as A;
        A::Record(vec![
            ("key".into(), A::String(self.key.clone())),
            ("window_start".into(), A::Long(self.window_start)),
            ("window_end".into(), A::Long(self.window_end)),
            ("count".into(), A::Long(self.count as i64)),
            ("sum".into(), A::Double(self.sum)),
            ("min".into(), A::Double(self.min)),
            ("max".into(), A::Double(self.max)),
        ])
    }

    /// Deterministic output key: `key@window_start`, so replays overwrite, not duplicate.
    pub fn output_key(&self) -> String {
        format!("{}@{}", self.key, self.window_start)
    }
}

/// Why a record was not added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Late {
    /// Start of the record's window.
    pub window_start: i64,
    /// Watermark the window was closed at.
    pub watermark: i64,
}

/// Window state of one Process stage; serialised into checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    size_ms: i64,
    lateness_ms: i64,
    open: BTreeMap<(i64, String), Agg>,
    /// Largest event time seen per assigned partition.
    max_ts: BTreeMap<TopicPartition, Option<i64>>,
    /// Every window ending at or before this has been emitted.
    closed_until: i64,
    /// Wall-clock activity per partition; not checkpointed (restarts count as activity).
    #[serde(skip)]
    activity: BTreeMap<TopicPartition, Option<Instant>>,
}

impl WindowState {
    /// Empty state.
    pub fn new(size: Duration, lateness: Duration) -> Self {
        Self {
            size_ms: (size.as_millis() as i64).max(1),
            lateness_ms: lateness.as_millis() as i64,
            open: BTreeMap::new(),
            max_ts: BTreeMap::new(),
            closed_until: i64::MIN,
            activity: BTreeMap::new(),
        }
    }

    /// Set the partitions this stage reads; keeps what is known about ones it still has.
    pub fn assign(&mut self, partitions: &[TopicPartition], now: Instant) {
        let mut max_ts = BTreeMap::new();
        for tp in partitions {
            max_ts.insert(tp.clone(), self.max_ts.get(tp).copied().flatten());
            self.activity.insert(tp.clone(), Some(now));
        }
        self.max_ts = max_ts;
        self.activity.retain(|tp, _| self.max_ts.contains_key(tp));
    }

    /// Add one record; `true` when it opened its window.
    ///
    /// # Errors
    /// [`Late`] if its window has already been emitted.
    pub fn add(&mut self, tp: &TopicPartition, ts: i64, key: &str, value: f64, now: Instant) -> Result<bool, Late> {
        self.activity.insert(tp.clone(), Some(now));
        let m = self.max_ts.entry(tp.clone()).or_insert(None);
        *m = Some(m.map_or(ts, |x| x.max(ts)));
        let start = self.window_start(ts);
        if start.saturating_add(self.size_ms) <= self.closed_until {
            return Err(Late { window_start: start, watermark: self.closed_until });
        }
        match self.open.get_mut(&(start, key.to_string())) {
            Some(a) => {
                a.add(value);
                Ok(false)
            }
            None => {
                self.open.insert((start, key.to_string()), Agg::new(value));
                Ok(true)
            }
        }
    }

    /// Current watermark, if every active partition has data.
    pub fn watermark(&self, now: Instant, idle_timeout: Duration) -> Option<i64> {
        let idle = |tp: &TopicPartition| match self.activity.get(tp).copied().flatten() {
            Some(t) => now.saturating_duration_since(t) >= idle_timeout,
            None => false,
        };
        let mut active_min: Option<i64> = None;
        let mut any_active = false;
        let mut all_max: Option<i64> = None;
        for (tp, m) in &self.max_ts {
            let wm = m.map(|x| x.saturating_sub(self.lateness_ms));
            if let Some(w) = wm {
                all_max = Some(all_max.map_or(w, |a| a.max(w)));
            }
            if idle(tp) {
                continue;
            }
            any_active = true;
            match wm {
                Some(w) => active_min = Some(active_min.map_or(w, |a| a.min(w))),
                None => return None,
            }
        }
        if any_active {
            active_min
        } else {
            all_max
        }
    }

    /// Advance the watermark and return the windows it closes, ordered by (start, key).
    pub fn advance(&mut self, now: Instant, idle_timeout: Duration) -> Vec<WindowResult> {
        if let Some(wm) = self.watermark(now, idle_timeout) {
            self.closed_until = self.closed_until.max(wm);
        }
        let mut out = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            let (start, _) = entry.key();
            if start.saturating_add(self.size_ms) > self.closed_until {
                break;
            }
            let ((start, key), a) = entry.remove_entry();
            out.push(WindowResult { key, window_start: start, window_end: start + self.size_ms, count: a.count, sum: a.sum, min: a.min, max: a.max });
        }
        out
    }

    /// Whether `other` has the same window size and lateness (a restored snapshot must).
    pub fn same_shape(&self, other: &WindowState) -> bool {
        self.size_ms == other.size_ms && self.lateness_ms == other.lateness_ms
    }

    /// Windows currently open.
    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Records held in open windows.
    pub fn open_records(&self) -> u64 {
        self.open.values().map(|a| a.count).sum()
    }

    /// Start of the window event time `ts` falls in.
    pub fn window_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.size_ms) * self.size_ms
    }

    /// Watermark windows have been closed up to (i64::MIN before the first).
    pub fn closed_until(&self) -> i64 {
        self.closed_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IDLE: Duration = Duration::from_secs(3600);

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn windows_close_on_min_partition_watermark() {
        let now = Instant::now();
        let mut w = WindowState::new(Duration::from_millis(10), Duration::ZERO);
        w.assign(&[tp(0), tp(1)], now);
        w.add(&tp(0), 1, "a", 1.0, now).unwrap();
        w.add(&tp(0), 25, "a", 2.0, now).unwrap();
        // Partition 1 has no data yet: nothing closes.
        assert!(w.advance(now, IDLE).is_empty());
        w.add(&tp(1), 12, "b", 5.0, now).unwrap();
        let out = w.advance(now, IDLE);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].key.as_str(), out[0].window_start, out[0].count, out[0].sum), ("a", 0, 1, 1.0));
        // A record for the closed window is late.
        assert_eq!(w.add(&tp(1), 5, "b", 1.0, now), Err(Late { window_start: 0, watermark: 12 }));
    }

    #[test]
    fn idle_partition_stops_holding_back() {
        let t0 = Instant::now();
        let mut w = WindowState::new(Duration::from_millis(10), Duration::ZERO);
        w.assign(&[tp(0), tp(1)], t0);
        w.add(&tp(0), 1, "a", 1.0, t0).unwrap();
        w.add(&tp(0), 30, "a", 1.0, t0).unwrap();
        assert!(w.advance(t0, Duration::from_secs(10)).is_empty());
        let later = t0 + Duration::from_secs(11);
        w.add(&tp(0), 31, "a", 1.0, later).unwrap();
        assert_eq!(w.advance(later, Duration::from_secs(10)).len(), 1);
    }

    #[test]
    fn aggregates_and_snapshot_roundtrip() {
        let now = Instant::now();
        let mut w = WindowState::new(Duration::from_millis(100), Duration::from_millis(5));
        w.assign(&[tp(0)], now);
        for (ts, v) in [(1, 3.0), (2, -1.0), (50, 10.0)] {
            w.add(&tp(0), ts, "k", v, now).unwrap();
        }
        let bytes = vigil_runtime::store::encode("w", &w).unwrap();
        let mut r: WindowState = vigil_runtime::store::decode("w", &bytes).unwrap();
        r.assign(&[tp(0)], now);
        r.add(&tp(0), 205, "k", 0.0, now).unwrap();
        let out = r.advance(now, IDLE);
        assert_eq!(out, vec![WindowResult { key: "k".into(), window_start: 0, window_end: 100, count: 3, sum: 12.0, min: -1.0, max: 10.0 }]);
    }

    proptest! {
        /// With in-order partitions and a final sentinel, the windows emitted do not depend
        /// on how partitions interleave, and nothing is late or lost.
        #[test]
        fn results_independent_of_interleaving(
            parts in prop::collection::vec(prop::collection::vec((0i64..50, 0u8..4, -100i32..100), 0..40), 1..4),
            seed in any::<u64>(),
        ) {
            let now = Instant::now();
            let tps: Vec<TopicPartition> = (0..parts.len() as i32).map(tp).collect();
            // Per-partition non-decreasing timestamps.
            let streams: Vec<Vec<(i64, String, f64)>> = parts.iter().map(|recs| {
                let mut ts = 0;
                recs.iter().map(|(d, k, v)| { ts += d; (ts, format!("k{k}"), f64::from(*v)) }).collect()
            }).collect();
            let total: usize = streams.iter().map(Vec::len).sum();
            let run = |order: &[usize]| {
                let mut w = WindowState::new(Duration::from_millis(20), Duration::ZERO);
                w.assign(&tps, now);
                let mut pos = vec![0usize; streams.len()];
                let mut out = Vec::new();
                for &p in order {
                    if let Some((ts, k, v)) = streams[p].get(pos[p]) {
                        pos[p] += 1;
                        w.add(&tps[p], *ts, k, *v, now).expect("not late");
                        out.extend(w.advance(now, IDLE));
                    }
                }
                for t in &tps {
                    w.add(t, 1_000_000, "sentinel", 0.0, now).expect("sentinel");
                }
                out.extend(w.advance(now, IDLE));
                out.retain(|r| r.key != "sentinel");
                out.sort_by(|a, b| (a.window_start, &a.key).cmp(&(b.window_start, &b.key)));
                out
            };
            let sequential: Vec<usize> = (0..streams.len()).flat_map(|p| std::iter::repeat_n(p, streams[p].len())).collect();
            let mut shuffled = sequential.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let a = run(&sequential);
            let b = run(&shuffled);
            prop_assert_eq!(a.iter().map(|r| r.count).sum::<u64>() as usize, total);
            prop_assert_eq!(a, b);
        }
    }
}
