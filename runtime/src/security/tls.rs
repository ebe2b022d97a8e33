//! TLS of the HTTP listeners: rustls server configs from PEM files (optional client
//! certificates against a CA bundle), swapped in place on reload so open connections keep
//! theirs, and the names a client certificate carries.
use crate::{Error, Result};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, RwLock};
use vigil_config::{TlsConfig, TlsVersion};

fn tls_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Tls { path: path.display().to_string(), reason: reason.to_string() }
}

/// Certificates of a PEM file (at least one).
///
/// # Errors
/// [`Error::Tls`] naming the file when it cannot be read or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(path, format!("cannot read certificates: {e}")))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| tls_err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The private key of a PEM file.
///
/// # Errors
/// [`Error::Tls`] naming the file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| tls_err(path, format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}")))
}

/// A CA bundle as a root store.
///
/// # Errors
/// [`Error::Tls`] naming the file.
pub fn load_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| tls_err(path, format!("unusable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A rustls server config from `[security.tls]` (HTTP/1.1 only).
///
/// # Errors
/// [`Error::Tls`] naming the file or setting at fault.
pub fn server_config(cfg: &TlsConfig) -> Result<ServerConfig> {
    let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
        return Err(Error::Tls { path: "security.tls".into(), reason: "cert and key are required".into() });
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match cfg.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| Error::Tls { path: "security.tls.min_version".into(), reason: e.to_string() })?;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider);
            let verifier = if cfg.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| tls_err(ca, e))?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_single_cert(load_certs(cert)?, load_key(key)?).map_err(|e| tls_err(key, format!("does not match {}: {e}", cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The server config in use, replaced whole by [`Reloadable::reload`]: new handshakes get
/// the new certificate, connections already open keep the one they started with.
pub struct Reloadable {
    cfg: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl Reloadable {
    /// Load the files named by `cfg`.
    ///
    /// # Errors
    /// [`Error::Tls`].
    pub fn new(cfg: TlsConfig) -> Result<Self> {
        let current = RwLock::new(Arc::new(server_config(&cfg)?));
        Ok(Self { cfg, current })
    }

    /// The config for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Re-read the files; on error the config in use stays.
    ///
    /// # Errors
    /// [`Error::Tls`].
    pub fn reload(&self) -> Result<()> {
        let next = match server_config(&self.cfg) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                metrics::counter!("vigil_tls_reloads_total", "outcome" => "failed").increment(1);
                return Err(e);
            }
        };
        metrics::counter!("vigil_tls_reloads_total", "outcome" => "ok").increment(1);
        match self.current.write() {
            Ok(mut c) => *c = next,
            Err(p) => *p.into_inner() = next,
        }
        Ok(())
    }

    /// Bound on one handshake.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        self.cfg.handshake_timeout
    }
}

/// Who a verified client certificate names: subject common names, then DNS, email and URI
/// subject alternative names. Set on each request of an mTLS connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCert {
    /// Names in that order (may be empty for a certificate that names nothing).
    pub names: Vec<String>,
}

impl PeerCert {
    /// Names of a DER certificate (empty if it cannot be parsed; rustls verified it already).
    pub fn from_der(der: &[u8]) -> Self {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Self::default() };
        let mut names: Vec<String> = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_string).collect();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(s)
                    | x509_parser::extensions::GeneralName::RFC822Name(s)
                    | x509_parser::extensions::GeneralName::URI(s) => names.push((*s).to_string()),
                    _ => {}
                }
            }
        }
        Self { names }
    }
}
