//! `vigil schema ...`: the schema registry from the command line, over its REST API (the
//! node's own on its admin address, or any Confluent-compatible registry with --registry).
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vigil_actors::registry::resolver::{encode_segment, RegistryClient};

#[derive(Subcommand)]
pub(crate) enum SchemaCmd {
    /// Register a schema file under a subject (prints its id; 409 when incompatible).
    Register {
        /// Subject, e.g. `orders-value`.
        subject: String,
        /// Schema file (Avro .avsc or JSON Schema).
        file: PathBuf,
        /// Schema type: AVRO (default) or JSON.
        #[arg(long = "type", default_value = "AVRO")]
        kind: String,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Show a version of a subject (default the latest), or a schema by id.
    Get {
        /// Subject (omit with --id).
        subject: Option<String>,
        /// Version number or `latest`.
        #[arg(long, default_value = "latest")]
        version: String,
        /// Global schema id instead of a subject version.
        #[arg(long)]
        id: Option<u32>,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Subjects with their versions, ids, lifecycle states and traffic.
    List {
        /// Include soft-deleted versions.
        #[arg(long)]
        deleted: bool,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Check a schema file against a subject at its compatibility level, with reasons.
    Check {
        /// Subject.
        subject: String,
        /// Schema file.
        file: PathBuf,
        /// Schema type: AVRO (default) or JSON.
        #[arg(long = "type", default_value = "AVRO")]
        kind: String,
        /// Check against one version only (number or `latest`); default: every version the level names.
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Mark a version deprecated: still accepted, but counted.
    Deprecate {
        /// Subject.
        subject: String,
        /// Version number or `latest`.
        version: String,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Archive a version: records written with it go to the DLQ (`archived_schema`).
    Archive {
        /// Subject.
        subject: String,
        /// Version number or `latest`.
        version: String,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Make a deprecated or archived version active again.
    Activate {
        /// Subject.
        subject: String,
        /// Version number or `latest`.
        version: String,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Delete a subject, or one version; soft unless --permanent (which needs a soft delete first).
    Delete {
        /// Subject.
        subject: String,
        /// Only this version (number or `latest`).
        #[arg(long)]
        version: Option<String>,
        /// Hard delete.
        #[arg(long)]
        permanent: bool,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Records seen per subject version, with first and last time.
    Usage {
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// The registry's audit log: every change with time, actor, before and after.
    Audit {
        /// Newest entries to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        target: RegistryTarget,
    },
    /// Show or set a compatibility level (global without a subject).
    Config {
        /// Subject (omit for the global level).
        subject: Option<String>,
        /// New level: NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE.
        #[arg(long)]
        set: Option<String>,
        #[command(flatten)]
        target: RegistryTarget,
    },
}

#[derive(Args)]
pub(crate) struct RegistryTarget {
    /// Registry URL (default: the node's own, at its admin address).
    #[arg(long, env = "VIGIL_REGISTRY")]
    registry: Option<String>,
    #[command(flatten)]
    admin: crate::AdminTarget,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl RegistryTarget {
    fn client(&self) -> Result<RegistryClient> {
        let conn = self.admin.conn()?;
        let (agent, auth) = conn.parts();
        Ok(RegistryClient::with_agent(self.registry.as_deref().unwrap_or(&conn.base), agent, auth))
    }
}

/// Call the registry; an error answer becomes an error naming its code and message.
fn call(client: &RegistryClient, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let (status, v) = client.send(method, path, body).map_err(anyhow::Error::msg).with_context(|| {
        format!("cannot reach the registry at {} (is `vigil run` running? pass --admin ADDR, --config FILE or --registry URL)", client.base())
    })?;
    if status >= 400 {
        let code = v.get("error_code").map(Value::to_string).unwrap_or_else(|| status.to_string());
        let msg = v.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| v.to_string());
        bail!("registry answered HTTP {status} (error {code}): {msg}");
    }
    Ok(v)
}

fn schema_body(file: &PathBuf, kind: &str) -> Result<Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut body = json!({ "schema": text });
    if !kind.eq_ignore_ascii_case("AVRO") {
        body["schemaType"] = kind.to_ascii_uppercase().into();
    }
    Ok(body)
}

fn rfc3339(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

fn print(json_out: bool, v: &Value, human: impl FnOnce(&Value)) {
    if json_out {
        println!("{v}");
    } else {
        human(v);
    }
}

pub(crate) fn run(cmd: SchemaCmd) -> Result<ExitCode> {
    match cmd {
        SchemaCmd::Register { subject, file, kind, target } => {
            let c = target.client()?;
            let v = call(&c, "POST", &format!("/subjects/{}/versions", encode_segment(&subject)), Some(&schema_body(&file, &kind)?))?;
            print(target.json, &v, |v| {
                println!("registered {} under {subject}: id {} version {}", file.display(), v["id"], v["version"]);
                for w in v["warnings"].as_array().into_iter().flatten() {
                    println!("  lint warning: {}", w.as_str().unwrap_or_default());
                }
            });
        }
        SchemaCmd::Get { subject, version, id, target } => {
            let c = target.client()?;
            let v = match (id, subject) {
                (Some(id), _) => call(&c, "GET", &format!("/schemas/ids/{id}"), None)?,
                (None, Some(s)) => call(&c, "GET", &format!("/subjects/{}/versions/{}", encode_segment(&s), encode_segment(&version)), None)?,
                (None, None) => bail!("name a subject or pass --id"),
            };
            print(target.json, &v, |v| {
                if let Some(s) = v.get("subject") {
                    println!(
                        "{} version {} id {} ({})",
                        s.as_str().unwrap_or_default(),
                        v["version"],
                        v["id"],
                        v.get("schemaType").and_then(Value::as_str).unwrap_or("AVRO")
                    );
                }
                let schema: Value = v["schema"].as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Null);
                println!("{}", serde_json::to_string_pretty(&schema).unwrap_or_default());
            });
        }
        SchemaCmd::List { deleted, target } => {
            let c = target.client()?;
            let v = call(&c, "GET", &format!("/vigil/schemas?deleted={deleted}"), None)?;
            print(target.json, &v, |v| {
                let rows = v.as_array().cloned().unwrap_or_default();
                if rows.is_empty() {
                    println!("no schemas registered");
                    return;
                }
                println!("{:<32} {:>7} {:>6} {:<6} {:<10} {:>12}  LAST SEEN", "SUBJECT", "VERSION", "ID", "TYPE", "STATE", "RECORDS");
                for r in rows {
                    let state = if r["deleted"] == true { "deleted".to_string() } else { r["state"].as_str().unwrap_or_default().to_string() };
                    println!(
                        "{:<32} {:>7} {:>6} {:<6} {:<10} {:>12}  {}",
                        r["subject"].as_str().unwrap_or_default(),
                        r["version"].to_string(),
                        r["id"].to_string(),
                        r["schemaType"].as_str().unwrap_or_default(),
                        state,
                        r["records"].to_string(),
                        rfc3339(r["last_seen_ms"].as_i64().unwrap_or(0))
                    );
                }
            });
        }
        SchemaCmd::Check { subject, file, kind, version, target } => {
            let c = target.client()?;
            let path = match &version {
                Some(v) => format!("/compatibility/subjects/{}/versions/{}?verbose=true", encode_segment(&subject), encode_segment(v)),
                None => format!("/compatibility/subjects/{}/versions?verbose=true", encode_segment(&subject)),
            };
            let v = call(&c, "POST", &path, Some(&schema_body(&file, &kind)?))?;
            let ok = v["is_compatible"] == true;
            print(target.json, &v, |v| {
                println!("{}: {}", file.display(), if ok { "compatible" } else { "INCOMPATIBLE" });
                for m in v["messages"].as_array().into_iter().flatten() {
                    println!("  {}", m.as_str().unwrap_or_default());
                }
            });
            return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        SchemaCmd::Deprecate { subject, version, target } => lifecycle(&subject, &version, "deprecate", &target)?,
        SchemaCmd::Archive { subject, version, target } => lifecycle(&subject, &version, "archive", &target)?,
        SchemaCmd::Activate { subject, version, target } => lifecycle(&subject, &version, "activate", &target)?,
        SchemaCmd::Delete { subject, version, permanent, target } => {
            let c = target.client()?;
            let path = match &version {
                Some(v) => format!("/subjects/{}/versions/{}?permanent={permanent}", encode_segment(&subject), encode_segment(v)),
                None => format!("/subjects/{}?permanent={permanent}", encode_segment(&subject)),
            };
            let v = call(&c, "DELETE", &path, None)?;
            print(target.json, &v, |v| println!("{} {subject}: version(s) {v}", if permanent { "permanently deleted" } else { "soft-deleted" }));
        }
        SchemaCmd::Usage { target } => {
            let c = target.client()?;
            let v = call(&c, "GET", "/vigil/schemas", None)?;
            print(target.json, &v, |v| {
                println!("{:<32} {:>7} {:<10} {:>12}  {:<20}  LAST SEEN", "SUBJECT", "VERSION", "STATE", "RECORDS", "FIRST SEEN");
                for r in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<32} {:>7} {:<10} {:>12}  {:<20}  {}",
                        r["subject"].as_str().unwrap_or_default(),
                        r["version"].to_string(),
                        r["state"].as_str().unwrap_or_default(),
                        r["records"].to_string(),
                        rfc3339(r["first_seen_ms"].as_i64().unwrap_or(0)),
                        rfc3339(r["last_seen_ms"].as_i64().unwrap_or(0))
                    );
                }
            });
        }
        SchemaCmd::Audit { limit, target } => {
            let c = target.client()?;
            let v = call(&c, "GET", &format!("/vigil/schemas/audit?limit={limit}"), None)?;
            print(target.json, &v, |v| {
                for e in v.as_array().into_iter().flatten() {
                    let what = match (e["subject"].as_str(), e["version"].as_u64()) {
                        (Some(s), Some(n)) => format!("{s} v{n}"),
                        (Some(s), None) => s.to_string(),
                        _ => "global".into(),
                    };
                    println!(
                        "#{:<5} {}  {:<26} {:<24} {}  {} -> {}",
                        e["seq"].to_string(),
                        rfc3339(e["time_ms"].as_i64().unwrap_or(0)),
                        e["actor"].as_str().unwrap_or_default(),
                        e["action"].as_str().unwrap_or_default(),
                        what,
                        e["before"].as_str().unwrap_or("-"),
                        e["after"].as_str().unwrap_or("-")
                    );
                    for n in e["notes"].as_array().into_iter().flatten() {
                        println!("        note: {}", n.as_str().unwrap_or_default());
                    }
                }
            });
        }
        SchemaCmd::Config { subject, set, target } => {
            let c = target.client()?;
            let path = match &subject {
                Some(s) => format!("/config/{}", encode_segment(s)),
                None => "/config".into(),
            };
            let v = match &set {
                Some(level) => call(&c, "PUT", &path, Some(&json!({ "compatibility": level })))?,
                None => call(&c, "GET", &format!("{path}?defaultToGlobal=true"), None)?,
            };
            print(target.json, &v, |v| {
                let level = v.get("compatibilityLevel").or_else(|| v.get("compatibility")).and_then(Value::as_str).unwrap_or_default();
                println!("{}: {level}", subject.as_deref().unwrap_or("global"));
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn lifecycle(subject: &str, version: &str, action: &str, target: &RegistryTarget) -> Result<()> {
    let c = target.client()?;
    let v = call(&c, "POST", &format!("/vigil/schemas/{}/versions/{}/{action}", encode_segment(subject), encode_segment(version)), None)?;
    print(target.json, &v, |v| println!("{subject} version {} (id {}) is now {}", v["version"], v["id"], v["state"].as_str().unwrap_or_default()));
    Ok(())
}
