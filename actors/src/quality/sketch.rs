//! A mergeable quantile sketch with a relative-error guarantee (DDSketch's log-bucket
//! scheme), for freshness and latency p50/p99: any quantile it returns is within
//! `relative_accuracy` of a value of that rank in the input. Values ≤ `min_value` (e.g. 0 ms
//! freshness) share one bucket; memory is bounded by `buckets_max`, collapsing the lowest
//! buckets first (the high quantiles, the ones alerts look at, stay exact to the guarantee).
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Quantile sketch of non-negative values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantileSketch {
    gamma: f64,
    ln_gamma: f64,
    min_value: f64,
    buckets_max: usize,
    zero: u64,
    buckets: BTreeMap<i32, u64>,
    count: u64,
    max: f64,
}

impl QuantileSketch {
    /// A sketch with the given relative accuracy (e.g. 0.01), values at or below
    /// `min_value` counted as `min_value`, and at most `buckets_max` buckets.
    pub fn new(relative_accuracy: f64, min_value: f64, buckets_max: usize) -> Self {
        let a = relative_accuracy.clamp(1e-4, 0.5);
        let gamma = (1.0 + a) / (1.0 - a);
        Self {
            gamma,
            ln_gamma: gamma.ln(),
            min_value: min_value.max(f64::MIN_POSITIVE),
            buckets_max: buckets_max.max(8),
            zero: 0,
            buckets: BTreeMap::new(),
            count: 0,
            max: 0.0,
        }
    }

    /// Add one value (negative values count as `min_value`; NaN is ignored).
    pub fn add(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        self.count += 1;
        self.max = self.max.max(v);
        if v <= self.min_value {
            self.zero += 1;
            return;
        }
        let i = (v.ln() / self.ln_gamma).ceil() as i32;
        *self.buckets.entry(i).or_default() += 1;
        if self.buckets.len() > self.buckets_max {
            // Collapse the two lowest buckets.
            if let (Some((&lo, &n)), Some(&next)) = (self.buckets.iter().next(), self.buckets.keys().nth(1)) {
                self.buckets.remove(&lo);
                *self.buckets.entry(next).or_default() += n;
            }
        }
    }

    /// Merge another sketch with the same parameters into this one.
    pub fn merge(&mut self, other: &QuantileSketch) {
        self.count += other.count;
        self.zero += other.zero;
        self.max = self.max.max(other.max);
        for (i, n) in &other.buckets {
            *self.buckets.entry(*i).or_default() += n;
        }
        while self.buckets.len() > self.buckets_max {
            if let (Some((&lo, &n)), Some(&next)) = (self.buckets.iter().next(), self.buckets.keys().nth(1)) {
                self.buckets.remove(&lo);
                *self.buckets.entry(next).or_default() += n;
            }
        }
    }

    /// Values added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q`-quantile (0..=1), `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).floor() as u64;
        let mut seen = self.zero;
        if rank < seen {
            return Some(self.min_value.min(self.max));
        }
        for (i, n) in &self.buckets {
            seen += n;
            if rank < seen {
                let v = 2.0 * self.gamma.powi(*i) / (self.gamma + 1.0);
                return Some(v.min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Every quantile is within the relative accuracy of the exact value of that rank.
        #[test]
        fn quantiles_keep_their_relative_accuracy(mut values in proptest::collection::vec(0.5f64..1e7, 1..2000), q in 0.0f64..=1.0) {
            let mut s = QuantileSketch::new(0.01, 0.1, 2048);
            for v in &values {
                s.add(*v);
            }
            values.sort_by(|a, b| a.total_cmp(b));
            let exact = values[(q * (values.len() - 1) as f64).floor() as usize];
            let got = s.quantile(q).unwrap();
            proptest::prop_assert!((got - exact).abs() <= 0.01 * exact + 1e-9, "q {} exact {} got {}", q, exact, got);
        }

        /// Merging two sketches equals sketching both inputs.
        #[test]
        fn merge_equals_union(a in proptest::collection::vec(0.0f64..1e5, 0..300), b in proptest::collection::vec(0.0f64..1e5, 0..300)) {
            let (mut x, mut y, mut both) = (QuantileSketch::new(0.02, 1.0, 512), QuantileSketch::new(0.02, 1.0, 512), QuantileSketch::new(0.02, 1.0, 512));
            a.iter().for_each(|v| { x.add(*v); both.add(*v); });
            b.iter().for_each(|v| { y.add(*v); both.add(*v); });
            x.merge(&y);
            for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
                proptest::prop_assert_eq!(x.quantile(q), both.quantile(q));
            }
        }
    }

    #[test]
    fn memory_is_bounded_and_high_quantiles_stay_accurate() {
        let mut s = QuantileSketch::new(0.01, 1.0, 64);
        for i in 1..=100_000u64 {
            s.add(i as f64);
        }
        assert!(s.buckets.len() <= 64);
        let p99 = s.quantile(0.99).unwrap();
        assert!((p99 - 99_000.0).abs() <= 0.01 * 99_000.0 + 1.0, "p99 {p99}");
        assert_eq!(QuantileSketch::new(0.01, 1.0, 64).quantile(0.5), None);
    }
}
