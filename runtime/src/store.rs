//! RocksDB store: one instance per node, a column family per concern, and checkpoints
//! committed as one atomic `WriteBatch` (source offsets + every stage's state + metadata).
//!
//! Layout:
//! - `offsets`: `topic\0partition(be i32)` → next offset to read (be i64), as of the last
//!   complete checkpoint.
//! - `state`: stage name → that stage's snapshot (bincode), as of the last checkpoint.
//! - `checkpoints`: checkpoint id (be u64) → [`CheckpointMeta`] (bincode); the newest
//!   `retained` are kept.
//! - `meta`: node-level facts (e.g. `cluster`).
//! - `schemas`: the built-in schema registry (schemas, subject versions, config, usage,
//!   audit log), written through [`Store::write_ops`] one atomic batch per change.
//! - `lineage`: record-level lineage, written in the checkpoint's own batch (the `extra`
//!   writes of [`Store::commit_checkpoint`]), so it never disagrees with committed outputs.
//! - `windows`: open windows, one key per aggregation/group/window, written incrementally in
//!   the checkpoint's batch (puts for windows changed since the last one, deletes for those
//!   closed), so a checkpoint costs what changed, not the whole state.
use crate::envelope::TopicPartition;
use crate::{Error, Result};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Column families, created on open.
pub const COLUMN_FAMILIES: [&str; 13] =
    ["offsets", "state", "checkpoints", "meta", "schemas", "quality", "alerts", "journal", "incidents", "lineage", "windows", "outputs", "audit"];

/// RocksDB's memory budget for [`Store::open`]: 64 MiB (a node passes an eighth of its
/// `node.memory_limit` to [`Store::open_within`]).
pub const DEFAULT_MEMORY: u64 = 64 << 20;

/// The smallest budget [`Store::open_within`] takes: 8 MiB.
const MIN_MEMORY: u64 = 8 << 20;

/// One write of a [`Store::write_ops`] batch: put a value, or delete the key (`None`).
pub type Op = (Vec<u8>, Option<Vec<u8>>);

/// What one completed checkpoint covered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Monotonic id.
    pub id: u64,
    /// Wall-clock completion time, ms since epoch.
    pub completed_ms: i64,
    /// Node that wrote it.
    pub node_id: String,
    /// Next offset to read per source partition.
    pub offsets: BTreeMap<TopicPartition, i64>,
    /// Size of each stage's snapshot in bytes.
    pub state_bytes: BTreeMap<String, u64>,
    /// Time from barrier injection to commit, µs.
    pub duration_us: u64,
}

/// A checkpoint to commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Metadata (offsets etc.).
    pub meta: CheckpointMeta,
    /// Snapshot per stage name.
    pub states: BTreeMap<String, Vec<u8>>,
}

/// The node's RocksDB instance.
pub struct Store {
    db: DB,
    path: PathBuf,
}

fn codec() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encode a value with the store's bincode configuration.
///
/// # Errors
/// [`Error::Corrupt`] if the value cannot be encoded.
pub fn encode<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(v, codec()).map_err(|e| Error::Corrupt { what: what.into(), reason: e.to_string() })
}

/// Decode a value written by [`encode`].
///
/// # Errors
/// [`Error::Corrupt`] if the bytes do not decode.
pub fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
    bincode::serde::decode_from_slice(bytes, codec()).map(|(v, _)| v).map_err(|e| Error::Corrupt { what: what.into(), reason: e.to_string() })
}

/// [`decode`] into a value that borrows its strings and bytes from `bytes` (no copies).
///
/// # Errors
/// [`Error::Corrupt`] naming `what` if the bytes do not decode.
pub fn decode_borrowed<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T> {
    bincode::serde::borrow_decode_from_slice(bytes, codec()).map(|(v, _)| v).map_err(|e| Error::Corrupt { what: what.into(), reason: e.to_string() })
}

fn offset_key(tp: &TopicPartition) -> Vec<u8> {
    let mut k = tp.topic.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&tp.partition.to_be_bytes());
    k
}

fn parse_offset_key(k: &[u8]) -> Option<TopicPartition> {
    let nul = k.iter().position(|b| *b == 0)?;
    let topic = std::str::from_utf8(&k[..nul]).ok()?.to_string();
    let p: [u8; 4] = k.get(nul + 1..nul + 5)?.try_into().ok()?;
    Some(TopicPartition { topic, partition: i32::from_be_bytes(p) })
}

impl Store {
    /// Open (or create) the store under `path`, with RocksDB's default memory budget
    /// ([`DEFAULT_MEMORY`]).
    ///
    /// # Errors
    /// [`Error::Store`] if RocksDB cannot open it (permissions, lock held by another node).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_within(path, DEFAULT_MEMORY)
    }

    /// Open (or create) the store under `path`, RocksDB's memory held to about `memory`
    /// bytes: half for the memtables of every column family together (past it RocksDB
    /// flushes the largest), a quarter for one block cache shared by all, the rest for the
    /// flush in progress. Without a budget each column family would take up to two 64 MiB
    /// memtables and its own cache, far past a node's `memory_limit`.
    ///
    /// # Errors
    /// [`Error::Store`] if RocksDB cannot open it (permissions, lock held by another node).
    pub fn open_within(path: &Path, memory: u64) -> Result<Self> {
        let memory = memory.max(MIN_MEMORY) as usize;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_db_write_buffer_size(memory / 2);
        let cache = rocksdb::Cache::new_lru_cache(memory / 4);
        // One column family's memtable: an eighth of the budget, at most RocksDB's default.
        let memtable = (memory / 8).min(64 << 20);
        let cfs = COLUMN_FAMILIES.iter().map(|n| {
            let mut o = Options::default();
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_block_cache(&cache);
            o.set_block_based_table_factory(&table);
            o.set_write_buffer_size(memtable);
            if *n == "lineage" || *n == "windows" {
                // Window keys and topic names repeat from entry to entry: LZ4 takes most of it.
                o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            }
            if *n == "outputs" {
                // Held outputs live one checkpoint interval (a put, then a delete): small
                // memtables holding both.
                o.set_write_buffer_size(memtable.min(4 << 20));
            }
            ColumnFamilyDescriptor::new(*n, o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|source| Error::Store { path: path.display().to_string(), op: "open".into(), source })?;
        Ok(Self { db, path: path.to_path_buf() })
    }

    /// Open an existing store read-only; works while a running node holds it.
    ///
    /// # Errors
    /// [`Error::Store`] if there is no store at `path` or it cannot be read.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        // A store written by an older version may lack newer column families: open what exists.
        let present =
            DB::list_cf(&Options::default(), path).map_err(|source| Error::Store { path: path.display().to_string(), op: "open read-only".into(), source })?;
        let cfs: Vec<&str> = COLUMN_FAMILIES.iter().copied().filter(|c| present.iter().any(|p| p == c)).collect();
        let db = DB::open_cf_for_read_only(&Options::default(), path, cfs, false).map_err(|source| Error::Store {
            path: path.display().to_string(),
            op: "open read-only".into(),
            source,
        })?;
        Ok(Self { db, path: path.to_path_buf() })
    }

    /// Metadata of one retained checkpoint.
    ///
    /// # Errors
    /// [`Error::Store`] / [`Error::Corrupt`].
    pub fn checkpoint(&self, id: u64) -> Result<Option<CheckpointMeta>> {
        let cps = self.cf("checkpoints")?;
        match self.db.get_cf(cps, id.to_be_bytes()).map_err(|e| self.err("read checkpoint", e))? {
            Some(v) => Ok(Some(decode("checkpoint meta", &v)?)),
            None => Ok(None),
        }
    }

    fn err(&self, op: &str, source: rocksdb::Error) -> Error {
        Error::Store { path: self.path.display().to_string(), op: op.into(), source }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| Error::Corrupt { what: format!("column family {name}"), reason: "missing".into() })
    }

    /// Commit a checkpoint atomically, with `extra` writes to other column families (per
    /// column family, its ops in order: a later write of a key wins) in the same batch, and
    /// prune old checkpoint metadata beyond `retained`. Written with `sync` so a completed
    /// checkpoint survives power loss. The ops are only read: after a failure the caller
    /// still has them for the next attempt.
    ///
    /// # Errors
    /// [`Error::Store`] if the write fails; nothing of the checkpoint is then visible.
    pub fn commit_checkpoint(&self, cp: &Checkpoint, retained: usize, extra: &[(&str, &[Op])]) -> Result<()> {
        if let Some(arg) = crate::failpoints::eval(crate::failpoints::STORE_COMMIT) {
            let reason = arg.unwrap_or_else(|| format!("failpoint {}", crate::failpoints::STORE_COMMIT));
            return Err(Error::Injected { op: format!("commit checkpoint {}", cp.meta.id), reason });
        }
        let mut batch = WriteBatch::default();
        for (cf, ops) in extra {
            let handle = self.cf(cf)?;
            for (k, v) in *ops {
                match v {
                    Some(v) => batch.put_cf(handle, k, v),
                    None => batch.delete_cf(handle, k),
                }
            }
        }
        let offsets = self.cf("offsets")?;
        // The drills' self-test plants this bug: states without their offsets.
        let sabotaged = crate::failpoints::eval(crate::failpoints::BUG_SKIP_OFFSET_COMMIT).is_some();
        for (tp, off) in cp.meta.offsets.iter().filter(|_| !sabotaged) {
            batch.put_cf(offsets, offset_key(tp), off.to_be_bytes());
        }
        let state = self.cf("state")?;
        for (stage, bytes) in &cp.states {
            batch.put_cf(state, stage.as_bytes(), bytes);
        }
        let cps = self.cf("checkpoints")?;
        batch.put_cf(cps, cp.meta.id.to_be_bytes(), encode("checkpoint meta", &cp.meta)?);
        for old in self.checkpoint_ids()?.into_iter().rev().skip(retained.saturating_sub(1)) {
            batch.delete_cf(cps, old.to_be_bytes());
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(|e| self.err("commit checkpoint", e))
    }

    fn checkpoint_ids(&self) -> Result<Vec<u64>> {
        let cps = self.cf("checkpoints")?;
        let mut ids = Vec::new();
        for item in self.db.iterator_cf(cps, IteratorMode::Start) {
            let (k, _) = item.map_err(|e| self.err("list checkpoints", e))?;
            let b: [u8; 8] = k.as_ref().try_into().map_err(|_| Error::Corrupt { what: "checkpoint key".into(), reason: format!("{} bytes", k.len()) })?;
            ids.push(u64::from_be_bytes(b));
        }
        Ok(ids)
    }

    /// Retained checkpoints, oldest first.
    ///
    /// # Errors
    /// [`Error::Store`] / [`Error::Corrupt`].
    pub fn list_checkpoints(&self) -> Result<Vec<CheckpointMeta>> {
        let cps = self.cf("checkpoints")?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cps, IteratorMode::Start) {
            let (_, v) = item.map_err(|e| self.err("list checkpoints", e))?;
            out.push(decode("checkpoint meta", &v)?);
        }
        Ok(out)
    }

    /// The newest complete checkpoint, if any.
    ///
    /// # Errors
    /// [`Error::Store`] / [`Error::Corrupt`].
    pub fn latest_checkpoint(&self) -> Result<Option<CheckpointMeta>> {
        let cps = self.cf("checkpoints")?;
        match self.db.iterator_cf(cps, IteratorMode::End).next() {
            Some(item) => {
                let (_, v) = item.map_err(|e| self.err("read checkpoint", e))?;
                Ok(Some(decode("checkpoint meta", &v)?))
            }
            None => Ok(None),
        }
    }

    /// Source offsets of the last complete checkpoint.
    ///
    /// # Errors
    /// [`Error::Store`] / [`Error::Corrupt`].
    pub fn offsets(&self) -> Result<BTreeMap<TopicPartition, i64>> {
        let cf = self.cf("offsets")?;
        let mut out = BTreeMap::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| self.err("read offsets", e))?;
            let tp = parse_offset_key(&k).ok_or_else(|| Error::Corrupt { what: "offset key".into(), reason: format!("{k:?}") })?;
            let b: [u8; 8] = v.as_ref().try_into().map_err(|_| Error::Corrupt { what: format!("offset of {tp}"), reason: format!("{} bytes", v.len()) })?;
            out.insert(tp, i64::from_be_bytes(b));
        }
        Ok(out)
    }

    /// A stage's state as of the last complete checkpoint.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn state(&self, stage: &str) -> Result<Option<Vec<u8>>> {
        let cf = self.cf("state")?;
        self.db.get_cf(cf, stage.as_bytes()).map_err(|e| self.err("read state", e))
    }

    /// Read one key of a column family (`None` when absent, or when the family does not
    /// exist, e.g. in an older read-only store).
    ///
    /// # Errors
    /// [`Error::Store`] on a read failure.
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(handle) = self.db.cf_handle(cf) else { return Ok(None) };
        self.db.get_cf(handle, key).map_err(|e| self.err(&format!("read {cf}"), e))
    }

    /// Read a node-level fact.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let cf = self.cf("meta")?;
        self.db.get_cf(cf, key.as_bytes()).map_err(|e| self.err("read meta", e))
    }

    /// Write a node-level fact.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        let cf = self.cf("meta")?;
        self.db.put_cf(cf, key.as_bytes(), value).map_err(|e| self.err("write meta", e))
    }

    /// Apply puts and deletes to column family `cf` in one atomic, synced batch.
    ///
    /// # Errors
    /// [`Error::Store`] if the write fails; then none of it is visible.
    pub fn write_ops(&self, cf: &str, ops: &[Op]) -> Result<()> {
        let handle = self.cf(cf)?;
        let mut batch = WriteBatch::default();
        for (k, v) in ops {
            match v {
                Some(v) => batch.put_cf(handle, k, v),
                None => batch.delete_cf(handle, k),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(|e| self.err(&format!("write {cf}"), e))
    }

    /// Entries of `cf` with `from <= key < to`, in key order (empty when the family does
    /// not exist, e.g. in an older read-only store).
    ///
    /// # Errors
    /// [`Error::Store`] on a read failure.
    pub fn scan_range(&self, cf: &str, from: &[u8], to: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_range_limit(cf, from, to, usize::MAX)
    }

    /// Like [`Store::scan_range`], at most `limit` entries (the first in key order).
    ///
    /// # Errors
    /// [`Error::Store`] on a read failure.
    pub fn scan_range_limit(&self, cf: &str, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(handle) = self.db.cf_handle(cf) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(handle, IteratorMode::From(from, rocksdb::Direction::Forward)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(|e| self.err(&format!("scan {cf}"), e))?;
            if k.as_ref() >= to {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// The last entry of `cf` with `from <= key <= at`, if any (a floor lookup).
    ///
    /// # Errors
    /// [`Error::Store`] on a read failure.
    pub fn floor(&self, cf: &str, from: &[u8], at: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let Some(handle) = self.db.cf_handle(cf) else { return Ok(None) };
        match self.db.iterator_cf(handle, IteratorMode::From(at, rocksdb::Direction::Reverse)).next() {
            Some(item) => {
                let (k, v) = item.map_err(|e| self.err(&format!("read {cf}"), e))?;
                Ok((k.as_ref() >= from).then(|| (k.to_vec(), v.to_vec())))
            }
            None => Ok(None),
        }
    }

    /// Call `f` with every key/value of column family `cf` whose key starts with `prefix`,
    /// in key order, without holding them all in memory; returns how many there were.
    ///
    /// # Errors
    /// [`Error::Store`] if reading fails, or the first error of `f`.
    pub fn for_each(&self, cf: &str, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<u64> {
        let Some(handle) = self.db.cf_handle(cf) else { return Ok(0) };
        let mut n = 0;
        for item in self.db.iterator_cf(handle, IteratorMode::From(prefix, rocksdb::Direction::Forward)) {
            let (k, v) = item.map_err(|e| self.err(&format!("scan {cf}"), e))?;
            if !k.starts_with(prefix) {
                break;
            }
            f(&k, &v)?;
            n += 1;
        }
        Ok(n)
    }

    /// Every key/value of column family `cf` whose key starts with `prefix`, in key order.
    /// A store without that column family (read-only open of an older store) reads as empty.
    ///
    /// # Errors
    /// [`Error::Store`] if reading fails.
    pub fn scan(&self, cf: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(handle) = self.db.cf_handle(cf) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(handle, IteratorMode::From(prefix, rocksdb::Direction::Forward)) {
            let (k, v) = item.map_err(|e| self.err(&format!("scan {cf}"), e))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Forget all checkpointed offsets, state, checkpoints, their lineage and held outputs
    /// (fresh start).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn reset(&self) -> Result<()> {
        let mut batch = WriteBatch::default();
        for name in ["offsets", "state", "checkpoints", "lineage", "windows", "outputs"] {
            let cf = self.cf(name)?;
            for item in self.db.iterator_cf(cf, IteratorMode::Start) {
                let (k, _) = item.map_err(|e| self.err("reset", e))?;
                batch.delete_cf(cf, k);
            }
        }
        self.db.write(batch).map_err(|e| self.err("reset", e))
    }

    /// Bytes column family `cf` occupies on disk once its memtable is flushed (SST files).
    ///
    /// # Errors
    /// [`Error::Store`] if the flush or the property read fails.
    pub fn disk_bytes(&self, cf: &str) -> Result<u64> {
        let handle = self.cf(cf)?;
        self.db.flush_cf(handle).map_err(|e| self.err(&format!("flush {cf}"), e))?;
        let v = self.db.property_int_value_cf(handle, "rocksdb.total-sst-files-size").map_err(|e| self.err(&format!("size of {cf}"), e))?;
        Ok(v.unwrap_or(0))
    }

    /// Data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(id: u64, off: i64) -> Checkpoint {
        let mut offsets = BTreeMap::new();
        offsets.insert(TopicPartition::new("events", 0), off);
        offsets.insert(TopicPartition::new("events", 1), off + 1);
        let mut states = BTreeMap::new();
        states.insert("process".to_string(), vec![id as u8; 3]);
        Checkpoint { meta: CheckpointMeta { id, completed_ms: 0, node_id: "n".into(), offsets, state_bytes: BTreeMap::new(), duration_us: 1 }, states }
    }

    #[test]
    fn checkpoint_roundtrip_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(s.latest_checkpoint().unwrap().is_none());
        for id in 1..=5 {
            s.commit_checkpoint(&cp(id, id as i64 * 10), 3, &[("lineage", &[(vec![b'x', id as u8], Some(vec![1]))])]).unwrap();
        }
        let ids: Vec<u64> = s.list_checkpoints().unwrap().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![3, 4, 5]);
        assert_eq!(s.latest_checkpoint().unwrap().unwrap().id, 5);
        assert_eq!(s.offsets().unwrap()[&TopicPartition::new("events", 1)], 51);
        assert_eq!(s.state("process").unwrap().unwrap(), vec![5u8; 3]);
        let ro = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(ro.checkpoint(4).unwrap().unwrap().offsets[&TopicPartition::new("events", 0)], 40);
        assert!(ro.checkpoint(1).unwrap().is_none(), "pruned");
        assert_eq!(ro.floor("lineage", b"x", &[b'x', 4, 9]).unwrap(), Some((vec![b'x', 4], vec![1])), "extra writes commit with the checkpoint");
        assert_eq!(ro.floor("lineage", b"y", b"y\xff").unwrap(), None);
        assert_eq!(ro.scan_range_limit("lineage", b"x", b"y", 2).unwrap().len(), 2);
        drop(ro);
        s.write_ops("schemas", &[(b"a/1".to_vec(), Some(b"x".to_vec())), (b"a/2".to_vec(), Some(b"y".to_vec())), (b"b/1".to_vec(), Some(b"z".to_vec()))])
            .unwrap();
        s.write_ops("schemas", &[(b"a/1".to_vec(), None)]).unwrap();
        assert_eq!(s.scan("schemas", b"a/").unwrap(), vec![(b"a/2".to_vec(), b"y".to_vec())]);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.latest_checkpoint().unwrap().unwrap().id, 5);
        s.reset().unwrap();
        assert!(s.latest_checkpoint().unwrap().is_none());
        assert!(s.offsets().unwrap().is_empty());
    }

    proptest::proptest! {
        #[test]
        fn offset_keys_roundtrip(topic in "[a-zA-Z0-9._-]{1,249}", partition in proptest::prelude::any::<i32>()) {
            let tp = TopicPartition::new(topic, partition);
            proptest::prop_assert_eq!(parse_offset_key(&offset_key(&tp)), Some(tp));
        }
    }
}
