//! Lineage retention: the oldest checkpoints' lineage is removed once older than
//! `lineage.retention` or while the total exceeds `lineage.max_bytes` (the newest checkpoint's
//! is always kept). What was removed is remembered ([`Expired`]) so traces into it say so.
use super::record::{bytes_key, bytes_key_epoch, epoch_key, merge_key, offsets_key, parse_bytes_value, segment_key, EpochRecord, Expired, EXPIRED_KEY};
use vigil_config::LineageConfig;
use vigil_runtime::envelope::TopicPartition;
use vigil_runtime::store::{decode, encode, Store};
use vigil_runtime::Result;

const CF: &str = "lineage";

/// Bytes of lineage retained and the epochs they cover `(epochs, bytes, oldest, newest)`.
///
/// # Errors
/// Store failures.
pub fn totals(store: &Store) -> Result<(u64, u64, Option<u64>, Option<u64>)> {
    let (mut n, mut bytes, mut oldest, mut newest) = (0, 0, None, None);
    for (k, v) in store.scan(CF, b"b/")? {
        let (Some(e), Some((_, b))) = (bytes_key_epoch(&k), parse_bytes_value(&v)) else { continue };
        n += 1;
        bytes += b;
        oldest = oldest.or(Some(e));
        newest = Some(e);
    }
    Ok((n, bytes, oldest, newest))
}

/// What a node's lineage store holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    /// Whether the node records lineage (as configured; a stopped store reads as true).
    pub enabled: bool,
    /// Checkpoints with lineage retained.
    pub checkpoints: u64,
    /// Bytes retained.
    pub bytes: u64,
    /// Oldest checkpoint retained.
    pub oldest: Option<u64>,
    /// Newest checkpoint retained.
    pub newest: Option<u64>,
    /// What retention removed.
    pub expired: Expired,
    /// Source partitions with their committed offsets (`topic/partition` → next offset).
    pub sources: std::collections::BTreeMap<String, i64>,
}

/// What `store` holds.
///
/// # Errors
/// Store failures.
pub fn status(store: &Store, enabled: bool) -> Result<Status> {
    let (checkpoints, bytes, oldest, newest) = totals(store)?;
    let sources = store.offsets()?.into_iter().map(|(tp, o)| (tp.to_string(), o)).collect();
    Ok(Status { enabled, checkpoints, bytes, oldest, newest, expired: expired(store)?, sources })
}

/// What retention has removed so far.
///
/// # Errors
/// Store failures or a corrupt record.
pub fn expired(store: &Store) -> Result<Expired> {
    match store.get(CF, EXPIRED_KEY)? {
        Some(v) => decode("lineage retention record", &v),
        None => Ok(Expired::default()),
    }
}

/// Epochs removed per write.
const BATCH: usize = 256;

/// Remove lineage beyond the limits, at most `max_epochs` checkpoints' worth per call (in
/// writes of up to 256 checkpoints). `total` is the bytes retained before; returns
/// `(epochs, bytes)` removed.
///
/// # Errors
/// Store failures.
pub fn expire(store: &Store, cfg: &LineageConfig, now_ms: i64, total: u64, max_epochs: usize) -> Result<(u64, u64)> {
    let oldest_allowed = now_ms.saturating_sub(cfg.retention.as_millis() as i64);
    let (mut epochs, mut bytes) = (0u64, 0u64);
    let mut exp = expired(store)?;
    let oldest = store.scan_range_limit(CF, b"b/", b"b0", max_epochs.saturating_add(1))?;
    let mut ops = Vec::new();
    for (i, (k, v)) in oldest.iter().enumerate().take(max_epochs) {
        let (Some(epoch), Some((completed_ms, size))) = (bytes_key_epoch(k), parse_bytes_value(v)) else { break };
        let too_old = completed_ms < oldest_allowed;
        let too_big = total.saturating_sub(bytes) > cfg.max_bytes && i + 1 < oldest.len();
        if !too_old && !too_big {
            break;
        }
        ops.push((bytes_key(epoch), None));
        ops.push((epoch_key(epoch), None));
        if let Some(rec) = store.get(CF, &epoch_key(epoch))? {
            let rec: EpochRecord = decode("lineage epoch", &rec)?;
            for c in &rec.consumed {
                ops.push((offsets_key(&c.topic, c.partition, c.from), None));
                let tp = TopicPartition::new(c.topic.clone(), c.partition).to_string();
                let from = exp.retained_from.entry(tp).or_insert(c.to);
                *from = (*from).max(c.to);
            }
            for (key, from, into) in &rec.merges {
                ops.push((merge_key(key, *into, *from), None));
            }
            for (key, start) in &rec.windows {
                ops.push((segment_key(key, *start, epoch), None));
                exp.horizon_start = Some(exp.horizon_start.map_or(*start, |h| h.max(*start)));
            }
        }
        exp.epochs += 1;
        exp.bytes += size;
        exp.through_epoch = epoch;
        exp.at_ms = now_ms;
        epochs += 1;
        bytes += size;
        if epochs % BATCH as u64 == 0 {
            ops.push((EXPIRED_KEY.to_vec(), Some(encode("lineage retention record", &exp)?)));
            store.write_ops(CF, &std::mem::take(&mut ops))?;
        }
    }
    if !ops.is_empty() {
        ops.push((EXPIRED_KEY.to_vec(), Some(encode("lineage retention record", &exp)?)));
        store.write_ops(CF, &ops)?;
    }
    Ok((epochs, bytes))
}
