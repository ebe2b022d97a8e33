//! Drill scenarios: the TOML files under `chaos/scenarios/` (built into the binary) or a
//! file of the user's. A scenario names its workload, the node's settings, the steady-state
//! probes checked before the first fault and after the last recovery, the faults with their
//! schedule, and the expectations the report judges. Parsing and checks only; pure.
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The scenarios shipped with Vigil: (file name without `.toml`, text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("node-kill", include_str!("../scenarios/node-kill.toml")),
    ("node-freeze", include_str!("../scenarios/node-freeze.toml")),
    ("stage-crash-storm", include_str!("../scenarios/stage-crash-storm.toml")),
    ("stage-stall", include_str!("../scenarios/stage-stall.toml")),
    ("broker-outage", include_str!("../scenarios/broker-outage.toml")),
    ("network-partition", include_str!("../scenarios/network-partition.toml")),
    ("slow-network", include_str!("../scenarios/slow-network.toml")),
    ("disk-failure", include_str!("../scenarios/disk-failure.toml")),
    ("poison-pill", include_str!("../scenarios/poison-pill.toml")),
    ("corruption", include_str!("../scenarios/corruption.toml")),
    ("schema-break", include_str!("../scenarios/schema-break.toml")),
    ("duplicate-flood", include_str!("../scenarios/duplicate-flood.toml")),
    ("clock-skew", include_str!("../scenarios/clock-skew.toml")),
    ("breach", include_str!("../scenarios/breach.toml")),
];

/// One drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name (reports, history).
    pub name: String,
    /// What it rehearses.
    pub description: String,
    /// Part of the quick subset (`vigil drill run --fast`, CI).
    #[serde(default)]
    pub fast: bool,
    /// What the generator produces.
    pub workload: Workload,
    /// Node settings.
    #[serde(default)]
    pub node: NodeSettings,
    /// Probes that must hold before the first fault and again after the last recovery.
    #[serde(default)]
    pub steady_state: Vec<String>,
    /// The faults, each with its schedule.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// What the report judges.
    #[serde(default)]
    pub expect: Vec<String>,
}

/// The generated input: `vigil gen` at a steady rate, deterministic from the drill's seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Records.
    pub records: u64,
    /// Records per second.
    pub rate: u32,
    /// Fraction of malformed records (they must all reach the DLQ).
    #[serde(default)]
    pub bad_ratio: f64,
    /// Distinct users (keys).
    #[serde(default = "default_users")]
    pub users: u32,
    /// Partitions of the input topic.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Value format: `json`, or `avro` / `json_schema` registered in the node's registry.
    #[serde(default)]
    pub format: WireFormat,
    /// The source requires producer signatures and the workload signs (as `drill-gen`).
    #[serde(default)]
    pub signed: bool,
}

/// How the workload encodes its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// Plain JSON.
    #[default]
    Json,
    /// Avro behind the Confluent header.
    Avro,
    /// JSON Schema behind the Confluent header.
    JsonSchema,
}

impl WireFormat {
    /// The name `vigil gen --format` and `pipeline.sources[].format` use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Avro => "avro",
            Self::JsonSchema => "json_schema",
        }
    }
}

fn default_users() -> u32 {
    20
}
fn default_partitions() -> u32 {
    4
}

/// Node settings a scenario may change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Checkpoint interval.
    #[serde(with = "humantime_serde", default = "default_checkpoint")]
    pub checkpoint: Duration,
    /// Validate/Process shards.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// More node configuration (TOML), appended to what the drill writes.
    #[serde(default)]
    pub config: String,
    /// The admin API requires credentials (the drill holds an admin token).
    #[serde(default)]
    pub auth: bool,
}

fn default_checkpoint() -> Duration {
    Duration::from_millis(200)
}
fn default_shards() -> u32 {
    1
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self { checkpoint: default_checkpoint(), shards: default_shards(), config: String::new(), auth: false }
    }
}

/// Kinds of fault a drill injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// A stage (or shard) panics; its supervisor restarts it.
    StagePanic,
    /// A stage blocks for `duration` (a stuck call).
    StageStall,
    /// A stage takes `delay` longer per batch for `duration`.
    StageSlow,
    /// SIGKILL the node; it is restarted at once (as a supervisor such as systemd would).
    NodeKill,
    /// SIGSTOP the node for `duration`, then SIGCONT.
    NodeFreeze,
    /// SIGTERM the node and start it again.
    NodeRestart,
    /// The broker is down for `duration`: connections reset, new ones refused.
    BrokerOutage,
    /// Nothing passes between node and broker for `duration`.
    NetworkPartition,
    /// `latency` (+ up to `jitter`) each way and at most `bandwidth` bytes/s for `duration`.
    SlowNetwork,
    /// Every open connection between node and broker is reset.
    ConnectionReset,
    /// Checkpoint writes fail (disk full or broken) for `duration`.
    DiskFailure,
    /// Checkpoint writes take `delay` longer (slow fsync) for `duration`.
    SlowDisk,
    /// `count` malformed records (poison pills) among the input, spread over `duration`.
    Poison,
    /// `count` records whose bytes are damaged (cut short, not UTF-8, a bogus header).
    Corrupt,
    /// `count` records from a producer that changed its schema without the registry's
    /// compatibility check (registered under another subject).
    SchemaBreak,
    /// `count` records the workload already sent, sent again (a retry storm, a replayed topic).
    Duplicates,
    /// `count` records from a producer whose clock is `skew` behind.
    ClockSkew,
    /// The workload runs at `factor` × its rate for `duration`.
    Flood,
    /// `count` records signed with a key that is not `producer`'s (default: the workload's
    /// producer, a forgery; another name: an unknown producer).
    ForgedRecords,
    /// `count` admin calls with a stolen-then-revoked token, a made-up token and none.
    BadCredentials,
}

impl FaultKind {
    /// Its name in scenario files (`node-kill`).
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    /// Whether the fault lasts (`duration` required) rather than happening once.
    pub fn lasts(self) -> bool {
        matches!(
            self,
            Self::StageStall
                | Self::StageSlow
                | Self::NodeFreeze
                | Self::BrokerOutage
                | Self::NetworkPartition
                | Self::SlowNetwork
                | Self::DiskFailure
                | Self::SlowDisk
                | Self::Poison
                | Self::Corrupt
                | Self::SchemaBreak
                | Self::Duplicates
                | Self::ClockSkew
                | Self::Flood
                | Self::ForgedRecords
        )
    }

    /// Whether the fault is a stream of records `count` long.
    pub fn is_stream(self) -> bool {
        matches!(self, Self::Poison | Self::Corrupt | Self::SchemaBreak | Self::Duplicates | Self::ClockSkew | Self::ForgedRecords)
    }

    /// Whether the fault needs control of the node's process (not for `--live` game days).
    pub fn needs_process_control(self) -> bool {
        matches!(
            self,
            Self::NodeKill
                | Self::NodeFreeze
                | Self::NodeRestart
                | Self::BrokerOutage
                | Self::NetworkPartition
                | Self::SlowNetwork
                | Self::ConnectionReset
                | Self::Flood
        )
    }
}

/// One fault and its schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// When, after the workload starts.
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    /// Each occurrence starts up to this much later, drawn from the drill's seed.
    #[serde(with = "humantime_serde", default)]
    pub jitter: Duration,
    /// How long a lasting fault lasts.
    #[serde(with = "humantime_serde", default)]
    pub duration: Duration,
    /// Occurrences.
    #[serde(default = "one")]
    pub repeat: u32,
    /// Between the starts of occurrences.
    #[serde(with = "humantime_serde", default)]
    pub every: Duration,
    /// Stage or shard (`validate`, `process-1`, ...) of stage faults.
    #[serde(default)]
    pub target: Option<String>,
    /// Added delay per batch (`stage-slow`) or per checkpoint write (`slow-disk`).
    #[serde(with = "humantime_serde", default)]
    pub delay: Duration,
    /// Added one-way latency (`slow-network`).
    #[serde(with = "humantime_serde", default)]
    pub latency: Duration,
    /// Bytes per second (`slow-network`); 0: unlimited.
    #[serde(default)]
    pub bandwidth: u64,
    /// Records of a bad-data or breach stream; calls of `bad-credentials`.
    #[serde(default)]
    pub count: u64,
    /// How far behind the producer's clock is (`clock-skew`).
    #[serde(with = "humantime_serde", default)]
    pub skew: Duration,
    /// Rate multiplier (`flood`).
    #[serde(default)]
    pub factor: u32,
    /// Producer the records claim (`forged-records`).
    #[serde(default)]
    pub producer: Option<String>,
}

fn one() -> u32 {
    1
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `==`
    Eq,
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

impl Op {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "==" => Self::Eq,
            "<=" => Self::Le,
            "<" => Self::Lt,
            ">=" => Self::Ge,
            ">" => Self::Gt,
            _ => return None,
        })
    }

    /// `a op b`.
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Self::Eq => (a - b).abs() < 1e-9,
            Self::Le => a <= b,
            Self::Lt => a < b,
            Self::Ge => a >= b,
            Self::Gt => a > b,
        }
    }
}

/// One expectation, parsed from its text.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// `records.lost == 0`, `records.duplicated == 0`, `records.dlq >= 10`.
    Records {
        /// `lost`, `duplicated` or `dlq`.
        measure: String,
        /// Comparison.
        op: Op,
        /// Number.
        value: f64,
    },
    /// `recovery within 10s`: every fault's end → steady processing again.
    RecoveryWithin(Duration),
    /// `detect within 30s`: fault start → first alert firing.
    DetectWithin(Duration),
    /// `alert NAME fires [within D]`.
    AlertFires {
        /// Rule name.
        rule: String,
        /// Fault start → firing, at most.
        within: Option<Duration>,
    },
    /// `alert NAME does not fire`.
    AlertSilent(String),
    /// `incident opens [severity<=P2] [within D]`.
    IncidentOpens {
        /// Most severe allowed (P1 is most severe): `severity<=P2` accepts P1 and P2.
        at_most: Option<u8>,
        /// Fault start → opened, at most.
        within: Option<Duration>,
    },
}

/// Records measures an expectation may name.
pub const RECORD_MEASURES: [&str; 3] = ["lost", "duplicated", "dlq"];

impl std::str::FromStr for Expect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let dur = |w: &str| humantime::parse_duration(w).map_err(|e| format!("`{w}`: {e}"));
        let within = |rest: &[&str]| -> Result<Option<Duration>, String> {
            match rest {
                [] => Ok(None),
                ["within", d] => dur(d).map(Some),
                _ => Err(format!("expected `within <duration>`, found `{}`", rest.join(" "))),
            }
        };
        match words.as_slice() {
            [m, op, v] if m.starts_with("records.") => {
                let measure = m.trim_start_matches("records.").to_string();
                if !RECORD_MEASURES.contains(&measure.as_str()) {
                    return Err(format!("unknown measure `{m}`: one of records.{}", RECORD_MEASURES.join(", records.")));
                }
                let op = Op::parse(op).ok_or_else(|| format!("unknown comparison `{op}`: one of ==, <=, <, >=, >"))?;
                let value = v.parse().map_err(|_| format!("`{v}` is not a number"))?;
                Ok(Self::Records { measure, op, value })
            }
            ["recovery", "within", d] => Ok(Self::RecoveryWithin(dur(d)?)),
            ["detect", "within", d] => Ok(Self::DetectWithin(dur(d)?)),
            ["alert", rule, "does", "not", "fire"] => Ok(Self::AlertSilent(rule.to_string())),
            ["alert", rule, "fires", rest @ ..] => Ok(Self::AlertFires { rule: rule.to_string(), within: within(rest)? }),
            ["incident", "opens", rest @ ..] => {
                let (at_most, rest) = match rest.first().and_then(|w| w.strip_prefix("severity<=")) {
                    Some(p) => {
                        let n = p.strip_prefix('P').and_then(|n| n.parse::<u8>().ok()).filter(|n| (1..=4).contains(n));
                        (Some(n.ok_or_else(|| format!("`{p}` is not a severity P1..P4"))?), &rest[1..])
                    }
                    None => (None, rest),
                };
                Ok(Self::IncidentOpens { at_most, within: within(rest)? })
            }
            _ => Err(format!(
                "`{s}` is not an expectation: records.<lost|duplicated|dlq> <op> <n>, recovery within <d>, detect within <d>, alert <rule> fires [within <d>], alert <rule> does not fire, incident opens [severity<=P<n>] [within <d>]"
            )),
        }
    }
}

/// A steady-state probe: `ready`, `status.<field> <op> <n>` (the admin API's `/status`), or
/// `metric <name{labels}> <op> <n>` (a sample of `/metrics`).
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// `/readyz` answers 200.
    Ready,
    /// A number in `/status`.
    Status {
        /// Field (dots for nesting).
        field: String,
        /// Comparison.
        op: Op,
        /// Number.
        value: f64,
    },
    /// A Prometheus sample.
    Metric {
        /// `name` or `name{labels}` exactly as exported.
        series: String,
        /// Comparison.
        op: Op,
        /// Number.
        value: f64,
    },
}

impl std::str::FromStr for Probe {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let num = |v: &str| v.parse::<f64>().map_err(|_| format!("`{v}` is not a number"));
        let op = |o: &str| Op::parse(o).ok_or_else(|| format!("unknown comparison `{o}`"));
        match words.as_slice() {
            ["ready"] => Ok(Self::Ready),
            [f, o, v] if f.starts_with("status.") => Ok(Self::Status { field: f.trim_start_matches("status.").to_string(), op: op(o)?, value: num(v)? }),
            ["metric", series, o, v] => Ok(Self::Metric { series: series.to_string(), op: op(o)?, value: num(v)? }),
            _ => Err(format!("`{s}` is not a probe: ready, status.<field> <op> <n>, metric <series> <op> <n>")),
        }
    }
}

impl Scenario {
    /// Parse and check a scenario; errors name the file and the field or entry.
    ///
    /// # Errors
    /// A message for the first problem found.
    pub fn parse(origin: &str, text: &str) -> Result<Self, String> {
        let s: Self = toml::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
        s.check().map_err(|e| format!("{origin}: {e}"))?;
        Ok(s)
    }

    /// A built-in scenario by name.
    pub fn builtin(name: &str) -> Option<Result<Self, String>> {
        BUILTIN.iter().find(|(n, _)| *n == name).map(|(n, t)| Self::parse(&format!("chaos/scenarios/{n}.toml"), t))
    }

    fn check(&self) -> Result<(), String> {
        if self.workload.records == 0 || self.workload.rate == 0 {
            return Err("workload.records and workload.rate must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.workload.bad_ratio) {
            return Err("workload.bad_ratio must be between 0.0 and 1.0".into());
        }
        for (i, f) in self.faults.iter().enumerate() {
            let at = |m: &str| format!("faults[{i}] ({:?}): {m}", f.kind);
            if f.kind.lasts() && f.duration.is_zero() {
                return Err(at("needs a duration"));
            }
            if f.repeat > 1 && f.every.is_zero() {
                return Err(at("repeat > 1 needs `every`"));
            }
            if f.kind.lasts() && f.repeat > 1 && f.every <= f.duration + f.jitter {
                return Err(at("occurrences overlap: `every` must exceed duration + jitter"));
            }
            let stage = matches!(f.kind, FaultKind::StagePanic | FaultKind::StageStall | FaultKind::StageSlow);
            if stage != f.target.is_some() {
                return Err(at(if stage { "needs a target stage" } else { "takes no target" }));
            }
            if matches!(f.kind, FaultKind::StageSlow | FaultKind::SlowDisk) && f.delay.is_zero() {
                return Err(at("needs a delay"));
            }
            if f.kind == FaultKind::SlowNetwork && f.latency.is_zero() && f.bandwidth == 0 {
                return Err(at("needs latency or bandwidth"));
            }
            if (f.kind.is_stream() || f.kind == FaultKind::BadCredentials) && f.count == 0 {
                return Err(at("needs a count"));
            }
            if f.kind == FaultKind::ClockSkew && f.skew < Duration::from_secs(60) {
                return Err(at("needs a skew of at least 1m (records far enough behind that their windows closed)"));
            }
            if f.kind == FaultKind::Flood && (f.factor < 2 || f.repeat > 1) {
                return Err(at("needs a factor of at least 2, once (repeat = 1)"));
            }
            if f.kind == FaultKind::ForgedRecords && !self.workload.signed {
                return Err(at("needs workload.signed = true (a source that checks signatures)"));
            }
            if f.kind == FaultKind::BadCredentials && !self.node.auth {
                return Err(at("needs node.auth = true (an admin API that checks credentials)"));
            }
            if f.kind == FaultKind::SchemaBreak && self.workload.format == WireFormat::Json {
                return Err(at("needs workload.format avro or json_schema (a source read through the registry)"));
            }
            if f.kind == FaultKind::Duplicates && f.count as f64 / f.duration.as_secs_f64().max(0.001) > f64::from(self.workload.rate) {
                return Err(at("replays faster than the workload's rate: replayed records must stay behind the watermark"));
            }
        }
        for (i, e) in self.expect.iter().enumerate() {
            e.parse::<Expect>().map_err(|m| format!("expect[{i}]: {m}"))?;
        }
        for (i, p) in self.steady_state.iter().enumerate() {
            p.parse::<Probe>().map_err(|m| format!("steady_state[{i}]: {m}"))?;
        }
        Ok(())
    }

    /// Parsed expectations (checked by [`Scenario::parse`]).
    pub fn expectations(&self) -> Vec<(String, Expect)> {
        self.expect.iter().filter_map(|e| e.parse().ok().map(|x| (e.clone(), x))).collect()
    }

    /// Parsed probes (checked by [`Scenario::parse`]).
    pub fn probes(&self) -> Vec<Probe> {
        self.steady_state.iter().filter_map(|p| p.parse().ok()).collect()
    }

    /// The occurrences of every fault in start order: (fault index, start, end), starts
    /// after the workload begins, jitter drawn from `seed`.
    pub fn schedule(&self, seed: u64) -> Vec<(usize, Duration, Duration)> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::new();
        for (i, f) in self.faults.iter().enumerate() {
            for n in 0..f.repeat {
                let jitter = if f.jitter.is_zero() { Duration::ZERO } else { f.jitter.mul_f64(rng.random::<f64>()) };
                let start = f.at + f.every * n + jitter;
                out.push((i, start, start + f.duration));
            }
        }
        out.sort_by_key(|(i, s, _)| (*s, *i));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_scenario_parses() {
        for (name, _) in BUILTIN {
            let s = Scenario::builtin(name).unwrap().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&s.name, name);
            assert!(!s.expect.is_empty(), "{name} expects nothing");
            assert!(s.expect.iter().any(|e| e.starts_with("records.lost")), "{name} must check for lost records");
        }
    }

    #[test]
    fn example_scenarios_parse() {
        // Where the crate is now, not where this binary was compiled (a shared target
        // directory may reuse it from another checkout).
        let here = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
        let dir = std::path::Path::new(&here).join("../examples/chaos");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "toml")) {
            let text = std::fs::read_to_string(e.path()).unwrap();
            Scenario::parse(&e.path().display().to_string(), &text).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
        assert!(n >= 1, "no example scenario in {}", dir.display());
    }

    #[test]
    fn expectations_parse_and_bad_ones_say_why() {
        assert_eq!("records.lost == 0".parse(), Ok(Expect::Records { measure: "lost".into(), op: Op::Eq, value: 0.0 }));
        assert_eq!("recovery within 2s".parse(), Ok(Expect::RecoveryWithin(Duration::from_secs(2))));
        assert_eq!(
            "alert KafkaUnreachable fires within 45s".parse(),
            Ok(Expect::AlertFires { rule: "KafkaUnreachable".into(), within: Some(Duration::from_secs(45)) })
        );
        assert_eq!("alert X does not fire".parse(), Ok(Expect::AlertSilent("X".into())));
        assert_eq!("incident opens severity<=P2 within 30s".parse(), Ok(Expect::IncidentOpens { at_most: Some(2), within: Some(Duration::from_secs(30)) }));
        assert_eq!("incident opens".parse(), Ok(Expect::IncidentOpens { at_most: None, within: None }));
        assert!("records.gone == 0".parse::<Expect>().unwrap_err().contains("unknown measure"));
        assert!("incident opens severity<=P9".parse::<Expect>().unwrap_err().contains("P9"));
        assert!("recovery within soon".parse::<Expect>().unwrap_err().contains("soon"));
        assert!("lots of fun".parse::<Expect>().unwrap_err().contains("is not an expectation"));
    }

    #[test]
    fn bad_scenarios_name_the_field() {
        let base = "name = \"x\"\ndescription = \"d\"\n[workload]\nrecords = 10\nrate = 10\n";
        let e = Scenario::parse("x.toml", &format!("{base}[[faults]]\nkind = \"node-freeze\"\nat = \"1s\"\n")).unwrap_err();
        assert!(e.contains("x.toml") && e.contains("faults[0]") && e.contains("duration"), "{e}");
        let e = Scenario::parse("x.toml", &format!("{base}[[faults]]\nkind = \"stage-panic\"\nat = \"1s\"\n")).unwrap_err();
        assert!(e.contains("target"), "{e}");
        let e = Scenario::parse("x.toml", &format!("expect = [\"nope\"]\n{base}")).unwrap_err();
        assert!(e.contains("expect[0]"), "{e}");
        let e = Scenario::parse("x.toml", &format!("{base}[[faults]]\nkind = \"meteor\"\nat = \"1s\"\n")).unwrap_err();
        assert!(e.contains("meteor"), "{e}");
    }

    #[test]
    fn schedules_are_reproducible_from_the_seed() {
        let s = Scenario::builtin("stage-crash-storm").unwrap().unwrap();
        assert_eq!(s.schedule(7), s.schedule(7));
        let jittered = s.faults.iter().any(|f| !f.jitter.is_zero());
        if jittered {
            assert_ne!(s.schedule(7), s.schedule(8));
        }
        let sched = s.schedule(1);
        assert!(sched.windows(2).all(|w| w[0].1 <= w[1].1), "in start order");
    }
}
