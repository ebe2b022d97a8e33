//! Deterministic synthetic events (payments and page views) for load tests and the
//! embedded default, as plain JSON, Confluent-framed Avro or Confluent-framed JSON Schema.
//! The same seed always yields the same stream, including which records are deliberately
//! bad and how.
use crate::registry::wire;
use apache_avro::types::Value as Avro;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Header naming the producer of a record.
pub const HEADER_PRODUCER: &str = "vigil.producer";
/// Producer id the generator writes in [`HEADER_PRODUCER`].
pub const PRODUCER_ID: &str = "vigil-gen";

/// Avro schema of generated events (registered under the source's subject).
pub const AVRO_SCHEMA: &str = r#"{"type":"record","name":"Event","namespace":"vigil.gen","doc":"A synthetic payment or page view","fields":[
{"name":"event_id","type":"string","doc":"Stable event id"},
{"name":"kind","type":"string","doc":"payment or page_view"},
{"name":"user","type":"string","doc":"User id"},
{"name":"amount","type":"double","doc":"Amount in currency units (0 for page views)"},
{"name":"currency","type":["null","string"],"default":null,"doc":"ISO currency of payments"},
{"name":"page","type":["null","string"],"default":null,"doc":"Path of page views"},
{"name":"country","type":"string","doc":"ISO country"},
{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"},"doc":"Event time, ms since epoch"}]}"#;

/// JSON Schema of generated events.
pub const JSON_SCHEMA: &str = r#"{"$schema":"http://json-schema.org/draft-07/schema#","title":"Event","type":"object","properties":{
"event_id":{"type":"string","description":"Stable event id"},
"kind":{"type":"string","enum":["payment","page_view"],"description":"payment or page_view"},
"user":{"type":"string","description":"User id"},
"amount":{"type":"number","description":"Amount in currency units (0 for page views)"},
"currency":{"type":"string","description":"ISO currency of payments"},
"page":{"type":"string","description":"Path of page views"},
"country":{"type":"string","description":"ISO country"},
"ts":{"type":"integer","description":"Event time, ms since epoch"}},
"required":["event_id","kind","user","amount","country","ts"]}"#;

/// One generated event, before encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event id.
    pub event_id: String,
    /// `payment` or `page_view`.
    pub kind: &'static str,
    /// User.
    pub user: String,
    /// Amount.
    pub amount: f64,
    /// Currency (payments).
    pub currency: Option<&'static str>,
    /// Page (page views).
    pub page: Option<&'static str>,
    /// Country.
    pub country: &'static str,
    /// Event time, ms since epoch.
    pub ts: i64,
}

impl Event {
    /// The event as the JSON object a good record carries.
    pub fn json(&self) -> serde_json::Value {
        let mut v =
            serde_json::json!({"event_id": self.event_id, "kind": self.kind, "user": self.user, "amount": self.amount, "country": self.country, "ts": self.ts});
        if let Some(c) = self.currency {
            v["currency"] = c.into();
        }
        if let Some(p) = self.page {
            v["page"] = p.into();
        }
        v
    }

    fn avro(&self) -> Avro {
        let opt = |o: Option<&str>| match o {
            Some(s) => Avro::Union(1, Box::new(Avro::String(s.into()))),
            None => Avro::Union(0, Box::new(Avro::Null)),
        };
        Avro::Record(vec![
            ("event_id".into(), Avro::String(self.event_id.clone())),
            ("kind".into(), Avro::String(self.kind.into())),
            ("user".into(), Avro::String(self.user.clone())),
            ("amount".into(), Avro::Double(self.amount)),
            ("currency".into(), opt(self.currency)),
            ("page".into(), opt(self.page)),
            ("country".into(), Avro::String(self.country.into())),
            ("ts".into(), Avro::TimestampMillis(self.ts)),
        ])
    }
}

/// How generated records are encoded.
#[derive(Debug, Clone)]
pub enum Wire {
    /// Plain JSON. Bad records: broken JSON, missing field, mistyped field, not an object.
    Json,
    /// Confluent-framed Avro with this schema id. Bad records: bad framing, unknown schema
    /// id, truncated payload, negative amount (breaks the default `amount` range rule).
    Avro {
        /// Registry id of [`AVRO_SCHEMA`].
        id: u32,
        /// [`AVRO_SCHEMA`], parsed.
        schema: Box<apache_avro::Schema>,
    },
    /// Confluent-framed JSON with this JSON Schema id. Bad records: bad framing, unknown
    /// schema id, a payload the schema rejects, negative amount.
    JsonSchema {
        /// Registry id of [`JSON_SCHEMA`].
        id: u32,
    },
}

/// Encodes a good event in one wire format.
type Encoder<'a> = Box<dyn Fn(&Event) -> Vec<u8> + 'a>;

/// A schema id no registry hands out early (`unknown_schema` records).
pub const UNKNOWN_SCHEMA_ID: u32 = 0x7fff_fff0;

impl Wire {
    /// Avro wire with the given registry id.
    ///
    /// # Errors
    /// Never in practice: [`AVRO_SCHEMA`] is a constant that parses.
    pub fn avro(id: u32) -> Result<Wire, String> {
        apache_avro::Schema::parse_str(AVRO_SCHEMA).map(|s| Wire::Avro { id, schema: Box::new(s) }).map_err(|e| e.to_string())
    }

    /// The record's value bytes.
    pub fn encode(&self, r: &GenRecord) -> Vec<u8> {
        let (id, good): (u32, Encoder<'_>) = match self {
            Wire::Json => return r.payload.clone(),
            Wire::Avro { id, schema } => (*id, Box::new(move |e: &Event| apache_avro::to_avro_datum(schema, e.avro()).unwrap_or_default())),
            Wire::JsonSchema { id } => (*id, Box::new(|e: &Event| e.json().to_string().into_bytes())),
        };
        if !r.bad {
            return wire::frame(id, &good(&r.event));
        }
        match r.flaw {
            0 => r.payload.clone(),
            1 => wire::frame(UNKNOWN_SCHEMA_ID, &good(&r.event)),
            2 => match self {
                // The datum ends with the event time, a multi-byte varint: cutting two bytes
                // always leaves it unfinished.
                Wire::Avro { .. } => {
                    let mut b = good(&r.event);
                    b.truncate(b.len().saturating_sub(2));
                    wire::frame(id, &b)
                }
                _ => {
                    let mut v = r.event.json();
                    v["amount"] = serde_json::Value::String(format!("{:.2}", r.event.amount));
                    wire::frame(id, v.to_string().as_bytes())
                }
            },
            _ => {
                let mut e = r.event.clone();
                e.amount = -e.amount.abs() - 1.0;
                wire::frame(id, &good(&e))
            }
        }
    }

    /// The DLQ reason a bad record of this wire gets with the default rules.
    pub fn expected_reason(&self, r: &GenRecord) -> Option<&'static str> {
        if !r.bad {
            return None;
        }
        Some(match (self, r.flaw) {
            (Wire::Json, 0) => "invalid_json",
            (Wire::Json, 1) => "missing_field",
            (Wire::Json, 2) => "wrong_type",
            (Wire::Json, _) => "not_an_object",
            (_, 0) => "bad_framing",
            (_, 1) => "unknown_schema",
            (_, 2) => "undecodable",
            (_, _) => "rule:amount.range",
        })
    }
}

/// One generated record.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRecord {
    /// Stable event id (also sent as the `vigil.id` header).
    pub id: String,
    /// Kafka key: the user.
    pub key: String,
    /// Plain JSON value (malformed if `bad`).
    pub payload: Vec<u8>,
    /// Whether the record is deliberately invalid.
    pub bad: bool,
    /// Which kind of bad (0..4), see [`Wire`].
    pub flaw: u8,
    /// The event (what a good record carries).
    pub event: Event,
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
    /// Records that share an event time before it moves on by `step_ms`.
    per_step: u64,
}

/// Length of the event-time slots in which users are active or not.
const ACTIVITY_SLOT_MS: i64 = 30_000;

/// Whether user `u` is active in activity slot `slot` (about one in three).
fn active(seed: u64, u: u32, slot: u64) -> bool {
    let mut x = seed ^ u64::from(u).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ slot.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x % 3 == 0
}

/// Damage a record's bytes so that no JSON decoder can take them (the drills' `corrupt`
/// fault: a torn write, a bad disk, a buggy serializer), chosen by `n`: cut in half (an
/// object without its closing brace), a byte in the middle that is never UTF-8 (0xFF), or
/// five bytes of a Confluent header naming no schema in front.
pub fn corrupt(bytes: &[u8], n: u64) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let mid = b.len() / 2;
    match n % 3 {
        0 => b.truncate(mid.max(1)),
        1 => {
            if let Some(x) = b.get_mut(mid) {
                *x = 0xFF;
            }
        }
        _ => {
            b.splice(0..0, [0x00, 0xFF, 0xFF, 0xFF, 0xFE]);
        }
    }
    b
}

const COUNTRIES: [&str; 6] = ["DE", "FR", "US", "BR", "JP", "IN"];
const PAGES: [&str; 5] = ["/", "/search", "/product", "/cart", "/checkout"];

impl EventGen {
    /// Change the fraction of malformed records from the next record on (drills). The
    /// stream stays deterministic only while the ratio is the configured one.
    pub fn set_bad_ratio(&mut self, ratio: f64) {
        self.spec.bad_ratio = ratio.clamp(0.0, 1.0);
    }

    /// A generator at the start of its stream.
    pub fn new(spec: GenSpec) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(spec.seed);
        Self { spec, rng, next: 0, per_step: 1 }
    }

    /// Give `n` records (at least one) each event time, so that event time keeps pace with a
    /// producer writing `n` records per `step_ms` of wall-clock time.
    #[must_use]
    pub fn records_per_step(mut self, n: u64) -> Self {
        self.per_step = n.max(1);
        self
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
        let ts = self.spec.start_ms + (i / self.per_step) as i64 * self.spec.step_ms;
        // Users come and go: in each 30 s slot of event time about a third are active, so
        // session windows open and close. A few draws find one (or settle for the last).
        let slot = (ts - self.spec.start_ms).div_euclid(ACTIVITY_SLOT_MS) as u64;
        let users = self.spec.users.max(1);
        let mut u = self.rng.random_range(0..users);
        for _ in 0..8 {
            if active(self.spec.seed, u, slot) {
                break;
            }
            u = self.rng.random_range(0..users);
        }
        let user = format!("user-{u:03}");
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
        let event = Event {
            event_id: id.clone(),
            kind: if payment { "payment" } else { "page_view" },
            user: user.clone(),
            amount: if payment { amount } else { 0.0 },
            currency: payment.then_some("EUR"),
            page: (!payment).then_some(page),
            country,
            ts,
        };
        GenRecord { id, key: user, payload: payload.into_bytes(), bad, flaw: flavour, event, ts }
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
    use crate::registry::Registry;
    use crate::validate::{validate_json, Rules, SourceDecoder};
    use vigil_config::{PipelineConfig, SourceConfig, SourceFormat};

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
    fn records_share_event_times_as_asked() {
        let one: Vec<_> = EventGen::new(spec(7)).take(40).collect();
        let four: Vec<_> = EventGen::new(spec(7)).records_per_step(4).take(40).collect();
        for (i, (a, b)) in one.iter().zip(&four).enumerate() {
            assert_eq!(a.ts, 1_700_000_000_000 + 5 * i as i64, "record {i}, one per step");
            assert_eq!(b.ts, 1_700_000_000_000 + 5 * (i / 4) as i64, "record {i}, four per step");
            let v: serde_json::Value = serde_json::from_slice(&b.payload).unwrap_or(serde_json::Value::Null);
            if !b.bad {
                assert_eq!(v["ts"], b.ts, "record {i}'s value carries its event time");
            }
        }
        // Zero is taken as one.
        assert_eq!(EventGen::new(spec(7)).records_per_step(0).take(40).collect::<Vec<_>>(), one);
    }

    #[test]
    fn corrupted_records_never_decode() {
        let p = PipelineConfig::default();
        let rules = Rules::compile(&p.fields).unwrap();
        let an = crate::analytics::spec::Analytics::compile(&p);
        for (i, r) in EventGen::new(GenSpec { bad_ratio: 0.0, ..spec(5) }).take(300).enumerate() {
            let damaged = corrupt(&r.payload, i as u64);
            assert_ne!(damaged, r.payload);
            assert!(serde_json::from_slice::<serde_json::Value>(&damaged).is_err(), "{}", String::from_utf8_lossy(&damaged));
            assert!(validate_json(&damaged, &rules, &an).is_err());
        }
    }

    #[test]
    fn bad_flag_matches_validation() {
        let p = PipelineConfig::default();
        let recs: Vec<_> = EventGen::new(spec(3)).take(2000).collect();
        let bad = recs.iter().filter(|r| r.bad).count();
        assert!((100..300).contains(&bad), "bad ratio off: {bad}");
        let rules = Rules::compile(&p.fields).unwrap();
        for r in recs {
            assert_eq!(
                validate_json(&r.payload, &rules, &crate::analytics::spec::Analytics::compile(&p)).is_err(),
                r.bad,
                "{}",
                String::from_utf8_lossy(&r.payload)
            );
        }
    }

    /// Every encoding: good records pass the pipeline's checks, bad ones fail with the
    /// reason [`Wire::expected_reason`] names.
    #[test]
    fn every_wire_fails_as_announced() {
        let p = PipelineConfig::default();
        let rules = Rules::compile(&p.fields).unwrap();
        let reg = Registry::in_memory();
        let avro_id = reg.register("t", "events-value", Registry::parse(None, AVRO_SCHEMA).unwrap()).unwrap().id;
        let json_id = reg.register("t", "json-value", Registry::parse(Some("JSON"), JSON_SCHEMA).unwrap()).unwrap().id;
        let wires = [
            (Wire::Json, SourceConfig::new("events", SourceFormat::Json)),
            (Wire::avro(avro_id).unwrap(), SourceConfig::new("events", SourceFormat::Avro)),
            (Wire::JsonSchema { id: json_id }, SourceConfig::new("json", SourceFormat::JsonSchema)),
        ];
        for (wire, source) in wires {
            let mut d = SourceDecoder::new(&source);
            let mut seen = std::collections::BTreeSet::new();
            for r in EventGen::new(spec(5)).take(1000) {
                let got = match d.decode(&wire.encode(&r), &reg).unwrap() {
                    Ok((rec, _)) => rules.apply(&rec, &crate::analytics::spec::Analytics::compile(&p)).err().map(|e| e.code()),
                    Err((e, _)) => Some(e.code()),
                };
                assert_eq!(got.as_deref(), wire.expected_reason(&r), "{wire:?} record {}", r.id);
                seen.extend(got);
            }
            assert_eq!(seen.len(), 4, "{wire:?}: all four kinds of bad record: {seen:?}");
        }
    }
}
