//! Deterministic synthetic events (payments and page views) for load tests and the
//! embedded default. The same seed always yields the same stream, including which records
//! are deliberately malformed.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One generated record.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRecord {
    /// Stable event id (also sent as the `vigil.id` header).
    pub id: String,
    /// Kafka key: the user.
    pub key: String,
    /// JSON value (malformed if `bad`).
    pub payload: Vec<u8>,
    /// Whether the record is deliberately invalid.
    pub bad: bool,
    /// Event time, ms since epoch.
    pub ts: i64,
}

/// Settings of a generator.
#[derive(Debug, Clone, PartialEq)]
pub struct GenSpec {
    /// Seed.
    pub seed: u64,
    /// Distinct users.
    pub users: u32,
    /// Fraction of malformed records.
    pub bad_ratio: f64,
    /// Event time of the first record, ms since epoch.
    pub start_ms: i64,
    /// Event-time step between records, ms.
    pub step_ms: i64,
}

/// An endless deterministic event stream.
pub struct EventGen {
    spec: GenSpec,
    rng: ChaCha8Rng,
    next: u64,
}

const COUNTRIES: [&str; 6] = ["DE", "FR", "US", "BR", "JP", "IN"];
const PAGES: [&str; 5] = ["/", "/search", "/product", "/cart", "/checkout"];

impl EventGen {
    /// New stream.
    pub fn new(spec: GenSpec) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(spec.seed);
        Self { spec, rng, next: 0 }
    }

    /// Skip ahead so the next record is number `index` (used to resume after a restart).
    pub fn skip_to(&mut self, index: u64) {
        while self.next < index {
            self.next_record();
        }
    }

    /// Records produced so far.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next record.
    pub fn next_record(&mut self) -> GenRecord {
        let i = self.next;
        self.next += 1;
        let user = format!("user-{:03}", self.rng.random_range(0..self.spec.users.max(1)));
        let ts = self.spec.start_ms + i as i64 * self.spec.step_ms;
        let id = format!("e-{}-{}", self.spec.seed, i);
        let payment = self.rng.random_bool(0.6);
        let cents: u32 = self.rng.random_range(100..50_000);
        let amount = f64::from(cents) / 100.0;
        let country = COUNTRIES[self.rng.random_range(0..COUNTRIES.len())];
        let page = PAGES[self.rng.random_range(0..PAGES.len())];
        let bad = self.rng.random_bool(self.spec.bad_ratio.clamp(0.0, 1.0));
        let flavour = self.rng.random_range(0..4u8);
        let payload = if !bad {
            if payment {
                format!(r#"{{"event_id":"{id}","kind":"payment","user":"{user}","amount":{amount:.2},"currency":"EUR","country":"{country}","ts":{ts}}}"#)
            } else {
                format!(r#"{{"event_id":"{id}","kind":"page_view","user":"{user}","amount":0,"page":"{page}","country":"{country}","ts":{ts}}}"#)
            }
        } else {
            match flavour {
                0 => format!(r#"{{"event_id":"{id}","kind":"payment","user":"{user}","amount":{amount:.2},"ts":"#),
                1 => format!(r#"{{"event_id":"{id}","kind":"payment","user":"{user}","ts":{ts}}}"#),
                2 => format!(r#"{{"event_id":"{id}","kind":"payment","user":"{user}","amount":"{amount:.2}","ts":{ts}}}"#),
                _ => format!(r#"["{id}","{user}",{amount:.2},{ts}]"#),
            }
        };
        GenRecord { id, key: user, payload: payload.into_bytes(), bad, ts }
    }
}

impl Iterator for EventGen {
    type Item = GenRecord;
    fn next(&mut self) -> Option<GenRecord> {
        Some(self.next_record())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate;
    use vigil_config::PipelineConfig;

    fn spec(seed: u64) -> GenSpec {
        GenSpec { seed, users: 10, bad_ratio: 0.1, start_ms: 1_700_000_000_000, step_ms: 5 }
    }

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<_> = EventGen::new(spec(7)).take(200).collect();
        let b: Vec<_> = EventGen::new(spec(7)).take(200).collect();
        let c: Vec<_> = EventGen::new(spec(8)).take(200).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut g = EventGen::new(spec(7));
        g.skip_to(150);
        assert_eq!(g.next_record(), a[150]);
    }

    #[test]
    fn bad_flag_matches_validation() {
        let p = PipelineConfig::default();
        let recs: Vec<_> = EventGen::new(spec(3)).take(2000).collect();
        let bad = recs.iter().filter(|r| r.bad).count();
        assert!((100..300).contains(&bad), "bad ratio off: {bad}");
        for r in recs {
            assert_eq!(validate(&r.payload, &p.fields, &p.window).is_err(), r.bad, "{}", String::from_utf8_lossy(&r.payload));
        }
    }
}
