//! What lineage records per checkpoint epoch, how it travels on the barrier, and how it is
//! laid out in the `lineage` column family. Pure: no actors, no I/O.
//!
//! Process collects, per window, the source offsets added since the last barrier
//! ([`Collector`]); Validate and Process add the records they dead-letter ([`DeadLetter`]).
//! The barrier carries both ([`EpochLineage`]) to Sink, which writes them with the
//! checkpoint ([`commit_ops`]). A window's lineage is the union of its committed segments;
//! after a crash the uncommitted ones are gone with the window state they belong to, and
//! replaying the source adds exactly those offsets again.
//!
//! Keys (big-endian, signed numbers with the sign bit flipped so they sort):
//! - `w/<key>\0<window_start>/<epoch>` → [`Segment`]: what the window got in that epoch;
//! - `e/<epoch>` → [`EpochRecord`]: ranges consumed, windows touched, records rejected;
//! - `o/<topic>\0<partition>/<first offset>` → epoch and end of the range it consumed;
//! - `b/<epoch>` → completion time and bytes written (for retention);
//! - `m/expired` → [`Expired`]; `m/run` → the OpenLineage run of the open epoch.
use super::offsets::OffsetSet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use vigil_runtime::envelope::TopicPartition;
use vigil_runtime::store::Op;

/// A record sent to the DLQ, as lineage keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Its `vigil.id` header, when it has one (else the id is `topic/partition/offset`).
    pub id: Option<String>,
    /// Stage that rejected it.
    pub stage: String,
    /// Reason code (`invalid_json`, `rule:amount.range`, `late`, ...).
    pub code: String,
    /// What was wrong (truncated to `lineage.detail_max`).
    pub detail: String,
}

impl DeadLetter {
    /// A rejection of the record at `tp`/`offset` with record id `id`.
    pub fn new(tp: &TopicPartition, offset: i64, id: &str, stage: &str, code: &str, detail: &str, detail_max: usize) -> Self {
        let own = format!("{}/{}/{}", tp.topic, tp.partition, offset);
        let mut cut = detail.len().min(detail_max);
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        DeadLetter {
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset,
            id: (id != own).then(|| id.to_string()),
            stage: stage.into(),
            code: code.into(),
            detail: detail[..cut].into(),
        }
    }
}

/// What one window got during one epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowDelta {
    /// Offsets added, per source partition.
    pub parts: Vec<(TopicPartition, OffsetSet)>,
    /// Records per schema subject and version.
    pub schemas: BTreeMap<(Arc<str>, u32), u64>,
    /// The window was opened in this epoch (its first segment).
    pub opened: bool,
    /// The window was closed and written in this epoch, with this many records.
    pub closed: Option<u64>,
    /// The session was merged into the one of the same key starting here.
    pub merged_into: Option<i64>,
}

/// The lineage of one epoch, carried by its barrier from Validate through Process to Sink.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochLineage {
    /// Per window `(key, window_start)`.
    pub windows: BTreeMap<(String, i64), WindowDelta>,
    /// Records dead-lettered in this epoch.
    pub rejects: Vec<DeadLetter>,
}

impl EpochLineage {
    /// Fold a later epoch's lineage into this one (a checkpoint whose store write failed
    /// is committed with the next one).
    pub fn absorb(&mut self, later: EpochLineage) {
        for (w, d) in later.windows {
            let mine = self.windows.entry(w).or_default();
            for (tp, set) in d.parts {
                match mine.parts.iter_mut().find(|(t, _)| *t == tp) {
                    Some((_, s)) => s.union(&set),
                    None => mine.parts.push((tp, set)),
                }
            }
            for (k, n) in d.schemas {
                *mine.schemas.entry(k).or_default() += n;
            }
            mine.opened |= d.opened;
            mine.closed = d.closed.or(mine.closed);
            mine.merged_into = d.merged_into.or(mine.merged_into);
        }
        self.rejects.extend(later.rejects);
    }
}

/// Process's per-epoch bookkeeping: one lookup per record, no allocation for a window
/// and partition already seen in the epoch.
#[derive(Debug, Default)]
pub struct Collector {
    windows: HashMap<String, Vec<(i64, WindowDelta)>>,
    rejects: Vec<DeadLetter>,
}

impl Collector {
    /// Record that the record at `tp`/`offset` was added to window (`key`, `start`).
    pub fn add(&mut self, key: &str, start: i64, opened: bool, tp: &TopicPartition, offset: i64, schema: Option<&(Arc<str>, u32)>) {
        let per_key = match self.windows.get_mut(key) {
            Some(v) => v,
            None => self.windows.entry(key.to_string()).or_default(),
        };
        let delta = match per_key.iter().position(|(s, _)| *s == start) {
            Some(i) => &mut per_key[i].1,
            None => {
                per_key.push((start, WindowDelta::default()));
                let last = per_key.len() - 1;
                &mut per_key[last].1
            }
        };
        delta.opened |= opened;
        match delta.parts.iter_mut().find(|(t, _)| t == tp) {
            Some((_, set)) => set.insert(offset),
            None => {
                let mut set = OffsetSet::new();
                set.insert(offset);
                delta.parts.push((tp.clone(), set));
            }
        }
        if let Some((subject, version)) = schema {
            match delta.schemas.get_mut(&(subject.clone(), *version)) {
                Some(n) => *n += 1,
                None => {
                    delta.schemas.insert((subject.clone(), *version), 1);
                }
            }
        }
    }

    /// Record that window (`key`, `start`) was closed with `count` records.
    pub fn closed(&mut self, key: &str, start: i64, count: u64) {
        self.delta(key, start).closed = Some(count);
    }

    /// Record that session (`key`, `from`) was merged into (`key`, `into`): its records
    /// count in that one's output from now on.
    pub fn merged(&mut self, key: &str, from: i64, into: i64) {
        self.delta(key, from).merged_into = Some(into);
    }

    fn delta(&mut self, key: &str, start: i64) -> &mut WindowDelta {
        if !self.windows.contains_key(key) {
            self.windows.insert(key.to_string(), Vec::new());
        }
        let Some(per_key) = self.windows.get_mut(key) else { unreachable!("inserted above") };
        let i = match per_key.iter().position(|(s, _)| *s == start) {
            Some(i) => i,
            None => {
                per_key.push((start, WindowDelta::default()));
                per_key.len() - 1
            }
        };
        &mut per_key[i].1
    }

    /// Record a dead-lettered record.
    pub fn reject(&mut self, r: DeadLetter) {
        self.rejects.push(r);
    }

    /// Everything since the last barrier, leaving the collector empty.
    pub fn take(&mut self) -> EpochLineage {
        let mut out = EpochLineage { rejects: std::mem::take(&mut self.rejects), ..EpochLineage::default() };
        for (key, v) in self.windows.drain() {
            for (start, d) in v {
                out.windows.insert((key.clone(), start), d);
            }
        }
        out
    }
}

/// One topic's partitions of a segment: `(partition, encoded OffsetSet)`.
pub type TopicParts = Vec<(i32, Vec<u8>)>;

/// A window's lineage from one epoch, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Opened in this epoch.
    pub opened: bool,
    /// Closed and written in this epoch, with this many records.
    pub closed: Option<u64>,
    /// Per topic, `(partition, encoded OffsetSet)`.
    pub parts: Vec<(String, TopicParts)>,
    /// `(subject, version, records)`.
    pub schemas: Vec<(String, u32, u64)>,
    /// The session was merged into the one of the same key starting here (in this epoch).
    pub merged_into: Option<i64>,
}

/// A source partition's range consumed in one epoch: offsets `from..to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumed {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset.
    pub from: i64,
    /// One past the last offset.
    pub to: i64,
}

/// One committed epoch, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Checkpoint id.
    pub epoch: u64,
    /// Commit time, ms since epoch.
    pub completed_ms: i64,
    /// Node that committed it.
    pub node: String,
    /// Topic outputs were written to.
    pub sink_topic: String,
    /// Ranges consumed.
    pub consumed: Vec<Consumed>,
    /// Windows `(key, window_start)` with a segment in this epoch.
    pub windows: Vec<(String, i64)>,
    /// Records added to windows.
    pub records: u64,
    /// Windows closed and written.
    pub windows_closed: u64,
    /// Records dead-lettered, by `(topic, partition, offset)`.
    pub rejects: Vec<DeadLetter>,
    /// Aggregations writing elsewhere than `sink_topic`: `(name, topic)`.
    pub outputs: Vec<(String, String)>,
    /// Sessions merged in this epoch: `(key, from, into)` (their merge edges).
    pub merges: Vec<(String, i64, i64)>,
}

impl EpochRecord {
    /// The topic the output of window key `<aggregation>/<group>` goes to.
    pub fn output_topic(&self, key: &str) -> &str {
        let agg = crate::analytics::output::aggregation_of(key);
        self.outputs.iter().find(|(a, _)| a == agg).map_or(self.sink_topic.as_str(), |(_, t)| t.as_str())
    }
}

/// What retention has removed so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Expired {
    /// Epochs removed.
    pub epochs: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Newest epoch removed.
    pub through_epoch: u64,
    /// When the newest removal happened, ms.
    pub at_ms: i64,
    /// Per partition (`topic/partition`): lineage of offsets below this is gone.
    pub retained_from: BTreeMap<String, i64>,
    /// Windows starting at or before this had segments removed.
    pub horizon_start: Option<i64>,
}

/// Sort-preserving encoding of a signed number.
pub fn ord_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn un_ord_i64(b: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(b.try_into().ok()?) ^ (1 << 63)) as i64)
}

/// `<tag><key>\0<start>`: the layout of window-addressed entries (segments, merge edges).
fn window_entry(tag: &[u8], key: &str, start: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(tag.len() + key.len() + 17);
    k.extend_from_slice(tag);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(&ord_i64(start));
    k
}

/// Prefix of every segment of window (`key`, `start`).
pub fn window_prefix(key: &str, start: i64) -> Vec<u8> {
    window_entry(b"w/", key, start)
}

/// Prefix of the merge edges into session (`key`, `into`).
pub fn merge_prefix(key: &str, into: i64) -> Vec<u8> {
    window_entry(b"s/", key, into)
}

/// Key of the edge "session (`key`, `from`) was merged into (`key`, `into`)".
pub fn merge_key(key: &str, into: i64, from: i64) -> Vec<u8> {
    let mut k = merge_prefix(key, into);
    k.extend_from_slice(&ord_i64(from));
    k
}

/// The merged session's start of a merge key.
pub fn merge_from(k: &[u8]) -> Option<i64> {
    un_ord_i64(k.get(k.len().checked_sub(8)?..)?)
}

/// Key of the segment of window (`key`, `start`) in `epoch`.
pub fn segment_key(key: &str, start: i64, epoch: u64) -> Vec<u8> {
    let mut k = window_prefix(key, start);
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

/// The epoch of a segment key.
pub fn segment_epoch(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(k.len().checked_sub(8)?..)?.try_into().ok()?))
}

/// Key of an epoch's record.
pub fn epoch_key(epoch: u64) -> Vec<u8> {
    [b"e/".as_slice(), &epoch.to_be_bytes()].concat()
}

/// Key of an epoch's size entry.
pub fn bytes_key(epoch: u64) -> Vec<u8> {
    [b"b/".as_slice(), &epoch.to_be_bytes()].concat()
}

/// The epoch of a size-entry key.
pub fn bytes_key_epoch(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(2..10)?.try_into().ok()?))
}

/// Prefix of the offset index of one partition.
pub fn offsets_prefix(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 8);
    k.extend_from_slice(b"o/");
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&(partition as u32 ^ (1 << 31)).to_be_bytes());
    k.push(b'/');
    k
}

/// Key of the offset-index entry of a range starting at `from`.
pub fn offsets_key(topic: &str, partition: i32, from: i64) -> Vec<u8> {
    let mut k = offsets_prefix(topic, partition);
    k.extend_from_slice(&ord_i64(from));
    k
}

/// Value of an offset-index entry: `(epoch, to)`.
pub fn offsets_value(epoch: u64, to: i64) -> Vec<u8> {
    [epoch.to_be_bytes(), ord_i64(to)].concat()
}

/// Decode [`offsets_value`] (with the range's start, from the key).
pub fn parse_offsets_entry(k: &[u8], v: &[u8]) -> Option<(i64, u64, i64)> {
    let from = un_ord_i64(k.get(k.len().checked_sub(8)?..)?)?;
    let epoch = u64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    Some((from, epoch, un_ord_i64(v.get(8..16)?)?))
}

/// Value of a size entry: `(completed_ms, bytes)`.
pub fn bytes_value(completed_ms: i64, bytes: u64) -> Vec<u8> {
    [completed_ms.to_be_bytes(), bytes.to_be_bytes()].concat()
}

/// Decode [`bytes_value`].
pub fn parse_bytes_value(v: &[u8]) -> Option<(i64, u64)> {
    Some((i64::from_be_bytes(v.get(..8)?.try_into().ok()?), u64::from_be_bytes(v.get(8..16)?.try_into().ok()?)))
}

/// Key of retention's record.
pub const EXPIRED_KEY: &[u8] = b"m/expired";
/// Key of the open epoch's OpenLineage run.
pub const RUN_KEY: &[u8] = b"m/run";

/// What one epoch's commit writes to lineage.
pub struct CommitOps {
    /// Writes for the checkpoint's batch.
    pub ops: Vec<Op>,
    /// Entries written (segments and rejects).
    pub entries: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The epoch's record (for the OpenLineage export).
    pub record: EpochRecord,
}

/// The lineage writes of epoch `epoch`: its segments, epoch record, offset index and size
/// (nothing for an epoch that read nothing and touched no window).
/// `prev` are the offsets of the previous checkpoint, `next` this one's; a partition new to
/// this checkpoint starts at the smallest offset the epoch saw of it.
///
/// # Errors
/// Encoding failures.
#[allow(clippy::too_many_arguments)]
pub fn commit_ops(
    epoch: u64,
    completed_ms: i64,
    node: &str,
    sink_topic: &str,
    outputs: &[(String, String)],
    lineage: &EpochLineage,
    prev: &BTreeMap<TopicPartition, i64>,
    next: &BTreeMap<TopicPartition, i64>,
) -> vigil_runtime::Result<CommitOps> {
    let mut ops = Vec::with_capacity(lineage.windows.len() + 8);
    let mut seen_min: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut note_min = |tp: &TopicPartition, o: i64| {
        let m = seen_min.entry(tp.clone()).or_insert(o);
        *m = (*m).min(o);
    };
    let (mut records, mut windows_closed) = (0u64, 0u64);
    let mut windows = Vec::with_capacity(lineage.windows.len());
    let mut merges = Vec::new();
    for ((key, start), d) in &lineage.windows {
        let mut parts: Vec<(String, TopicParts)> = Vec::new();
        for (tp, set) in &d.parts {
            if let Some(first) = set.iter().next() {
                note_min(tp, first);
            }
            records += set.len();
            match parts.iter_mut().find(|(t, _)| *t == tp.topic) {
                Some((_, v)) => v.push((tp.partition, set.encode())),
                None => parts.push((tp.topic.clone(), vec![(tp.partition, set.encode())])),
            }
        }
        parts.sort();
        for (_, v) in &mut parts {
            v.sort();
        }
        windows_closed += u64::from(d.closed.is_some());
        let schemas = d.schemas.iter().map(|((s, v), n)| (s.to_string(), *v, *n)).collect();
        let seg = Segment { opened: d.opened, closed: d.closed, parts, schemas, merged_into: d.merged_into };
        ops.push((segment_key(key, *start, epoch), Some(vigil_runtime::store::encode("lineage segment", &seg)?)));
        if let Some(into) = d.merged_into {
            ops.push((merge_key(key, into, *start), Some(Vec::new())));
            merges.push((key.clone(), *start, into));
        }
        windows.push((key.clone(), *start));
    }
    let mut rejects = lineage.rejects.clone();
    for r in &rejects {
        note_min(&TopicPartition::new(r.topic.clone(), r.partition), r.offset);
    }
    rejects.sort_by(|a, b| (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset)));
    rejects.dedup_by(|a, b| (&a.topic, a.partition, a.offset) == (&b.topic, b.partition, b.offset));
    let entries = windows.len() as u64 + rejects.len() as u64;
    let mut consumed = Vec::new();
    for (tp, to) in next {
        let from = prev.get(tp).copied().or_else(|| seen_min.get(tp).copied()).unwrap_or(*to);
        if *to > from {
            consumed.push(Consumed { topic: tp.topic.clone(), partition: tp.partition, from, to: *to });
            ops.push((offsets_key(&tp.topic, tp.partition, from), Some(offsets_value(epoch, *to))));
        }
    }
    let empty = consumed.is_empty() && windows.is_empty() && rejects.is_empty();
    let record = EpochRecord {
        epoch,
        completed_ms,
        node: node.into(),
        sink_topic: sink_topic.into(),
        consumed,
        windows,
        records,
        windows_closed,
        rejects,
        outputs: outputs.to_vec(),
        merges,
    };
    if empty {
        // An idle checkpoint leaves no trace.
        return Ok(CommitOps { ops: Vec::new(), entries: 0, bytes: 0, record });
    }
    ops.push((epoch_key(epoch), Some(vigil_runtime::store::encode("lineage epoch", &record)?)));
    let bytes: u64 = ops.iter().map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64).sum::<u64>() + 26;
    ops.push((bytes_key(epoch), Some(bytes_value(completed_ms, bytes))));
    Ok(CommitOps { ops, entries, bytes, record })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    #[test]
    fn collector_groups_by_window_and_partition() {
        let mut c = Collector::default();
        let s: (Arc<str>, u32) = ("t-value".into(), 2);
        c.add("a", 0, true, &tp(0), 5, Some(&s));
        c.add("a", 0, false, &tp(0), 6, Some(&s));
        c.add("a", 0, false, &tp(1), 9, None);
        c.add("b", 10, false, &tp(0), 7, None);
        c.closed("a", 0, 3);
        c.reject(DeadLetter::new(&tp(1), 8, "t/1/8", "validate", "invalid_json", "expected value at line 1 column 1", 10));
        let l = c.take();
        assert!(c.take().windows.is_empty(), "take empties it");
        let a = &l.windows[&("a".to_string(), 0)];
        assert!(a.opened && a.closed == Some(3));
        assert_eq!(a.parts.iter().map(|(t, s)| (t.partition, s.iter().collect::<Vec<_>>())).collect::<Vec<_>>(), vec![(0, vec![5, 6]), (1, vec![9])]);
        assert_eq!(a.schemas[&("t-value".into(), 2)], 2);
        assert_eq!(l.rejects[0].id, None, "a positional id is not stored twice");
        assert_eq!(l.rejects[0].detail, "expected v", "detail is truncated");

        let mut again = Collector::default();
        again.add("a", 0, false, &tp(1), 10, None);
        again.add("c", 20, true, &tp(0), 11, None);
        let mut merged = l.clone();
        merged.absorb(again.take());
        let a2 = &merged.windows[&("a".to_string(), 0)];
        assert_eq!(a2.parts.iter().map(|(t, s)| (t.partition, s.len())).collect::<Vec<_>>(), vec![(0, 2), (1, 2)]);
        assert!(a2.opened && a2.closed == Some(3) && merged.windows.len() == 3 && merged.rejects.len() == 1);

        let prev = BTreeMap::from([(tp(0), 5)]);
        let next = BTreeMap::from([(tp(0), 8), (tp(1), 10), (tp(2), 4)]);
        let c = commit_ops(7, 1000, "n", "out", &[], &l, &prev, &next).unwrap();
        assert_eq!(c.entries, 3);
        assert_eq!(c.record.records, 4);
        assert_eq!(c.record.windows_closed, 1);
        let ranges: Vec<(i32, i64, i64)> = c.record.consumed.iter().map(|r| (r.partition, r.from, r.to)).collect();
        assert_eq!(ranges, vec![(0, 5, 8), (1, 8, 10)], "a new partition starts at the first offset seen; an idle one has no range");
        let total: u64 = c.ops.iter().map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64).sum();
        assert_eq!(c.bytes, total);
    }

    #[test]
    fn keys_sort_and_parse() {
        assert!(segment_key("a", -5, 1) < segment_key("a", 3, 0));
        assert!(segment_key("a", 3, 1) < segment_key("a", 3, 2));
        assert!(segment_key("a", 3, 2).starts_with(&window_prefix("a", 3)));
        assert_eq!(segment_epoch(&segment_key("a", 3, 77)), Some(77));
        assert!(offsets_key("t", 0, 99) < offsets_key("t", 0, 100));
        assert!(offsets_key("t", -1, 5) < offsets_key("t", 0, 0));
        assert_eq!(parse_offsets_entry(&offsets_key("t", 1, 40), &offsets_value(3, 50)), Some((40, 3, 50)));
        assert_eq!(parse_bytes_value(&bytes_value(-3, 9)), Some((-3, 9)));
        assert_eq!(bytes_key_epoch(&bytes_key(12)), Some(12));
    }
}
