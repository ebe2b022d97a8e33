//! `[alerts]`: alert rules over data-quality series, inhibition rules, receivers and routes,
//! and the syntax they are written in — label matchers as in Alertmanager
//! (`severity=~"P1|P2"`) and rule expressions (`validity_ratio < 0.95`,
//! `anomaly(records_per_sec)`). Parsed when the configuration loads, so a typo is reported
//! with its field path.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How a matcher compares a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (regex, anchored)
    Re,
    /// `!~` (regex, anchored)
    NotRe,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

/// A label matcher, `name op "value"`, with Alertmanager's semantics: an absent label
/// matches as the empty string; regexes are anchored at both ends.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// Label name.
    pub name: String,
    /// Comparison.
    pub op: MatchOp,
    /// Value or regex source.
    pub value: String,
    re: Option<regex::Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

impl Matcher {
    /// A matcher; `Err` when `op` is a regex and `value` is not a valid one.
    ///
    /// # Errors
    /// The regex error in words.
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, String> {
        let re = match op {
            MatchOp::Re | MatchOp::NotRe => Some(regex::Regex::new(&format!("^(?:{value})$")).map_err(|e| format!("invalid regex `{value}`: {e}"))?),
            _ => None,
        };
        Ok(Self { name: name.into(), op, value: value.into(), re })
    }

    /// Whether a label set (absent = empty) matches.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::NotRe, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn unquote(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        Ok(v[1..v.len() - 1].replace("\\\"", "\"").replace("\\\\", "\\"))
    } else if v.contains(['"', ',', '{', '}', ' ']) {
        Err(format!("value `{v}` must be quoted"))
    } else {
        Ok(v.to_string())
    }
}

impl FromStr for Matcher {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let at = s.find(['=', '!']).ok_or_else(|| format!("`{s}`: expected name=\"value\", name!=, name=~ or name!~"))?;
        let name = s[..at].trim();
        let rest = &s[at..];
        let (op, value) = if let Some(v) = rest.strip_prefix("=~") {
            (MatchOp::Re, v)
        } else if let Some(v) = rest.strip_prefix("!~") {
            (MatchOp::NotRe, v)
        } else if let Some(v) = rest.strip_prefix("!=") {
            (MatchOp::Ne, v)
        } else if let Some(v) = rest.strip_prefix('=') {
            (MatchOp::Eq, v)
        } else {
            return Err(format!("`{s}`: expected an operator (=, !=, =~, !~) after `{name}`"));
        };
        if !is_label_name(name) {
            return Err(format!("`{s}`: `{name}` is not a label name"));
        }
        Matcher::new(name, op, &unquote(value).map_err(|e| format!("`{s}`: {e}"))?)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

crate::serde_via_string!(Matcher);

impl Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Parse a selector's inside, `a="x", b=~"y"`, into matchers (commas inside quotes allowed).
///
/// # Errors
/// The first matcher that does not parse.
pub fn parse_matchers(s: &str) -> Result<Vec<Matcher>, String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => {
                if !cur.trim().is_empty() {
                    out.push(cur.parse()?);
                }
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.parse()?);
    }
    Ok(out)
}

/// Comparison of a threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

impl Cmp {
    /// Whether `v cmp threshold` holds.
    pub fn holds(self, v: f64, threshold: f64) -> bool {
        match self {
            Cmp::Lt => v < threshold,
            Cmp::Le => v <= threshold,
            Cmp::Gt => v > threshold,
            Cmp::Ge => v >= threshold,
            Cmp::Eq => v == threshold,
            Cmp::Ne => v != threshold,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        }
    }
}

/// The data-quality series rules can name (labels in braces). Quality series are per
/// `source`; node series have the labels shown.
pub const METRICS: [&str; 19] = [
    "records_per_sec",
    "validity_ratio",
    "dlq_per_sec",           // {source, reason}
    "completeness",          // {source, field}
    "freshness_p50_seconds", // now − event time
    "freshness_p99_seconds",
    "latency_p50_seconds", // ingest → sink
    "latency_p99_seconds",
    "lag",
    "duplicates_per_sec",
    "late_per_sec",
    "stalled_partitions",
    "schema_version_share",        // {source, schema}
    "brokers_up",                  // node: Kafka brokers the consumer sees up
    "receiver_up",                 // node: {receiver} 1 while notifications get through
    "restarts_per_min",            // node: actor restarts by supervisors in the last minute
    "checkpoint_failures_per_min", // node: failed checkpoints in the last minute
    "unclean_restart",             // node: 1 for one quality window after a start that followed a crash
    "access_denied_per_min",       // node: admin/metrics calls refused (401/403) in the last minute
];

/// What a rule evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `metric cmp threshold`.
    Threshold {
        /// Comparison.
        cmp: Cmp,
        /// Threshold.
        threshold: f64,
    },
    /// `anomaly(metric)`: the seasonal detector flags the value (`quality.anomaly`).
    Anomaly,
}

/// A rule expression: `metric{matchers} cmp number` or `anomaly(metric{matchers})`.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// Series name, one of [`METRICS`].
    pub metric: String,
    /// Label matchers selecting series.
    pub matchers: Vec<Matcher>,
    /// Condition.
    pub condition: Condition,
}

fn parse_selector(s: &str) -> Result<(String, Vec<Matcher>), String> {
    let s = s.trim();
    let (name, matchers) = match s.find('{') {
        Some(i) => {
            let inner = s[i + 1..].strip_suffix('}').ok_or_else(|| format!("`{s}`: missing `}}`"))?;
            (s[..i].trim(), parse_matchers(inner)?)
        }
        None => (s, Vec::new()),
    };
    if !METRICS.contains(&name) {
        return Err(format!("unknown series `{name}`; one of: {}", METRICS.join(", ")));
    }
    Ok((name.to_string(), matchers))
}

impl FromStr for Expr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Some(inner) = t.strip_prefix("anomaly(") {
            let inner = inner.strip_suffix(')').ok_or_else(|| format!("`{t}`: missing `)`"))?;
            let (metric, matchers) = parse_selector(inner)?;
            return Ok(Expr { metric, matchers, condition: Condition::Anomaly });
        }
        // The comparison operator is the last one outside braces.
        let close = t.rfind('}').map(|i| i + 1).unwrap_or(0);
        let tail = &t[close..];
        let ops = [("<=", Cmp::Le), (">=", Cmp::Ge), ("==", Cmp::Eq), ("!=", Cmp::Ne), ("<", Cmp::Lt), (">", Cmp::Gt)];
        let (at, op, cmp) = ops
            .iter()
            .filter_map(|(o, c)| tail.find(o).map(|i| (i, *o, *c)))
            .min_by_key(|(i, o, _)| (*i, std::cmp::Reverse(o.len())))
            .ok_or_else(|| format!("`{t}`: expected `series <op> number` (op one of < <= > >= == !=) or `anomaly(series)`"))?;
        let (metric, matchers) = parse_selector(&t[..close + at])?;
        let num = tail[at + op.len()..].trim();
        let threshold: f64 = num.parse().map_err(|_| format!("`{t}`: `{num}` is not a number"))?;
        Ok(Expr { metric, matchers, condition: Condition::Threshold { cmp, threshold } })
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sel = if self.matchers.is_empty() {
            self.metric.clone()
        } else {
            format!("{}{{{}}}", self.metric, self.matchers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
        };
        match &self.condition {
            Condition::Anomaly => write!(f, "anomaly({sel})"),
            Condition::Threshold { cmp, threshold } => write!(f, "{sel} {} {threshold}", cmp.as_str()),
        }
    }
}

impl Serialize for Expr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Expr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Alert severity, P1 (page now) to P4 (look when convenient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Critical: page immediately.
    P1,
    /// High: page in working hours, act today.
    P2,
    /// Medium: ticket.
    P3,
    /// Low: informational.
    P4,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// `[[alerts.rules]]`: one alerting rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Alert name (`alertname` label), e.g. `DataValidityLow`.
    pub name: String,
    /// Expression, e.g. `validity_ratio < 0.95` or `anomaly(records_per_sec)`.
    pub expr: Expr,
    /// How long the condition must hold before the alert fires (pending until then).
    /// Default `0s`.
    #[serde(rename = "for", default, with = "humantime_serde")]
    pub for_: Duration,
    /// Keep firing this long after the condition clears (flap damping). Default `0s`.
    #[serde(default, with = "humantime_serde")]
    pub keep_firing_for: Duration,
    /// Severity. Default P3.
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Extra labels on the alert.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations: `summary`, `description`, `runbook_url`, ...; `{{ $value }}` and
    /// `{{ $labels.<name> }}` are replaced.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn default_severity() -> Severity {
    Severity::P3
}

/// `[[alerts.inhibit_rules]]`: while an alert matching `source_matchers` fires, alerts
/// matching `target_matchers` with equal values of the `equal` labels are not notified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    /// Matchers of the inhibiting alert.
    pub source_matchers: Vec<Matcher>,
    /// Matchers of the inhibited alerts.
    pub target_matchers: Vec<Matcher>,
    /// Labels that must be equal in both.
    #[serde(default)]
    pub equal: Vec<String>,
}

/// Kind of receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    /// A log line per notification.
    Log,
    /// HTTP POST of the Alertmanager v4 webhook payload to `url`.
    Webhook,
    /// POST to a real Alertmanager's `url` + `/api/v2/alerts`, re-sent while firing.
    Alertmanager,
    /// One JSON record per alert to Kafka `topic`.
    Kafka,
}

/// `[[alerts.receivers]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Name routes refer to.
    pub name: String,
    /// Kind.
    pub kind: ReceiverKind,
    /// URL (`webhook`, `alertmanager`).
    #[serde(default)]
    pub url: String,
    /// Topic (`kafka`).
    #[serde(default)]
    pub topic: String,
}

/// `[[alerts.routes]]`: alerts matching all `matchers` go to `receiver`; routes are tried in
/// order and the first match wins unless it sets `continue = true`. Unmatched alerts go to
/// `alerts.default_receiver`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Matchers (all must match; empty matches everything).
    #[serde(default)]
    pub matchers: Vec<Matcher>,
    /// Receiver name.
    pub receiver: String,
    /// Go on to later routes after matching.
    #[serde(rename = "continue", default)]
    pub continue_: bool,
}

/// `[alerts]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Evaluate rules and route notifications. Default true.
    pub enabled: bool,
    /// Labels that group alerts into one notification. Default `["alertname", "source"]`.
    pub group_by: Vec<String>,
    /// Wait before the first notification of a new group (to collect its alerts). Default `10s`.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    /// Wait before notifying a group again about changes. Default `1m`.
    #[serde(with = "humantime_serde")]
    pub group_interval: Duration,
    /// Re-notify a group that is still firing after this long. Default `4h`.
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// Re-send firing alerts to `alertmanager` receivers this often (their `endsAt` is four
    /// times this ahead, so Alertmanager resolves them if the node goes away). Default `30s`.
    #[serde(with = "humantime_serde")]
    pub resend_interval: Duration,
    /// Resolved alerts stay listed (and re-sent to Alertmanager) this long. Default `15m`.
    #[serde(with = "humantime_serde")]
    pub resolved_retention: Duration,
    /// Notifications queued per receiver; beyond it the oldest waiting is dropped and
    /// counted. Default 256.
    pub queue_max: usize,
    /// Delivery attempts per notification. Default 5.
    pub retry_attempts: u32,
    /// First retry delay, doubling up to `retry_max`. Default `500ms`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Largest retry delay. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Timeout of one delivery attempt. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Receiver for alerts no route matches. Default `log`.
    pub default_receiver: String,
    /// Receivers (`log` exists without being declared).
    pub receivers: Vec<ReceiverConfig>,
    /// Routes, tried in order.
    pub routes: Vec<RouteConfig>,
    /// Alerting rules. Default: the rules of `vigil config default`.
    pub rules: Vec<AlertRule>,
    /// Inhibition rules.
    pub inhibit_rules: Vec<InhibitRule>,
}

fn rule(name: &str, expr: &str, for_s: u64, severity: Severity, summary: &str, description: &str) -> AlertRule {
    let runbook = runbook_url(name);
    let annotations = [("summary", summary.to_string()), ("description", description.to_string()), ("runbook_url", runbook)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    AlertRule {
        name: name.into(),
        expr: expr.parse().unwrap_or_else(|e| panic!("built-in rule {name}: {e}")),
        for_: Duration::from_secs(for_s),
        keep_firing_for: Duration::ZERO,
        severity,
        labels: BTreeMap::new(),
        annotations,
    }
}

/// Where a built-in rule's runbook is: the drill runbook of the failure it stands for
/// (`docs/runbooks/`), else its section in `docs/alerting.md`.
pub fn runbook_url(rule: &str) -> String {
    let drill = match rule {
        "NodeCrashRecovered" => "node-kill",
        "ActorRestarting" => "stage-crash-storm",
        "CheckpointFailing" => "disk-failure",
        "KafkaUnreachable" => "broker-outage",
        "PartitionStalled" => "stage-stall",
        "DataValidityLow" => "poison-pill",
        "DuplicatesHigh" => "duplicate-flood",
        "LateDataHigh" => "clock-skew",
        "SecurityQuarantine" | "AccessDenied" => "breach",
        _ => return format!("https://vigil.invalid/docs/alerting.md#{}", rule.to_lowercase()),
    };
    format!("https://vigil.invalid/docs/runbooks/{drill}.md")
}

/// The rules a node has when the configuration names none.
pub fn default_rules() -> Vec<AlertRule> {
    vec![
        rule(
            "DataValidityLow",
            "validity_ratio < 0.95",
            30,
            Severity::P2,
            "Invalid records on {{ $labels.source }}",
            "Only {{ $value }} of the records on {{ $labels.source }} pass validation; the rest go to the DLQ.",
        ),
        rule("KafkaUnreachable", "brokers_up < 1", 30, Severity::P1, "Kafka brokers unreachable", "The node sees {{ $value }} Kafka brokers up."),
        rule(
            "ConsumerLagHigh",
            "lag > 100000",
            120,
            Severity::P3,
            "Consumer lag on {{ $labels.source }}",
            "{{ $value }} records are waiting on {{ $labels.source }}.",
        ),
        rule(
            "PartitionStalled",
            "stalled_partitions > 0",
            0,
            Severity::P2,
            "Stalled partitions on {{ $labels.source }}",
            "{{ $value }} partitions of {{ $labels.source }} make no progress while they have lag or their broker is silent.",
        ),
        rule(
            "DataFreshnessLow",
            "freshness_p99_seconds > 300",
            120,
            Severity::P3,
            "Stale data on {{ $labels.source }}",
            "p99 of now − event time on {{ $labels.source }} is {{ $value }}s.",
        ),
        rule(
            "VolumeAnomaly",
            "anomaly(records_per_sec)",
            300,
            Severity::P3,
            "Unusual volume on {{ $labels.source }}",
            "{{ $labels.source }} volume is {{ $value }} standard deviations from its seasonal baseline.",
        ),
        rule(
            "AlertReceiverUnreachable",
            "receiver_up < 1",
            0,
            Severity::P2,
            "Alert receiver {{ $labels.receiver }} unreachable",
            "Notifications to {{ $labels.receiver }} fail after every retry.",
        ),
        rule(
            "SecurityQuarantine",
            r#"dlq_per_sec{reason=~"security\\..+"} > 0"#,
            0,
            Severity::P2,
            "Unauthenticated records on {{ $labels.source }} ({{ $labels.reason }})",
            "{{ $value }} records/s on {{ $labels.source }} fail producer authentication ({{ $labels.reason }}) and go to the security quarantine topic.",
        ),
        rule(
            "AccessDenied",
            "access_denied_per_min > 20",
            0,
            Severity::P2,
            "Admin calls refused",
            "{{ $value }} admin or metrics calls were refused in the last minute (bad, missing, revoked or insufficient credentials): a misconfigured client, or someone trying; see `vigil audit list`.",
        ),
        rule(
            "DuplicatesHigh",
            "duplicates_per_sec > 10",
            30,
            Severity::P3,
            "Duplicate records on {{ $labels.source }}",
            "{{ $value }} records/s on {{ $labels.source }} repeat a record id seen before: a producer retry storm or a replayed topic. Windows count each record; replays of closed windows go to the DLQ as late.",
        ),
        rule(
            "LateDataHigh",
            "late_per_sec > 10",
            30,
            Severity::P3,
            "Late records on {{ $labels.source }}",
            "{{ $value }} records/s on {{ $labels.source }} arrive after their windows closed (a producer clock behind, a backfill, a stalled partition) and go to the late output.",
        ),
        rule(
            "NodeCrashRecovered",
            "unclean_restart > 0",
            0,
            Severity::P2,
            "The node restarted after a crash",
            "The previous run on this data directory ended without a clean stop (SIGKILL, OOM kill, power loss); the node resumed from its last checkpoint.",
        ),
        rule(
            "CheckpointFailing",
            "checkpoint_failures_per_min > 0",
            0,
            Severity::P2,
            "Checkpoints fail",
            "{{ $value }} checkpoints failed in the last minute (disk full or broken, outputs not acknowledged); until one commits, a crash replays more.",
        ),
        rule(
            "ActorRestarting",
            "restarts_per_min > 2",
            0,
            Severity::P2,
            "Actors keep failing",
            "Supervisors restarted actors {{ $value }} times in the last minute; see `vigil tree` and the journal.",
        ),
    ]
}

fn default_inhibit_rules() -> Vec<InhibitRule> {
    let m = |s: &str| parse_matchers(s).unwrap_or_default();
    vec![InhibitRule {
        source_matchers: m(r#"alertname="KafkaUnreachable""#),
        target_matchers: m(r#"alertname=~"ConsumerLagHigh|PartitionStalled|VolumeAnomaly|DataFreshnessLow""#),
        equal: Vec::new(),
    }]
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_by: vec!["alertname".into(), "source".into()],
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            repeat_interval: Duration::from_secs(4 * 3600),
            resend_interval: Duration::from_secs(30),
            resolved_retention: Duration::from_secs(15 * 60),
            queue_max: 256,
            retry_attempts: 5,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            default_receiver: "log".into(),
            receivers: Vec::new(),
            routes: Vec::new(),
            rules: default_rules(),
            inhibit_rules: default_inhibit_rules(),
        }
    }
}

impl AlertsConfig {
    /// Whether a receiver of that name exists (`log` always does).
    pub fn has_receiver(&self, name: &str) -> bool {
        name == "log" || self.receivers.iter().any(|r| r.name == name)
    }

    pub(crate) fn validate(&self, err: &mut impl FnMut(&str, &str)) {
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            if !is_label_name(&r.name) {
                err(&format!("alerts.rules[{i}].name"), "must be a label value of letters, digits and _");
            }
            if !names.insert(&r.name) {
                err(&format!("alerts.rules[{i}].name"), "duplicate rule name");
            }
            for k in r.labels.keys() {
                if !is_label_name(k) {
                    err(&format!("alerts.rules[{i}].labels.{k}"), "not a label name");
                }
            }
        }
        let mut receivers = std::collections::BTreeSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            let p = format!("alerts.receivers[{i}]");
            if r.name.trim().is_empty() || !receivers.insert(&r.name) {
                err(&format!("{p}.name"), "must be non-empty and unique");
            }
            match r.kind {
                ReceiverKind::Webhook | ReceiverKind::Alertmanager if !(r.url.starts_with("http://") || r.url.starts_with("https://")) => {
                    err(&format!("{p}.url"), "must be an http:// or https:// URL")
                }
                ReceiverKind::Kafka if r.topic.trim().is_empty() => err(&format!("{p}.topic"), "must name the alerts topic"),
                _ => {}
            }
        }
        if !self.has_receiver(&self.default_receiver) {
            err("alerts.default_receiver", "names no receiver in alerts.receivers");
        }
        for (i, r) in self.routes.iter().enumerate() {
            if !self.has_receiver(&r.receiver) {
                err(&format!("alerts.routes[{i}].receiver"), "names no receiver in alerts.receivers");
            }
        }
        if self.queue_max == 0 {
            err("alerts.queue_max", "must be at least 1");
        }
        if self.retry_attempts == 0 {
            err("alerts.retry_attempts", "must be at least 1");
        }
        if self.resend_interval.is_zero() {
            err("alerts.resend_interval", "must be greater than 0");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn matchers_follow_alertmanager() {
        let l = labels(&[("alertname", "DataValidityLow"), ("severity", "P2")]);
        assert!("severity=~\"P1|P2\"".parse::<Matcher>().unwrap().matches(&l));
        assert!(!"severity=~\"P\"".parse::<Matcher>().unwrap().matches(&l), "anchored");
        assert!("source=\"\"".parse::<Matcher>().unwrap().matches(&l), "absent is empty");
        assert!("source!=\"events\"".parse::<Matcher>().unwrap().matches(&l));
        assert!(!"alertname!~\"Data.*\"".parse::<Matcher>().unwrap().matches(&l));
        assert!("alertname=DataValidityLow".parse::<Matcher>().unwrap().matches(&l), "unquoted value");
        let ms = parse_matchers(r#"a="x,y", b=~"1|2""#).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].value, "x,y");
        for bad in ["severity", "9x=\"a\"", "a=~\"(\"", "a=x y"] {
            assert!(bad.parse::<Matcher>().is_err(), "{bad}");
        }
    }

    #[test]
    fn expressions_parse_and_print() {
        let e: Expr = "validity_ratio{source=\"events\"} < 0.95".parse().unwrap();
        assert_eq!(e.metric, "validity_ratio");
        assert_eq!(e.condition, Condition::Threshold { cmp: Cmp::Lt, threshold: 0.95 });
        assert_eq!(e.to_string().parse::<Expr>().unwrap(), e);
        let e: Expr = "lag >= 10".parse().unwrap();
        assert_eq!(e.condition, Condition::Threshold { cmp: Cmp::Ge, threshold: 10.0 });
        let e: Expr = "anomaly(records_per_sec{source=~\"e.*\"})".parse().unwrap();
        assert_eq!(e.condition, Condition::Anomaly);
        assert_eq!(e.matchers.len(), 1);
        for bad in ["validity < x", "nope > 1", "validity_ratio", "anomaly(records_per_sec", "dlq_per_sec{reason=\"a\" > 1"] {
            assert!(bad.parse::<Expr>().is_err(), "{bad}");
        }
        assert!(default_rules().len() >= 5);
    }
}
