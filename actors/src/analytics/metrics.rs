//! Window metrics and their accumulators: count, sum, min, max, avg, distinct count
//! (HyperLogLog++, `cardinality-estimator`), percentiles (DDSketch, `sketches-ddsketch`) and
//! first/last by event time. Every accumulator merges (session windows merge) and
//! serialises (checkpoints). Pure.
use cardinality_estimator::CardinalityEstimator;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sketches_ddsketch::{Config as SketchConfig, DDSketch};

/// Relative accuracy of percentiles: the reported value is within this fraction of a true
/// value of the requested rank (DDSketch's guarantee).
pub const PERCENTILE_RELATIVE_ERROR: f64 = 0.01;
/// Standard error of distinct counts above 64 distinct values (HyperLogLog++ with 2^12
/// registers: 1.04/√4096); smaller sets are counted exactly.
pub const DISTINCT_STANDARD_ERROR: f64 = 0.0163;

pub use vigil_config::Metric;

/// A field value as metrics see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val<'a> {
    /// Absent or null: ignored by every metric but `count`.
    Missing,
    /// A number.
    Num(f64),
    /// Text (distinct counts; other metrics ignore it).
    Str(&'a str),
}

/// The running state of one metric in one window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Acc {
    /// Count.
    Count(u64),
    /// Sum.
    Sum(f64),
    /// Min.
    Min(Option<f64>),
    /// Max.
    Max(Option<f64>),
    /// Sum and count.
    Avg(f64, u64),
    /// HyperLogLog++ (exact for small sets).
    Distinct(Box<CardinalityEstimator<[u8]>>),
    /// The values (exact while few) or their DDSketch, and the quantile.
    Percentile(Box<Pct>, f64),
    /// (event time, value) of the earliest.
    First(Option<(i64, Pick)>),
    /// (event time, value) of the latest.
    Last(Option<(i64, Pick)>),
    /// Percentile `q` read from the sketch of an earlier metric (index) of the same field:
    /// `p50(x)` and `p99(x)` keep one sketch between them.
    QuantileOf(u16, f64),
}

/// A DDSketch (the crate's type has no `Debug`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sketch(DDSketch);

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DDSketch({} values)", self.0.count())
    }
}

fn sketch() -> Sketch {
    Sketch(DDSketch::new(SketchConfig::new(PERCENTILE_RELATIVE_ERROR, 2048, 1.0e-9)))
}

/// Values a percentile keeps exactly before it switches to a sketch. A DDSketch of a few
/// widely spread values costs hundreds of bytes (one bin per 2 % of range); most windows
/// of a fine-grained group key hold only a few values.
pub const PERCENTILE_EXACT_MAX: usize = 32;

/// State of a percentile: the values while there are at most [`PERCENTILE_EXACT_MAX`]
/// (exact), then a DDSketch (within [`PERCENTILE_RELATIVE_ERROR`]). Both depend only on
/// the values added, not their order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Pct {
    /// The values.
    Exact(Vec<f64>),
    /// Their sketch.
    Sketch(Sketch),
}

impl Pct {
    fn add(&mut self, x: f64) {
        match self {
            Pct::Exact(v) => {
                v.push(x);
                if v.len() > PERCENTILE_EXACT_MAX {
                    let mut s = sketch();
                    v.iter().for_each(|y| s.0.add(*y));
                    *self = Pct::Sketch(s);
                }
            }
            Pct::Sketch(s) => s.0.add(x),
        }
    }

    fn merge(&mut self, other: &Pct) {
        match (&mut *self, other) {
            (_, Pct::Exact(v)) => v.iter().for_each(|x| self.add(*x)),
            (Pct::Sketch(a), Pct::Sketch(b)) => {
                // Same configuration by construction; a mismatch cannot happen.
                let _ = a.0.merge(&b.0);
            }
            (Pct::Exact(v), Pct::Sketch(b)) => {
                let mut s = b.clone();
                v.iter().for_each(|x| s.0.add(*x));
                *self = Pct::Sketch(s);
            }
        }
    }

    /// The value of rank `floor(q * (n - 1))` (DDSketch's definition); `None` when empty.
    fn quantile(&self, q: f64) -> Option<f64> {
        match self {
            Pct::Exact(v) if v.is_empty() => None,
            Pct::Exact(v) => {
                let mut sorted = v.clone();
                sorted.sort_by(f64::total_cmp);
                let rank = (q * (sorted.len() - 1) as f64) as usize;
                sorted.get(rank.min(sorted.len() - 1)).copied()
            }
            Pct::Sketch(s) => s.0.quantile(q).ok().flatten(),
        }
    }
}

/// A value `first`/`last` keep: a number or text.
#[derive(Debug, Clone, PartialEq, PartialOrd, Serialize, Deserialize)]
pub enum Pick {
    /// A number.
    Num(f64),
    /// Text.
    Str(String),
}

impl Pick {
    fn json(&self) -> Value {
        match self {
            Pick::Num(x) => json!(x),
            Pick::Str(s) => json!(s),
        }
    }
}

/// Event-time order with the value as tie-break, so results do not depend on arrival order.
fn earlier(a: (i64, &Pick), b: (i64, &Pick)) -> bool {
    a.partial_cmp(&b).is_some_and(|o| o.is_lt())
}

/// Keep the earlier (`first`) or later of `slot` and `candidate`.
fn keep(slot: &mut Option<(i64, Pick)>, ts: i64, v: Val<'_>, first: bool) {
    let candidate = match v {
        Val::Num(x) => Pick::Num(x),
        Val::Str(s) => Pick::Str(s.to_string()),
        Val::Missing => return,
    };
    let replace = match slot {
        None => true,
        Some((t, cur)) if first => earlier((ts, &candidate), (*t, cur)),
        Some((t, cur)) => earlier((*t, cur), (ts, &candidate)),
    };
    if replace {
        *slot = Some((ts, candidate));
    }
}

fn keep_pick(slot: &mut Option<(i64, Pick)>, other: &(i64, Pick), first: bool) {
    let replace = match slot {
        None => true,
        Some((t, cur)) if first => earlier((other.0, &other.1), (*t, cur)),
        Some((t, cur)) => earlier((*t, cur), (other.0, &other.1)),
    };
    if replace {
        *slot = Some(other.clone());
    }
}

impl Acc {
    /// An empty accumulator for `m`.
    pub fn new(m: &Metric) -> Self {
        match m {
            Metric::Count => Acc::Count(0),
            Metric::Sum { .. } => Acc::Sum(0.0),
            Metric::Min { .. } => Acc::Min(None),
            Metric::Max { .. } => Acc::Max(None),
            Metric::Avg { .. } => Acc::Avg(0.0, 0),
            Metric::Distinct { .. } => Acc::Distinct(Box::new(CardinalityEstimator::new())),
            Metric::Percentile { q, .. } => Acc::Percentile(Box::new(Pct::Exact(Vec::new())), *q),
            Metric::First { .. } => Acc::First(None),
            Metric::Last { .. } => Acc::Last(None),
        }
    }

    /// Add one record's value (event time `ts`).
    pub fn add(&mut self, v: Val<'_>, ts: i64) {
        match (self, v) {
            (Acc::Count(n), _) => *n += 1,
            (Acc::QuantileOf(..), _) => {}
            (Acc::Distinct(h), Val::Str(s)) => h.insert(s.as_bytes()),
            (Acc::Distinct(h), Val::Num(x)) => h.insert(&x.to_bits().to_le_bytes()),
            (Acc::First(f), v) => keep(f, ts, v, true),
            (Acc::Last(l), v) => keep(l, ts, v, false),
            (_, Val::Missing | Val::Str(_)) => {}
            (Acc::Sum(s), Val::Num(x)) => *s += x,
            (Acc::Min(m), Val::Num(x)) => *m = Some(m.map_or(x, |m| m.min(x))),
            (Acc::Max(m), Val::Num(x)) => *m = Some(m.map_or(x, |m| m.max(x))),
            (Acc::Avg(s, n), Val::Num(x)) => {
                *s += x;
                *n += 1;
            }
            (Acc::Percentile(d, _), Val::Num(x)) => d.add(x),
        }
    }

    /// Fold `other` (the same metric) into this one.
    pub fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Sum(a), Acc::Sum(b)) => *a += b,
            (Acc::Min(a), Acc::Min(Some(b))) => *a = Some(a.map_or(*b, |a| a.min(*b))),
            (Acc::Max(a), Acc::Max(Some(b))) => *a = Some(a.map_or(*b, |a| a.max(*b))),
            (Acc::Avg(s, n), Acc::Avg(s2, n2)) => {
                *s += s2;
                *n += n2;
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => a.merge(b),
            (Acc::Percentile(a, _), Acc::Percentile(b, _)) => a.merge(b),
            (Acc::First(a), Acc::First(Some(b))) => keep_pick(a, b, true),
            (Acc::Last(a), Acc::Last(Some(b))) => keep_pick(a, b, false),
            _ => {}
        }
    }

    /// The metric's value (null when no record had the field).
    pub fn value(&self) -> Value {
        match self {
            Acc::Count(n) => json!(n),
            Acc::Sum(s) => json!(s),
            Acc::Min(m) | Acc::Max(m) => json!(m),
            Acc::Avg(s, n) => {
                if *n == 0 {
                    Value::Null
                } else {
                    json!(s / *n as f64)
                }
            }
            Acc::Distinct(h) => json!(h.estimate()),
            Acc::Percentile(d, q) => json!(d.quantile(*q)),
            Acc::First(f) | Acc::Last(f) => f.as_ref().map_or(Value::Null, |(_, v)| v.json()),
            // Read through the window's other accumulators: see [`Accs::values`].
            Acc::QuantileOf(..) => Value::Null,
        }
    }
}

/// The metrics of one window, in the aggregation's order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accs(pub Vec<Acc>);

impl Accs {
    /// Empty accumulators for `metrics`. A percentile of a field an earlier percentile
    /// already sketches reads that sketch instead of keeping its own.
    pub fn new(metrics: &[Metric]) -> Self {
        let shared = |i: usize, m: &Metric| match m {
            Metric::Percentile { field, q } => metrics[..i]
                .iter()
                .position(|e| matches!(e, Metric::Percentile { field: f, .. } if f == field))
                .and_then(|j| u16::try_from(j).ok())
                .map(|j| Acc::QuantileOf(j, *q)),
            _ => None,
        };
        Self(metrics.iter().enumerate().map(|(i, m)| shared(i, m).unwrap_or_else(|| Acc::new(m))).collect())
    }

    /// Add one record: `vals[i]` is the value of metric `i`'s field.
    pub fn add(&mut self, vals: &[Val<'_>], ts: i64) {
        for (a, v) in self.0.iter_mut().zip(vals.iter().chain(std::iter::repeat(&Val::Missing))) {
            a.add(*v, ts);
        }
    }

    /// Fold another window's accumulators in.
    pub fn merge(&mut self, other: &Accs) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            a.merge(b);
        }
    }

    /// The value of each metric, in metric order.
    pub fn value_list(&self) -> Vec<Value> {
        let value = |a: &Acc| match a {
            Acc::QuantileOf(j, q) => match self.0.get(usize::from(*j)) {
                Some(Acc::Percentile(d, _)) => json!(d.quantile(*q)),
                _ => Value::Null,
            },
            a => a.value(),
        };
        self.0.iter().map(value).collect()
    }

    /// `name → value` per metric (tests; outputs name [`Accs::value_list`] from the spec).
    #[cfg(test)]
    pub fn values(&self, metrics: &[Metric]) -> serde_json::Map<String, Value> {
        metrics.iter().map(Metric::name).zip(self.value_list()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(field: &str) -> Vec<Metric> {
        let f = || field.to_string();
        vec![
            Metric::Count,
            Metric::Sum { field: f() },
            Metric::Min { field: f() },
            Metric::Max { field: f() },
            Metric::Avg { field: f() },
            Metric::Percentile { field: f(), q: 0.99 },
            Metric::Percentile { field: f(), q: 0.5 },
            Metric::First { field: f() },
            Metric::Last { field: f() },
        ]
    }

    #[test]
    fn names() {
        let names: Vec<String> = all("amount").iter().map(Metric::name).collect();
        assert_eq!(names, ["count", "sum_amount", "min_amount", "max_amount", "avg_amount", "p99_amount", "p50_amount", "first_amount", "last_amount"]);
        assert_eq!(Metric::Percentile { field: "x".into(), q: 0.999 }.name(), "p99_9_x");
        assert_eq!(Metric::Distinct { field: "user".into() }.name(), "distinct_user");
    }

    proptest! {
        /// Adding in any split and merging equals adding everything to one accumulator;
        /// exact metrics equal a direct computation; the percentile is within its relative
        /// error of a true value of its rank; serialisation round-trips.
        #[test]
        fn merge_is_add_and_values_match_a_direct_computation(
            xs in prop::collection::vec((0i64..1000, 1u32..100_000), 1..300),
            split in 0usize..300,
        ) {
            let m = all("v");
            let vals: Vec<(i64, f64)> = xs.iter().map(|(t, c)| (*t, f64::from(*c) / 100.0)).collect();
            let mut one = Accs::new(&m);
            let (mut a, mut b) = (Accs::new(&m), Accs::new(&m));
            for (i, (t, v)) in vals.iter().enumerate() {
                let row = vec![Val::Num(*v); m.len()];
                one.add(&row, *t);
                if i < split { a.add(&row, *t) } else { b.add(&row, *t) }
            }
            b.merge(&a);
            let bytes = vigil_runtime::store::encode("accs", &b).unwrap();
            let b: Accs = vigil_runtime::store::decode("accs", &bytes).unwrap();
            let (x, y) = (one.values(&m), b.values(&m));
            for k in ["count", "min_v", "max_v", "first_v", "last_v", "p99_v", "p50_v"] {
                prop_assert_eq!(&x[k], &y[k], "{}", k);
            }
            for k in ["sum_v", "avg_v"] {
                prop_assert!((x[k].as_f64().unwrap() - y[k].as_f64().unwrap()).abs() < 1e-6);
            }
            let mut sorted: Vec<f64> = vals.iter().map(|(_, v)| *v).collect();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            prop_assert_eq!(x["count"].as_u64(), Some(n as u64));
            prop_assert_eq!(x["min_v"].as_f64(), Some(sorted[0]));
            prop_assert_eq!(x["max_v"].as_f64(), Some(sorted[n - 1]));
            let sum: f64 = sorted.iter().sum();
            prop_assert!((x["sum_v"].as_f64().unwrap() - sum).abs() < 1e-6 * sum.max(1.0));
            let first = vals.iter().copied().fold(None, |f: Option<(i64, f64)>, r| if f.is_none_or(|f| (r.0, r.1) < (f.0, f.1)) { Some(r) } else { f });
            prop_assert_eq!(x["first_v"].as_f64(), first.map(|f| f.1));
            let true_p = sorted[((0.99 * (n as f64 - 1.0)) as usize).min(n - 1)];
            let got = x["p99_v"].as_f64().unwrap();
            prop_assert!((got - true_p).abs() <= PERCENTILE_RELATIVE_ERROR * true_p.abs() + 1e-9, "p99 {} vs {}", got, true_p);
            // p50 reads p99's sketch.
            let true_m = sorted[((0.5 * (n as f64 - 1.0)) as usize).min(n - 1)];
            let got = x["p50_v"].as_f64().unwrap();
            prop_assert!((got - true_m).abs() <= PERCENTILE_RELATIVE_ERROR * true_m.abs() + 1e-9, "p50 {} vs {}", got, true_m);
        }
    }

    #[test]
    fn distinct_counts_are_exact_when_small_and_within_three_standard_errors_when_large() {
        let m = vec![Metric::Distinct { field: "u".into() }];
        for n in [0usize, 1, 2, 10, 64, 1_000, 20_000, 100_000] {
            let (mut a, mut b) = (Accs::new(&m), Accs::new(&m));
            for i in 0..n {
                let s = format!("user-{i}");
                // Each value twice, spread over two accumulators that are then merged.
                a.add(&[Val::Str(&s)], 0);
                b.add(&[Val::Str(&s)], 0);
            }
            a.merge(&b);
            let est = a.values(&m)["distinct_u"].as_u64().unwrap() as f64;
            let bound = if n <= 64 { 0.0 } else { 3.0 * DISTINCT_STANDARD_ERROR * n as f64 };
            assert!((est - n as f64).abs() <= bound, "{n} distinct estimated as {est}");
        }
    }
}
