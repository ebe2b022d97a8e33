//! `[kafka.security]`: TLS and SASL for every Kafka client a node creates, and [`Secret`],
//! the redacting type every password and client secret is kept in.
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::path::PathBuf;

/// A secret value: read from a file (`{ file = "..." }`) or an environment variable
/// (`{ env = "..." }`), or written inline (discouraged). It never prints: `Debug`,
/// `Display` and serialization show where it comes from, never what it is.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Secret {
    /// The value itself, in the configuration file.
    Inline(String),
    /// Read from this file (surrounding whitespace trimmed) each time it is used.
    File {
        /// Path of the file.
        file: PathBuf,
    },
    /// Read from this environment variable.
    Env {
        /// Variable name.
        env: String,
    },
}

impl Secret {
    /// The value. The error names the file or variable, never a value.
    ///
    /// # Errors
    /// A message when the file cannot be read or the variable is unset.
    pub fn reveal(&self) -> Result<String, String> {
        match self {
            Secret::Inline(v) => Ok(v.clone()),
            Secret::File { file } => {
                std::fs::read_to_string(file).map(|s| s.trim().to_string()).map_err(|e| format!("cannot read secret file {}: {e}", file.display()))
            }
            Secret::Env { env } => std::env::var(env).map_err(|_| format!("environment variable {env} (holding a secret) is not set")),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("<redacted>"),
            Secret::File { file } => write!(f, "<secret from file {}>", file.display()),
            Secret::Env { env } => write!(f, "<secret from ${env}>"),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct File<'a> {
            file: &'a PathBuf,
        }
        #[derive(Serialize)]
        struct Env<'a> {
            env: &'a str,
        }
        match self {
            Secret::Inline(_) => s.serialize_str("<redacted>"),
            Secret::File { file } => File { file }.serialize(s),
            Secret::Env { env } => Env { env }.serialize(s),
        }
    }
}

/// librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaProtocol {
    /// No TLS, no SASL.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS (credentials in clear on the wire: test networks only).
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl KafkaProtocol {
    /// The librdkafka value.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaProtocol::Plaintext => "plaintext",
            KafkaProtocol::Ssl => "ssl",
            KafkaProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn tls(self) -> bool {
        matches!(self, KafkaProtocol::Ssl | KafkaProtocol::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, KafkaProtocol::SaslPlaintext | KafkaProtocol::SaslSsl)
    }
}

/// SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    /// Username and password in the clear (inside TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response, SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response, SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// OAuth 2 bearer tokens from an OIDC token endpoint (client credentials).
    #[serde(rename = "OAUTHBEARER")]
    OauthBearer,
}

impl SaslMechanism {
    /// The librdkafka value.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OauthBearer => "OAUTHBEARER",
        }
    }
}

/// `[kafka.security]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSecurityConfig {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: KafkaProtocol,
    /// PEM CA bundle the brokers' certificates must chain to (default: the system's).
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for brokers that require one.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Password of an encrypted `key`.
    pub key_password: Option<Secret>,
    /// Check that the broker's certificate names the host connected to. Default true.
    pub verify_hostname: bool,
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER` (with a sasl protocol).
    pub mechanism: Option<SaslMechanism>,
    /// SASL username (PLAIN, SCRAM).
    pub username: Option<String>,
    /// SASL password (PLAIN, SCRAM).
    pub password: Option<Secret>,
    /// OIDC token endpoint (OAUTHBEARER).
    pub token_endpoint: Option<String>,
    /// OIDC client id (OAUTHBEARER).
    pub client_id: Option<String>,
    /// OIDC client secret (OAUTHBEARER).
    pub client_secret: Option<Secret>,
    /// OIDC scope (OAUTHBEARER), optional.
    pub scope: Option<String>,
}

impl Default for KafkaSecurityConfig {
    fn default() -> Self {
        Self {
            protocol: KafkaProtocol::Plaintext,
            ca: None,
            cert: None,
            key: None,
            key_password: None,
            verify_hostname: true,
            mechanism: None,
            username: None,
            password: None,
            token_endpoint: None,
            client_id: None,
            client_secret: None,
            scope: None,
        }
    }
}

/// librdkafka properties that carry secrets: only `[kafka.security]` may set them.
pub const SECRET_PROPERTIES: [&str; 6] =
    ["sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config", "ssl.key.pem"];

impl KafkaSecurityConfig {
    /// Whether anything beyond plaintext is configured.
    pub fn enabled(&self) -> bool {
        self.protocol != KafkaProtocol::Plaintext
    }

    /// The librdkafka properties, secrets revealed. Only for handing to librdkafka.
    ///
    /// # Errors
    /// A message naming the field whose secret cannot be read.
    pub fn librdkafka_properties(&self) -> Result<Vec<(&'static str, String)>, String> {
        let mut p = vec![("security.protocol", self.protocol.as_str().to_string())];
        let secret = |field: &str, s: &Secret| s.reveal().map_err(|e| format!("kafka.security.{field}: {e}"));
        if self.protocol.tls() {
            if let Some(ca) = &self.ca {
                p.push(("ssl.ca.location", ca.display().to_string()));
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                p.push(("ssl.certificate.location", cert.display().to_string()));
                p.push(("ssl.key.location", key.display().to_string()));
            }
            if let Some(pw) = &self.key_password {
                p.push(("ssl.key.password", secret("key_password", pw)?));
            }
            p.push(("ssl.endpoint.identification.algorithm", if self.verify_hostname { "https" } else { "none" }.to_string()));
        }
        if let (true, Some(m)) = (self.protocol.sasl(), self.mechanism) {
            p.push(("sasl.mechanism", m.as_str().to_string()));
            match m {
                SaslMechanism::OauthBearer => {
                    p.push(("sasl.oauthbearer.method", "oidc".to_string()));
                    if let Some(u) = &self.token_endpoint {
                        p.push(("sasl.oauthbearer.token.endpoint.url", u.clone()));
                    }
                    if let Some(c) = &self.client_id {
                        p.push(("sasl.oauthbearer.client.id", c.clone()));
                    }
                    if let Some(s) = &self.client_secret {
                        p.push(("sasl.oauthbearer.client.secret", secret("client_secret", s)?));
                    }
                    if let Some(s) = &self.scope {
                        p.push(("sasl.oauthbearer.scope", s.clone()));
                    }
                }
                _ => {
                    if let Some(u) = &self.username {
                        p.push(("sasl.username", u.clone()));
                    }
                    if let Some(pw) = &self.password {
                        p.push(("sasl.password", secret("password", pw)?));
                    }
                }
            }
        }
        Ok(p)
    }

    pub(crate) fn validate(&self, embedded: bool, err: &mut impl FnMut(&str, &str)) {
        if embedded && self.enabled() {
            err("kafka.security.protocol", "the embedded mock cluster speaks plaintext only: set kafka.bootstrap to a real broker (or `vigil broker --tls`)");
        }
        let tls_fields = self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.key_password.is_some();
        if tls_fields && !self.protocol.tls() {
            err("kafka.security.protocol", "ca, cert, key and key_password need protocol `ssl` or `sasl_ssl`");
        }
        if self.cert.is_some() != self.key.is_some() {
            err("kafka.security", "cert and key go together");
        }
        for (field, path) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            if let Some(p) = path {
                if !p.is_file() {
                    err(&format!("kafka.security.{field}"), &format!("{} is not a readable file", p.display()));
                }
            }
        }
        let sasl_fields = self.mechanism.is_some()
            || self.username.is_some()
            || self.password.is_some()
            || self.token_endpoint.is_some()
            || self.client_id.is_some()
            || self.client_secret.is_some();
        if self.protocol.sasl() {
            match self.mechanism {
                None => err("kafka.security.mechanism", "required with a sasl protocol: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"),
                Some(SaslMechanism::OauthBearer) => {
                    if self.token_endpoint.is_none() || self.client_id.is_none() || self.client_secret.is_none() {
                        err("kafka.security", "OAUTHBEARER needs token_endpoint, client_id and client_secret");
                    }
                    if let Some(u) = &self.token_endpoint {
                        if !(u.starts_with("https://") || u.starts_with("http://")) {
                            err("kafka.security.token_endpoint", "must be an http(s) URL");
                        }
                    }
                }
                Some(m) => {
                    if self.username.as_deref().is_none_or(|u| u.trim().is_empty()) || self.password.is_none() {
                        err("kafka.security", &format!("{} needs username and password", m.as_str()));
                    }
                }
            }
        } else if sasl_fields {
            err("kafka.security.protocol", "mechanism, username, password and the OAUTHBEARER fields need protocol `sasl_plaintext` or `sasl_ssl`");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_reveal_from_where_they_live() {
        let inline = Secret::Inline("hunter2".into());
        for shown in [
            format!("{inline}"),
            format!("{inline:?}"),
            serde_json::to_string(&inline).unwrap(),
            toml::to_string(&KafkaSecurityConfig { password: Some(inline.clone()), ..Default::default() }).unwrap(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(inline.reveal().unwrap(), "hunter2");
        std::env::set_var("VIGIL_TEST_SECRET_X", "s3cr3t");
        let env: Secret = toml::from_str::<toml::Value>("s = { env = \"VIGIL_TEST_SECRET_X\" }").unwrap()["s"].clone().try_into().unwrap();
        assert_eq!(env.reveal().unwrap(), "s3cr3t");
        assert!(!format!("{env:?}").contains("s3cr3t"));
        let missing = Secret::Env { env: "VIGIL_TEST_SECRET_MISSING".into() };
        assert!(missing.reveal().unwrap_err().contains("VIGIL_TEST_SECRET_MISSING"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        assert_eq!(Secret::File { file: dir.path().join("pw") }.reveal().unwrap(), "from-file");
    }

    #[test]
    fn sasl_and_tls_settings_are_checked_and_mapped() {
        let mut errs = Vec::new();
        let c = KafkaSecurityConfig {
            protocol: KafkaProtocol::SaslSsl,
            mechanism: Some(SaslMechanism::ScramSha512),
            username: Some("vigil".into()),
            ..Default::default()
        };
        c.validate(false, &mut |p: &str, m: &str| errs.push(format!("{p}: {m}")));
        assert!(errs.iter().any(|e| e.contains("needs username and password")), "{errs:?}");
        let c = KafkaSecurityConfig { password: Some(Secret::Inline("pw".into())), ..c };
        let props = c.librdkafka_properties().unwrap();
        let get = |k: &str| props.iter().find(|(p, _)| *p == k).map(|(_, v)| v.as_str());
        assert_eq!((get("security.protocol"), get("sasl.mechanism"), get("sasl.password")), (Some("sasl_ssl"), Some("SCRAM-SHA-512"), Some("pw")));
        assert_eq!(get("ssl.endpoint.identification.algorithm"), Some("https"));
        let mut errs = Vec::new();
        let plain = KafkaSecurityConfig { username: Some("x".into()), ca: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        plain.validate(true, &mut |p: &str, m: &str| errs.push(format!("{p}: {m}")));
        assert_eq!(errs.len(), 3, "{errs:?}");
    }
}
