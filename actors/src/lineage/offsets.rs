//! A compact set of source offsets of one partition — what a window's lineage records per
//! partition. Offsets are kept as sorted, disjoint runs `[start, start + len)` and encoded as
//! varints of the gap from the previous run's end (its low bit saying whether a run length
//! follows), so consecutive offsets cost a few bytes per run and scattered ones one to two
//! bytes each (gaps under 64, 8192). Pure.
use serde::{Deserialize, Serialize};

/// A set of offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetSet {
    /// Sorted, disjoint, non-adjacent runs `(start, len)`, `len >= 1`.
    runs: Vec<(i64, u64)>,
}

/// The bytes are not an encoded [`OffsetSet`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt offset set at byte {at}: {what}")]
pub struct DecodeError {
    /// Byte position.
    pub at: usize,
    /// What is wrong.
    pub what: &'static str,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Result<u64, DecodeError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or(DecodeError { at: *at, what: "truncated varint" })?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError { at: *at, what: "varint longer than 64 bits" })
}

impl OffsetSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an offset (negative offsets are ignored). Appending in increasing order — how a
    /// partition's records arrive — is O(1).
    pub fn insert(&mut self, offset: i64) {
        if offset < 0 {
            return;
        }
        if let Some((start, len)) = self.runs.last_mut() {
            let end = *start + *len as i64;
            if offset == end {
                *len += 1;
                return;
            }
            if offset > end {
                self.runs.push((offset, 1));
                return;
            }
        } else {
            self.runs.push((offset, 1));
            return;
        }
        if self.contains(offset) {
            return;
        }
        let mut one = OffsetSet { runs: vec![(offset, 1)] };
        std::mem::swap(self, &mut one);
        self.union(&one);
    }

    /// Whether `offset` is in the set.
    pub fn contains(&self, offset: i64) -> bool {
        let i = self.runs.partition_point(|(s, _)| *s <= offset);
        i > 0 && {
            let (s, l) = self.runs[i - 1];
            offset < s + l as i64
        }
    }

    /// Add every offset of `other`.
    pub fn union(&mut self, other: &OffsetSet) {
        let mut all: Vec<(i64, u64)> = self.runs.iter().chain(other.runs.iter()).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(i64, u64)> = Vec::with_capacity(all.len());
        for (s, l) in all {
            match out.last_mut() {
                Some((ps, pl)) if s <= *ps + *pl as i64 => {
                    let end = (*ps + *pl as i64).max(s + l as i64);
                    *pl = (end - *ps) as u64;
                }
                _ => out.push((s, l)),
            }
        }
        self.runs = out;
    }

    /// Number of offsets.
    pub fn len(&self) -> u64 {
        self.runs.iter().map(|(_, l)| l).sum()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The offsets in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.runs.iter().flat_map(|(s, l)| *s..*s + *l as i64)
    }

    /// The runs `(first, last)` inclusive, for display.
    pub fn ranges(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.runs.iter().map(|(s, l)| (*s, *s + *l as i64 - 1))
    }

    /// Compact encoding: run count, then per run `gap << 1 | (len > 1)` (gap from the
    /// previous run's end) and, for longer runs, `len - 2`, as varints.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.runs.len() * 2);
        put_varint(&mut out, self.runs.len() as u64);
        let mut end = 0i64;
        for (s, l) in &self.runs {
            let gap = (*s - end) as u64;
            put_varint(&mut out, gap << 1 | u64::from(*l > 1));
            if *l > 1 {
                put_varint(&mut out, l - 2);
            }
            end = *s + *l as i64;
        }
        out
    }

    /// Decode [`Self::encode`]'s bytes.
    ///
    /// # Errors
    /// [`DecodeError`] for truncated or trailing bytes, or runs that overflow.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut at = 0;
        let n = get_varint(bytes, &mut at)?;
        let mut runs = Vec::with_capacity(n.min(1 << 16) as usize);
        let mut end = 0i64;
        for _ in 0..n {
            let head = get_varint(bytes, &mut at)?;
            let gap = head >> 1;
            let len = if head & 1 == 1 { get_varint(bytes, &mut at)?.checked_add(2).ok_or(DecodeError { at, what: "run too long" })? } else { 1 };
            let start = i64::try_from(gap).ok().and_then(|g| end.checked_add(g)).ok_or(DecodeError { at, what: "offset overflow" })?;
            if !runs.is_empty() && gap == 0 {
                return Err(DecodeError { at, what: "adjacent runs" });
            }
            end = i64::try_from(len).ok().and_then(|l| start.checked_add(l)).ok_or(DecodeError { at, what: "offset overflow" })?;
            runs.push((start, len));
        }
        if at != bytes.len() {
            return Err(DecodeError { at, what: "trailing bytes" });
        }
        Ok(Self { runs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn runs_and_sizes() {
        let mut s = OffsetSet::new();
        (100..200).for_each(|o| s.insert(o));
        s.insert(500);
        s.insert(150);
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(100, 199), (500, 500)]);
        assert_eq!(s.len(), 101);
        assert!(s.encode().len() <= 8, "two runs in a few bytes: {}", s.encode().len());
        // One key of 500 users in a partition: every ~500th offset. About 2 bytes each.
        let mut sparse = OffsetSet::new();
        (0..1000).for_each(|i| sparse.insert(1_000_000 + i * 500));
        let per = sparse.encode().len() as f64 / 1000.0;
        assert!(per <= 2.01, "{per} bytes per scattered offset");
        assert!(OffsetSet::decode(&[2, 0]).is_err(), "truncated");
        assert!(OffsetSet::decode(&[0, 9]).is_err(), "trailing");
    }

    proptest! {
        /// The set behaves as a set of its offsets, whatever the insertion order, and its
        /// encoding round-trips.
        #[test]
        fn matches_a_btreeset_and_round_trips(a in proptest::collection::vec(0i64..5_000, 0..400), b in proptest::collection::vec(0i64..5_000, 0..400)) {
            let (mut sa, mut sb) = (OffsetSet::new(), OffsetSet::new());
            a.iter().for_each(|o| sa.insert(*o));
            b.iter().for_each(|o| sb.insert(*o));
            let ra: BTreeSet<i64> = a.iter().copied().collect();
            let rb: BTreeSet<i64> = b.iter().copied().collect();
            prop_assert_eq!(sa.iter().collect::<Vec<_>>(), ra.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(sa.len(), ra.len() as u64);
            for probe in 0..5_000i64 {
                if probe % 37 == 0 {
                    prop_assert_eq!(sa.contains(probe), ra.contains(&probe));
                }
            }
            prop_assert_eq!(OffsetSet::decode(&sa.encode()).unwrap(), sa.clone());
            sa.union(&sb);
            let ru: Vec<i64> = ra.union(&rb).copied().collect();
            prop_assert_eq!(sa.iter().collect::<Vec<_>>(), ru);
            prop_assert_eq!(OffsetSet::decode(&sa.encode()).unwrap(), sa);
        }
    }
}
