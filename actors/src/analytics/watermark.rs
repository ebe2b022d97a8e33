//! Per-partition event-time watermarks. Pure: wall-clock time is passed in.
//!
//! A partition's watermark is the largest event time seen there minus the allowed
//! out-of-orderness; the node's watermark is the minimum over its active partitions (as in
//! Flink), so results do not depend on how partitions interleave. A partition silent for
//! `idle_timeout` stops holding the watermark back; if all are idle it is the largest of
//! theirs. No watermark exists until every active partition has data.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vigil_runtime::envelope::TopicPartition;

/// Watermarks of the partitions one Process stage reads; checkpointed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Watermarks {
    out_of_orderness_ms: i64,
    /// Largest event time seen per assigned partition.
    max_ts: BTreeMap<TopicPartition, Option<i64>>,
    /// Wall-clock activity per partition; not checkpointed (restarts count as activity).
    #[serde(skip)]
    activity: BTreeMap<TopicPartition, Option<Instant>>,
}

impl Watermarks {
    /// No partitions yet.
    pub fn new(out_of_orderness: Duration) -> Self {
        Self { out_of_orderness_ms: out_of_orderness.as_millis() as i64, ..Self::default() }
    }

    /// Keep what a checkpoint knew of each partition, with today's out-of-orderness.
    pub fn restored(mut self, out_of_orderness: Duration) -> Self {
        self.out_of_orderness_ms = out_of_orderness.as_millis() as i64;
        self
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

    /// Join what another shard's view knows: the latest event time per partition.
    pub fn merge(&mut self, other: &Watermarks) {
        for (tp, ts) in &other.max_ts {
            let mine = self.max_ts.entry(tp.clone()).or_default();
            *mine = (*mine).max(*ts);
        }
    }

    /// A record with event time `ts` arrived on `tp`.
    pub fn observe(&mut self, tp: &TopicPartition, ts: i64, now: Instant) {
        match self.activity.get_mut(tp) {
            Some(a) => *a = Some(now),
            None => {
                self.activity.insert(tp.clone(), Some(now));
            }
        }
        match self.max_ts.get_mut(tp) {
            Some(m) => *m = Some(m.map_or(ts, |x| x.max(ts))),
            None => {
                self.max_ts.insert(tp.clone(), Some(ts));
            }
        }
    }

    /// Current watermark, if every active partition has data.
    pub fn current(&self, now: Instant, idle_timeout: Duration) -> Option<i64> {
        let idle = |tp: &TopicPartition| match self.activity.get(tp).copied().flatten() {
            Some(t) => now.saturating_duration_since(t) >= idle_timeout,
            None => false,
        };
        let mut active_min: Option<i64> = None;
        let mut any_active = false;
        let mut all_max: Option<i64> = None;
        for (tp, m) in &self.max_ts {
            let wm = m.map(|x| x.saturating_sub(self.out_of_orderness_ms));
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
}

/// Watermark alignment (as Flink's): of the partitions with records still to read
/// (`pending`), those whose largest event time runs more than `max_drift_ms` ahead of the
/// slowest one's. Holding them back lets the slow ones catch up, so the watermark — the
/// minimum — advances and windows close, instead of a backlog read unevenly keeping ever
/// more windows open.
///
/// A pending partition without an event time yet holds the watermark back as the slowest
/// would, so while `wait_for_unseen` every partition with an event time is held until it
/// has delivered (its fetches otherwise compete with theirs, and a consumer may go seconds
/// before reaching it). The caller stops waiting after the idle timeout, as the watermark
/// stops waiting for a silent partition, and decides when alignment applies at all.
pub fn ahead(
    event_time: &BTreeMap<TopicPartition, i64>,
    pending: &[TopicPartition],
    max_drift_ms: i64,
    wait_for_unseen: bool,
) -> std::collections::BTreeSet<TopicPartition> {
    let known = || pending.iter().filter_map(|tp| Some((tp, *event_time.get(tp)?)));
    if wait_for_unseen && pending.iter().any(|tp| !event_time.contains_key(tp)) {
        return known().map(|(tp, _)| tp.clone()).collect();
    }
    let Some(min) = known().map(|(_, t)| t).min() else { return Default::default() };
    known().filter(|(_, t)| *t > min.saturating_add(max_drift_ms)).map(|(tp, _)| tp.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(3600);

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn minimum_over_active_partitions_minus_out_of_orderness() {
        let now = Instant::now();
        let mut w = Watermarks::new(Duration::from_millis(5));
        w.assign(&[tp(0), tp(1)], now);
        w.observe(&tp(0), 100, now);
        assert_eq!(w.current(now, IDLE), None, "partition 1 has no data yet");
        w.observe(&tp(1), 50, now);
        w.observe(&tp(0), 20, now);
        assert_eq!(w.current(now, IDLE), Some(45));
        let bytes = vigil_runtime::store::encode("wm", &w).unwrap();
        let mut r: Watermarks = vigil_runtime::store::decode("wm", &bytes).unwrap();
        r.assign(&[tp(0), tp(1)], now);
        assert_eq!(r.current(now, IDLE), Some(45));
    }

    #[test]
    fn idle_partition_stops_holding_back() {
        let t0 = Instant::now();
        let mut w = Watermarks::new(Duration::ZERO);
        w.assign(&[tp(0), tp(1)], t0);
        w.observe(&tp(0), 30, t0);
        assert_eq!(w.current(t0, Duration::from_secs(10)), None);
        let later = t0 + Duration::from_secs(11);
        w.observe(&tp(0), 31, later);
        assert_eq!(w.current(later, Duration::from_secs(10)), Some(31));
    }

    #[test]
    fn partitions_far_ahead_of_the_slowest_pending_one_are_held() {
        let et: BTreeMap<TopicPartition, i64> = [(tp(0), 1_000), (tp(1), 40_000), (tp(2), 31_000), (tp(3), 90_000)].into();
        let pending = [tp(0), tp(1), tp(2), tp(4)];
        // 3 has nothing left to read; 4 has no event time yet and, once the node has stopped
        // waiting for it, does not count.
        assert_eq!(ahead(&et, &pending, 30_000, false), [tp(1)].into());
        assert_eq!(ahead(&et, &[tp(1), tp(2), tp(3)], 30_000, false), [tp(3)].into());
        assert!(ahead(&et, &[], 30_000, false).is_empty());
        assert!(ahead(&BTreeMap::new(), &pending, 30_000, false).is_empty());
    }

    #[test]
    fn a_pending_partition_not_yet_seen_holds_every_partition_with_an_event_time() {
        let et: BTreeMap<TopicPartition, i64> = [(tp(0), 1_000), (tp(1), 2_000), (tp(3), 90_000)].into();
        // 4 has records to read and no event time: 0 and 1 wait for it, whatever the drift;
        // 3 has nothing left to read and is not held.
        assert_eq!(ahead(&et, &[tp(0), tp(1), tp(4)], 30_000, true), [tp(0), tp(1)].into());
        // Once every pending partition has an event time, the drift decides again.
        assert!(ahead(&et, &[tp(0), tp(1)], 30_000, true).is_empty());
        assert!(ahead(&BTreeMap::new(), &[tp(4)], 30_000, true).is_empty());
    }
}
