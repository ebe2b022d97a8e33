//! Anomaly detection on data-quality series, pure and deterministic (time is passed in).
//!
//! [`SeasonalDetector`]: a seasonal baseline per time-of-day bucket. For each bucket it keeps
//! an exponentially weighted mean and variance over past seasons (weight
//! `quality.anomaly.alpha` for the newest). A value scores `z = (value - mean) / std` against
//! the baseline of its bucket; `|z|` above `z_threshold` is a spike or a drop, and a value of
//! exactly zero where the baseline expects at least `zero_floor` is a drop to zero. A bucket's
//! observations are folded into its baseline when the bucket is over, clamped to
//! `mean ± z_threshold · std`, so an anomaly cannot teach the baseline that it is normal in
//! one season, while a lasting change (drift) becomes the new normal after a few. Nothing
//! fires until a bucket has seen `warmup_seasons` seasons.
//!
//! [`StallDetector`]: a partition whose position does not advance for `stall_after` while it
//! has lag or while its broker has been silent.
use serde::{Deserialize, Serialize};
use std::time::Duration;
use vigil_config::AnomalyConfig;

/// What kind of anomaly a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anomaly {
    /// Far above the baseline.
    Spike,
    /// Far below the baseline.
    Drop,
    /// Exactly zero where the baseline expects traffic.
    DropToZero,
}

/// The score of one value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// `(value - mean) / std` against the bucket's baseline; 0 while warming up.
    pub z: f64,
    /// Set when the value is anomalous (never during warm-up).
    pub anomaly: Option<Anomaly>,
    /// Whether the bucket is still warming up.
    pub warming_up: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Baseline {
    mean: f64,
    var: f64,
    seasons: u32,
}

/// Observations of the bucket in progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Acc {
    /// `season_index * buckets + bucket`, or -1 before the first observation.
    slot: i64,
    n: u64,
    sum: f64,
    sumsq: f64,
}

/// Seasonal z-score detector for one series. Serializable, so baselines survive restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeasonalDetector {
    season_ms: i64,
    bucket_ms: i64,
    buckets: u32,
    alpha: f64,
    z_threshold: f64,
    warmup_seasons: u32,
    min_relative_std: f64,
    zero_floor: f64,
    baselines: Vec<Baseline>,
    acc: Acc,
}

impl SeasonalDetector {
    /// A detector with no history.
    pub fn new(cfg: &AnomalyConfig) -> Self {
        let buckets = cfg.buckets.max(1);
        let season_ms = (cfg.season.as_millis() as i64).max(buckets as i64);
        Self {
            season_ms,
            bucket_ms: season_ms / buckets as i64,
            buckets,
            alpha: cfg.alpha.clamp(f64::MIN_POSITIVE, 1.0),
            z_threshold: cfg.z_threshold,
            warmup_seasons: cfg.warmup_seasons,
            min_relative_std: cfg.min_relative_std,
            zero_floor: cfg.zero_floor,
            baselines: vec![Baseline::default(); buckets as usize],
            acc: Acc { slot: -1, ..Acc::default() },
        }
    }

    fn slot(&self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.bucket_ms)
    }

    fn bucket_of_slot(&self, slot: i64) -> usize {
        (slot.rem_euclid(self.buckets as i64)) as usize
    }

    fn std(&self, b: &Baseline) -> f64 {
        b.var.max(0.0).sqrt().max(self.min_relative_std * b.mean.abs()).max(1e-9)
    }

    /// Fold the finished bucket into its baseline, clamped so one anomalous season cannot
    /// move it far.
    fn fold(&mut self) {
        if self.acc.n == 0 || self.acc.slot < 0 {
            return;
        }
        let idx = self.bucket_of_slot(self.acc.slot);
        let n = self.acc.n as f64;
        let mean = self.acc.sum / n;
        let within = (self.acc.sumsq / n - mean * mean).max(0.0);
        let std = self.std(&self.baselines[idx]);
        let b = &mut self.baselines[idx];
        if b.seasons == 0 {
            *b = Baseline { mean, var: within, seasons: 1 };
            return;
        }
        let limit = self.z_threshold * std;
        let m = mean.clamp(b.mean - limit, b.mean + limit);
        let d = m - b.mean;
        // Variance of a value around the baseline: the spread within the bucket plus how
        // far this season's level sat from the baseline.
        let v = within.min(limit * limit) + d * d;
        b.mean += self.alpha * d;
        b.var = (1.0 - self.alpha) * b.var + self.alpha * v;
        b.seasons = b.seasons.saturating_add(1);
    }

    /// Score `value` observed at `t_ms` and learn from it. Observations must come in time
    /// order; an older one is scored but does not teach the baseline.
    pub fn observe(&mut self, t_ms: i64, value: f64) -> Verdict {
        let slot = self.slot(t_ms);
        let learn = slot >= self.acc.slot && value.is_finite();
        if slot > self.acc.slot {
            self.fold();
            self.acc = Acc { slot, ..Acc::default() };
        }
        let b = self.baselines[self.bucket_of_slot(slot)];
        let verdict = if b.seasons < self.warmup_seasons.max(1) || !value.is_finite() {
            Verdict { z: 0.0, anomaly: None, warming_up: true }
        } else {
            let z = (value - b.mean) / self.std(&b);
            let anomaly = if value == 0.0 && b.mean >= self.zero_floor && z < 0.0 {
                Some(Anomaly::DropToZero)
            } else if z > self.z_threshold {
                Some(Anomaly::Spike)
            } else if z < -self.z_threshold {
                Some(Anomaly::Drop)
            } else {
                None
            };
            Verdict { z, anomaly, warming_up: false }
        };
        if learn {
            self.acc.n += 1;
            self.acc.sum += value;
            self.acc.sumsq += value * value;
        }
        verdict
    }

    /// The baseline mean of the bucket `t_ms` falls in, once it has history.
    pub fn expected(&self, t_ms: i64) -> Option<f64> {
        let b = self.baselines[self.bucket_of_slot(self.slot(t_ms))];
        (b.seasons > 0).then_some(b.mean)
    }
}

/// Detects a partition that makes no progress while it has lag, or while its broker cannot
/// be heard (then the lag it would report is unknown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StallDetector {
    stall_after_ms: i64,
    position: Option<i64>,
    /// When the position last changed.
    moved_ms: i64,
    /// Since when the partition has had lag, if it has.
    lagging_since_ms: Option<i64>,
}

impl StallDetector {
    /// A detector firing after `stall_after` without progress.
    pub fn new(stall_after: Duration) -> Self {
        Self { stall_after_ms: stall_after.as_millis() as i64, position: None, moved_ms: 0, lagging_since_ms: None }
    }

    /// Observe the partition's position, its lag, and how long its broker has been silent
    /// (ms; `None` when not fetched or unknown) at `t_ms`. Returns how long it has been
    /// stalled (ms) when that is at least `stall_after`: no progress for that long, with lag
    /// or with a silent broker all along.
    pub fn observe(&mut self, t_ms: i64, position: i64, lag: i64, silent_ms: Option<i64>) -> Option<i64> {
        if self.position != Some(position) {
            self.position = Some(position);
            self.moved_ms = t_ms;
        }
        if lag <= 0 {
            self.lagging_since_ms = None;
        } else if self.lagging_since_ms.is_none() {
            self.lagging_since_ms = Some(t_ms);
        }
        let without_progress = t_ms - self.moved_ms;
        // `Option::max`: `None` (no lag, broker heard) is below any duration.
        let blocked = self.lagging_since_ms.map(|s| t_ms - s).max(silent_ms).unwrap_or(0);
        let stalled = without_progress.min(blocked);
        (stalled >= self.stall_after_ms).then_some(stalled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;

    /// Records per minute of a source with a daily pattern (busy afternoons, quiet nights,
    /// a step at 09:00) and 3 % noise.
    fn clean(t: i64, rng: &mut ChaCha8Rng) -> f64 {
        let hour = (t.rem_euclid(DAY)) as f64 / HOUR as f64;
        let daily = 1.0 + 0.5 * ((hour - 9.0) / 24.0 * std::f64::consts::TAU).sin();
        let office = if (9.0..18.0).contains(&hour) { 1.3 } else { 1.0 };
        let noise = 1.0 + 0.03 * (rng.random::<f64>() * 2.0 - 1.0) * 1.7;
        1000.0 * daily * office * noise
    }

    /// An injected anomaly: what, when (ms, [start, end)), and the value it makes.
    struct Injected {
        kind: &'static str,
        start: i64,
        end: i64,
    }

    fn series(seed: u64, days: i64, inject: &[Injected]) -> Vec<(i64, f64)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..days * DAY / MIN)
            .map(|i| {
                let t = i * MIN;
                let mut v = clean(t, &mut rng);
                for a in inject.iter().filter(|a| (a.start..a.end).contains(&t)) {
                    v = match a.kind {
                        "spike" => v * 3.0,
                        "drop" => v * 0.4,
                        "zero" => 0.0,
                        // A slow rise to +80 % over the anomaly.
                        "drift" => v * (1.0 + 0.8 * (t - a.start) as f64 / (a.end - a.start) as f64),
                        _ => v,
                    };
                }
                (t, v)
            })
            .collect()
    }

    fn at(day: i64, hour: i64, minute: i64) -> i64 {
        day * DAY + hour * HOUR + minute * MIN
    }

    fn injected() -> Vec<Injected> {
        vec![
            Injected { kind: "spike", start: at(2, 10, 0), end: at(2, 10, 5) },
            Injected { kind: "drop", start: at(2, 20, 0), end: at(2, 20, 30) },
            Injected { kind: "zero", start: at(3, 22, 0), end: at(3, 22, 20) },
            Injected { kind: "spike", start: at(4, 3, 0), end: at(4, 3, 3) },
            Injected { kind: "drop", start: at(4, 8, 0), end: at(4, 8, 45) },
            Injected { kind: "drift", start: at(5, 12, 0), end: at(5, 18, 0) },
            Injected { kind: "zero", start: at(6, 12, 0), end: at(6, 12, 10) },
            Injected { kind: "spike", start: at(6, 16, 30), end: at(6, 16, 32) },
        ]
    }

    /// Episodes: runs of anomalous minutes, merged across gaps of up to 5 minutes.
    fn episodes(points: &[(i64, Verdict)]) -> Vec<(i64, i64)> {
        let mut out: Vec<(i64, i64)> = Vec::new();
        for (t, _) in points.iter().filter(|(_, v)| v.anomaly.is_some()) {
            match out.last_mut() {
                Some((_, end)) if t - *end <= 5 * MIN => *end = *t,
                _ => out.push((*t, *t)),
            }
        }
        out
    }

    fn run(s: &[(i64, f64)]) -> Vec<(i64, Verdict)> {
        let mut d = SeasonalDetector::new(&AnomalyConfig::default());
        s.iter().map(|(t, v)| (*t, d.observe(*t, *v))).collect()
    }

    #[test]
    fn precision_and_recall_on_a_daily_season() {
        let inject = injected();
        let mut detected = 0;
        let (mut true_eps, mut all_eps) = (0, 0);
        for seed in [1u64, 2, 3] {
            let points = run(&series(seed, 8, &inject));
            let eps = episodes(&points);
            let grace = 10 * MIN;
            let hit = |s: i64, e: i64, a: &Injected| s < a.end + grace && e >= a.start;
            detected += inject.iter().filter(|a| eps.iter().any(|(s, e)| hit(*s, *e, a))).count();
            true_eps += eps.iter().filter(|(s, e)| inject.iter().any(|a| hit(*s, *e, a))).count();
            all_eps += eps.len();
            assert!(points.iter().filter(|(t, _)| *t < 2 * DAY).all(|(_, v)| v.anomaly.is_none()), "fired during warm-up");
        }
        let recall = detected as f64 / (3 * inject.len()) as f64;
        let precision = true_eps as f64 / all_eps.max(1) as f64;
        println!("anomaly detection on 3 seeded 8-day series: precision {precision:.3} ({true_eps}/{all_eps} episodes), recall {recall:.3} ({detected}/{} anomalies)", 3 * inject.len());
        assert!(recall >= 0.9, "recall {recall}");
        assert!(precision >= 0.9, "precision {precision}");
    }

    #[test]
    fn kinds_are_named() {
        let points = run(&series(7, 8, &injected()));
        let kind_at = |t: i64| points.iter().find(|(x, _)| *x == t).and_then(|(_, v)| v.anomaly);
        assert_eq!(kind_at(at(2, 10, 1)), Some(Anomaly::Spike));
        assert_eq!(kind_at(at(2, 20, 10)), Some(Anomaly::Drop));
        assert_eq!(kind_at(at(3, 22, 5)), Some(Anomaly::DropToZero));
    }

    #[test]
    fn a_clean_seasonal_series_never_fires() {
        for seed in 10..14u64 {
            let points = run(&series(seed, 10, &[]));
            let fired: Vec<_> = points.iter().filter(|(_, v)| v.anomaly.is_some()).map(|(t, v)| (t / MIN, v.z)).collect();
            assert!(fired.is_empty(), "seed {seed}: false alarms at minutes {fired:?}");
        }
    }

    #[test]
    fn a_lasting_change_becomes_normal() {
        // From day 3 the source runs at twice its old volume: it fires, then stops firing.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut d = SeasonalDetector::new(&AnomalyConfig::default());
        let mut fired_per_day = vec![0; 12];
        for i in 0..12 * DAY / MIN {
            let t = i * MIN;
            let v = clean(t, &mut rng) * if t >= 3 * DAY { 2.0 } else { 1.0 };
            if d.observe(t, v).anomaly.is_some() {
                fired_per_day[(t / DAY) as usize] += 1;
            }
        }
        assert!(fired_per_day[3] > 0, "{fired_per_day:?}");
        assert_eq!(fired_per_day[11], 0, "still firing a week later: {fired_per_day:?}");
    }

    #[test]
    fn stalls_fire_only_with_lag() {
        let mut s = StallDetector::new(Duration::from_secs(60));
        let mut fired = Vec::new();
        let mut pos = 0;
        for sec in 0..600i64 {
            let t = sec * 1000;
            // Progress except during [100, 250) s (stalled, lag 50) and [400, 550) s (idle, no lag).
            let stalled = (100..250).contains(&sec);
            let idle = (400..550).contains(&sec);
            if !stalled && !idle {
                pos += 10;
            }
            if s.observe(t, pos, if idle { 0 } else { 50 }, None).is_some() {
                fired.push(sec);
            }
        }
        // The last progress was seen at 99 s: it fires 60 s later, until progress resumes.
        assert_eq!(fired.first(), Some(&159), "fires stall_after after the last progress");
        assert_eq!(fired.last(), Some(&249));
        assert!(fired.iter().all(|s| (159..250).contains(s)), "never while idle without lag");
    }

    #[test]
    fn a_silent_broker_stalls_a_partition_without_lag() {
        let mut s = StallDetector::new(Duration::from_secs(3));
        // Caught up (no lag) when the broker falls silent at 10 s: the lag stays 0, since
        // nothing new can be heard of.
        let silent = |sec: i64| (sec >= 10).then_some((sec - 10) * 1000);
        let fired: Vec<i64> = (0..20).filter(|&sec| s.observe(sec * 1000, 100, 0, silent(sec)).is_some()).collect();
        assert_eq!(fired.first(), Some(&13), "3 s of silence without progress");
        // Silence while the position moves (records already fetched being read) is no stall,
        // and it counts only from the last progress.
        let mut s = StallDetector::new(Duration::from_secs(3));
        let pos = |sec: i64| sec.min(14) * 10;
        let fired: Vec<i64> = (0..20).filter(|&sec| s.observe(sec * 1000, pos(sec), 0, silent(sec)).is_some()).collect();
        assert_eq!(fired.first(), Some(&17), "3 s after the last progress at 14 s");
        // A broker heard within `stall_after` never stalls a partition without lag.
        let mut s = StallDetector::new(Duration::from_secs(3));
        assert!((0..100).all(|sec| s.observe(sec * 1000, 100, 0, Some(2_999)).is_none()));
    }

    proptest::proptest! {
        /// Whatever the input, nothing fires before warm-up ends and scores stay finite.
        #[test]
        fn never_fires_during_warmup(values in proptest::collection::vec(-1e6f64..1e6, 1..400), step_min in 1i64..200) {
            let mut d = SeasonalDetector::new(&AnomalyConfig::default());
            for (i, v) in values.iter().enumerate() {
                let t = i as i64 * step_min * MIN;
                let verdict = d.observe(t, *v);
                proptest::prop_assert!(verdict.z.is_finite());
                if t < 2 * DAY {
                    proptest::prop_assert!(verdict.anomaly.is_none());
                }
            }
        }

        /// Scaling a series scales nothing that matters: the same points fire.
        #[test]
        fn verdicts_do_not_depend_on_units(seed in 0u64..1000, scale in 0.01f64..100.0) {
            let s = series(seed, 3, &[Injected { kind: "spike", start: at(2, 12, 0), end: at(2, 12, 3) }]);
            let a: Vec<bool> = run(&s).iter().map(|(_, v)| v.anomaly.is_some()).collect();
            let scaled: Vec<(i64, f64)> = s.iter().map(|(t, v)| (*t, v * scale)).collect();
            let b: Vec<bool> = run(&scaled).iter().map(|(_, v)| v.anomaly.is_some()).collect();
            proptest::prop_assert_eq!(a, b);
        }
    }
}
