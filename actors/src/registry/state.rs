//! The registry's state and every change to it, as pure logic: a change checks its
//! preconditions, updates the state and returns the store writes that persist it (one
//! atomic batch, audit entry included). Nothing here does I/O; [`super::Registry`] applies
//! the writes and swaps the state in only when they succeeded.
//!
//! Confluent's rules: global ids are shared by identical schemas across subjects and never
//! reused; versions count up per subject; a soft delete hides a version (its id still
//! resolves), a hard delete (`permanent`) needs a soft delete first; compatibility is
//! checked against the non-deleted versions.
use super::compat;
use super::lint::{self, Finding};
use super::schema::{ParsedSchema, SchemaType};
use super::RegistryError as E;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use vigil_config::{Compatibility, LifecyclePolicy, LintLevel, LintRules};
use vigil_runtime::store::{self, Op};

/// Lifecycle of a subject version: active → deprecated → archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// In use; new data may be written with it.
    Active,
    /// Still accepted, but counted (`vigil_deprecated_schema_records_total`).
    Deprecated,
    /// Rejected at ingest (DLQ reason `archived_schema`).
    Archived,
}

impl Lifecycle {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Active => "active",
            Lifecycle::Deprecated => "deprecated",
            Lifecycle::Archived => "archived",
        }
    }
}

/// A schema as stored under its global id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSchema {
    /// Global id.
    pub id: u32,
    /// Type.
    pub kind: SchemaType,
    /// Canonical text.
    pub text: String,
}

/// One version of a subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Subject.
    pub subject: String,
    /// Version number, from 1.
    pub version: u32,
    /// Global schema id.
    pub id: u32,
    /// Soft-deleted.
    pub deleted: bool,
    /// Lifecycle state.
    pub state: Lifecycle,
    /// When it was registered, ms since epoch.
    pub registered_ms: i64,
    /// When its lifecycle state last changed, ms since epoch.
    pub state_changed_ms: i64,
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Sequence number, from 1.
    pub seq: u64,
    /// When, ms since epoch.
    pub time_ms: i64,
    /// Who (address of the caller until identities exist, or `policy` / `node`).
    pub actor: String,
    /// `register`, `config`, `delete_config`, `deprecate`, `archive`, `activate`,
    /// `delete_subject`, `delete_version`, with `_permanent` for hard deletes.
    pub action: String,
    /// Subject, if any (global config has none).
    pub subject: Option<String>,
    /// Version, if one.
    pub version: Option<u32>,
    /// State before, as JSON text.
    pub before: Option<String>,
    /// State after, as JSON text.
    pub after: Option<String>,
    /// Lint warnings and other notes.
    pub notes: Vec<String>,
}

/// A schema with its parsed form.
#[derive(Debug)]
pub struct Entry {
    /// As stored.
    pub stored: StoredSchema,
    /// Parsed.
    pub parsed: Arc<ParsedSchema>,
}

#[derive(Debug, Clone, Default)]
struct Subject {
    versions: BTreeMap<u32, VersionInfo>,
    compat: Option<Compatibility>,
}

impl Subject {
    fn live(&self) -> impl DoubleEndedIterator<Item = &VersionInfo> {
        self.versions.values().filter(|v| !v.deleted)
    }
}

/// Which version a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSel {
    /// The newest non-deleted version (`latest` or `-1`).
    Latest,
    /// A version number.
    Number(u32),
}

impl VersionSel {
    /// Parse a path segment: `latest`, `-1` or 1..=2^31-1.
    ///
    /// # Errors
    /// [`E::InvalidVersion`] otherwise.
    pub fn parse(s: &str) -> Result<Self, E> {
        match s {
            "latest" | "-1" => Ok(VersionSel::Latest),
            _ => match s.parse::<u32>() {
                Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionSel::Number(n)),
                _ => Err(E::InvalidVersion(s.chars().take(64).collect())),
            },
        }
    }
}

/// Limits of the registry.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most distinct schemas.
    pub schemas_max: usize,
    /// Most live versions per subject.
    pub versions_per_subject_max: usize,
}

/// Result of a registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// Global id.
    pub id: u32,
    /// Version in the subject.
    pub version: u32,
    /// Whether the schema was already registered there (nothing changed).
    pub existing: bool,
    /// Lint warnings.
    pub warnings: Vec<String>,
}

/// What the validation path needs to read a record with a given schema id as a subject.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// Subject.
    pub subject: String,
    /// Version of the subject carrying the writer's id.
    pub version: u32,
    /// Its lifecycle state.
    pub state: Lifecycle,
    /// Writer schema.
    pub writer: Arc<ParsedSchema>,
    /// Reader schema (latest active version) when it differs from the writer.
    pub reader: Option<Arc<ParsedSchema>>,
}

/// Why a schema id cannot be read as a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// No schema has this id.
    UnknownId,
    /// The id exists but not in this subject.
    WrongSubject,
}

/// The whole registry state. Cheap to clone (schemas are shared).
#[derive(Debug, Clone, Default)]
pub struct State {
    schemas: BTreeMap<u32, Arc<Entry>>,
    by_text: HashMap<(SchemaType, String), u32>,
    subjects: BTreeMap<String, Subject>,
    global: Option<Compatibility>,
    next_id: u32,
    audit_seq: u64,
}

// ------------------------------------------------------------------ store keys

fn k_schema(id: u32) -> Vec<u8> {
    let mut k = b"s/".to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn k_version(subject: &str, version: u32) -> Vec<u8> {
    let mut k = b"v/".to_vec();
    k.extend_from_slice(subject.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn k_config(subject: &str) -> Vec<u8> {
    let mut k = b"c/".to_vec();
    k.extend_from_slice(subject.as_bytes());
    k
}

const K_GLOBAL: &[u8] = b"g/compat";
const K_NEXT_ID: &[u8] = b"n/next_id";
/// Prefix of audit entries (`a/` + be u64 seq).
pub const AUDIT_PREFIX: &[u8] = b"a/";

fn k_audit(seq: u64) -> Vec<u8> {
    let mut k = AUDIT_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn enc<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>, E> {
    store::encode(what, v).map_err(|e| E::Store(e.to_string()))
}

fn subject_ok(s: &str) -> Result<(), E> {
    if s.is_empty() || s.len() > 255 || s.chars().any(char::is_control) {
        return Err(E::InvalidSubject(s.chars().take(64).collect()));
    }
    Ok(())
}

/// Context of one change: when, by whom.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// Time, ms since epoch.
    pub now_ms: i64,
    /// Actor recorded in the audit log.
    pub actor: &'a str,
}

impl State {
    /// A registry with nothing in it; the first id handed out is 1.
    pub fn empty() -> State {
        State { next_id: 1, ..State::default() }
    }

    /// Rebuild the state from the store's `(key, value)` pairs.
    ///
    /// # Errors
    /// [`E::Store`] naming the record that does not decode or parse.
    pub fn load(items: &[(Vec<u8>, Vec<u8>)]) -> Result<State, E> {
        let mut st = State::empty();
        let bad = |what: &str, e: &dyn std::fmt::Display| E::Store(format!("corrupt registry record {what}: {e}"));
        for (k, v) in items {
            match k.get(..2) {
                Some(b"s/") => {
                    let s: StoredSchema = store::decode("schema", v).map_err(|e| bad("schema", &e))?;
                    let parsed = ParsedSchema::parse(s.kind, &s.text).map_err(|e| bad(&format!("schema {}", s.id), &e))?;
                    st.by_text.insert((s.kind, s.text.clone()), s.id);
                    st.next_id = st.next_id.max(s.id + 1);
                    st.schemas.insert(s.id, Arc::new(Entry { stored: s, parsed: Arc::new(parsed) }));
                }
                Some(b"v/") => {
                    let vi: VersionInfo = store::decode("version", v).map_err(|e| bad("version", &e))?;
                    st.subjects.entry(vi.subject.clone()).or_default().versions.insert(vi.version, vi);
                }
                Some(b"c/") => {
                    let subject = String::from_utf8_lossy(&k[2..]).to_string();
                    let level = Compatibility::parse(&String::from_utf8_lossy(v)).ok_or_else(|| bad("config", &"unknown level"))?;
                    st.subjects.entry(subject).or_default().compat = Some(level);
                }
                Some(b"g/") if k == K_GLOBAL => st.global = Compatibility::parse(&String::from_utf8_lossy(v)),
                Some(b"n/") if k == K_NEXT_ID => {
                    let b: [u8; 4] = v.as_slice().try_into().map_err(|_| bad("next id", &"length"))?;
                    st.next_id = st.next_id.max(u32::from_be_bytes(b));
                }
                Some(b"a/") => {
                    let b: [u8; 8] = k[2..].try_into().map_err(|_| bad("audit key", &"length"))?;
                    st.audit_seq = st.audit_seq.max(u64::from_be_bytes(b));
                }
                _ => {}
            }
        }
        // A subject with only a config and no versions stays, as in Confluent.
        Ok(st)
    }

    // One audit entry's fields, each a parameter: called once per kind of change.
    #[allow(clippy::too_many_arguments)]
    fn audit(
        &mut self,
        ops: &mut Vec<Op>,
        c: &Change<'_>,
        action: &str,
        subject: Option<&str>,
        version: Option<u32>,
        before: Option<String>,
        after: Option<String>,
        notes: Vec<String>,
    ) -> Result<(), E> {
        self.audit_seq += 1;
        let e = AuditEntry {
            seq: self.audit_seq,
            time_ms: c.now_ms,
            actor: c.actor.to_string(),
            action: action.into(),
            subject: subject.map(str::to_string),
            version,
            before,
            after,
            notes,
        };
        ops.push((k_audit(e.seq), Some(enc("audit entry", &e)?)));
        Ok(())
    }

    fn put_version(ops: &mut Vec<Op>, v: &VersionInfo) -> Result<(), E> {
        ops.push((k_version(&v.subject, v.version), Some(enc("version", v)?)));
        Ok(())
    }

    // ------------------------------------------------------------ queries

    /// The global level (or `default` when none was set).
    pub fn global_level(&self, default: Compatibility) -> Compatibility {
        self.global.unwrap_or(default)
    }

    /// Whether a global level was set explicitly.
    pub fn global_set(&self) -> Option<Compatibility> {
        self.global
    }

    /// A subject's own level, if set.
    pub fn subject_level(&self, subject: &str) -> Option<Compatibility> {
        self.subjects.get(subject).and_then(|s| s.compat)
    }

    /// The level that applies to a subject.
    pub fn effective_level(&self, subject: &str, default: Compatibility) -> Compatibility {
        self.subject_level(subject).unwrap_or(self.global_level(default))
    }

    /// Subjects with at least one version (non-deleted unless `deleted`).
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        self.subjects.iter().filter(|(_, s)| s.versions.values().any(|v| deleted || !v.deleted)).map(|(k, _)| k.clone()).collect()
    }

    /// A subject with at least one version (a non-deleted one unless `deleted`).
    fn subject_with_versions(&self, subject: &str, deleted: bool) -> Result<&Subject, E> {
        self.subjects.get(subject).filter(|s| s.versions.values().any(|v| deleted || !v.deleted)).ok_or_else(|| E::SubjectNotFound(subject.into()))
    }

    /// Version numbers of a subject.
    ///
    /// # Errors
    /// [`E::SubjectNotFound`] when it has none.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, E> {
        let s = self.subject_with_versions(subject, deleted)?;
        Ok(s.versions.values().filter(|v| deleted || !v.deleted).map(|v| v.version).collect())
    }

    /// Every version of every subject (for listings), non-deleted unless `deleted`.
    pub fn all_versions(&self, deleted: bool) -> Vec<VersionInfo> {
        self.subjects.values().flat_map(|s| s.versions.values()).filter(|v| deleted || !v.deleted).cloned().collect()
    }

    /// One version.
    ///
    /// # Errors
    /// [`E::SubjectNotFound`] / [`E::VersionNotFound`].
    pub fn version(&self, subject: &str, sel: VersionSel, deleted: bool) -> Result<VersionInfo, E> {
        let s = self.subject_with_versions(subject, deleted)?;
        let found = match sel {
            VersionSel::Latest => s.versions.values().rev().find(|v| deleted || !v.deleted),
            VersionSel::Number(n) => s.versions.get(&n).filter(|v| deleted || !v.deleted),
        };
        found.cloned().ok_or_else(|| E::VersionNotFound { subject: subject.into(), version: sel_label(sel) })
    }

    /// A schema by global id.
    pub fn schema(&self, id: u32) -> Option<Arc<Entry>> {
        self.schemas.get(&id).cloned()
    }

    /// `(subject, version)` pairs that use a schema id (non-deleted unless `deleted`).
    pub fn id_versions(&self, id: u32, deleted: bool) -> Vec<(String, u32)> {
        self.subjects
            .values()
            .flat_map(|s| s.versions.values())
            .filter(|v| v.id == id && (deleted || !v.deleted))
            .map(|v| (v.subject.clone(), v.version))
            .collect()
    }

    /// Find a schema among a subject's versions (`POST /subjects/{s}`).
    ///
    /// # Errors
    /// [`E::SubjectNotFound`] / [`E::SchemaNotFound`].
    pub fn lookup(&self, subject: &str, schema: &ParsedSchema, deleted: bool) -> Result<VersionInfo, E> {
        let s = self.subject_with_versions(subject, deleted)?;
        let id = self.by_text.get(&(schema.kind(), schema.canonical().to_string())).ok_or(E::SchemaNotFound(None))?;
        s.versions.values().rev().find(|v| v.id == *id && (deleted || !v.deleted)).cloned().ok_or(E::SchemaNotFound(None))
    }

    /// How a record written with schema `id` reads as `subject`.
    ///
    /// # Errors
    /// [`Unresolved`] when the id is unknown or not one of the subject's.
    pub fn resolve(&self, subject: &str, id: u32) -> Result<Resolution, Unresolved> {
        let entry = self.schemas.get(&id).ok_or(Unresolved::UnknownId)?;
        let s = self.subjects.get(subject).ok_or(Unresolved::WrongSubject)?;
        // Prefer a live version; a soft-deleted one still reads (Confluent resolves ids of deleted versions).
        let v = s.versions.values().rev().filter(|v| v.id == id).min_by_key(|v| v.deleted).ok_or(Unresolved::WrongSubject)?;
        let reader = s
            .live()
            .rev()
            .find(|v| v.state == Lifecycle::Active)
            .or_else(|| s.live().rev().find(|v| v.state == Lifecycle::Deprecated))
            .filter(|r| r.id != id)
            .and_then(|r| self.schemas.get(&r.id))
            .filter(|r| r.stored.kind == entry.stored.kind)
            .map(|r| r.parsed.clone());
        Ok(Resolution { subject: subject.into(), version: v.version, state: v.state, writer: entry.parsed.clone(), reader })
    }

    /// Check a schema against a subject at its level (`POST /compatibility/...`).
    /// `sel = None` checks against every version the level names.
    ///
    /// # Errors
    /// [`E::SubjectNotFound`] / [`E::VersionNotFound`] for a named version that does not exist.
    pub fn check_compat(&self, subject: &str, sel: Option<VersionSel>, schema: &ParsedSchema, default: Compatibility) -> Result<Vec<String>, E> {
        let level = self.effective_level(subject, default);
        let prev: Vec<(u32, Arc<ParsedSchema>)> = match sel {
            Some(sel) => {
                let v = self.version(subject, sel, false)?;
                self.schemas.get(&v.id).map(|e| vec![(v.version, e.parsed.clone())]).unwrap_or_default()
            }
            None => self.live_schemas(subject),
        };
        let refs: Vec<(u32, &ParsedSchema)> = prev.iter().map(|(v, p)| (*v, p.as_ref())).collect();
        // A named version is checked directly, whatever "transitive" means for the level.
        let level = if sel.is_some() { non_transitive(level) } else { level };
        Ok(compat::check(level, schema, &refs))
    }

    fn live_schemas(&self, subject: &str) -> Vec<(u32, Arc<ParsedSchema>)> {
        self.subjects
            .get(subject)
            .map(|s| s.live().filter_map(|v| self.schemas.get(&v.id).map(|e| (v.version, e.parsed.clone()))).collect())
            .unwrap_or_default()
    }

    // ------------------------------------------------------------ changes

    /// Register a schema under a subject (`POST /subjects/{s}/versions`).
    ///
    /// # Errors
    /// [`E::InvalidSubject`], [`E::Incompatible`], [`E::LintBlocked`], [`E::Limit`].
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        c: &Change<'_>,
        subject: &str,
        schema: Arc<ParsedSchema>,
        default: Compatibility,
        rules: &LintRules,
        limits: Limits,
    ) -> Result<(Registered, Vec<Op>), E> {
        subject_ok(subject)?;
        let key = (schema.kind(), schema.canonical().to_string());
        let known_id = self.by_text.get(&key).copied();
        if let Some(id) = known_id {
            if let Some(v) = self.subjects.get(subject).and_then(|s| s.live().rev().find(|v| v.id == id)) {
                return Ok((Registered { id, version: v.version, existing: true, warnings: Vec::new() }, Vec::new()));
            }
        }
        let level = self.effective_level(subject, default);
        let prev = self.live_schemas(subject);
        let refs: Vec<(u32, &ParsedSchema)> = prev.iter().map(|(v, p)| (*v, p.as_ref())).collect();
        let problems = compat::check(level, &schema, &refs);
        if !problems.is_empty() {
            return Err(E::Incompatible { level, messages: problems });
        }
        let findings = lint::lint(rules, level, &schema, prev.last().map(|(_, p)| p.as_ref()));
        let (blocking, warnings): (Vec<Finding>, Vec<Finding>) = findings.into_iter().partition(|f| f.level == LintLevel::Block);
        if !blocking.is_empty() {
            return Err(E::LintBlocked(blocking.into_iter().map(|f| format!("{}: {}", f.rule, f.message)).collect()));
        }
        let warnings: Vec<String> = warnings.into_iter().map(|f| format!("{}: {}", f.rule, f.message)).collect();
        if prev.len() >= limits.versions_per_subject_max {
            return Err(E::Limit(format!("subject `{subject}` already has {} versions (schema_registry.max_versions_per_subject)", prev.len())));
        }
        let mut ops = Vec::new();
        let id = match known_id {
            Some(id) => id,
            None => {
                if self.schemas.len() >= limits.schemas_max {
                    return Err(E::Limit(format!("the registry holds {} schemas (schema_registry.max_schemas)", self.schemas.len())));
                }
                let id = self.next_id.max(1);
                self.next_id = id + 1;
                let stored = StoredSchema { id, kind: schema.kind(), text: schema.canonical().to_string() };
                ops.push((k_schema(id), Some(enc("schema", &stored)?)));
                ops.push((K_NEXT_ID.to_vec(), Some(self.next_id.to_be_bytes().to_vec())));
                self.by_text.insert(key, id);
                self.schemas.insert(id, Arc::new(Entry { stored, parsed: schema.clone() }));
                id
            }
        };
        let subj = self.subjects.entry(subject.to_string()).or_default();
        let version = subj.versions.keys().next_back().copied().unwrap_or(0) + 1;
        let vi =
            VersionInfo { subject: subject.into(), version, id, deleted: false, state: Lifecycle::Active, registered_ms: c.now_ms, state_changed_ms: c.now_ms };
        Self::put_version(&mut ops, &vi)?;
        subj.versions.insert(version, vi);
        let after = serde_json::json!({"version": version, "id": id, "schemaType": schema.kind().as_str()}).to_string();
        self.audit(&mut ops, c, "register", Some(subject), Some(version), None, Some(after), warnings.clone())?;
        Ok((Registered { id, version, existing: false, warnings }, ops))
    }

    /// Set the global level (`subject = None`) or a subject's.
    ///
    /// # Errors
    /// [`E::InvalidSubject`] for a bad subject name; [`E::Store`] if encoding fails.
    pub fn set_config(&mut self, c: &Change<'_>, subject: Option<&str>, level: Compatibility) -> Result<Vec<Op>, E> {
        let mut ops = Vec::new();
        let before = match subject {
            Some(s) => {
                subject_ok(s)?;
                let subj = self.subjects.entry(s.to_string()).or_default();
                let before = subj.compat.replace(level);
                ops.push((k_config(s), Some(level.as_str().as_bytes().to_vec())));
                before
            }
            None => {
                ops.push((K_GLOBAL.to_vec(), Some(level.as_str().as_bytes().to_vec())));
                self.global.replace(level)
            }
        };
        self.audit(&mut ops, c, "config", subject, None, before.map(|b| b.as_str().to_string()), Some(level.as_str().into()), Vec::new())?;
        Ok(ops)
    }

    /// Remove the global level (back to the default) or a subject's. Returns the level it had.
    ///
    /// # Errors
    /// [`E::SubjectNotFound`] when a subject has no level of its own and no versions.
    pub fn delete_config(&mut self, c: &Change<'_>, subject: Option<&str>, default: Compatibility) -> Result<(Compatibility, Vec<Op>), E> {
        let mut ops = Vec::new();
        let before = match subject {
            Some(s) => {
                let subj = self.subjects.get_mut(s).ok_or_else(|| E::SubjectNotFound(s.into()))?;
                let before = subj.compat.take().ok_or_else(|| E::SubjectLevelNotConfigured(s.into()))?;
                ops.push((k_config(s), None));
                if subj.versions.is_empty() {
                    self.subjects.remove(s);
                }
                before
            }
            None => {
                ops.push((K_GLOBAL.to_vec(), None));
                self.global.take().unwrap_or(default)
            }
        };
        self.audit(&mut ops, c, "delete_config", subject, None, Some(before.as_str().into()), None, Vec::new())?;
        Ok((before, ops))
    }

    /// Delete a subject: soft (hide every version) or, after a soft delete, permanent.
    /// Returns the versions deleted.
    ///
    /// # Errors
    /// [`E::SubjectNotFound`], [`E::SubjectSoftDeleted`] (soft delete twice),
    /// [`E::SubjectNotSoftDeleted`] (permanent without soft delete first).
    pub fn delete_subject(&mut self, c: &Change<'_>, subject: &str, permanent: bool) -> Result<(Vec<u32>, Vec<Op>), E> {
        let subj = self.subject_with_versions(subject, true)?;
        let live: Vec<u32> = subj.live().map(|v| v.version).collect();
        let mut ops = Vec::new();
        let deleted = if permanent {
            if !live.is_empty() {
                return Err(E::SubjectNotSoftDeleted(subject.into()));
            }
            let all: Vec<u32> = subj.versions.keys().copied().collect();
            for v in &all {
                ops.push((k_version(subject, *v), None));
            }
            let ids: Vec<u32> = subj.versions.values().map(|v| v.id).collect();
            if let Some(s) = self.subjects.get_mut(subject) {
                s.versions.clear();
                if s.compat.is_none() {
                    self.subjects.remove(subject);
                }
            }
            self.drop_unreferenced(&ids, &mut ops);
            all
        } else {
            if live.is_empty() {
                return Err(E::SubjectSoftDeleted(subject.into()));
            }
            let mut changed = Vec::new();
            if let Some(s) = self.subjects.get_mut(subject) {
                for v in s.versions.values_mut().filter(|v| !v.deleted) {
                    v.deleted = true;
                    changed.push(v.clone());
                }
            }
            for v in &changed {
                Self::put_version(&mut ops, v)?;
            }
            live
        };
        let action = if permanent { "delete_subject_permanent" } else { "delete_subject" };
        let before = serde_json::json!({ "versions": deleted }).to_string();
        self.audit(&mut ops, c, action, Some(subject), None, Some(before), None, Vec::new())?;
        Ok((deleted, ops))
    }

    /// Delete one version: soft, or permanent after a soft delete. Returns its number.
    ///
    /// # Errors
    /// [`E::SubjectNotFound`], [`E::VersionNotFound`], [`E::VersionSoftDeleted`],
    /// [`E::VersionNotSoftDeleted`].
    pub fn delete_version(&mut self, c: &Change<'_>, subject: &str, sel: VersionSel, permanent: bool) -> Result<(u32, Vec<Op>), E> {
        let subj = self.subject_with_versions(subject, true)?;
        let v = match sel {
            // `latest` names the newest live version; with permanent, the newest soft-deleted one.
            VersionSel::Latest => subj.versions.values().rev().find(|v| v.deleted == permanent).or_else(|| subj.versions.values().next_back()),
            VersionSel::Number(n) => subj.versions.get(&n),
        }
        .cloned()
        .ok_or_else(|| E::VersionNotFound { subject: subject.into(), version: sel_label(sel) })?;
        let mut ops = Vec::new();
        if permanent {
            if !v.deleted {
                return Err(E::VersionNotSoftDeleted { subject: subject.into(), version: v.version });
            }
            ops.push((k_version(subject, v.version), None));
            if let Some(s) = self.subjects.get_mut(subject) {
                s.versions.remove(&v.version);
                if s.versions.is_empty() && s.compat.is_none() {
                    self.subjects.remove(subject);
                }
            }
            self.drop_unreferenced(&[v.id], &mut ops);
        } else {
            if v.deleted {
                return Err(E::VersionSoftDeleted { subject: subject.into(), version: v.version });
            }
            let mut nv = v.clone();
            nv.deleted = true;
            Self::put_version(&mut ops, &nv)?;
            if let Some(s) = self.subjects.get_mut(subject) {
                s.versions.insert(nv.version, nv);
            }
        }
        let action = if permanent { "delete_version_permanent" } else { "delete_version" };
        let before = serde_json::json!({"id": v.id, "state": v.state.as_str(), "deleted": v.deleted}).to_string();
        self.audit(&mut ops, c, action, Some(subject), Some(v.version), Some(before), None, Vec::new())?;
        Ok((v.version, ops))
    }

    /// Forget schemas no version refers to any more; their ids are never reused.
    fn drop_unreferenced(&mut self, ids: &[u32], ops: &mut Vec<Op>) {
        for id in ids {
            let used = self.subjects.values().flat_map(|s| s.versions.values()).any(|v| v.id == *id);
            if !used {
                if let Some(e) = self.schemas.remove(id) {
                    self.by_text.remove(&(e.stored.kind, e.stored.text.clone()));
                    ops.push((k_schema(*id), None));
                }
            }
        }
    }

    /// Move a version along its lifecycle: `deprecate` (from active), `archive` (from
    /// active or deprecated), `activate` (back from deprecated or archived).
    ///
    /// # Errors
    /// [`E::SubjectNotFound`] / [`E::VersionNotFound`], [`E::Lifecycle`] for a move that
    /// does not apply.
    pub fn set_lifecycle(&mut self, c: &Change<'_>, subject: &str, sel: VersionSel, to: Lifecycle) -> Result<(VersionInfo, Vec<Op>), E> {
        let v = self.version(subject, sel, false)?;
        let allowed = match to {
            Lifecycle::Deprecated => v.state == Lifecycle::Active,
            Lifecycle::Archived => v.state != Lifecycle::Archived,
            Lifecycle::Active => v.state != Lifecycle::Active,
        };
        if !allowed {
            return Err(E::Lifecycle(format!("{subject} version {} is {}; cannot make it {}", v.version, v.state.as_str(), to.as_str())));
        }
        let mut nv = v.clone();
        nv.state = to;
        nv.state_changed_ms = c.now_ms;
        let mut ops = Vec::new();
        Self::put_version(&mut ops, &nv)?;
        if let Some(s) = self.subjects.get_mut(subject) {
            s.versions.insert(nv.version, nv.clone());
        }
        let action = match to {
            Lifecycle::Active => "activate",
            Lifecycle::Deprecated => "deprecate",
            Lifecycle::Archived => "archive",
        };
        self.audit(&mut ops, c, action, Some(subject), Some(v.version), Some(v.state.as_str().into()), Some(to.as_str().into()), Vec::new())?;
        Ok((nv, ops))
    }

    /// Deprecated versions the policy archives now; `last_seen` gives each version's last
    /// record time (ms), if any.
    pub fn due_for_archive(&self, policy: &LifecyclePolicy, now_ms: i64, last_seen: impl Fn(&str, u32) -> Option<i64>) -> Vec<(String, u32, String)> {
        let mut out = Vec::new();
        for v in self.subjects.values().flat_map(|s| s.live()).filter(|v| v.state == Lifecycle::Deprecated) {
            if let Some(d) = policy.archive_after_deprecated {
                if now_ms - v.state_changed_ms >= d.as_millis() as i64 {
                    out.push((v.subject.clone(), v.version, format!("deprecated for more than {}", humanize(d))));
                    continue;
                }
            }
            if let Some(d) = policy.archive_after_idle {
                let last = last_seen(&v.subject, v.version).unwrap_or(v.state_changed_ms).max(v.state_changed_ms);
                if now_ms - last >= d.as_millis() as i64 {
                    out.push((v.subject.clone(), v.version, format!("no traffic for more than {}", humanize(d))));
                }
            }
        }
        out
    }
}

fn humanize(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs())
}

fn non_transitive(l: Compatibility) -> Compatibility {
    match l {
        Compatibility::BackwardTransitive => Compatibility::Backward,
        Compatibility::ForwardTransitive => Compatibility::Forward,
        Compatibility::FullTransitive => Compatibility::Full,
        other => other,
    }
}

fn sel_label(sel: VersionSel) -> String {
    match sel {
        VersionSel::Latest => "latest".into(),
        VersionSel::Number(n) => n.to_string(),
    }
}
