//! The security audit log: every mutating and every denied admin call, written to the
//! store (column family `audit`) and to a JSON-lines file. Entries are hash-chained: each
//! holds the SHA-256 of the one before, so a changed, inserted or deleted entry breaks the
//! chain, and the two copies must agree to the last entry.
use crate::store::Store;
use crate::{Error, Result};
use ring::digest;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Column family of the store copy.
pub const CF: &str = "audit";

/// What happened, before it is numbered and chained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Who called: `token:<name>`, `cert:<name>` or `anonymous`.
    pub principal: String,
    /// The principal's role (empty when unauthenticated).
    pub role: String,
    /// Source address of the connection.
    pub source: String,
    /// The action the route requires (`schemas.register`...), or `unknown`.
    pub action: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub target: String,
    /// HTTP status of the answer.
    pub status: u16,
    /// Whether access was granted.
    pub allowed: bool,
    /// Why it was denied, or empty.
    pub reason: String,
}

/// A numbered, chained entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, 3 ... without gaps.
    pub seq: u64,
    /// Time (ms since the epoch).
    pub time_ms: i64,
    /// The event.
    #[serde(flatten)]
    pub record: AuditRecord,
    /// Hash of the previous entry (empty for the first).
    pub prev: String,
    /// SHA-256 (hex) of this entry's fields other than `hash`.
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry should carry.
    pub fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let bytes = serde_json::to_vec(&unhashed).unwrap_or_default();
        digest::digest(&digest::SHA256, &bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn key(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

struct Head {
    seq: u64,
    hash: String,
    file: std::fs::File,
}

/// The log a node appends to.
pub struct AuditLog {
    store: Arc<Store>,
    path: PathBuf,
    head: Mutex<Head>,
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Security(format!("audit file {}: {e}", path.display()))
}

/// Entries of the JSON-lines copy as `(line number, parsed or why not)`.
fn file_entries(path: &Path) -> Result<Vec<(usize, std::result::Result<AuditEntry, String>)>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_err(path, e)),
    };
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).split(b'\n').enumerate() {
        let line = line.map_err(|e| file_err(path, e))?;
        if line.is_empty() {
            continue;
        }
        out.push((i + 1, serde_json::from_slice::<AuditEntry>(&line).map_err(|e| format!("not an audit entry: {e}"))));
    }
    Ok(out)
}

/// Entries of the store copy, oldest first, as `(key seq, parsed or why not)`.
fn store_entries(store: &Store) -> Result<Vec<(u64, std::result::Result<AuditEntry, String>)>> {
    let mut out = Vec::new();
    store.for_each(CF, &[], |k, v| {
        let seq = k.try_into().map(u64::from_be_bytes).unwrap_or(0);
        out.push((seq, serde_json::from_slice::<AuditEntry>(v).map_err(|e| format!("not an audit entry: {e}"))));
        Ok(())
    })?;
    Ok(out)
}

impl AuditLog {
    /// Open the log in `store` and `path`; a JSON-lines copy that missed the store's last
    /// entries (a crash between the two writes) is completed from the store.
    ///
    /// # Errors
    /// [`Error::Security`] / [`Error::Store`] if either copy cannot be read or written.
    pub fn open(store: Arc<Store>, path: PathBuf) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| file_err(&path, e))?;
        }
        let stored = store_entries(&store)?;
        let in_file = file_entries(&path)?.into_iter().filter_map(|(_, e)| e.ok()).map(|e| e.seq).max().unwrap_or(0);
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| file_err(&path, e))?;
        let (mut seq, mut hash) = (0, String::new());
        for (_, e) in stored {
            let Ok(e) = e else { continue };
            if e.seq > in_file {
                writeln!(file, "{}", serde_json::to_string(&e).unwrap_or_default()).map_err(|err| file_err(&path, err))?;
            }
            seq = e.seq;
            hash = e.hash;
        }
        file.sync_data().map_err(|e| file_err(&path, e))?;
        Ok(Self { store, path, head: Mutex::new(Head { seq, hash, file }) })
    }

    /// The JSON-lines copy.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number, chain and write `record` to both copies.
    ///
    /// # Errors
    /// [`Error::Store`] / [`Error::Security`]: the entry is then in neither or only the store.
    pub fn append(&self, record: AuditRecord) -> Result<AuditEntry> {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let mut e = AuditEntry { seq: head.seq + 1, time_ms: crate::now_ms(), record, prev: head.hash.clone(), hash: String::new() };
        e.hash = e.compute_hash();
        let line = serde_json::to_string(&e).map_err(|err| Error::Security(err.to_string()))?;
        self.store.write_ops(CF, &[(key(e.seq), Some(line.as_bytes().to_vec()))])?;
        writeln!(head.file, "{line}").and_then(|_| head.file.sync_data()).map_err(|err| file_err(&self.path, err))?;
        head.seq = e.seq;
        head.hash = e.hash.clone();
        Ok(e)
    }

    /// Entries at or after `since_ms`, newest last, at most `limit` (the newest).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn list(&self, since_ms: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        list(&self.store, since_ms, limit)
    }
}

/// Entries of a store at or after `since_ms`, newest last, at most `limit` (the newest).
///
/// # Errors
/// [`Error::Store`].
pub fn list(store: &Store, since_ms: i64, limit: usize) -> Result<Vec<AuditEntry>> {
    let mut all: Vec<AuditEntry> = store_entries(store)?.into_iter().filter_map(|(_, e)| e.ok()).filter(|e| e.time_ms >= since_ms).collect();
    let skip = all.len().saturating_sub(limit);
    Ok(all.split_off(skip))
}

/// The first entry found broken.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Broken {
    /// `store` or `file`.
    pub copy: String,
    /// Sequence number of the entry (where it is known).
    pub seq: u64,
    /// Line of the JSON-lines file (file copy only).
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

/// Outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// Entries in the store copy.
    pub store_entries: u64,
    /// Entries in the JSON-lines copy.
    pub file_entries: u64,
    /// The first break, if any.
    pub broken: Option<Broken>,
}

/// Check one copy's chain; the last `(seq, hash)` or the first break.
fn check_chain<P: Copy>(
    copy: &str,
    entries: &[(P, std::result::Result<AuditEntry, String>)],
    at: impl Fn(P) -> (u64, Option<usize>),
) -> std::result::Result<(u64, String), Broken> {
    let (mut seq, mut hash) = (0u64, String::new());
    for (pos, e) in entries {
        let (key_seq, line) = at(*pos);
        let broken = |seq: u64, reason: String| Broken { copy: copy.into(), seq, line, reason };
        let e = e.as_ref().map_err(|r| broken(if key_seq > 0 { key_seq } else { seq + 1 }, r.clone()))?;
        if key_seq > 0 && key_seq != e.seq {
            return Err(broken(key_seq, format!("stored under sequence {key_seq} but says {}", e.seq)));
        }
        if e.seq != seq + 1 {
            return Err(broken(
                e.seq,
                format!("sequence {} follows {seq}: entries {} to {} are missing or reordered", e.seq, seq + 1, e.seq.saturating_sub(1)),
            ));
        }
        if e.prev != hash {
            return Err(broken(e.seq, "does not chain to the entry before it (prev hash differs)".into()));
        }
        if e.compute_hash() != e.hash {
            return Err(broken(e.seq, "its content does not match its hash (changed after it was written)".into()));
        }
        seq = e.seq;
        hash = e.hash.clone();
    }
    Ok((seq, hash))
}

/// Verify both copies: each chain intact, and both ending at the same entry.
///
/// # Errors
/// [`Error::Store`] / [`Error::Security`] if a copy cannot be read at all.
pub fn verify(store: &Store, path: &Path) -> Result<Verification> {
    let s = store_entries(store)?;
    let f = file_entries(path)?;
    let mut v = Verification { store_entries: s.len() as u64, file_entries: f.len() as u64, broken: None };
    let s_end = check_chain("store", &s, |k| (k, None));
    let f_end = check_chain("file", &f, |line| (0, Some(line)));
    v.broken = match (s_end, f_end) {
        (Err(b), _) | (_, Err(b)) => Some(b),
        (Ok((ss, sh)), Ok((fs, fh))) if ss != fs || sh != fh => {
            let (copy, seq) = if ss < fs { ("store", ss + 1) } else { ("file", fs + 1) };
            Some(Broken {
                copy: copy.into(),
                seq,
                line: None,
                reason: format!("the store ends at entry {ss}, the file at entry {fs}: entries were removed from the {copy}"),
            })
        }
        _ => None,
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> AuditRecord {
        AuditRecord {
            principal: format!("token:t{i}"),
            role: "admin".into(),
            action: "schemas.register".into(),
            method: "POST".into(),
            target: "/subjects/x/versions".into(),
            status: 200,
            allowed: true,
            ..Default::default()
        }
    }

    fn setup(n: u64) -> (tempfile::TempDir, Arc<Store>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(store.clone(), path.clone()).unwrap();
        for i in 0..n {
            log.append(rec(i)).unwrap();
        }
        (dir, store, path)
    }

    #[test]
    fn untouched_log_verifies_and_reopening_continues_the_chain() {
        let (_d, store, path) = setup(5);
        let log = AuditLog::open(store.clone(), path.clone()).unwrap();
        assert_eq!(log.append(rec(9)).unwrap().seq, 6);
        let v = verify(&store, &path).unwrap();
        assert_eq!((v.store_entries, v.file_entries, v.broken), (6, 6, None));
        assert_eq!(log.list(0, 2).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
    }

    #[test]
    fn one_changed_byte_in_either_copy_names_the_entry() {
        let (_d, store, path) = setup(5);
        let v = store.get(CF, &key(3)).unwrap().unwrap();
        let changed = String::from_utf8(v).unwrap().replace("token:t2", "token:t7");
        store.write_ops(CF, &[(key(3), Some(changed.into_bytes()))]).unwrap();
        let b = verify(&store, &path).unwrap().broken.unwrap();
        assert_eq!((b.copy.as_str(), b.seq), ("store", 3), "{b:?}");

        let (_d, store, path) = setup(5);
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text.find("\"seq\":4").unwrap() + 60;
        let mut bytes = text.into_bytes();
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let b = verify(&store, &path).unwrap().broken.unwrap();
        assert_eq!((b.copy.as_str(), b.seq, b.line), ("file", 4, Some(4)), "{b:?}");
    }

    #[test]
    fn deleted_entries_are_found_in_the_middle_and_at_the_end() {
        let (_d, store, path) = setup(5);
        store.write_ops(CF, &[(key(2), None)]).unwrap();
        let b = verify(&store, &path).unwrap().broken.unwrap();
        assert_eq!((b.copy.as_str(), b.seq), ("store", 3), "{b:?}");

        let (_d, store, path) = setup(5);
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text.lines().take(4).collect();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
        let b = verify(&store, &path).unwrap().broken.unwrap();
        assert_eq!((b.copy.as_str(), b.seq), ("file", 5), "{b:?}");
    }

    #[test]
    fn a_file_behind_the_store_is_completed_on_open() {
        let (_d, store, path) = setup(3);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.lines().take(2).collect::<Vec<_>>().join("\n") + "\n").unwrap();
        AuditLog::open(store.clone(), path.clone()).unwrap();
        assert_eq!(verify(&store, &path).unwrap().broken, None);
    }
}
