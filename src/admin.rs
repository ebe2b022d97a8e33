//! Talking to a running node's admin API: JSON over HTTP or HTTPS, with the caller's
//! credentials (bearer token, client certificate), and errors that say what to check.
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How the CLI authenticates to a node and trusts its certificate.
#[derive(Args, Clone, Default)]
pub(crate) struct Creds {
    /// Bearer token (prefer VIGIL_TOKEN or --token-file: arguments show in `ps`).
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, env = "VIGIL_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// PEM CA bundle to trust the node's certificate with (implies https).
    #[arg(long, env = "VIGIL_CACERT")]
    cacert: Option<PathBuf>,
    /// PEM client certificate (mTLS).
    #[arg(long, env = "VIGIL_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, env = "VIGIL_KEY", requires = "cert")]
    key: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

impl Creds {
    /// The bearer token, if any (from --token or --token-file).
    pub(crate) fn bearer(&self) -> Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_string()));
        }
        match &self.token_file {
            Some(f) => Ok(Some(String::from_utf8_lossy(&read(f, "token file")?).trim().to_string())),
            None => Ok(None),
        }
    }

    /// Whether TLS material was given (so a bare `host:port` means https).
    fn wants_tls(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some()
    }

    /// An HTTP agent trusting --cacert and presenting --cert.
    pub(crate) fn agent(&self, timeout: Duration) -> Result<ureq::Agent> {
        use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
        let certs = |path: &Path, what: &str| -> Result<Vec<Certificate<'static>>> {
            let pem = read(path, what)?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                bail!("{what} {} holds no PEM certificate", path.display());
            }
            Ok(certs)
        };
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &self.cacert {
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certs(ca, "CA file")?)));
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let chain = certs(cert, "client certificate")?;
            let key = PrivateKey::from_pem(&read(key, "client key")?).map_err(|e| anyhow::anyhow!("client key {}: {e}", key.display()))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        Ok(ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).tls_config(tls.build()).build().into())
    }
}

/// `http(s)://host:port` of `addr` (`host:port` or a URL): https when `tls` (the node's
/// configuration says so) or TLS material was given.
pub(crate) fn base_url(addr: &str, tls: bool, creds: &Creds) -> String {
    if addr.contains("://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("{}://{addr}", if tls || creds.wants_tls() { "https" } else { "http" })
    }
}

/// A node's admin API as the CLI reaches it.
pub(crate) struct Conn {
    /// `http(s)://host:port`.
    pub(crate) base: String,
    agent: ureq::Agent,
    bearer: Option<String>,
}

impl Conn {
    /// `addr` is `host:port` or a URL; `tls` says whether the node serves https (from its
    /// configuration) when `addr` has no scheme.
    pub(crate) fn new(addr: &str, tls: bool, creds: &Creds) -> Result<Self> {
        Ok(Self { base: base_url(addr, tls, creds), agent: creds.agent(Duration::from_secs(30))?, bearer: creds.bearer()? })
    }

    /// The agent and the `Authorization` header value, for other clients (the registry's).
    pub(crate) fn parts(&self) -> (ureq::Agent, Option<String>) {
        (self.agent.clone(), self.bearer.as_ref().map(|t| format!("Bearer {t}")))
    }

    fn unreachable(&self) -> String {
        format!("cannot reach the admin API at {} (is `vigil run` running? pass --admin ADDR or --config FILE; https needs --cacert)", self.base)
    }

    fn answer<T: DeserializeOwned>(&self, url: &str, resp: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<T> {
        let mut resp = resp.with_context(|| self.unreachable())?;
        let status = resp.status().as_u16();
        let body: Value = resp.body_mut().read_json().with_context(|| format!("unexpected answer from {url} (HTTP {status})"))?;
        if !(200..300).contains(&status) {
            let msg = body.get("error").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| body.to_string());
            let problems = body
                .get("problems")
                .and_then(Value::as_array)
                .map(|p| p.iter().filter_map(Value::as_str).map(|s| format!("\n  {s}")).collect::<String>())
                .unwrap_or_default();
            let hint = match status {
                401 => " (pass --token, --token-file or VIGIL_TOKEN, or a client certificate)",
                403 => " (your role does not allow this; see `vigil whoami`)",
                _ => "",
            };
            bail!("{msg}{hint}{problems}");
        }
        serde_json::from_value(body).with_context(|| format!("unexpected answer from {url}"))
    }

    fn call<T: DeserializeOwned>(&self, method: &str, path: &str, body: Option<&Value>) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.bearer {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = match body {
            Some(v) => self.agent.run(req.header("Content-Type", "application/json").body(serde_json::to_vec(v)?)?),
            None => self.agent.run(req.body(())?),
        };
        self.answer(&url, resp)
    }
}

/// GET `path` as JSON.
pub(crate) fn get<T: DeserializeOwned>(conn: &Conn, path: &str) -> Result<T> {
    conn.call("GET", path, None)
}

/// POST a JSON body to `path`; the answer as JSON.
pub(crate) fn post<T: DeserializeOwned>(conn: &Conn, path: &str, body: &Value) -> Result<T> {
    conn.call("POST", path, Some(body))
}

/// DELETE `path`; the answer as JSON.
pub(crate) fn delete<T: DeserializeOwned>(conn: &Conn, path: &str) -> Result<T> {
    conn.call("DELETE", path, None)
}
