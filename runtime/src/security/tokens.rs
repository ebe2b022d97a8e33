//! API bearer tokens: generated once from the OS's secure random source, stored only as
//! salted SHA-256 hashes (in `[[security.tokens]]` or the token file), compared in constant
//! time. The token file is re-read when it changes, so a revocation takes effect at once.
use crate::{Error, Result};
use base64::Engine;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;
use vigil_config::TokenEntry;

/// Every token starts with this, so leaked tokens are easy to grep for.
pub const PREFIX: &str = "vgl_";

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).map_err(|_| Error::Security("the OS random source failed".into()))?;
    Ok(b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest_hex(salt: &str, token: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(salt.as_bytes());
    ctx.update(token.as_bytes());
    hex(ctx.finish().as_ref())
}

/// A new random token (256 bits).
///
/// # Errors
/// [`Error::Security`] if the OS random source fails.
pub fn generate() -> Result<String> {
    Ok(format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random::<32>()?)))
}

/// `sha256$<salt>$<digest>` of `token` with a fresh salt.
///
/// # Errors
/// [`Error::Security`] if the OS random source fails.
pub fn hash(token: &str) -> Result<String> {
    let salt = hex(&random::<16>()?);
    Ok(format!("sha256${salt}${}", digest_hex(&salt, token)))
}

/// Whether `token` matches `stored` (a [`hash`]), in time independent of where they differ.
pub fn verify(token: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("sha256"), Some(salt), Some(want), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return false };
    let got = digest_hex(salt, token);
    super::constant_time_eq(got.as_bytes(), want.as_bytes())
}

/// One token in the token file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredToken {
    /// Principal name (`token:<name>`).
    pub name: String,
    /// Role granted.
    pub role: String,
    /// Salted hash.
    pub hash: String,
    /// When it was created (ms since the epoch).
    #[serde(default)]
    pub created_ms: i64,
}

#[derive(Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<StoredToken>,
}

/// The tokens in `path` (none if it does not exist).
///
/// # Errors
/// [`Error::Security`] naming the file if it cannot be read or parsed.
pub fn read_file(path: &Path) -> Result<Vec<StoredToken>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice::<TokenFile>(&b).map(|f| f.tokens).map_err(|e| Error::Security(format!("token file {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::Security(format!("cannot read token file {}: {e}", path.display()))),
    }
}

/// Replace the tokens in `path` (written to a temporary file, then renamed; mode 0600).
///
/// # Errors
/// [`Error::Security`] naming the file.
pub fn write_file(path: &Path, tokens: &[StoredToken]) -> Result<()> {
    let fail = |e: std::io::Error| Error::Security(format!("cannot write token file {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(&TokenFile { tokens: tokens.to_vec() }).map_err(|e| Error::Security(e.to_string()))?;
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(fail)?;
        f.write_all(&body).map_err(fail)?;
        f.sync_all().map_err(fail)?;
    }
    std::fs::rename(&tmp, path).map_err(fail)
}

/// Create a token named `name` with `role` in the file; the token itself is returned once.
///
/// # Errors
/// [`Error::Security`] if the name is taken or the file cannot be written.
pub fn create_in_file(path: &Path, name: &str, role: &str) -> Result<String> {
    if name.trim().is_empty() || name.contains(char::is_whitespace) {
        return Err(Error::Security(format!("token name `{name}` must be non-empty and without spaces")));
    }
    let mut tokens = read_file(path)?;
    if tokens.iter().any(|t| t.name == name) {
        return Err(Error::Security(format!("a token named `{name}` exists in {} (revoke it first)", path.display())));
    }
    let token = generate()?;
    tokens.push(StoredToken { name: name.into(), role: role.into(), hash: hash(&token)?, created_ms: crate::now_ms() });
    write_file(path, &tokens)?;
    Ok(token)
}

/// Remove the token `name` from the file; whether it was there.
///
/// # Errors
/// [`Error::Security`] if the file cannot be read or written.
pub fn revoke_in_file(path: &Path, name: &str) -> Result<bool> {
    let mut tokens = read_file(path)?;
    let before = tokens.len();
    tokens.retain(|t| t.name != name);
    if tokens.len() == before {
        return Ok(false);
    }
    write_file(path, &tokens)?;
    Ok(true)
}

/// The tokens a node accepts: those in its configuration and those in its token file.
pub struct TokenStore {
    inline: Vec<TokenEntry>,
    file: PathBuf,
    cached: Mutex<(Option<SystemTime>, Vec<StoredToken>)>,
}

impl TokenStore {
    /// Tokens of `inline` and of `file`.
    ///
    /// # Errors
    /// [`Error::Security`] if the file exists but cannot be read.
    pub fn new(inline: Vec<TokenEntry>, file: PathBuf) -> Result<Self> {
        let store = Self { inline, file, cached: Mutex::new((None, Vec::new())) };
        store.refresh()?;
        Ok(store)
    }

    /// The token file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn refresh(&self) -> Result<Vec<StoredToken>> {
        let mtime = std::fs::metadata(&self.file).and_then(|m| m.modified()).ok();
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.0 != mtime || mtime.is_none() {
            c.1 = read_file(&self.file)?;
            c.0 = mtime;
        }
        Ok(c.1.clone())
    }

    /// Every token (configured first), the file as it is now.
    pub fn list(&self) -> Vec<StoredToken> {
        let file = self.refresh().unwrap_or_else(|e| {
            tracing::error!("{e}; tokens of the file are refused until it is fixed");
            Vec::new()
        });
        self.inline.iter().map(|t| StoredToken { name: t.name.clone(), role: t.role.clone(), hash: t.hash.clone(), created_ms: 0 }).chain(file).collect()
    }

    /// The token's `(name, role)` if it is valid.
    pub fn authenticate(&self, token: &str) -> Option<(String, String)> {
        self.list().into_iter().find(|t| verify(token, &t.hash)).map(|t| (t.name, t.role))
    }

    /// Create a token in the file (the configured ones are read-only).
    ///
    /// # Errors
    /// [`Error::Security`] if the name is taken or the file cannot be written.
    pub fn create(&self, name: &str, role: &str) -> Result<String> {
        if self.inline.iter().any(|t| t.name == name) {
            return Err(Error::Security(format!("a token named `{name}` is in the configuration")));
        }
        create_in_file(&self.file, name, role)
    }

    /// Revoke a token of the file; whether it existed.
    ///
    /// # Errors
    /// [`Error::Security`] for a configured token (edit the configuration) or a file error.
    pub fn revoke(&self, name: &str) -> Result<bool> {
        if self.inline.iter().any(|t| t.name == name) {
            return Err(Error::Security(format!("token `{name}` is in the configuration file: remove it there and restart")));
        }
        revoke_in_file(&self.file, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_against_their_own_hash() {
        let t = generate().unwrap();
        assert!(t.starts_with(PREFIX) && t.len() > 40);
        let h = hash(&t).unwrap();
        assert_ne!(h, hash(&t).unwrap(), "salted");
        assert!(verify(&t, &h));
        assert!(!verify(&format!("{t}x"), &h));
        assert!(!verify(&generate().unwrap(), &h));
        assert!(!verify(&t, "sha256$nosalt"));
        assert!(!verify(&t, &h.replacen("sha256", "md5", 1)));
    }

    #[test]
    fn file_create_authenticate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/tokens.json");
        let store = TokenStore::new(vec![], f.clone()).unwrap();
        let t = store.create("ci", "operator").unwrap();
        assert!(store.create("ci", "viewer").is_err(), "names are unique");
        assert_eq!(store.authenticate(&t), Some(("ci".into(), "operator".into())));
        assert!(!std::fs::read_to_string(&f).unwrap().contains(&t), "only the hash is stored");
        assert!(store.revoke("ci").unwrap());
        assert_eq!(store.authenticate(&t), None, "revocation takes effect at once");
        assert!(!store.revoke("ci").unwrap());
    }
}
