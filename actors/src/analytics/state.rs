//! Process's checkpointed state: a small meta record (watermarks per partition, and per
//! aggregation its definition's fingerprint and watermark) in the `state` column family,
//! and the open windows in the `windows` column family, one key per
//! `aggregation / group key / window start`, written incrementally. Restore reads both back,
//! converting windows of an older format.
use super::engine::{Aggregation, LegacyWindowAcc, WindowAcc, WindowKind};
use super::spec::Analytics;
use super::watermark::Watermarks;
use crate::lineage::record::ord_i64;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use vigil_runtime::store::{decode, encode, Op, Store};

/// Column family of open windows.
pub const CF: &str = "windows";

/// What Process checkpoints besides the windows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessMeta {
    /// Largest event time per partition.
    pub watermarks: Watermarks,
    /// Per aggregation: name, fingerprint of its definition, watermark.
    pub aggs: Vec<(String, String, Option<i64>)>,
}

/// Key prefix of one aggregation's windows.
pub fn agg_prefix(agg: &str) -> Vec<u8> {
    let mut k = agg.as_bytes().to_vec();
    k.push(0);
    k
}

/// Key of one window: `agg \0 len(key) key start`, ordered by group then start.
pub fn window_key(agg: &str, key: &str, start: i64) -> Vec<u8> {
    let mut k = agg_prefix(agg);
    k.extend_from_slice(&(key.len() as u32).to_be_bytes());
    k.extend_from_slice(key.as_bytes());
    k.extend_from_slice(&ord_i64(start));
    k
}

/// The aggregation a window key belongs to.
pub fn window_key_aggregation(k: &[u8]) -> Option<&str> {
    std::str::from_utf8(k.split(|b| *b == 0).next()?).ok()
}

/// State name of the format of the windows in [`CF`].
const FORMAT: &str = "process.windows_format";

/// Format of the windows this version writes: 2, hopping windows as panes. 1 (no format
/// record): each window whole.
const WINDOWS_FORMAT: u32 = 2;

/// State name of the node-wide meta record (every shard's, merged).
pub const META: &str = "process";

/// State name of the shard count the per-shard meta records were written with.
const SHARDS: &str = "process.shards";

/// State name of shard `j`'s own meta record.
fn shard_meta(j: usize) -> String {
    format!("process.{j}")
}

/// Sink's part: the meta records of every Process shard (in shard order) as the states to
/// commit. One shard: its record as is. Several: each under its own name, the shard count,
/// and under [`META`] their merge (latest event time per partition, and per aggregation the
/// latest watermark), which a restore with another shard count starts from.
///
/// # Errors
/// A meta record that cannot be decoded or encoded.
pub fn merge_metas(metas: Vec<Vec<u8>>) -> crate::Result<Vec<(String, Vec<u8>)>> {
    // The count is always written: a later start with more shards must not read a stale
    // shard's record.
    let mut out = vec![(SHARDS.to_string(), encode("shard count", &(metas.len() as u32))?), (FORMAT.to_string(), encode("windows format", &WINDOWS_FORMAT)?)];
    if metas.len() <= 1 {
        out.extend(metas.into_iter().map(|m| (META.to_string(), m)));
        return Ok(out);
    }
    let mut merged: Option<ProcessMeta> = None;
    for (j, bytes) in metas.into_iter().enumerate() {
        let m: ProcessMeta = decode("process state", &bytes)?;
        match &mut merged {
            None => merged = Some(m),
            Some(all) => {
                all.watermarks.merge(&m.watermarks);
                for (name, _, wm) in &mut all.aggs {
                    if let Some((_, _, other)) = m.aggs.iter().find(|(n, ..)| n == name) {
                        *wm = (*wm).max(*other);
                    }
                }
            }
        }
        out.push((shard_meta(j), bytes));
    }
    if let Some(m) = merged {
        out.push((META.to_string(), encode("process state", &m)?));
    }
    Ok(out)
}

/// What a checkpoint writes for Process: appends to `ops` a put per window changed since
/// the last snapshot and a delete per window forgotten, and returns the encoded meta record.
///
/// # Errors
/// A window or the meta record that cannot be encoded.
pub fn snapshot(an: &Analytics, aggs: &mut [Aggregation], watermarks: &Watermarks, ops: &mut Vec<Op>) -> crate::Result<Vec<u8>> {
    let mut meta = ProcessMeta { watermarks: watermarks.clone(), aggs: Vec::with_capacity(an.aggs.len()) };
    for (agg, spec) in aggs.iter_mut().zip(&an.aggs) {
        for (key, start, value) in agg.take_changes()? {
            ops.push((window_key(&spec.name, &key, start), value));
        }
        meta.aggs.push((spec.name.to_string(), spec.fingerprint.clone(), agg.watermark()));
    }
    Ok(encode("process state", &meta)?)
}

/// `(group key, start)` of a window key under `prefix`.
pub fn parse_window_key(prefix: &[u8], k: &[u8]) -> Option<(String, i64)> {
    let rest = k.strip_prefix(prefix)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(rest.get(4..4 + len)?).ok()?.to_string();
    let start: [u8; 8] = rest.get(4 + len..12 + len)?.try_into().ok()?;
    Some((key, (u64::from_be_bytes(start) ^ (1 << 63)) as i64))
}

/// What a restore found.
pub struct Restored {
    /// One per configured aggregation, in order.
    pub aggs: Vec<Aggregation>,
    /// Partition watermarks.
    pub watermarks: Watermarks,
    /// Deletes for the windows of aggregations no longer configured (written with the next
    /// checkpoint).
    pub stale: Vec<Op>,
    /// Windows restored.
    pub windows: u64,
    /// Bytes read.
    pub bytes: u64,
}

/// Why a checkpoint cannot be restored into the configured aggregations.
pub type Refusal = String;

/// Read Process shard `shard` of `shards` back: its meta record (its own when the
/// checkpoint was written by as many shards, else the merged one) and the windows whose
/// group keys it owns. `progress(windows)` is called every 100,000 windows.
///
/// # Errors
/// A store error, or a [`Refusal`] when an aggregation's definition changed.
pub fn restore(
    store: &Store,
    an: &Analytics,
    out_of_orderness: Duration,
    (shard, shards): (usize, usize),
    mut progress: impl FnMut(u64),
) -> crate::Result<Result<Restored, Refusal>> {
    let written_by = match store.state(SHARDS)? {
        Some(b) => decode::<u32>("shard count", &b)? as usize,
        None => 1,
    };
    let format = match store.state(FORMAT)? {
        Some(b) => decode::<u32>("windows format", &b)?,
        None => 1,
    };
    if format > WINDOWS_FORMAT {
        return Ok(Err(format!(
            "the checkpoint's windows are in format {format}, written by a newer Vigil (this one reads up to {WINDOWS_FORMAT}): \
             run that version, or start with an empty node.data_dir"
        )));
    }
    let name = if shards > 1 && written_by == shards { shard_meta(shard) } else { META.to_string() };
    let meta: ProcessMeta = match store.state(&name)? {
        Some(bytes) => match decode::<ProcessMeta>("process state", &bytes) {
            Ok(m) => m,
            Err(_) => {
                return Ok(Err("the checkpoint holds window state of an older Vigil (the single [pipeline.window]); it cannot be read as \
                               aggregations: start with an empty node.data_dir (or `vigil checkpoint reset`)"
                    .into()))
            }
        },
        None => ProcessMeta::default(),
    };
    let mut aggs = Vec::with_capacity(an.aggs.len());
    let (mut windows, mut bytes) = (0u64, 0u64);
    for spec in &an.aggs {
        let (watermark, prior) = match meta.aggs.iter().find(|(n, ..)| **n == *spec.name) {
            Some((_, fp, _)) if *fp != spec.fingerprint => {
                return Ok(Err(format!(
                    "aggregation `{}` changed since the checkpoint (was {fp}, now {}); its windows cannot be carried over: \
                     give the changed aggregation a new name, or start with an empty node.data_dir",
                    spec.name, spec.fingerprint
                )))
            }
            Some((_, _, wm)) => (*wm, true),
            None => (None, false),
        };
        let mut entries: Vec<(String, i64, WindowAcc)> = Vec::new();
        if prior {
            let prefix = agg_prefix(&spec.name);
            store.for_each(CF, &prefix, |k, v| {
                let (key, start) = parse_window_key(&prefix, k)
                    .ok_or_else(|| vigil_runtime::Error::Corrupt { what: format!("window key of `{}`", spec.name), reason: format!("{k:?}") })?;
                if shards > 1 && crate::pipeline::key_shard(&spec.name, &key, shards) != shard {
                    return Ok(());
                }
                let w = match format {
                    1 => WindowAcc::from_legacy(decode::<LegacyWindowAcc>("window", v)?, &spec.metrics, matches!(spec.kind, WindowKind::Hopping { .. })),
                    _ => decode("window", v)?,
                };
                entries.push((key, start, w));
                windows += 1;
                bytes += (k.len() + v.len()) as u64;
                if windows % 100_000 == 0 {
                    progress(windows);
                }
                Ok(())
            })?;
        }
        let mut agg = Aggregation::restore(spec.kind, spec.lateness_ms, spec.metrics.clone(), watermark, entries);
        if format < WINDOWS_FORMAT {
            // The next checkpoint writes them in this format, with the format record.
            agg.rewrite_all();
        }
        aggs.push(agg);
    }
    let mut stale = Vec::new();
    // Shard 0 deletes the windows of aggregations no longer configured.
    for (name, ..) in meta.aggs.iter().filter(|(n, ..)| shard == 0 && !an.aggs.iter().any(|a| *a.name == **n)) {
        tracing::warn!(aggregation = %name, "aggregation no longer configured: its checkpointed windows are dropped");
        store.for_each(CF, &agg_prefix(name), |k, _| {
            stale.push((k.to_vec(), None));
            Ok(())
        })?;
    }
    Ok(Ok(Restored { aggs, watermarks: meta.watermarks.restored(out_of_orderness), stale, windows, bytes }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::metrics::{Accs, Val};
    use std::collections::BTreeMap;
    use vigil_runtime::store::{Checkpoint, CheckpointMeta};

    fn commit(store: &Store, id: u64, states: BTreeMap<String, Vec<u8>>, ops: &[Op]) {
        let meta = CheckpointMeta { id, completed_ms: 0, node_id: "t".into(), offsets: BTreeMap::new(), state_bytes: BTreeMap::new(), duration_us: 0 };
        store.commit_checkpoint(&Checkpoint { meta, states }, 2, &[(CF, ops)]).unwrap();
    }

    /// A checkpoint of whole hopping windows (format 1, before panes) restores with each
    /// window's metrics kept whole, and the next checkpoint rewrites every window in the
    /// current format, which then restores as it was.
    #[test]
    fn whole_windows_of_an_older_checkpoint_restore_and_are_rewritten() {
        let cfg = vigil_config::Config::from_toml_str(
            "[[pipeline.aggregations]]\nname = \"h\"\ngroup_by = [\"k\"]\nwindow = { kind = \"hopping\", size = \"30s\", slide = \"10s\" }\nmetrics = [\"count\", \"sum(v)\"]\n",
            Vec::new(),
        )
        .unwrap();
        let an = Analytics::compile(&cfg.pipeline);
        let spec = &an.aggs[0];
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A record at 25 s with v = 4 was in the windows starting at 0, 10 and 20 s.
        let mut accs = Accs::new(&spec.metrics);
        accs.add(&[Val::Missing, Val::Num(4.0)], 25_000);
        let ops: Vec<Op> = [0, 10_000, 20_000]
            .iter()
            .map(|s| {
                let w = LegacyWindowAcc { end: s + 30_000, accs: accs.clone(), records: 1, revision: None, dirty: true, retracted: false };
                (window_key("h", "a", *s), Some(encode("window", &w).unwrap()))
            })
            .collect();
        let meta = ProcessMeta { watermarks: Watermarks::default(), aggs: vec![("h".into(), spec.fingerprint.clone(), Some(24_000))] };
        commit(&store, 1, BTreeMap::from([(META.to_string(), encode("meta", &meta).unwrap())]), &ops);

        let mut r = restore(&store, &an, Duration::ZERO, (0, 1), |_| {}).unwrap().unwrap();
        assert_eq!(r.windows, 3);
        // A record at 28 s (v = 1) goes to the pane of 20 s: each window now holds both.
        r.aggs[0].add("a", 28_000, &[Val::Missing, Val::Num(1.0)], |_| {}).unwrap();
        let mut ops = Vec::new();
        let meta = snapshot(&an, &mut r.aggs, &r.watermarks, &mut ops).unwrap();
        assert_eq!(ops.len(), 3, "every converted window is rewritten");
        commit(&store, 2, merge_metas(vec![meta]).unwrap().into_iter().collect(), &ops);

        let mut r = restore(&store, &an, Duration::ZERO, (0, 1), |_| {}).unwrap().unwrap();
        let got: Vec<(i64, Vec<serde_json::Value>, u64)> =
            r.aggs[0].advance(i64::MAX / 4).into_iter().map(|e| (e.start, e.values.unwrap_or_default(), e.count)).collect();
        let both = vec![serde_json::json!(2), serde_json::json!(5.0)];
        assert_eq!(got, vec![(0, both.clone(), 2), (10_000, both.clone(), 2), (20_000, both, 2)]);
    }

    #[test]
    fn window_keys_roundtrip_and_order_by_start() {
        let p = agg_prefix("a");
        for (key, start) in [("k", 5), ("", -3), ("x|y\0z", i64::MIN), ("k", i64::MAX)] {
            assert_eq!(parse_window_key(&p, &window_key("a", key, start)), Some((key.to_string(), start)));
        }
        assert!(window_key("a", "k", -1) < window_key("a", "k", 0));
        assert!(parse_window_key(&agg_prefix("b"), &window_key("a", "k", 0)).is_none());
        assert_eq!(window_key_aggregation(&window_key("a-1", "k\0x", 3)), Some("a-1"));
    }
}
