//! Producer authenticity: an HMAC-SHA256 signature header (`vigil.sig`) over a record's
//! id, key, value and the producer's timestamp, with one key per producer; and the checks a
//! source that requires signatures applies — unsigned, unknown producer, forged, outside the
//! allowed clock skew, or replayed (id seen within the window). Pure: time is passed in.
use base64::Engine;
use ring::hmac;
use std::collections::{BTreeMap, HashSet, VecDeque};

/// The signature header.
pub const HEADER: &str = "vigil.sig";

/// Why a record fails authentication (the quarantine reason is `security.<code>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigReject {
    /// No `vigil.sig` header.
    Unsigned,
    /// The header is not `v1;p=<producer>;t=<ms>;s=<base64>`.
    Malformed(String),
    /// The claimed producer has no key here.
    UnknownProducer,
    /// The HMAC does not match: changed in transit or signed with another key.
    Forged,
    /// The signed timestamp is further from now than the allowed skew.
    Skewed {
        /// Signed time minus now, ms.
        by_ms: i64,
    },
    /// The record id was seen within the replay window.
    Replayed,
}

impl SigReject {
    /// Stable code (`vigil.dlq.reason` is `security.<code>`).
    pub fn code(&self) -> &'static str {
        match self {
            SigReject::Unsigned => "unsigned",
            SigReject::Malformed(_) => "malformed_signature",
            SigReject::UnknownProducer => "unknown_producer",
            SigReject::Forged => "forged",
            SigReject::Skewed { .. } => "clock_skew",
            SigReject::Replayed => "replayed",
        }
    }
}

impl std::fmt::Display for SigReject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigReject::Unsigned => write!(f, "no {HEADER} header: the source requires signed records"),
            SigReject::Malformed(why) => write!(f, "{HEADER} header is malformed: {why}"),
            SigReject::UnknownProducer => f.write_str("the claimed producer has no key on this source"),
            SigReject::Forged => f.write_str("the signature does not match the record (changed, or signed with another key)"),
            SigReject::Skewed { by_ms } => write!(f, "signed time is {by_ms} ms from now, beyond the allowed clock skew"),
            SigReject::Replayed => f.write_str("this record id was already seen within the replay window"),
        }
    }
}

/// The HMAC of what is signed: length-prefixed fields, so no two records share a message
/// (fed in pieces: no copy of the record).
fn tag(k: &hmac::Key, producer: &str, id: &[u8], key: &[u8], value: &[u8], ts_ms: i64) -> hmac::Tag {
    const DOMAIN: &[u8] = b"vigil.sig.v1";
    let parts = [producer.as_bytes(), id, key, value];
    let mut ctx = hmac::Context::with_key(k);
    // A typical record fits a stack buffer: one update instead of ten small ones.
    let mut buf = [0u8; 512];
    let total = DOMAIN.len() + parts.iter().map(|p| 8 + p.len()).sum::<usize>() + 8;
    if total <= buf.len() {
        let mut n = 0;
        let mut put = |b: &[u8]| {
            buf[n..n + b.len()].copy_from_slice(b);
            n += b.len();
        };
        put(DOMAIN);
        for part in parts {
            put(&(part.len() as u64).to_be_bytes());
            put(part);
        }
        put(&ts_ms.to_be_bytes());
        ctx.update(&buf[..n]);
    } else {
        ctx.update(DOMAIN);
        for part in parts {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        ctx.update(&ts_ms.to_be_bytes());
    }
    ctx.sign()
}

/// The `vigil.sig` header value for a record signed by `producer` with `secret` at `ts_ms`.
pub fn sign(producer: &str, secret: &[u8], id: &[u8], key: &[u8], value: &[u8], ts_ms: i64) -> String {
    let t = tag(&hmac::Key::new(hmac::HMAC_SHA256, secret), producer, id, key, value, ts_ms);
    format!("v1;p={producer};t={ts_ms};s={}", base64::engine::general_purpose::STANDARD.encode(t.as_ref()))
}

/// A parsed header: producer, timestamp, tag (borrowed and on the stack: no allocation on
/// the per-record path).
fn parse(header: &[u8]) -> Result<(&str, i64, TagBytes), SigReject> {
    // Bytes, not text: splitting on single ASCII bytes is the cheap part of a check.
    let mut parts = header.split(|b| *b == b';');
    if parts.next() != Some(b"v1") {
        return Err(SigReject::Malformed("expected version `v1`".into()));
    }
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let (mut p, mut t, mut s) = (None, None, None);
    for part in parts {
        match part {
            [b'p', b'=', v @ ..] => p = Some(std::str::from_utf8(v).map_err(|_| SigReject::Malformed("p is not UTF-8".into()))?),
            [b't', b'=', v @ ..] => {
                let ms = std::str::from_utf8(v).ok().and_then(|v| v.parse::<i64>().ok());
                t = Some(ms.ok_or_else(|| SigReject::Malformed(format!("t=`{}` is not a time in ms", text(v))))?);
            }
            [b's', b'=', v @ ..] => {
                let mut t = TagBytes { bytes: [0; TAG_MAX], len: 0 };
                t.len = base64::engine::general_purpose::STANDARD
                    .decode_slice(v, &mut t.bytes)
                    .map_err(|_| SigReject::Malformed("s is not base64 of at most 64 bytes".into()))?;
                s = Some(t);
            }
            _ => return Err(SigReject::Malformed(format!("unexpected part `{}`", text(part)))),
        }
    }
    match (p, t, s) {
        (Some(p), Some(t), Some(s)) if !p.is_empty() => Ok((p, t, s)),
        _ => Err(SigReject::Malformed("needs p=, t= and s=".into())),
    }
}

/// Longest tag accepted (HMAC-SHA256 tags are 32 bytes; room for a longer MAC later).
const TAG_MAX: usize = 64;

/// A decoded tag.
struct TagBytes {
    bytes: [u8; TAG_MAX],
    len: usize,
}

impl TagBytes {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Record ids seen recently, forgotten after `window_ms` or beyond `capacity` (oldest
/// first). Ids are kept as 64-bit fingerprints (a false "replayed" needs a collision among
/// the ids in memory: ~1e-13 per record at a million ids).
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: i64,
    capacity: usize,
    /// Fingerprints in memory; each is in `order` exactly once (an id enters only when absent
    /// and leaves only when its entry is popped), so the set needs no timestamps.
    seen: HashSet<u64, std::hash::BuildHasherDefault<Prehashed>>,
    order: VecDeque<(i64, u64)>,
}

/// The set's keys are already fingerprints: hashing them again would only cost time. (Only
/// authentic records enter the memory, so crafted colliding ids need a producer's key.)
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// An id's fingerprint: wyhash with fixed seeds, the same for the life of the process (a
/// few ns for a short id; SipHash took ~4x as long, and its DoS resistance buys nothing
/// here, see [`Prehashed`]).
fn fingerprint(id: &[u8]) -> u64 {
    wyhash::wyhash(id, 0x5eed_7e11_0000_0001)
}

impl ReplayGuard {
    /// Remember ids for `window_ms`, at most `capacity` of them.
    pub fn new(window_ms: i64, capacity: usize) -> Self {
        Self { window_ms, capacity: capacity.max(1), seen: HashSet::default(), order: VecDeque::new() }
    }

    /// The last check of [`Verifier::verify`], for a record [`Verifier::authenticate`]
    /// passed by `producer`: only authentic records enter the memory, so forgeries cannot
    /// evict real ids.
    ///
    /// # Errors
    /// [`SigReject::Replayed`] (with the producer) when `id` was seen within the window.
    pub fn admit(&mut self, producer: &str, id: &[u8], now_ms: i64) -> Result<(), (SigReject, Option<String>)> {
        if self.seen_before(id, now_ms) {
            return Err((SigReject::Replayed, Some(producer.to_string())));
        }
        Ok(())
    }

    /// Whether `id` was seen within the window before `now_ms`; records it.
    pub fn seen_before(&mut self, id: &[u8], now_ms: i64) -> bool {
        while let Some(&(at, old)) = self.order.front() {
            if at > now_ms - self.window_ms && self.order.len() < self.capacity {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&old);
        }
        let id = fingerprint(id);
        if !self.seen.insert(id) {
            return true;
        }
        self.order.push_back((now_ms, id));
        false
    }
}

/// The checks of one source: producer keys, skew, replay memory.
pub struct Verifier {
    keys: BTreeMap<String, hmac::Key>,
    max_skew_ms: i64,
    replay: std::sync::Mutex<ReplayGuard>,
}

impl Verifier {
    /// Keys by producer (already revealed), the allowed skew and the replay window.
    pub fn new(keys: BTreeMap<String, Vec<u8>>, max_skew_ms: i64, replay_window_ms: i64, replay_capacity: usize) -> Self {
        let keys = keys.into_iter().map(|(p, k)| (p, hmac::Key::new(hmac::HMAC_SHA256, &k))).collect();
        Self { keys, max_skew_ms, replay: std::sync::Mutex::new(ReplayGuard::new(replay_window_ms, replay_capacity)) }
    }

    /// Check one record: `Ok` for an authentic record of a known producer, or why it fails
    /// (with the claimed producer when the header named one). Allocates only on failure.
    pub fn verify(&self, sig: Option<&[u8]>, id: &[u8], key: &[u8], value: &[u8], now_ms: i64) -> Result<(), (SigReject, Option<String>)> {
        let producer = self.authenticate(sig, id, key, value, now_ms)?;
        self.replay_memory().admit(producer, id, now_ms)
    }

    /// The checks of [`Self::verify`] before the replay memory (no lock): the producer of an
    /// authentic record, or why it fails.
    pub fn authenticate<'h>(&self, sig: Option<&'h [u8]>, id: &[u8], key: &[u8], value: &[u8], now_ms: i64) -> Result<&'h str, (SigReject, Option<String>)> {
        let (producer, ts, sig_tag) = parse(sig.ok_or((SigReject::Unsigned, None))?).map_err(|r| (r, None))?;
        let claimed = || Some(producer.to_string());
        let Some(k) = self.keys.get(producer) else { return Err((SigReject::UnknownProducer, claimed())) };
        if !vigil_runtime::security::constant_time_eq(tag(k, producer, id, key, value, ts).as_ref(), sig_tag.as_slice()) {
            return Err((SigReject::Forged, claimed()));
        }
        if (ts - now_ms).abs() > self.max_skew_ms {
            return Err((SigReject::Skewed { by_ms: ts - now_ms }, claimed()));
        }
        Ok(producer)
    }

    /// The replay memory, locked: take it once for a batch's authentic records (Validate
    /// shards share it).
    pub fn replay_memory(&self) -> std::sync::MutexGuard<'_, ReplayGuard> {
        self.replay.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> Verifier {
        Verifier::new(BTreeMap::from([("pay-api".to_string(), b"k1".to_vec())]), 60_000, 600_000, 1000)
    }

    #[test]
    fn signed_records_pass_and_each_fault_has_its_reason() {
        let v = verifier();
        let now = 1_700_000_000_000;
        let h = sign("pay-api", b"k1", b"id-1", b"user-1", b"{\"amount\":5}", now);
        assert_eq!(v.verify(Some(h.as_bytes()), b"id-1", b"user-1", b"{\"amount\":5}", now + 10), Ok(()));
        // The same record again: a replay.
        assert_eq!(v.verify(Some(h.as_bytes()), b"id-1", b"user-1", b"{\"amount\":5}", now + 20).unwrap_err().0, SigReject::Replayed);
        // Changed value, key or id; another key; unknown producer; no header; skew.
        let h2 = sign("pay-api", b"k1", b"id-2", b"user-1", b"{\"amount\":5}", now);
        assert_eq!(v.verify(Some(h2.as_bytes()), b"id-2", b"user-1", b"{\"amount\":500}", now).unwrap_err().0, SigReject::Forged);
        assert_eq!(v.verify(Some(h2.as_bytes()), b"id-2", b"user-2", b"{\"amount\":5}", now).unwrap_err().0, SigReject::Forged);
        let other = sign("pay-api", b"guessed", b"id-3", b"k", b"v", now);
        assert_eq!(v.verify(Some(other.as_bytes()), b"id-3", b"k", b"v", now).unwrap_err(), (SigReject::Forged, Some("pay-api".into())));
        let stranger = sign("mallory", b"k1", b"id-4", b"k", b"v", now);
        assert_eq!(v.verify(Some(stranger.as_bytes()), b"id-4", b"k", b"v", now).unwrap_err(), (SigReject::UnknownProducer, Some("mallory".into())));
        assert_eq!(v.verify(None, b"id-5", b"k", b"v", now).unwrap_err(), (SigReject::Unsigned, None));
        assert!(matches!(v.verify(Some(b"v1;p=x"), b"id-5", b"k", b"v", now).unwrap_err().0, SigReject::Malformed(_)));
        let old = sign("pay-api", b"k1", b"id-6", b"k", b"v", now - 120_000);
        assert_eq!(v.verify(Some(old.as_bytes()), b"id-6", b"k", b"v", now).unwrap_err().0, SigReject::Skewed { by_ms: -120_000 });
        // A forged copy of a real id does not make the real one look replayed.
        let real = sign("pay-api", b"k1", b"id-7", b"k", b"v", now);
        let _ = v.verify(Some(other.as_bytes()), b"id-7", b"k", b"v", now);
        assert!(v.verify(Some(real.as_bytes()), b"id-7", b"k", b"v", now).is_ok());
    }

    proptest::proptest! {
        /// Any header bytes: a reason, never a panic, and never accepted without the key.
        #[test]
        fn arbitrary_headers_are_rejected_with_a_reason(
            header in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            text in "v1(;[pts]=[A-Za-z0-9+/=;-]{0,20}){0,4}",
        ) {
            let v = verifier();
            for h in [header.as_slice(), text.as_bytes()] {
                proptest::prop_assert!(v.verify(Some(h), b"id", b"k", b"v", 0).is_err());
            }
        }
    }

    #[test]
    fn replay_memory_forgets_after_the_window_and_beyond_capacity() {
        let mut g = ReplayGuard::new(1000, 3);
        assert!(!g.seen_before(b"a", 0));
        assert!(g.seen_before(b"a", 500));
        assert!(!g.seen_before(b"a", 1500), "forgotten after the window");
        for (i, id) in [b"b", b"c", b"d", b"e"].iter().enumerate() {
            assert!(!g.seen_before(*id, 1600 + i as i64));
        }
        assert!(g.seen.len() <= 3);
    }
}
