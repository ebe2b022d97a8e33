//! The schema registry: subjects, versions and global ids with Confluent Schema Registry's
//! semantics, Avro and JSON Schema, compatibility levels, lifecycle (active → deprecated →
//! archived), lint rules, per-version usage and an audit log.
//!
//! Layers, pure first:
//! - [`schema`]: parsing and canonical text; [`avro_compat`] / [`json_compat`]: reader/
//!   writer compatibility; [`compat`]: levels and transitivity; [`lint`]: lint rules.
//! - [`state`]: the registry state and every change to it, returning the store writes.
//! - [`Registry`] (here): applies a change's writes to RocksDB (column family `schemas`,
//!   one atomic batch per change) and only then publishes the new state.
//! - [`rest`]: Confluent's REST API on the admin listener; [`wire`]: the Confluent framing;
//!   [`resolver`]: what the validation path uses to read a schema id, from this registry or
//!   an external one.
pub mod avro_compat;
pub mod compat;
pub mod json_compat;
pub mod lint;
pub mod resolver;
pub mod rest;
pub mod schema;
pub mod state;
pub mod wire;

use schema::{ParsedSchema, SchemaType};
use state::{AuditEntry, Change, Lifecycle, Limits, Registered, State, VersionInfo, VersionSel};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use vigil_config::{Compatibility, SchemaRegistryConfig};
use vigil_runtime::store::{Op, Store};

/// Errors of the registry, each with Confluent's HTTP status and error code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402.
    #[error("Version {version} not found for subject '{subject}'.")]
    VersionNotFound {
        /// Subject.
        subject: String,
        /// Version as requested.
        version: String,
    },
    /// 40403.
    #[error("Schema {} not found.", .0.map(|i| i.to_string()).unwrap_or_default())]
    SchemaNotFound(Option<u32>),
    /// 40404.
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    /// 40405.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    /// 40406.
    #[error("Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently")]
    VersionSoftDeleted {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// 40407.
    #[error("Subject '{subject}' Version {version} was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted {
        /// Subject.
        subject: String,
        /// Version.
        version: u32,
    },
    /// 40408.
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectLevelNotConfigured(String),
    /// 409.
    #[error("Schema being registered is incompatible with an earlier schema for subject at level {level}, details: [{}]", .messages.join("; "))]
    Incompatible {
        /// Level checked.
        level: Compatibility,
        /// Why.
        messages: Vec<String>,
    },
    /// 40901: a lifecycle move that does not apply.
    #[error("{0}")]
    Lifecycle(String),
    /// 42201.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// 42201, lint rules set to `block`.
    #[error("Schema violates lint rules: {}", .0.join("; "))]
    LintBlocked(Vec<String>),
    /// 42202.
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    /// 42203.
    #[error("Invalid compatibility level '{0}'. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive")]
    InvalidCompatibility(String),
    /// 42208.
    #[error("The specified subject '{0}' is not valid (1 to 255 characters, no control characters)")]
    InvalidSubject(String),
    /// 42210: a configured limit.
    #[error("Limit reached: {0}")]
    Limit(String),
    /// 50001.
    #[error("Error in the backend data store: {0}")]
    Store(String),
}

impl RegistryError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            RegistryError::SubjectNotFound(_)
            | RegistryError::VersionNotFound { .. }
            | RegistryError::SchemaNotFound(_)
            | RegistryError::SubjectSoftDeleted(_)
            | RegistryError::SubjectNotSoftDeleted(_)
            | RegistryError::VersionSoftDeleted { .. }
            | RegistryError::VersionNotSoftDeleted { .. }
            | RegistryError::SubjectLevelNotConfigured(_) => 404,
            RegistryError::Incompatible { .. } | RegistryError::Lifecycle(_) => 409,
            RegistryError::InvalidSchema(_)
            | RegistryError::LintBlocked(_)
            | RegistryError::InvalidVersion(_)
            | RegistryError::InvalidCompatibility(_)
            | RegistryError::InvalidSubject(_)
            | RegistryError::Limit(_) => 422,
            RegistryError::Store(_) => 500,
        }
    }

    /// Confluent's `error_code`.
    pub fn code(&self) -> u32 {
        match self {
            RegistryError::SubjectNotFound(_) => 40401,
            RegistryError::VersionNotFound { .. } => 40402,
            RegistryError::SchemaNotFound(_) => 40403,
            RegistryError::SubjectSoftDeleted(_) => 40404,
            RegistryError::SubjectNotSoftDeleted(_) => 40405,
            RegistryError::VersionSoftDeleted { .. } => 40406,
            RegistryError::VersionNotSoftDeleted { .. } => 40407,
            RegistryError::SubjectLevelNotConfigured(_) => 40408,
            RegistryError::Incompatible { .. } => 409,
            RegistryError::Lifecycle(_) => 40901,
            RegistryError::InvalidSchema(_) | RegistryError::LintBlocked(_) => 42201,
            RegistryError::InvalidVersion(_) => 42202,
            RegistryError::InvalidCompatibility(_) => 42203,
            RegistryError::InvalidSubject(_) => 42208,
            RegistryError::Limit(_) => 42210,
            RegistryError::Store(_) => 50001,
        }
    }
}

/// Key/value records, in key order.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Where the registry keeps its records.
pub trait Storage: Send + Sync {
    /// Every record with a key starting with `prefix`, in key order.
    ///
    /// # Errors
    /// A message saying what failed.
    fn scan(&self, prefix: &[u8]) -> Result<Records, String>;
    /// Apply writes atomically.
    ///
    /// # Errors
    /// A message saying what failed; then nothing was written.
    fn write(&self, ops: &[Op]) -> Result<(), String>;
}

/// Column family of the registry in the node's store.
pub const COLUMN_FAMILY: &str = "schemas";

impl Storage for Store {
    fn scan(&self, prefix: &[u8]) -> Result<Records, String> {
        Store::scan(self, COLUMN_FAMILY, prefix).map_err(|e| e.to_string())
    }

    fn write(&self, ops: &[Op]) -> Result<(), String> {
        self.write_ops(COLUMN_FAMILY, ops).map_err(|e| e.to_string())
    }
}

/// In-memory storage, for tests and tools.
#[derive(Default)]
pub struct MemStorage(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>);

impl Storage for MemStorage {
    fn scan(&self, prefix: &[u8]) -> Result<Records, String> {
        let m = self.0.lock().map_err(|_| "poisoned".to_string())?;
        Ok(m.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn write(&self, ops: &[Op]) -> Result<(), String> {
        let mut m = self.0.lock().map_err(|_| "poisoned".to_string())?;
        for (k, v) in ops {
            match v {
                Some(v) => m.insert(k.clone(), v.clone()),
                None => m.remove(k),
            };
        }
        Ok(())
    }
}

/// Count a registration by outcome in `vigil_schema_registrations_total`.
fn count_registration(res: Result<Registered, RegistryError>) -> Result<Registered, RegistryError> {
    let outcome = match &res {
        Ok(r) if r.existing => "existing",
        Ok(_) => "registered",
        Err(RegistryError::Incompatible { .. }) => "incompatible",
        Err(RegistryError::LintBlocked(_)) => "lint_blocked",
        Err(RegistryError::InvalidSchema(_)) => "invalid",
        Err(_) => "error",
    };
    metrics::counter!("vigil_schema_registrations_total", "outcome" => outcome).increment(1);
    res
}

/// Records seen per version since the start, with first and last time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub struct Usage {
    /// Records read with this version.
    pub records: u64,
    /// First record, ms since epoch.
    pub first_seen_ms: i64,
    /// Last record, ms since epoch.
    pub last_seen_ms: i64,
}

type UsageKey = (String, u32);

fn k_usage(subject: &str, version: u32) -> Vec<u8> {
    let mut k = b"u/".to_vec();
    k.extend_from_slice(subject.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// The built-in registry: state in memory, every change written through to storage first.
pub struct Registry {
    state: RwLock<Arc<State>>,
    storage: Arc<dyn Storage>,
    cfg: SchemaRegistryConfig,
    generation: AtomicU64,
    usage: Mutex<(BTreeMap<UsageKey, Usage>, bool)>,
}

impl Registry {
    /// Load the registry from `storage`.
    ///
    /// # Errors
    /// [`RegistryError::Store`] if a record cannot be read or parsed.
    pub fn open(storage: Arc<dyn Storage>, cfg: SchemaRegistryConfig) -> Result<Self, RegistryError> {
        let items = storage.scan(b"").map_err(RegistryError::Store)?;
        let state = State::load(&items)?;
        let mut usage = BTreeMap::new();
        for (k, v) in items.iter().filter(|(k, _)| k.starts_with(b"u/")) {
            let rest = &k[2..];
            let Some(nul) = rest.iter().position(|b| *b == 0) else { continue };
            let (Ok(subject), Ok(ver)) = (std::str::from_utf8(&rest[..nul]), <[u8; 4]>::try_from(&rest[nul + 1..])) else { continue };
            if let Ok(u) = vigil_runtime::store::decode::<Usage>("usage", v) {
                usage.insert((subject.to_string(), u32::from_be_bytes(ver)), u);
            }
        }
        Ok(Self::assemble(storage, cfg, state, usage))
    }

    /// A registry in memory with default settings (tests, tools).
    pub fn in_memory() -> Self {
        Self::assemble(Arc::new(MemStorage::default()), SchemaRegistryConfig::default(), State::empty(), BTreeMap::new())
    }

    fn assemble(storage: Arc<dyn Storage>, cfg: SchemaRegistryConfig, state: State, usage: BTreeMap<UsageKey, Usage>) -> Self {
        Self { state: RwLock::new(Arc::new(state)), storage, cfg, generation: AtomicU64::new(1), usage: Mutex::new((usage, false)) }
    }

    /// Settings.
    pub fn config(&self) -> &SchemaRegistryConfig {
        &self.cfg
    }

    /// The current state (a snapshot; changes publish a new one).
    pub fn snapshot(&self) -> Arc<State> {
        self.state.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Increases with every change; readers cache by it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn limits(&self) -> Limits {
        Limits { schemas_max: self.cfg.max_schemas, versions_per_subject_max: self.cfg.max_versions_per_subject }
    }

    /// Apply a change: run it on a copy, write its records, then publish the copy.
    fn change<T>(&self, f: impl FnOnce(&mut State) -> Result<(T, Vec<Op>), RegistryError>) -> Result<T, RegistryError> {
        let mut guard = self.state.write().map_err(|_| RegistryError::Store("registry lock poisoned".into()))?;
        let mut next = State::clone(&guard);
        let (out, ops) = f(&mut next)?;
        if !ops.is_empty() {
            self.storage.write(&ops).map_err(RegistryError::Store)?;
            *guard = Arc::new(next);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(out)
    }

    /// Parse schema text, mapping failures to 42201.
    ///
    /// # Errors
    /// [`RegistryError::InvalidSchema`].
    pub fn parse(kind: Option<&str>, text: &str) -> Result<Arc<ParsedSchema>, RegistryError> {
        let kind = SchemaType::parse(kind).map_err(RegistryError::InvalidSchema)?;
        ParsedSchema::parse(kind, text).map(Arc::new).map_err(RegistryError::InvalidSchema)
    }

    /// Register a schema (see [`State::register`]); records the outcome metric.
    ///
    /// # Errors
    /// As [`State::register`]; [`RegistryError::InvalidSchema`] for defaults that do not
    /// match their types when `avro_validate_defaults` is on.
    pub fn register(&self, actor: &str, subject: &str, schema: Arc<ParsedSchema>) -> Result<Registered, RegistryError> {
        count_registration(self.register_parsed(actor, subject, schema))
    }

    /// Parse schema text of `kind` (Confluent's `schemaType`) and register it; a schema
    /// that does not parse counts as an `invalid` registration.
    ///
    /// # Errors
    /// [`RegistryError::InvalidSchema`], or as [`Registry::register`].
    pub fn register_text(&self, actor: &str, subject: &str, kind: Option<&str>, text: &str) -> Result<Registered, RegistryError> {
        count_registration(Self::parse(kind, text).and_then(|schema| self.register_parsed(actor, subject, schema)))
    }

    fn register_parsed(&self, actor: &str, subject: &str, schema: Arc<ParsedSchema>) -> Result<Registered, RegistryError> {
        if self.cfg.avro_validate_defaults {
            schema.check_defaults().map_err(RegistryError::InvalidSchema)?;
        }
        let c = Change { now_ms: vigil_runtime::now_ms(), actor };
        let rules = self.cfg.lint.for_subject(subject);
        let (default, limits) = (self.cfg.default_compatibility, self.limits());
        self.change(|st| st.register(&c, subject, schema, default, &rules, limits))
    }

    /// Set a compatibility level (`subject = None`: global).
    ///
    /// # Errors
    /// As [`State::set_config`].
    pub fn set_config(&self, actor: &str, subject: Option<&str>, level: Compatibility) -> Result<(), RegistryError> {
        let c = Change { now_ms: vigil_runtime::now_ms(), actor };
        self.change(|st| st.set_config(&c, subject, level).map(|ops| ((), ops)))
    }

    /// Remove a level; returns the level it had.
    ///
    /// # Errors
    /// As [`State::delete_config`].
    pub fn delete_config(&self, actor: &str, subject: Option<&str>) -> Result<Compatibility, RegistryError> {
        let c = Change { now_ms: vigil_runtime::now_ms(), actor };
        let default = self.cfg.default_compatibility;
        self.change(|st| st.delete_config(&c, subject, default))
    }

    /// Delete a subject (soft or permanent).
    ///
    /// # Errors
    /// As [`State::delete_subject`].
    pub fn delete_subject(&self, actor: &str, subject: &str, permanent: bool) -> Result<Vec<u32>, RegistryError> {
        let c = Change { now_ms: vigil_runtime::now_ms(), actor };
        self.change(|st| st.delete_subject(&c, subject, permanent))
    }

    /// Delete a version (soft or permanent).
    ///
    /// # Errors
    /// As [`State::delete_version`].
    pub fn delete_version(&self, actor: &str, subject: &str, sel: VersionSel, permanent: bool) -> Result<u32, RegistryError> {
        let c = Change { now_ms: vigil_runtime::now_ms(), actor };
        self.change(|st| st.delete_version(&c, subject, sel, permanent))
    }

    /// Move a version along its lifecycle.
    ///
    /// # Errors
    /// As [`State::set_lifecycle`].
    pub fn set_lifecycle(&self, actor: &str, subject: &str, sel: VersionSel, to: Lifecycle) -> Result<VersionInfo, RegistryError> {
        let c = Change { now_ms: vigil_runtime::now_ms(), actor };
        self.change(|st| st.set_lifecycle(&c, subject, sel, to))
    }

    /// Archive the deprecated versions `[schema_registry.lifecycle]` says are due. Returns
    /// what was archived.
    ///
    /// # Errors
    /// [`RegistryError::Store`] if writing fails.
    pub fn apply_lifecycle_policy(&self, now_ms: i64) -> Result<Vec<(String, u32, String)>, RegistryError> {
        let usage = self.usage();
        let due = self.snapshot().due_for_archive(&self.cfg.lifecycle, now_ms, |s, v| usage.get(&(s.to_string(), v)).map(|u| u.last_seen_ms));
        let mut done = Vec::new();
        for (subject, version, why) in due {
            let c = Change { now_ms, actor: "policy" };
            self.change(|st| st.set_lifecycle(&c, &subject, VersionSel::Number(version), Lifecycle::Archived))?;
            tracing::info!(%subject, version, reason = %why, "schema version archived by policy");
            done.push((subject, version, why));
        }
        Ok(done)
    }

    /// Count records read per `(subject, version)` at `now_ms`.
    pub fn record_usage(&self, counts: &BTreeMap<(Arc<str>, u32), u64>, now_ms: i64) {
        if counts.is_empty() {
            return;
        }
        if let Ok(mut g) = self.usage.lock() {
            for ((subject, version), n) in counts {
                let u = g.0.entry((subject.to_string(), *version)).or_insert(Usage { records: 0, first_seen_ms: now_ms, last_seen_ms: now_ms });
                u.records += n;
                u.last_seen_ms = now_ms;
            }
            g.1 = true;
        }
    }

    /// Usage per `(subject, version)`.
    pub fn usage(&self) -> BTreeMap<UsageKey, Usage> {
        self.usage.lock().map(|g| g.0.clone()).unwrap_or_default()
    }

    /// Persist usage if it changed since the last flush.
    ///
    /// # Errors
    /// [`RegistryError::Store`] if writing fails.
    pub fn flush_usage(&self) -> Result<(), RegistryError> {
        let ops: Vec<Op> = {
            let Ok(mut g) = self.usage.lock() else { return Ok(()) };
            if !g.1 {
                return Ok(());
            }
            g.1 = false;
            g.0.iter().filter_map(|((s, v), u)| vigil_runtime::store::encode("usage", u).ok().map(|b| (k_usage(s, *v), Some(b)))).collect()
        };
        self.storage.write(&ops).map_err(RegistryError::Store)
    }

    /// The newest `limit` audit entries, oldest first.
    ///
    /// # Errors
    /// [`RegistryError::Store`] if reading fails.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, RegistryError> {
        let items = self.storage.scan(state::AUDIT_PREFIX).map_err(RegistryError::Store)?;
        let skip = items.len().saturating_sub(limit);
        items
            .iter()
            .skip(skip)
            .map(|(_, v)| vigil_runtime::store::decode::<AuditEntry>("audit entry", v).map_err(|e| RegistryError::Store(e.to_string())))
            .collect()
    }
}

#[cfg(test)]
mod tests;
