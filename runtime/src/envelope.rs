//! The record envelope and the batches stages exchange: a batch keeps the keys, values and
//! headers of its records in one buffer, so reading a record allocates nothing.
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

/// Header carrying a producer-assigned stable record id.
pub const HEADER_RECORD_ID: &str = "vigil.id";

/// A topic-partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
}

impl TopicPartition {
    /// New topic-partition.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self { topic: topic.into(), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Where one record's parts sit in its batch's buffer.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<Range<usize>>,
    payload: Range<usize>,
    /// Indices into the batch's header table.
    headers: Range<usize>,
}

/// Records of one partition from one poll, in offset order. Keys, values and headers are
/// copied once into one buffer per batch; records are read as [`EnvelopeRef`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionBatch {
    /// Source partition.
    pub source: TopicPartition,
    data: Vec<u8>,
    slots: Vec<Slot>,
    /// Header name and value ranges in `data` (names are UTF-8).
    headers: Vec<(Range<usize>, Range<usize>)>,
}

/// What a batch holds: bytes of keys, values and headers, records, and headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchSize {
    /// Bytes of keys, values and header names and values.
    pub bytes: usize,
    /// Records.
    pub records: usize,
    /// Headers, all records together.
    pub headers: usize,
}

impl PartitionBatch {
    /// An empty batch of `source`.
    pub fn new(source: TopicPartition) -> Self {
        Self::with_capacity(source, BatchSize::default())
    }

    /// An empty batch of `source` with room for `size` without growing.
    pub fn with_capacity(source: TopicPartition, size: BatchSize) -> Self {
        Self { source, data: Vec::with_capacity(size.bytes), slots: Vec::with_capacity(size.records), headers: Vec::with_capacity(size.headers) }
    }

    /// What the batch holds.
    pub fn size(&self) -> BatchSize {
        BatchSize { bytes: self.data.len(), records: self.slots.len(), headers: self.headers.len() }
    }

    fn put(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        start..self.data.len()
    }

    /// Append a record (headers in order; a header without a value reads as empty).
    pub fn push<'h>(
        &mut self,
        offset: i64,
        timestamp_ms: Option<i64>,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    ) {
        let key = key.map(|k| self.put(k));
        let payload = self.put(payload);
        let first = self.headers.len();
        for (name, value) in headers {
            let (n, v) = (self.put(name.as_bytes()), self.put(value));
            self.headers.push((n, v));
        }
        self.slots.push(Slot { offset, timestamp_ms, key, payload, headers: first..self.headers.len() });
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Record `i`.
    pub fn get(&self, i: usize) -> Option<EnvelopeRef<'_>> {
        self.slots.get(i).map(|slot| EnvelopeRef { batch: self, slot })
    }

    /// The records, in offset order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EnvelopeRef<'_>> + '_ {
        self.slots.iter().map(move |slot| EnvelopeRef { batch: self, slot })
    }

    /// Offset of the last record, if any.
    pub fn last_offset(&self) -> Option<i64> {
        self.slots.last().map(|s| s.offset)
    }

    /// Bytes of memory the batch holds (buffer and tables), for memory accounting.
    pub fn memory_bytes(&self) -> usize {
        self.data.capacity()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.headers.capacity() * std::mem::size_of::<(Range<usize>, Range<usize>)>()
    }

    /// Give back room reserved beyond what the batch holds (a batch sized from an earlier,
    /// larger one), so that it holds no more memory in flight than it needs. Shrinking in
    /// place, the allocator copies nothing.
    pub fn trim(&mut self) {
        fn trim<T>(v: &mut Vec<T>) {
            if v.capacity() > v.len() + v.len() / 4 {
                v.shrink_to_fit();
            }
        }
        trim(&mut self.data);
        trim(&mut self.slots);
        trim(&mut self.headers);
    }

    /// Forget the records, keeping the buffers for reuse.
    pub fn clear(&mut self) {
        self.data.clear();
        self.slots.clear();
        self.headers.clear();
    }
}

/// One consumed record, borrowed from its batch.
#[derive(Clone, Copy)]
pub struct EnvelopeRef<'a> {
    batch: &'a PartitionBatch,
    slot: &'a Slot,
}

impl<'a> EnvelopeRef<'a> {
    /// Source partition.
    pub fn source(&self) -> &'a TopicPartition {
        &self.batch.source
    }

    /// Offset in the source partition.
    pub fn offset(&self) -> i64 {
        self.slot.offset
    }

    /// Kafka timestamp (ms), if any.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.slot.timestamp_ms
    }

    /// Record key.
    pub fn key(&self) -> Option<&'a [u8]> {
        self.slot.key.clone().map(|r| &self.batch.data[r])
    }

    /// Record value.
    pub fn payload(&self) -> &'a [u8] {
        &self.batch.data[self.slot.payload.clone()]
    }

    /// Record headers as stored: name and value bytes, in order.
    fn raw_headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let b = self.batch;
        b.headers[self.slot.headers.clone()].iter().map(move |(n, v)| (&b.data[n.clone()], &b.data[v.clone()]))
    }

    /// Record headers, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        self.raw_headers().map(|(n, v)| (std::str::from_utf8(n).unwrap_or_default(), v))
    }

    /// The first header called `name` (names compared as bytes: no UTF-8 check per header).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.raw_headers().find(|(n, _)| *n == name.as_bytes()).map(|(_, v)| v)
    }

    /// Stable id: the `vigil.id` header if present (and UTF-8), else `topic/partition/offset`.
    pub fn id(&self) -> Cow<'a, str> {
        match self.header(HEADER_RECORD_ID).and_then(|v| std::str::from_utf8(v).ok()) {
            Some(id) => Cow::Borrowed(id),
            None => Cow::Owned(format!("{}/{}/{}", self.batch.source.topic, self.batch.source.partition, self.slot.offset)),
        }
    }
}

impl fmt::Debug for EnvelopeRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope").field("source", self.source()).field("offset", &self.offset()).field("payload_bytes", &self.payload().len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_share_one_buffer() {
        let mut b = PartitionBatch::new(TopicPartition::new("t", 3));
        b.push(7, Some(1), None, b"one", []);
        b.push(8, None, Some(b"k"), b"two", [("a", &b"1"[..]), (HEADER_RECORD_ID, b"abc")]);
        assert_eq!(b.len(), 2);
        let r0 = b.get(0).unwrap();
        assert_eq!((r0.offset(), r0.timestamp_ms(), r0.key(), r0.payload()), (7, Some(1), None, &b"one"[..]));
        assert_eq!(r0.id(), "t/3/7");
        let r1 = b.get(1).unwrap();
        assert_eq!((r1.key(), r1.payload()), (Some(&b"k"[..]), &b"two"[..]));
        assert_eq!(r1.headers().collect::<Vec<_>>(), vec![("a", &b"1"[..]), (HEADER_RECORD_ID, &b"abc"[..])]);
        assert_eq!(r1.id(), "abc");
        assert!(b.get(2).is_none());
        let size = b.size();
        assert_eq!(size, BatchSize { bytes: 3 + 1 + 3 + (1 + 1) + (8 + 3), records: 2, headers: 2 });
        let mut again = PartitionBatch::with_capacity(b.source.clone(), size);
        let room = again.memory_bytes();
        for r in b.iter() {
            again.push(r.offset(), r.timestamp_ms(), r.key(), r.payload(), r.headers());
        }
        assert_eq!((again.memory_bytes(), again.size()), (room, size), "a batch the size of the last fits without growing");
        let mut fewer = PartitionBatch::with_capacity(b.source.clone(), BatchSize { bytes: 1 << 20, records: 10_000, headers: 10_000 });
        fewer.push(1, None, None, b"one", []);
        fewer.trim();
        assert!(fewer.memory_bytes() < 1024, "room beyond what it holds is given back: {}", fewer.memory_bytes());
        b.clear();
        assert!(b.is_empty());
    }
}
