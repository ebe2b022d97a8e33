//! Duplicate record ids in bounded memory: two Bloom filters, *current* and *previous*. An
//! id is a duplicate when either holds it; after `capacity` inserts the current filter
//! becomes the previous one and a fresh one starts. So every id among the last `capacity`
//! (and up to `2 · capacity`) inserts is remembered — no false negatives there — and memory
//! is fixed at two filters of `m = -capacity · ln(p) / ln(2)²` bits with `k = m / capacity ·
//! ln 2` hash functions. The false-positive rate is at most `p` per filter, so at most
//! about `2p` for a check against both ([`DuplicateDetector::false_positive_rate`]).
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};

/// Bounded-memory duplicate detector over record ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateDetector {
    capacity: u64,
    bits: u64,
    hashes: u32,
    target_fp: f64,
    current: Vec<u64>,
    previous: Vec<u64>,
    inserted: u64,
}

fn hash_with(seed: u64, id: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

impl DuplicateDetector {
    /// A detector remembering at least the last `capacity` ids, each filter sized for a
    /// false-positive rate of `fp_rate` when full.
    pub fn new(capacity: u64, fp_rate: f64) -> Self {
        let n = capacity.max(1) as f64;
        let p = fp_rate.clamp(1e-9, 0.5);
        let ln2 = std::f64::consts::LN_2;
        let bits = ((-n * p.ln() / (ln2 * ln2)).ceil() as u64).max(64);
        let hashes = ((bits as f64 / n * ln2).round() as u32).clamp(1, 32);
        let words = bits.div_ceil(64) as usize;
        Self { capacity: capacity.max(1), bits, hashes, target_fp: p, current: vec![0; words], previous: vec![0; words], inserted: 0 }
    }

    /// The filter positions of `id` (double hashing from one 64-bit hash); fills `out`.
    fn positions<'a>(&self, id: &[u8], out: &'a mut [u64; 32]) -> &'a [u64] {
        let h = hash_with(0x5eed_0001, id);
        let (h1, h2) = (h, h.rotate_left(32).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let k = self.hashes as usize;
        for (i, p) in out.iter_mut().take(k).enumerate() {
            *p = h1.wrapping_add((i as u64).wrapping_mul(h2)) % self.bits;
        }
        &out[..k]
    }

    fn holds(filter: &[u64], positions: &[u64]) -> bool {
        positions.iter().all(|p| filter[(p / 64) as usize] & (1 << (p % 64)) != 0)
    }

    /// Whether `id` was seen before (possibly a false positive); remembers it either way.
    pub fn check_and_insert(&mut self, id: &[u8]) -> bool {
        let mut buf = [0u64; 32];
        let positions = self.positions(id, &mut buf);
        let seen = Self::holds(&self.current, positions) || Self::holds(&self.previous, positions);
        if self.inserted >= self.capacity {
            self.previous = std::mem::replace(&mut self.current, vec![0; self.previous.len()]);
            self.inserted = 0;
        }
        for p in positions.iter().copied() {
            self.current[(p / 64) as usize] |= 1 << (p % 64);
        }
        self.inserted += 1;
        seen
    }

    /// Upper bound of the false-positive rate of [`Self::check_and_insert`]: `1 - (1 - p)²`.
    pub fn false_positive_rate(&self) -> f64 {
        1.0 - (1.0 - self.target_fp) * (1.0 - self.target_fp)
    }

    /// Memory held by the filters, bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.current.len() + self.previous.len()) * 8
    }

    /// Ids always remembered (the last `capacity` inserts at least).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_window_and_keeps_its_false_positive_rate() {
        let mut d = DuplicateDetector::new(50_000, 0.01);
        assert!(d.memory_bytes() <= 2 * 60_000, "two ~60 KB filters: {}", d.memory_bytes());
        let mut fp = 0;
        for i in 0..200_000u64 {
            if d.check_and_insert(format!("id-{i}").as_bytes()) {
                fp += 1;
            }
        }
        let rate = fp as f64 / 200_000.0;
        println!("duplicate detector: {fp} false positives in 200000 fresh ids ({rate:.4}); bound {:.4}, {} bytes", d.false_positive_rate(), d.memory_bytes());
        assert!(rate <= d.false_positive_rate(), "measured {rate} above the stated bound");
        // Every one of the last `capacity` ids is recognised: no false negatives.
        for i in 150_000..200_000u64 {
            assert!(d.check_and_insert(format!("id-{i}").as_bytes()), "forgot id-{i}");
        }
    }

    proptest::proptest! {
        /// A repeated id within the window is always reported.
        #[test]
        fn no_false_negatives_within_capacity(ids in proptest::collection::vec("[a-z0-9]{1,12}", 1..300)) {
            let mut d = DuplicateDetector::new(300, 0.01);
            for id in &ids {
                d.check_and_insert(id.as_bytes());
            }
            for id in &ids {
                proptest::prop_assert!(d.check_and_insert(id.as_bytes()));
            }
        }
    }
}
