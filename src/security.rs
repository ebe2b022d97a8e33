//! `vigil certs`, `vigil token`, `vigil audit` and `vigil whoami`: development
//! certificates, API tokens in the token file, the audit log and its verification.
use crate::{admin, load_config, AdminTarget};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vigil_runtime::security::{audit, tokens};

#[derive(Subcommand)]
pub(crate) enum CertsCmd {
    /// A local CA, a node certificate and client certificates, for tests and local use.
    Dev {
        /// Directory to write the PEM files to.
        #[arg(long, default_value = "vigil-certs")]
        out: PathBuf,
        /// Names the node certificate is valid for (DNS names or IP addresses).
        #[arg(long = "host", value_delimiter = ',', default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        hosts: Vec<String>,
        /// Client certificates to make, by common name (`<name>.pem`, `<name>-key.pem`).
        #[arg(long = "client", value_delimiter = ',', default_values_t = ["vigil-admin".to_string()])]
        clients: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args)]
pub(crate) struct TokenTarget {
    /// Token file (default: from --config, else ./vigil-data/tokens.json).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Read the token file's place from this node configuration.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl TokenTarget {
    fn path(&self) -> Result<PathBuf> {
        if let Some(f) = &self.token_file {
            return Ok(f.clone());
        }
        let cfg = load_config(self.config.as_deref())?;
        Ok(cfg.security.token_file.clone().unwrap_or_else(|| cfg.node.data_dir.join("tokens.json")))
    }
}

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
    /// Create a token and print it once (only its salted hash is stored).
    Create {
        /// Name the token authenticates as (`token:<name>` in the audit log).
        #[arg(long)]
        name: String,
        /// Role: viewer, operator, admin or a custom role of the configuration.
        #[arg(long)]
        role: String,
        #[command(flatten)]
        target: TokenTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Tokens of the token file (names and roles).
    List {
        #[command(flatten)]
        target: TokenTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: a running node refuses it from its next request on.
    Revoke {
        /// Token name.
        name: String,
        #[command(flatten)]
        target: TokenTarget,
    },
}

#[derive(Args)]
pub(crate) struct AuditTarget {
    /// Data directory of the node (default: from --config, else ./vigil-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Read the data directory and audit file from this node configuration.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// JSON-lines copy of the log (default: security.audit_file, else <data_dir>/audit.jsonl).
    #[arg(long)]
    audit_file: Option<PathBuf>,
}

impl AuditTarget {
    fn paths(&self) -> Result<(PathBuf, PathBuf)> {
        let (dir, file) = match (&self.data_dir, &self.config) {
            (Some(d), None) => (d.clone(), None),
            _ => {
                let cfg = load_config(self.config.as_deref())?;
                (self.data_dir.clone().unwrap_or(cfg.node.data_dir), cfg.security.audit_file)
            }
        };
        let file = self.audit_file.clone().or(file).unwrap_or_else(|| dir.join("audit.jsonl"));
        Ok((dir, file))
    }

    fn open(&self) -> Result<(vigil_runtime::store::Store, PathBuf)> {
        let (dir, file) = self.paths()?;
        Ok((crate::open_store(&dir)?, file))
    }
}

#[derive(Subcommand)]
pub(crate) enum AuditCmd {
    /// Mutating and denied admin calls, oldest first (works while the node runs).
    List {
        /// Only entries this recent (`1h`, `7d`).
        #[arg(long)]
        since: Option<String>,
        /// Newest entries to show at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        target: AuditTarget,
        /// Print JSON (one array).
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain of both copies (store and JSON lines); exit 1 naming the first
    /// broken entry.
    Verify {
        #[command(flatten)]
        target: AuditTarget,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn write_new(path: &Path, text: &str, force: bool, secret: bool) -> Result<()> {
    if path.exists() && !force {
        bail!("{} exists (pass --force to overwrite)", path.display());
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    }
    let _ = secret;
    std::io::Write::write_all(&mut opts.open(path).with_context(|| format!("cannot write {}", path.display()))?, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn certs_dev(out: &Path, hosts: &[String], clients: &[String], force: bool) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "Vigil development CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca, ca_key)?;
    write_new(&out.join("ca.pem"), &ca.pem(), force, false)?;
    write_new(&out.join("ca-key.pem"), &ca_key_pem, force, true)?;
    let leaf = |cn: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose, file: &str| -> Result<()> {
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &ca)?;
        write_new(&out.join(format!("{file}.pem")), &cert.pem(), force, false)?;
        write_new(&out.join(format!("{file}-key.pem")), &key.serialize_pem(), force, true)
    };
    leaf("vigil-node", hosts.to_vec(), ExtendedKeyUsagePurpose::ServerAuth, "node")?;
    for c in clients {
        if c.is_empty() || c.contains(['/', '\\']) || c == "node" || c == "ca" {
            bail!("client name `{c}` cannot be a file name here");
        }
        leaf(c, vec![], ExtendedKeyUsagePurpose::ClientAuth, c)?;
    }
    let d = out.display();
    println!("wrote {d}/ca.pem (CA), {d}/node.pem (valid for {}), and client certificates: {}", hosts.join(", "), clients.join(", "));
    println!("private keys (*-key.pem) are readable by you only; this CA is for development and tests, not production.");
    println!();
    println!("[security.tls]\ncert = \"{d}/node.pem\"\nkey = \"{d}/node-key.pem\"\nclient_ca = \"{d}/ca.pem\"      # require client certificates (mTLS)");
    if let Some(c) = clients.first() {
        println!("\n[[security.identities]]\nname = \"{c}\"\nrole = \"admin\"");
        println!("\nthen: vigil status --cacert {d}/ca.pem --cert {d}/{c}.pem --key {d}/{c}-key.pem --admin https://127.0.0.1:9899");
    }
    Ok(())
}

pub(crate) fn certs(cmd: CertsCmd) -> Result<ExitCode> {
    match cmd {
        CertsCmd::Dev { out, hosts, clients, force } => certs_dev(&out, &hosts, &clients, force)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn token(cmd: TokenCmd) -> Result<ExitCode> {
    match cmd {
        TokenCmd::Create { name, role, target, json } => {
            let cfg = load_config(target.config.as_deref())?;
            if !cfg.security.knows_role(&role) {
                bail!("unknown role `{role}` (viewer, operator, admin or a [security.roles] entry of the configuration)");
            }
            let path = target.path()?;
            let token = tokens::create_in_file(&path, &name, &role)?;
            if json {
                println!("{}", serde_json::json!({ "name": name, "role": role, "token": token, "file": path.display().to_string() }));
            } else {
                println!("{token}");
                eprintln!("token `{name}` ({role}) added to {}; it is shown only now. Use it as VIGIL_TOKEN or --token-file.", path.display());
            }
        }
        TokenCmd::List { target, json } => {
            let path = target.path()?;
            let list = tokens::read_file(&path)?;
            if json {
                let v: Vec<Value> = list.iter().map(|t| serde_json::json!({ "name": t.name, "role": t.role, "created_ms": t.created_ms })).collect();
                println!("{}", Value::Array(v));
            } else if list.is_empty() {
                println!("no tokens in {}", path.display());
            } else {
                println!("{:<24} {:<12} CREATED", "NAME", "ROLE");
                for t in list {
                    println!("{:<24} {:<12} {}", t.name, t.role, vigil_runtime::rfc3339_ms(t.created_ms));
                }
            }
        }
        TokenCmd::Revoke { name, target } => {
            let path = target.path()?;
            if !tokens::revoke_in_file(&path, &name)? {
                bail!("no token named `{name}` in {}", path.display());
            }
            println!("revoked `{name}` (a running node refuses it from its next request on)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn audit_cmd(cmd: AuditCmd) -> Result<ExitCode> {
    match cmd {
        AuditCmd::List { since, limit, target, json } => {
            let (store, _) = target.open()?;
            let since = match since {
                Some(s) => vigil_runtime::now_ms() - humantime::parse_duration(&s).with_context(|| format!("--since `{s}` (e.g. 1h, 7d)"))?.as_millis() as i64,
                None => 0,
            };
            let list = audit::list(&store, since, limit)?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                for e in list {
                    let r = &e.record;
                    let outcome = if r.allowed { format!("{}", r.status) } else { format!("DENIED {}: {}", r.status, r.reason) };
                    println!(
                        "{:>6} {} {} ({}) from {} {} {} [{}] {outcome}",
                        e.seq,
                        vigil_runtime::rfc3339_ms(e.time_ms),
                        r.principal,
                        if r.role.is_empty() { "-" } else { &r.role },
                        r.source,
                        r.method,
                        r.target,
                        r.action
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCmd::Verify { target, json } => {
            let (store, file) = target.open()?;
            let v = audit::verify(&store, &file)?;
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                match &v.broken {
                    None => println!("audit log intact: {} entries in the store and in {}, hash chain unbroken", v.store_entries, file.display()),
                    Some(b) => {
                        let line = b.line.map(|l| format!(", line {l}")).unwrap_or_default();
                        let copy = if b.copy == "file" { file.display().to_string() } else { "the store".into() };
                        println!("audit log TAMPERED: entry {} in {copy}{line}: {}", b.seq, b.reason);
                    }
                }
            }
            Ok(if v.broken.is_some() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
    }
}

pub(crate) fn whoami(target: &AdminTarget, json: bool) -> Result<ExitCode> {
    let v: Value = admin::get(&target.conn()?, "/security/whoami")?;
    if json {
        println!("{v}");
    } else {
        let role = v["role"].as_str().filter(|r| !r.is_empty()).unwrap_or("none");
        println!(
            "{} (role {role}; authentication {})",
            v["principal"].as_str().unwrap_or("?"),
            if v["auth"].as_bool() == Some(true) { "required" } else { "off" }
        );
        let actions: Vec<&str> = v["actions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!("may: {}", if actions.is_empty() { "nothing but health checks".to_string() } else { actions.join(", ") });
    }
    Ok(ExitCode::SUCCESS)
}
