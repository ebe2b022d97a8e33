//! The independent model of what a pipeline must output for generated input, and the
//! reconciliation of what it did output against it. The model re-derives windows from the
//! generator's deterministic streams with none of the pipeline's code (parsing, windowing,
//! state); the end-to-end tests and the drills both judge the pipeline by it. Pure.
use serde::Serialize;
use std::collections::BTreeMap;
use vigil_actors::generator::{EventGen, GenSpec};

/// Name of the tumbling aggregation the tests and drills configure.
pub const AGG: &str = "w";

/// Output key of window `start` of `user` in aggregation [`AGG`].
pub fn out_key(user: &str, start: i64) -> String {
    format!("{AGG}/{user}@{start}")
}

/// One window's aggregate: (count, sum, min, max) of `amount`.
pub type Window = (u64, f64, f64, f64);

/// `w/user@window_start` → window.
pub type ExpectedWindows = BTreeMap<String, Window>;

/// Where a stream's records must end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Well-formed records in their windows, malformed ones in the DLQ.
    #[default]
    Windows,
    /// Every record in the DLQ: damaged bytes, a schema the source does not take, or event
    /// times whose windows closed long ago (a replay, a producer clock far behind).
    Dlq,
    /// Every record in the security quarantine (forged or unknown producer).
    Quarantine,
}

/// One generated stream: what `vigil gen` was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stream {
    /// Seed.
    pub seed: u64,
    /// Records.
    pub count: u64,
    /// Distinct users.
    pub users: u32,
    /// Fraction of malformed records.
    pub bad_ratio: f64,
    /// Event time of the first record, ms.
    pub start_ms: i64,
    /// Event-time step, ms.
    pub step_ms: i64,
    /// Where its records must end up.
    pub fate: Fate,
}

impl Stream {
    /// `count` records of `seed` from `start_ms`, `step_ms` apart, judged by content.
    pub fn new(seed: u64, count: u64, users: u32, bad_ratio: f64, start_ms: i64, step_ms: i64) -> Self {
        Self { seed, count, users, bad_ratio, start_ms, step_ms, fate: Fate::Windows }
    }
}

/// What the outputs must hold for some streams.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    /// Output windows.
    pub windows: ExpectedWindows,
    /// Distinct records in the DLQ.
    pub dlq: u64,
    /// Distinct records in the security quarantine.
    pub quarantine: u64,
}

/// What `streams` together must produce.
pub fn expected(streams: &[Stream], window_ms: i64) -> Expected {
    expected_with_copies(streams, window_ms, &BTreeMap::new())
}

/// Record id → copies beyond what the streams generated: records a producer wrote twice
/// (a retry whose first attempt had been stored when the connection broke).
pub type ExtraCopies = BTreeMap<String, u64>;

/// (seed, index) of a generated record id `e-<seed>-<index>`.
fn id_parts(id: &str) -> Option<(u64, u64)> {
    let (seed, i) = id.strip_prefix("e-")?.split_once('-')?;
    Some((seed.parse().ok()?, i.parse().ok()?))
}

/// Which ids of the input topic hold more copies than the streams generated: `observed` is
/// id → copies read from the topic.
pub fn extra_copies(streams: &[Stream], observed: &BTreeMap<String, u64>) -> ExtraCopies {
    observed
        .iter()
        .filter_map(|(id, n)| {
            let (seed, i) = id_parts(id)?;
            let generated = streams.iter().filter(|s| s.seed == seed && i < s.count).count() as u64;
            (*n > generated && generated > 0).then(|| (id.clone(), n - generated))
        })
        .collect()
}

/// What `streams` must produce when the input topic also holds `extra` copies: each copy in
/// the topic is a record the pipeline must take exactly once, with the fate of the first
/// stream that generated it.
pub fn expected_with_copies(streams: &[Stream], window_ms: i64, extra: &ExtraCopies) -> Expected {
    let mut e = Expected::default();
    for (k, s) in streams.iter().enumerate() {
        // Copies of an id belong to the first stream that generated it.
        let owns =
            |id: &str| id_parts(id).is_some_and(|(seed, i)| seed == s.seed && i < s.count && !streams[..k].iter().any(|o| o.seed == seed && i < o.count));
        let copies: ExtraCopies = extra.iter().filter(|(id, _)| owns(id)).map(|(id, n)| (id.clone(), *n)).collect();
        match s.fate {
            Fate::Windows => {
                let (w, bad) = windows_of(s, window_ms, std::mem::take(&mut e.windows), &copies);
                e.windows = w;
                e.dlq += bad;
            }
            Fate::Dlq => e.dlq += s.count + copies.values().sum::<u64>(),
            Fate::Quarantine => e.quarantine += s.count + copies.values().sum::<u64>(),
        }
    }
    e
}

/// `out` plus the windows of `s`'s well-formed records, and how many are malformed, each
/// record as many times as it is in the topic (1 + its `copies`).
fn windows_of(s: &Stream, window_ms: i64, mut out: ExpectedWindows, copies: &ExtraCopies) -> (ExpectedWindows, u64) {
    let mut bad = 0;
    {
        let g = EventGen::new(GenSpec { seed: s.seed, users: s.users, bad_ratio: s.bad_ratio, start_ms: s.start_ms, step_ms: s.step_ms });
        for r in g.take(s.count as usize) {
            let times = 1 + copies.get(&r.id).copied().unwrap_or(0);
            let v: Option<serde_json::Value> = serde_json::from_slice(&r.payload).ok();
            let parsed = v.as_ref().and_then(|v| Some((v.get("user")?.as_str()?.to_string(), v.get("amount")?.as_f64()?, v.get("ts")?.as_i64()?)));
            match parsed {
                Some((user, amount, ts)) if v.as_ref().is_some_and(|v| v["amount"].is_number()) => {
                    let start = ts.div_euclid(window_ms) * window_ms;
                    let e = out.entry(out_key(&user, start)).or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
                    e.0 += times;
                    e.1 += amount * times as f64;
                    e.2 = e.2.min(amount);
                    e.3 = e.3.max(amount);
                }
                _ => bad += times,
            }
        }
    }
    (out, bad)
}

/// Expected windows of one stream of `users: 20` (the tests' shape), and its malformed records.
pub fn expected_windows(seed: u64, count: u64, bad_ratio: f64, start_ms: i64, step_ms: i64, window_ms: i64) -> (ExpectedWindows, u64) {
    windows_of(&Stream::new(seed, count, 20, bad_ratio, start_ms, step_ms), window_ms, BTreeMap::new(), &BTreeMap::new())
}

/// (count, sum, min, max) of an output window of [`AGG`] (its JSON value); `None` if it is
/// not one.
pub fn parse_window(v: &str) -> Option<Window> {
    let j: serde_json::Value = serde_json::from_str(v).ok()?;
    let m = &j["metrics"];
    Some((m["count"].as_u64()?, m["sum_amount"].as_f64()?, m["min_amount"].as_f64()?, m["max_amount"].as_f64()?))
}

/// How the outputs compare with the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reconciliation {
    /// Records the generators were asked for.
    pub generated: u64,
    /// Records the input topic holds (a shortfall is the producers' loss, not the pipeline's).
    pub input: u64,
    /// Valid records the model expects in windows.
    pub expected_records: u64,
    /// Valid records the final outputs (deduplicated by key) count.
    pub output_records: u64,
    /// Records missing from their window (or whose window is missing).
    pub lost: u64,
    /// Records counted more than once in their window.
    pub duplicated: u64,
    /// Windows whose sum, min or max differ although the count is right.
    pub wrong_values: u64,
    /// Output windows the model does not know.
    pub unexpected_windows: u64,
    /// Malformed records the model expects in the DLQ.
    pub expected_dlq: u64,
    /// Distinct records in the DLQ (by source position).
    pub dlq: u64,
    /// Records the model expects in the security quarantine.
    pub expected_quarantine: u64,
    /// Distinct records in the security quarantine (by source position).
    pub quarantined: u64,
    /// Output messages beyond one per window key: re-emissions after a restart, harmless
    /// for consumers that keep the last value per key (the output contract).
    pub reemitted: u64,
    /// Up to 10 windows that differ, as `key: got/expected` counts.
    pub examples: Vec<String>,
}

impl Reconciliation {
    /// Compare `outputs` (key → last value), the number of output messages, and the
    /// distinct DLQ and quarantine records with the model.
    pub fn compare(want: &Expected, outputs: &BTreeMap<String, String>, messages: u64, dlq: u64, quarantined: u64) -> Self {
        let mut r = Self {
            expected_dlq: want.dlq,
            dlq,
            expected_quarantine: want.quarantine,
            quarantined,
            reemitted: messages.saturating_sub(outputs.len() as u64),
            ..Self::default()
        };
        // Rejected records missing from the DLQ or quarantine are lost too; extra ones are duplicates.
        r.lost += want.dlq.saturating_sub(dlq) + want.quarantine.saturating_sub(quarantined);
        r.duplicated += dlq.saturating_sub(want.dlq) + quarantined.saturating_sub(want.quarantine);
        let want = &want.windows;
        for (k, w) in want {
            r.expected_records += w.0;
            let got = outputs.get(k).and_then(|v| parse_window(v));
            let n = got.map(|g| g.0).unwrap_or(0);
            r.output_records += n;
            match n.cmp(&w.0) {
                std::cmp::Ordering::Less => r.lost += w.0 - n,
                std::cmp::Ordering::Greater => r.duplicated += n - w.0,
                std::cmp::Ordering::Equal => {
                    if let Some(g) = got {
                        if (g.1 - w.1).abs() > 1e-6 || g.2 != w.2 || g.3 != w.3 {
                            r.wrong_values += 1;
                        }
                    }
                }
            }
            if n != w.0 && r.examples.len() < 10 {
                r.examples.push(format!("{k}: {n}/{}", w.0));
            }
        }
        for (k, v) in outputs {
            if !want.contains_key(k) {
                r.unexpected_windows += 1;
                r.duplicated += parse_window(v).map(|g| g.0).unwrap_or(0);
                r.output_records += parse_window(v).map(|g| g.0).unwrap_or(0);
            }
        }
        r
    }

    /// Whether every record is accounted for exactly once.
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.wrong_values == 0 && self.unexpected_windows == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(w: Window) -> String {
        format!(r#"{{"records":{},"metrics":{{"count":{},"sum_amount":{},"min_amount":{},"max_amount":{}}}}}"#, w.0, w.0, w.1, w.2, w.3)
    }

    #[test]
    fn streams_add_up_and_bad_records_are_counted() {
        let a = Stream::new(1, 2000, 20, 0.1, 1_700_000_000_000, 7);
        let b = Stream { seed: 2, count: 500, bad_ratio: 1.0, ..a };
        let ea = expected(&[a], 1000);
        let eab = expected(&[a, b], 1000);
        assert_eq!(ea.windows, eab.windows, "an all-malformed stream adds no window");
        assert_eq!(eab.dlq, ea.dlq + 500);
        assert!(ea.dlq > 100 && ea.dlq < 300, "{}", ea.dlq);
        assert_eq!(ea.windows.values().map(|w| w.0).sum::<u64>() + ea.dlq, 2000);
        // Streams with a fixed fate add whole to the DLQ or the quarantine, never to windows.
        let replay = Stream { fate: Fate::Dlq, count: 300, ..a };
        let forged = Stream { seed: 9, fate: Fate::Quarantine, count: 70, ..a };
        let all = expected(&[a, replay, forged], 1000);
        assert_eq!((all.windows == ea.windows, all.dlq, all.quarantine), (true, ea.dlq + 300, 70));
        // A producer's extra copies: only beyond what the streams generated (the replay's ids
        // are the workload's), and they go where the first stream that made the id sends them.
        let observed: BTreeMap<String, u64> =
            [("e-1-5".to_string(), 3), ("e-1-1999".to_string(), 1), ("e-9-0".to_string(), 2), ("e-77-0".to_string(), 4)].into();
        let extra = extra_copies(&[a, replay, forged], &observed);
        assert_eq!(extra, [("e-1-5".to_string(), 1), ("e-9-0".to_string(), 1)].into());
        let with = expected_with_copies(&[a, replay, forged], 1000, &extra);
        assert_eq!(with.quarantine, 71);
        let n = |e: &Expected| e.windows.values().map(|w| w.0).sum::<u64>() + e.dlq;
        assert_eq!(n(&with), n(&all) + 1, "e-1-5's extra copy counted once more, in its window or the DLQ");
    }

    #[test]
    fn reconciliation_finds_lost_duplicated_and_reemitted() {
        let a = Stream::new(3, 1000, 5, 0.05, 1_700_000_000_000, 10);
        let e = Expected { quarantine: 4, ..expected(&[a], 1000) };
        let (want, bad) = (&e.windows, e.dlq);
        let exact: BTreeMap<String, String> = want.iter().map(|(k, w)| (k.clone(), json(*w))).collect();
        let r = Reconciliation::compare(&e, &exact, exact.len() as u64 + 3, bad, 4);
        assert!(r.exact(), "{r:?}");
        assert_eq!((r.reemitted, r.expected_records, r.output_records), (3, 1000 - bad, 1000 - bad));

        let mut broken = exact.clone();
        let (k1, w1) = want.iter().next().unwrap();
        broken.remove(k1);
        let (k2, w2) = want.iter().nth(1).unwrap();
        broken.insert(k2.clone(), json((w2.0 + 2, w2.1, w2.2, w2.3)));
        let r = Reconciliation::compare(&e, &broken, broken.len() as u64, bad - 1, 5);
        assert_eq!((r.lost, r.duplicated), (w1.0 + 1, 2 + 1), "{r:?}");
        assert!(!r.exact() && r.examples.len() == 2);
    }
}
