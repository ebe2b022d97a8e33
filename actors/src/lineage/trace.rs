//! Traces over the lineage store: an output window back to the exact source records that
//! produced it, and a source record forward to the window it counted in or the DLQ entry
//! it became. Reads only; works on a running node's store or a stopped one opened
//! read-only.
use super::offsets::OffsetSet;
use super::record::{
    epoch_key, merge_from, merge_prefix, offsets_key, offsets_prefix, parse_offsets_entry, segment_epoch, segment_key, window_prefix, DeadLetter, EpochRecord,
    Segment,
};
use super::retention::expired;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vigil_runtime::envelope::TopicPartition;
use vigil_runtime::store::{decode, Store};
use vigil_runtime::Result;

const CF: &str = "lineage";

/// The source records of one partition that went into an output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecords {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// How many.
    pub records: u64,
    /// Their offsets as inclusive runs `[first, last]`.
    pub ranges: Vec<(i64, i64)>,
}

/// Records read with one schema version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaCount {
    /// Subject.
    pub subject: String,
    /// Version.
    pub version: u32,
    /// Records.
    pub records: u64,
}

/// What is known of an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStatus {
    /// Written and committed.
    Written,
    /// Still open: what it has so far is listed.
    Open,
    /// Its lineage was removed by retention.
    Expired,
    /// No such window in the lineage this node keeps.
    Unknown,
}

/// Where an output came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputTrace {
    /// `<topic>/<aggregation>/<key>@<window_start>`.
    pub output: String,
    /// Window key.
    pub key: String,
    /// Window start, ms.
    pub window_start: i64,
    /// What is known.
    pub status: OutputStatus,
    /// Checkpoint it was written and committed in.
    pub written_in: Option<u64>,
    /// Checkpoints that added records to it.
    pub epochs: Vec<u64>,
    /// Source records listed.
    pub records: u64,
    /// The source records, per partition.
    pub sources: Vec<SourceRecords>,
    /// Schema versions they were read with.
    pub schemas: Vec<SchemaCount>,
    /// Whether every contributing record is listed (false when retention removed part).
    pub complete: bool,
    /// Explanation for a person.
    pub note: String,
}

/// What happened to a source record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// Counted in a window.
    Window,
    /// Sent to the dead-letter topic (`late` included).
    Dlq,
    /// Read but its checkpoint is not committed yet (or not read yet).
    Pending,
    /// Its lineage was removed by retention.
    Expired,
    /// Not in the lineage this node keeps.
    Unknown,
}

/// The output window a record went into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowRef {
    /// `<topic>/<aggregation>/<key>@<window_start>`.
    pub output: String,
    /// Key.
    pub key: String,
    /// Start, ms.
    pub window_start: i64,
    /// Checkpoint the window was written in; none while it is open.
    pub written_in: Option<u64>,
}

/// Where a source record went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordTrace {
    /// `topic/partition/offset`.
    pub record: String,
    /// What happened.
    pub status: RecordStatus,
    /// Checkpoint that committed its processing.
    pub epoch: Option<u64>,
    /// The first window it counted in.
    pub window: Option<WindowRef>,
    /// Every window it counted in (several aggregations; hopping windows overlap).
    #[serde(default)]
    pub windows: Vec<WindowRef>,
    /// The DLQ entry it became (reason, stage, detail, its `vigil.id`).
    pub dlq: Option<DeadLetter>,
    /// Explanation for a person.
    pub note: String,
}

/// Parse `<topic>/<aggregation>/<key>@<window_start>` (the key may contain `/` and `@`); the
/// key returned is `<aggregation>/<key>`, the window's lineage key.
///
/// # Errors
/// What is missing.
pub fn parse_output(s: &str) -> std::result::Result<(String, String, i64), String> {
    let (topic, rest) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}`: expected <topic>/<aggregation>/<key>@<window_start>, e.g. vigil-output/spend_per_user/user-007@1700000000000"))?;
    let (key, start) = rest.rsplit_once('@').ok_or_else(|| format!("`{s}`: the output key needs @<window_start>"))?;
    let start = start.parse::<i64>().map_err(|_| format!("`{s}`: window start `{start}` is not a number of milliseconds"))?;
    Ok((topic.to_string(), key.to_string(), start))
}

/// Parse a record position `<topic>/<partition>/<offset>`.
pub fn parse_position(s: &str) -> Option<(String, i32, i64)> {
    let (rest, offset) = s.rsplit_once('/')?;
    let (topic, partition) = rest.rsplit_once('/')?;
    Some((topic.to_string(), partition.parse().ok()?, offset.parse().ok()?))
}

fn segments(store: &Store, key: &str, start: i64) -> Result<Vec<(u64, Segment)>> {
    let prefix = window_prefix(key, start);
    let mut out = Vec::new();
    for (k, v) in store.scan(CF, &prefix)? {
        let Some(epoch) = segment_epoch(&k) else { continue };
        out.push((epoch, decode("lineage segment", &v)?));
    }
    Ok(out)
}

fn offsets(bytes: &[u8]) -> Result<OffsetSet> {
    OffsetSet::decode(bytes).map_err(|e| vigil_runtime::Error::Corrupt { what: "lineage offsets".into(), reason: e.to_string() })
}

/// Trace output window (`key`, `start`) written to `topic` back to its source records.
///
/// # Errors
/// Store failures or corrupt entries.
pub fn trace_output(store: &Store, topic: &str, key: &str, start: i64) -> Result<OutputTrace> {
    let mut segs = segments(store, key, start)?;
    // Sessions merged into this one (transitively) contributed their records too.
    let mut todo = vec![start];
    let mut seen = std::collections::BTreeSet::from([start]);
    while let Some(into) = todo.pop() {
        for (k, _) in store.scan(CF, &merge_prefix(key, into))? {
            if let Some(from) = merge_from(&k).filter(|f| seen.insert(*f)) {
                segs.extend(segments(store, key, from)?.into_iter().map(|(e, mut s)| {
                    // Its own close (before the merge) is not this output's.
                    s.closed = None;
                    s.opened = false;
                    (e, s)
                }));
                todo.push(from);
            }
        }
    }
    let mut per_tp: BTreeMap<TopicPartition, OffsetSet> = BTreeMap::new();
    let mut schemas: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let (mut written_in, mut opened) = (None, false);
    let mut epochs = Vec::new();
    for (epoch, s) in &segs {
        opened |= s.opened;
        if s.closed.is_some() {
            written_in = Some(*epoch);
        }
        if !s.parts.is_empty() {
            epochs.push(*epoch);
        }
        for (topic, parts) in &s.parts {
            for (partition, bytes) in parts {
                per_tp.entry(TopicPartition::new(topic.clone(), *partition)).or_default().union(&offsets(bytes)?);
            }
        }
        for (subject, version, n) in &s.schemas {
            *schemas.entry((subject.clone(), *version)).or_default() += n;
        }
    }
    let sources: Vec<SourceRecords> = per_tp
        .iter()
        .map(|(tp, set)| SourceRecords { topic: tp.topic.clone(), partition: tp.partition, records: set.len(), ranges: set.ranges().collect() })
        .collect();
    let records = sources.iter().map(|s| s.records).sum();
    let exp = expired(store)?;
    let cut = exp.horizon_start.is_some_and(|h| start <= h);
    let (status, complete, note) = match (segs.is_empty(), written_in) {
        (true, _) if cut => {
            (OutputStatus::Expired, false, format!("lineage of this window was removed by retention (lineage is kept after checkpoint {})", exp.through_epoch))
        }
        (true, _) => (OutputStatus::Unknown, false, "no window with this key and start in this node's lineage".to_string()),
        (false, w) => {
            let complete = opened || !cut;
            let status = if w.is_some() { OutputStatus::Written } else { OutputStatus::Open };
            let mut note = match w {
                Some(e) => format!("{records} source records, written in checkpoint {e}"),
                None => format!("window still open: {records} source records so far"),
            };
            if !complete {
                note.push_str(&format!("; earlier records were removed by retention (through checkpoint {})", exp.through_epoch));
            }
            (status, complete, note)
        }
    };
    let schemas = schemas.into_iter().map(|((subject, version), records)| SchemaCount { subject, version, records }).collect();
    Ok(OutputTrace {
        output: format!("{topic}/{key}@{start}"),
        key: key.into(),
        window_start: start,
        status,
        written_in,
        epochs,
        records,
        sources,
        schemas,
        complete,
        note,
    })
}

/// Trace the source record at `topic`/`partition`/`offset` forward.
///
/// # Errors
/// Store failures or corrupt entries.
pub fn trace_record(store: &Store, topic: &str, partition: i32, offset: i64) -> Result<RecordTrace> {
    let record = format!("{topic}/{partition}/{offset}");
    let tp = TopicPartition::new(topic, partition);
    let mut t = RecordTrace { record, status: RecordStatus::Unknown, epoch: None, window: None, windows: Vec::new(), dlq: None, note: String::new() };
    let prefix = offsets_prefix(topic, partition);
    let found =
        store.floor(CF, &prefix, &offsets_key(topic, partition, offset))?.and_then(|(k, v)| parse_offsets_entry(&k, &v)).filter(|(_, _, to)| offset < *to);
    let Some((_, epoch, _)) = found else {
        let committed = store.offsets()?.get(&tp).copied();
        let exp = expired(store)?;
        (t.status, t.note) = match (committed, exp.retained_from.get(&tp.to_string())) {
            (_, Some(from)) if offset < *from => (RecordStatus::Expired, format!("lineage of {tp} below offset {from} was removed by retention")),
            (Some(c), _) if offset >= c => (RecordStatus::Pending, format!("not yet checkpointed: {tp} is committed up to offset {c}")),
            (None, _) => (RecordStatus::Pending, format!("no checkpoint has covered {tp} yet")),
            _ => (RecordStatus::Unknown, format!("no lineage of offset {offset} in {tp} (read before lineage was enabled?)")),
        };
        return Ok(t);
    };
    t.epoch = Some(epoch);
    let Some(bytes) = store.get(CF, &epoch_key(epoch))? else {
        t.status = RecordStatus::Expired;
        t.note = format!("the lineage of checkpoint {epoch} was removed by retention");
        return Ok(t);
    };
    let rec: EpochRecord = decode("lineage epoch", &bytes)?;
    if let Ok(i) = rec.rejects.binary_search_by(|r| (r.topic.as_str(), r.partition, r.offset).cmp(&(topic, partition, offset))) {
        let r = rec.rejects[i].clone();
        t.status = RecordStatus::Dlq;
        t.note = format!("sent to the DLQ by {} ({}): {}; committed in checkpoint {epoch}", r.stage, r.code, r.detail);
        t.dlq = Some(r);
    }
    for (key, start) in &rec.windows {
        let Some(v) = store.get(CF, &segment_key(key, *start, epoch))? else { continue };
        let seg: Segment = decode("lineage segment", &v)?;
        let part = seg.parts.iter().filter(|(t, _)| t == topic).flat_map(|(_, v)| v).find(|(p, _)| *p == partition);
        let Some((_, bytes)) = part else { continue };
        if !offsets(bytes)?.contains(offset) {
            continue;
        }
        // A session merged into an earlier one counts in that one's output.
        let mut start = *start;
        let mut segs = segments(store, key, start)?;
        for _ in 0..64 {
            let Some(into) = segs.iter().find_map(|(_, s)| s.merged_into) else { break };
            start = into;
            segs = segments(store, key, start)?;
        }
        let written_in = segs.iter().filter(|(_, s)| s.closed.is_some()).map(|(e, _)| *e).next_back();
        let output = format!("{}/{key}@{start}", rec.output_topic(key));
        if !t.windows.iter().any(|w| w.output == output) {
            t.windows.push(WindowRef { output, key: key.clone(), window_start: start, written_in });
        }
    }
    if let Some(first) = t.windows.first().cloned() {
        let counted = match (&first.written_in, t.windows.len()) {
            (Some(w), 1) => format!("counted in {}, written in checkpoint {w}", first.output),
            (None, 1) => format!("counted in {}, which is still open", first.output),
            (_, n) => format!("counted in {n} windows ({} first)", first.output),
        };
        t.note = match &t.dlq {
            Some(d) => format!("{counted}; late for other aggregations: {}", d.detail),
            None => counted,
        };
        t.status = RecordStatus::Window;
        t.window = Some(first);
        return Ok(t);
    }
    if t.dlq.is_some() {
        return Ok(t);
    }
    t.note = format!("read in checkpoint {epoch} but in none of its windows or dead letters");
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lineage::record::{commit_ops, Collector, DeadLetter};
    use crate::lineage::retention;
    use vigil_runtime::store::{Checkpoint, CheckpointMeta};

    fn commit(store: &Store, id: u64, ms: i64, c: &mut Collector, offsets: &[(i32, i64)]) {
        let next: BTreeMap<TopicPartition, i64> = offsets.iter().map(|(p, o)| (TopicPartition::new("src", *p), *o)).collect();
        let prev = store.offsets().unwrap();
        let ops = commit_ops(id, ms, "n", "out", &[], &c.take(), &prev, &next).unwrap();
        let meta = CheckpointMeta { id, completed_ms: ms, node_id: "n".into(), offsets: next, state_bytes: BTreeMap::new(), duration_us: 0 };
        store.commit_checkpoint(&Checkpoint { meta, states: BTreeMap::new() }, 3, &[("lineage", &ops.ops)]).unwrap();
    }

    #[test]
    fn back_and_forward_across_epochs_dlq_pending_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (p0, p1) = (TopicPartition::new("src", 0), TopicPartition::new("src", 1));
        let mut c = Collector::default();
        c.add("a", 0, true, &p0, 0, None);
        c.add("a", 0, false, &p1, 0, None);
        c.add("b", 0, true, &p0, 1, None);
        c.reject(DeadLetter::new(&p0, 2, "e-9", "validate", "invalid_json", "bad", 64));
        commit(&store, 1, 1_000, &mut c, &[(0, 3), (1, 1)]);
        c.add("a", 0, false, &p0, 3, None);
        c.closed("a", 0, 3);
        commit(&store, 2, 2_000, &mut c, &[(0, 4), (1, 1)]);

        let a = trace_output(&store, "out", "a", 0).unwrap();
        assert_eq!((a.status, a.written_in, a.records, a.complete), (OutputStatus::Written, Some(2), 3, true));
        assert_eq!(a.sources.iter().map(|s| (s.partition, s.ranges.clone())).collect::<Vec<_>>(), vec![(0, vec![(0, 0), (3, 3)]), (1, vec![(0, 0)])]);
        assert_eq!(a.epochs, vec![1, 2]);
        assert_eq!(trace_output(&store, "out", "b", 0).unwrap().status, OutputStatus::Open);
        assert_eq!(trace_output(&store, "out", "zz", 0).unwrap().status, OutputStatus::Unknown);

        let r = trace_record(&store, "src", 0, 3).unwrap();
        assert_eq!((r.status, r.epoch), (RecordStatus::Window, Some(2)));
        assert_eq!(r.window.unwrap().output, "out/a@0");
        let r = trace_record(&store, "src", 0, 1).unwrap();
        assert_eq!((r.status, r.window.unwrap().written_in), (RecordStatus::Window, None));
        let r = trace_record(&store, "src", 0, 2).unwrap();
        assert_eq!((r.status, r.dlq.unwrap().id), (RecordStatus::Dlq, Some("e-9".into())));
        assert_eq!(trace_record(&store, "src", 0, 4).unwrap().status, RecordStatus::Pending);
        assert_eq!(trace_record(&store, "src", 2, 0).unwrap().status, RecordStatus::Pending);

        // Retention by age removes checkpoint 1 and says so.
        let (_, total, _, _) = retention::totals(&store).unwrap();
        let cfg = vigil_config::LineageConfig { retention: std::time::Duration::from_secs(1), ..Default::default() };
        assert_eq!(retention::expire(&store, &cfg, 2_500, total, 10).unwrap().0, 1);
        assert_eq!(trace_record(&store, "src", 0, 1).unwrap().status, RecordStatus::Expired);
        assert_eq!(trace_record(&store, "src", 0, 3).unwrap().status, RecordStatus::Window);
        let a = trace_output(&store, "out", "a", 0).unwrap();
        assert_eq!((a.status, a.complete, a.records), (OutputStatus::Written, false, 1));
        assert_eq!(trace_output(&store, "out", "b", 0).unwrap().status, OutputStatus::Expired);
        assert_eq!(retention::totals(&store).unwrap().0, 1, "the newest checkpoint's lineage stays");
        let st = serde_json::to_value(retention::status(&store, true).unwrap()).expect("status as JSON");
        assert_eq!(st["expired"]["retained_from"]["src/0"], 3, "{st}");
    }

    #[test]
    fn parses_outputs_and_positions() {
        assert_eq!(parse_output("vigil-output/a/user-007@1700000000000").unwrap(), ("vigil-output".into(), "a/user-007".into(), 1_700_000_000_000));
        assert_eq!(parse_output("o/a/b@c@-5").unwrap(), ("o".into(), "a/b@c".into(), -5));
        assert!(parse_output("o/user").unwrap_err().contains("@<window_start>"));
        assert_eq!(parse_position("events/3/42"), Some(("events".into(), 3, 42)));
        assert_eq!(parse_position("e-1-42"), None);
    }
}
