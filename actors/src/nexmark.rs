//! A Nexmark-style stream (people, auctions and bids of an online auction site) as plain
//! JSON records, for `vigil bench --workload nexmark`: the field's standard benchmark, so
//! Vigil's figures can sit next to Flink's and Arroyo's. Deterministic for a seed.
//!
//! As in the Nexmark generator: of every 50 events 1 is a new person, 3 are new auctions and
//! 46 are bids; half the bids go to the current hot auction and three quarters come from the
//! current hot bidder, the rest to or from one of the last 100 auctions or people. All three
//! kinds share one topic and tell themselves apart by `kind` (`person`, `auction`, `bid`);
//! every record carries its event time in `ts` (ms since epoch).
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write as _;

/// Events per proportion block, and how many of them are people and auctions.
const BLOCK: u64 = 50;
const PEOPLE_PER_BLOCK: u64 = 1;
const AUCTIONS_PER_BLOCK: u64 = 3;
/// Ids of the first person and the first auction (as in Nexmark).
pub const FIRST_ID: u64 = 1000;
/// One bid in this many goes to the hot auction (Nexmark's `hotAuctionRatio`).
const HOT_AUCTION_RATIO: u32 = 2;
/// All but one bid in this many come from the hot bidder (Nexmark's `hotBiddersRatio`).
const HOT_BIDDER_RATIO: u32 = 4;
/// Bids to other auctions, and auctions' sellers, are among this many of the latest.
const IN_FLIGHT: u64 = 100;

const FIRST_NAMES: [&str; 6] = ["Peter", "Paul", "Luke", "John", "Saul", "Vicky"];
const LAST_NAMES: [&str; 6] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton"];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const CITIES: [&str; 6] = ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Seattle"];
const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// What a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new person (`id`, `name`, `email`, `city`, `state`).
    Person,
    /// A new auction (`id`, `item`, `seller`, `category`, `initial_bid`, `reserve`, `expires`).
    Auction,
    /// A bid (`auction`, `bidder`, `price` in cents, `channel`, `url`).
    Bid,
}

/// One generated record.
#[derive(Debug, Clone)]
pub struct NexmarkRecord {
    /// Stable record id (the `vigil.id` header).
    pub id: String,
    /// Kafka key: the person's or auction's id; for bids, the auction's.
    pub key: String,
    /// The JSON value.
    pub payload: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// Event time, ms since epoch.
    pub ts: i64,
}

/// The generator: records `0, 1, 2...` of the stream of `seed`, event times `start_ms`
/// plus `step_ms` per record (or per `per_step` records).
pub struct NexmarkGen {
    seed: u64,
    rng: ChaCha8Rng,
    next: u64,
    start_ms: i64,
    step_ms: i64,
    per_step: u64,
}

/// People and auctions created before event `i` (ids from [`FIRST_ID`]).
fn created_before(i: u64) -> (u64, u64) {
    let (blocks, rest) = (i / BLOCK, i % BLOCK);
    let people = blocks * PEOPLE_PER_BLOCK + rest.min(PEOPLE_PER_BLOCK);
    let auctions = blocks * AUCTIONS_PER_BLOCK + rest.saturating_sub(PEOPLE_PER_BLOCK).min(AUCTIONS_PER_BLOCK);
    (people, auctions)
}

impl NexmarkGen {
    /// A stream at its start.
    pub fn new(seed: u64, start_ms: i64, step_ms: i64) -> Self {
        Self { seed, rng: ChaCha8Rng::seed_from_u64(seed), next: 0, start_ms, step_ms, per_step: 1 }
    }

    /// Give `n` records (at least one) each event time, so that event time keeps pace with a
    /// producer writing `n` records per `step_ms` of wall-clock time.
    #[must_use]
    pub fn records_per_step(mut self, n: u64) -> Self {
        self.per_step = n.max(1);
        self
    }

    /// One of the latest `IN_FLIGHT` of `count` ids (`count` ≥ 1).
    fn recent(&mut self, count: u64) -> u64 {
        let lo = count.saturating_sub(IN_FLIGHT);
        FIRST_ID + self.rng.random_range(lo..count.max(1))
    }

    /// The next record.
    pub fn next_record(&mut self) -> NexmarkRecord {
        let i = self.next;
        self.next += 1;
        let ts = self.start_ms + (i / self.per_step) as i64 * self.step_ms;
        let (people, auctions) = created_before(i);
        let pos = i % BLOCK;
        let mut p = String::with_capacity(160);
        let (kind, key) = if pos < PEOPLE_PER_BLOCK {
            let id = FIRST_ID + people;
            let (first, last) = (FIRST_NAMES[self.rng.random_range(0..6)], LAST_NAMES[self.rng.random_range(0..6)]);
            let city = self.rng.random_range(0..6);
            let _ = write!(
                p,
                r#"{{"kind":"person","id":{id},"name":"{first} {last}","email":"{}@{}.com","city":"{}","state":"{}","ts":{ts}}}"#,
                first.to_lowercase(),
                last.to_lowercase(),
                CITIES[city],
                US_STATES[city]
            );
            (Kind::Person, id)
        } else if pos < PEOPLE_PER_BLOCK + AUCTIONS_PER_BLOCK {
            let id = FIRST_ID + auctions;
            // A seller among the latest people (at least one exists: event 0 is a person).
            let seller = self.recent(people.max(1));
            let category = 10 + self.rng.random_range(0..5);
            let initial = self.rng.random_range(100..10_000u64);
            let reserve = initial + self.rng.random_range(0..10_000u64);
            let expires = ts + self.rng.random_range(10_000..60_000);
            let _ = write!(
                p,
                r#"{{"kind":"auction","id":{id},"item":"item-{id}","seller":{seller},"category":{category},"initial_bid":{initial},"reserve":{reserve},"expires":{expires},"ts":{ts}}}"#
            );
            (Kind::Auction, id)
        } else {
            let auctions = auctions.max(1);
            let auction = if self.rng.random_ratio(1, HOT_AUCTION_RATIO) {
                // The hot auction: the latest with an even base-0 id.
                FIRST_ID + ((auctions - 1) / 2) * 2
            } else {
                self.recent(auctions)
            };
            let people = people.max(1);
            let bidder = if self.rng.random_ratio(HOT_BIDDER_RATIO - 1, HOT_BIDDER_RATIO) {
                // The hot bidder: the latest person whose base-0 id is a multiple of 4.
                FIRST_ID + ((people - 1) / 4) * 4
            } else {
                self.recent(people)
            };
            // Nexmark's price: 10^(0..6) cents, so most bids are small and a few huge.
            let price = 10f64.powf(self.rng.random::<f64>() * 6.0).round() as u64;
            let channel = CHANNELS[self.rng.random_range(0..CHANNELS.len())];
            let _ = write!(
                p,
                r#"{{"kind":"bid","auction":{auction},"bidder":{bidder},"price":{price},"channel":"{channel}","url":"https://www.nexmark.com/{channel}/item.htm?query=1","ts":{ts}}}"#
            );
            (Kind::Bid, auction)
        };
        NexmarkRecord { id: format!("nx-{}-{i}", self.seed), key: key.to_string(), payload: p.into_bytes(), kind, ts }
    }
}

impl Iterator for NexmarkGen {
    type Item = NexmarkRecord;
    fn next(&mut self) -> Option<NexmarkRecord> {
        Some(self.next_record())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_share_event_times_as_asked() {
        for (i, r) in NexmarkGen::new(3, 1_000, 2).records_per_step(3).take(30).enumerate() {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap_or_else(|e| panic!("record {i} is not JSON: {e}"));
            assert_eq!((r.ts, &v["ts"]), (1_000 + 2 * (i / 3) as i64, &serde_json::json!(1_000 + 2 * (i / 3) as i64)), "record {i}");
        }
    }

    #[test]
    fn proportions_references_and_determinism() {
        let records: Vec<NexmarkRecord> = NexmarkGen::new(3, 1_000, 2).take(5_000).collect();
        let count = |k: Kind| records.iter().filter(|r| r.kind == k).count();
        assert_eq!((count(Kind::Person), count(Kind::Auction), count(Kind::Bid)), (100, 300, 4_600));
        let (mut people, mut auctions) = (Vec::new(), Vec::new());
        let mut hot_auction_bids = 0;
        for (i, r) in records.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap_or_else(|e| panic!("record {i} is not JSON: {e}"));
            assert_eq!(v["ts"], 1_000 + 2 * i as i64, "event time of record {i}");
            assert_eq!(r.ts, 1_000 + 2 * i as i64);
            let id = |f: &str| v[f].as_u64().unwrap_or_else(|| panic!("record {i}: no {f} in {v}"));
            match r.kind {
                Kind::Person => people.push(id("id")),
                Kind::Auction => {
                    assert!(people.contains(&id("seller")), "record {i}: seller {} is nobody yet", id("seller"));
                    auctions.push(id("id"));
                }
                Kind::Bid => {
                    assert!(auctions.contains(&id("auction")), "record {i}: bid on auction {} not created yet", id("auction"));
                    assert!(people.contains(&id("bidder")), "record {i}: bidder {} is nobody yet", id("bidder"));
                    assert_eq!(r.key, id("auction").to_string());
                    hot_auction_bids += usize::from(id("auction") == FIRST_ID + ((auctions.len() as u64 - 1) / 2) * 2);
                }
            }
        }
        // Ids count up from FIRST_ID without gaps.
        assert_eq!(people, (FIRST_ID..FIRST_ID + 100).collect::<Vec<_>>());
        assert_eq!(auctions, (FIRST_ID..FIRST_ID + 300).collect::<Vec<_>>());
        // About half the bids go to the hot auction (more, counting recent picks of it).
        assert!((2_000..3_500).contains(&hot_auction_bids), "{hot_auction_bids} of 4600 bids on the hot auction");
        // The same seed, the same stream; another seed, another.
        let again: Vec<Vec<u8>> = NexmarkGen::new(3, 1_000, 2).take(200).map(|r| r.payload).collect();
        assert!(records.iter().take(200).map(|r| &r.payload).eq(again.iter()));
        assert!(NexmarkGen::new(4, 1_000, 2).take(200).map(|r| r.payload).ne(again));
    }
}
