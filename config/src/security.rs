//! `[security]`: TLS of the HTTP listeners, who may call them (tokens, client
//! certificates, roles), the audit log, and the admin API's request limits. The catalogue
//! of actions and built-in roles lives here so that config checks and the access layer
//! agree on it.
use crate::ByteSize;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Every action a route can require, with what it allows. Reads end in `.read`.
pub const ACTIONS: &[(&str, &str)] = &[
    ("health.read", "liveness and readiness (/healthz, /readyz); open to anyone"),
    ("session.read", "who the caller is (/security/whoami)"),
    ("node.read", "status, supervision tree, route table"),
    ("metrics.read", "Prometheus /metrics"),
    ("dq.read", "data-quality table and history"),
    ("alerts.read", "alerts, rules and silences"),
    ("incidents.read", "incidents, reviews and post-mortems"),
    ("lineage.read", "lineage queries and the data-flow event log"),
    ("schemas.read", "schemas, subjects, compatibility checks, registry audit"),
    ("audit.read", "the security audit log"),
    ("chaos.read", "failpoints that are switched on"),
    ("silences.write", "add and expire silences"),
    ("incidents.open", "open an incident by hand"),
    ("incidents.ack", "acknowledge an incident"),
    ("incidents.assign", "assign a role on an incident"),
    ("incidents.note", "add a note to an incident"),
    ("incidents.mitigate", "mark an incident mitigated"),
    ("incidents.resolve", "resolve an incident"),
    ("chaos.inject", "panics, failpoints and bad data for drills"),
    ("schemas.deprecate", "deprecate or re-activate a schema version"),
    ("schemas.archive", "archive a schema version"),
    ("schemas.register", "register schemas"),
    ("schemas.delete", "delete subjects and versions"),
    ("schemas.config", "change compatibility levels"),
    ("config.reload", "reload alert rules from the configuration file"),
    ("tokens.read", "list API tokens (names and roles, never secrets)"),
    ("tokens.write", "create and revoke API tokens"),
];

/// The built-in roles: `viewer` reads everything but secrets, `operator` also runs
/// incidents, silences, drills and deprecations, `admin` may do everything.
pub const BUILTIN_ROLES: [&str; 3] = ["viewer", "operator", "admin"];

/// Actions of a built-in role (`None` for other names).
pub fn builtin_role_actions(role: &str) -> Option<Vec<&'static str>> {
    let reads = ACTIONS.iter().map(|(a, _)| *a).filter(|a| a.ends_with(".read") && *a != "tokens.read");
    let operator = [
        "silences.write",
        "incidents.open",
        "incidents.ack",
        "incidents.assign",
        "incidents.note",
        "incidents.mitigate",
        "incidents.resolve",
        "chaos.inject",
        "schemas.deprecate",
    ];
    match role {
        "viewer" => Some(reads.collect()),
        "operator" => Some(reads.chain(operator).collect()),
        "admin" => Some(ACTIONS.iter().map(|(a, _)| *a).collect()),
        _ => None,
    }
}

/// Whether `pattern` (an action, or a prefix ending in `*` such as `incidents.*`) names `action`.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => pattern == action,
    }
}

/// Minimum TLS version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// `[security.tls]`: TLS on the admin and metrics listeners (off while `cert` is empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of the node (leaf first). Default none: plaintext.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// PEM CA bundle that client certificates must chain to; enables mTLS. Default none.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse clients without a certificate (true, default) or let
    /// them authenticate with a token instead (false).
    pub require_client_cert: bool,
    /// `"1.2"` (default) or `"1.3"`.
    pub min_version: TlsVersion,
    /// Serve `/metrics` over TLS too. Default true.
    pub metrics: bool,
    /// Bound on one TLS handshake. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            client_ca: None,
            require_client_cert: true,
            min_version: TlsVersion::V1_2,
            metrics: true,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
}

/// `[[security.tokens]]`: an API token stored as a salted hash (from `vigil token create`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Principal name the token authenticates as (`token:<name>` in the audit log).
    pub name: String,
    /// Role granted.
    pub role: String,
    /// `sha256$<salt hex>$<digest hex>` of the token.
    pub hash: String,
}

/// `[[security.identities]]`: a client-certificate name mapped to a role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityEntry {
    /// Subject common name or a DNS / email subject alternative name of the certificate.
    pub name: String,
    /// Role granted.
    pub role: String,
}

/// `[security.roles.<name>]`: a custom role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// Allowed actions (`incidents.*` allows every action starting `incidents.`).
    pub actions: Vec<String>,
}

/// `[security.limits]`: bounds on admin API requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body. Default `1MiB`.
    pub max_body: ByteSize,
    /// Largest total size of request headers (at least 8KiB). Default `16KiB`.
    pub max_headers: ByteSize,
    /// Bound on one request, from headers read to answer. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests per second per principal (token, certificate or source address). Default 100.
    pub rate_per_principal: u32,
    /// Burst above the rate. Default 200.
    pub burst: u32,
    /// Open connections per listener; more wait to be accepted. Default 1024.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body: ByteSize(1 << 20),
            max_headers: ByteSize(16 << 10),
            request_timeout: Duration::from_secs(30),
            rate_per_principal: 100,
            burst: 200,
            max_connections: 1024,
        }
    }
}

/// `[security]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Require credentials (token or client certificate) on the admin API; deny every call
    /// whose principal's role lacks the route's action. Default false: open, which is only
    /// allowed on loopback addresses.
    pub auth: bool,
    /// With `auth`: `/metrics` needs the `metrics.read` action too. Default true.
    pub metrics_auth: bool,
    /// Allow an open (no `auth`) admin listener on a non-loopback address.
    /// Default false.
    pub allow_open_remote: bool,
    /// Token file written by `vigil token create` and the tokens API. Default
    /// `<node.data_dir>/tokens.json`.
    pub token_file: Option<PathBuf>,
    /// Tokens kept in this file, as salted hashes.
    pub tokens: Vec<TokenEntry>,
    /// Client-certificate identities and their roles.
    pub identities: Vec<IdentityEntry>,
    /// Custom roles.
    pub roles: BTreeMap<String, RoleConfig>,
    /// TLS of the listeners.
    pub tls: TlsConfig,
    /// JSON-lines copy of the audit log (the other copy is in the store). Default
    /// `<node.data_dir>/audit.jsonl`.
    pub audit_file: Option<PathBuf>,
    /// Admin API request limits.
    pub limits: LimitsConfig,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            auth: false,
            metrics_auth: true,
            allow_open_remote: false,
            token_file: None,
            tokens: Vec::new(),
            identities: Vec::new(),
            roles: BTreeMap::new(),
            tls: TlsConfig::default(),
            audit_file: None,
            limits: LimitsConfig::default(),
        }
    }
}

impl SecurityConfig {
    /// Whether `role` is built in or configured.
    pub fn knows_role(&self, role: &str) -> bool {
        BUILTIN_ROLES.contains(&role) || self.roles.contains_key(role)
    }

    /// Actions `role` may perform (empty for an unknown role).
    pub fn role_actions(&self, role: &str) -> Vec<String> {
        if let Some(custom) = self.roles.get(role) {
            return ACTIONS.iter().map(|(a, _)| *a).filter(|a| custom.actions.iter().any(|p| action_matches(p, a))).map(str::to_string).collect();
        }
        builtin_role_actions(role).unwrap_or_default().into_iter().map(str::to_string).collect()
    }

    pub(crate) fn validate(&self, admin_addr: &str, err: &mut impl FnMut(&str, &str)) {
        for (name, role) in &self.roles {
            if BUILTIN_ROLES.contains(&name.as_str()) {
                err(&format!("security.roles.{name}"), "is a built-in role and cannot be redefined");
            }
            if role.actions.is_empty() {
                err(&format!("security.roles.{name}.actions"), "must allow at least one action");
            }
            for (i, p) in role.actions.iter().enumerate() {
                if !ACTIONS.iter().any(|(a, _)| action_matches(p, a)) {
                    err(&format!("security.roles.{name}.actions[{i}]"), &format!("`{p}` names no action (see docs/security.md for the list)"));
                }
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if !self.knows_role(&t.role) {
                err(&format!("security.tokens[{i}].role"), &format!("unknown role `{}` (viewer, operator, admin or a [security.roles] entry)", t.role));
            }
            if t.hash.split('$').count() != 3 || !t.hash.starts_with("sha256$") {
                err(&format!("security.tokens[{i}].hash"), "must be `sha256$<salt>$<digest>` as `vigil token create` prints");
            }
            if t.name.trim().is_empty() {
                err(&format!("security.tokens[{i}].name"), "must not be empty");
            }
        }
        for (i, id) in self.identities.iter().enumerate() {
            if !self.knows_role(&id.role) {
                err(&format!("security.identities[{i}].role"), &format!("unknown role `{}`", id.role));
            }
            if id.name.trim().is_empty() {
                err(&format!("security.identities[{i}].name"), "must not be empty");
            }
        }
        let t = &self.tls;
        if t.cert.is_some() != t.key.is_some() {
            err("security.tls", "cert and key go together");
        }
        if t.client_ca.is_some() && !t.enabled() {
            err("security.tls.client_ca", "needs security.tls.cert and key (client certificates are checked during the TLS handshake)");
        }
        if t.handshake_timeout.is_zero() {
            err("security.tls.handshake_timeout", "must be greater than 0");
        }
        // `/metrics` is read-only and usually scraped from another host: only the admin
        // listener must not be open beyond loopback.
        if !self.auth && !self.allow_open_remote && !is_loopback(admin_addr) {
            err("observability.admin_addr", &format!("`{admin_addr}` is not a loopback address and security.auth is off: anyone who reaches it could control the node (turn on security.auth with tokens or client certificates, or set security.allow_open_remote = true)"));
        }
        let l = &self.limits;
        if l.max_body.0 < 1024 {
            err("security.limits.max_body", "must be at least 1KiB");
        }
        if l.max_headers.0 < 8192 {
            err("security.limits.max_headers", "must be at least 8KiB");
        }
        if l.max_connections == 0 {
            err("security.limits.max_connections", "must be at least 1");
        }
        if l.request_timeout.is_zero() {
            err("security.limits.request_timeout", "must be greater than 0");
        }
        if l.rate_per_principal == 0 || l.burst == 0 {
            err("security.limits", "rate_per_principal and burst must be at least 1");
        }
    }
}

/// `[pipeline.sources.signing]`: producer authenticity of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// HMAC-SHA256 key per producer name (`{ env = "..." }`, `{ file = "..." }` or inline).
    pub keys: BTreeMap<String, crate::Secret>,
    /// Largest distance between a record's signed time and now. Default `5m`.
    #[serde(default = "default_skew", with = "humantime_serde")]
    pub max_skew: Duration,
    /// A record id seen again within this window is a replay. Default `10m`.
    #[serde(default = "default_replay_window", with = "humantime_serde")]
    pub replay_window: Duration,
    /// Record ids remembered at most (oldest forgotten first). Default 1000000.
    #[serde(default = "default_replay_capacity")]
    pub replay_capacity: usize,
}

fn default_skew() -> Duration {
    Duration::from_secs(300)
}

fn default_replay_window() -> Duration {
    Duration::from_secs(600)
}

fn default_replay_capacity() -> usize {
    1_000_000
}

impl SigningConfig {
    pub(crate) fn validate(&self, path: &str, err: &mut impl FnMut(&str, &str)) {
        if self.keys.is_empty() {
            err(&format!("{path}.keys"), "at least one producer key is required");
        }
        for p in self.keys.keys() {
            if p.is_empty() || p.contains([';', '=']) {
                err(&format!("{path}.keys"), &format!("producer name `{p}` must be non-empty without `;` or `=`"));
            }
        }
        if self.max_skew.is_zero() || self.replay_window.is_zero() || self.replay_capacity == 0 {
            err(path, "max_skew, replay_window and replay_capacity must be greater than 0");
        }
    }
}

/// Whether `addr` (`host:port`) listens on loopback only (`localhost` counts).
pub fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr).trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(c: &SecurityConfig, admin: &str) -> Vec<String> {
        let mut errs = Vec::new();
        c.validate(admin, &mut |p: &str, m: &str| errs.push(format!("{p}: {m}")));
        errs
    }

    #[test]
    fn roles_nest_and_custom_roles_expand_patterns() {
        let viewer = builtin_role_actions("viewer").unwrap();
        let operator = builtin_role_actions("operator").unwrap();
        let admin = builtin_role_actions("admin").unwrap();
        assert!(viewer.iter().all(|a| operator.contains(a)) && operator.iter().all(|a| admin.contains(a)));
        assert!(!viewer.contains(&"tokens.read") && !operator.contains(&"schemas.register") && admin.contains(&"tokens.write"));
        let mut c = SecurityConfig::default();
        c.roles.insert("auditor".into(), RoleConfig { actions: vec!["audit.read".into(), "incidents.*".into()] });
        let a = c.role_actions("auditor");
        assert!(a.contains(&"audit.read".to_string()) && a.contains(&"incidents.resolve".to_string()) && !a.contains(&"node.read".to_string()));
        assert!(c.role_actions("nobody").is_empty());
    }

    #[test]
    fn open_remote_listeners_bad_roles_and_tls_halves_are_errors() {
        let mut c = SecurityConfig::default();
        assert!(problems(&c, "127.0.0.1:0").is_empty());
        assert!(problems(&c, "localhost:9899").is_empty());
        assert_eq!(problems(&c, "0.0.0.0:9899").len(), 1);
        c.auth = true;
        assert!(problems(&c, "0.0.0.0:9899").is_empty());
        c.tokens.push(TokenEntry { name: "ci".into(), role: "root".into(), hash: "md5".into() });
        c.roles.insert("admin".into(), RoleConfig { actions: vec!["nothing.here".into()] });
        c.tls.cert = Some("a.pem".into());
        let p = problems(&c, "[::1]:1");
        for want in ["security.roles.admin:", "security.roles.admin.actions[0]", "security.tokens[0].role", "security.tokens[0].hash", "security.tls:"] {
            assert!(p.iter().any(|e| e.starts_with(want)), "{want} missing in {p:?}");
        }
    }
}
