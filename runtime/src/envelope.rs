//! The record envelope and the batches stages exchange.
use serde::{Deserialize, Serialize};
use std::fmt;

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

/// One consumed record with its source position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Stable id: the `vigil.id` header if present, else `topic/partition/offset`.
    pub id: String,
    /// Offset in the source partition.
    pub offset: i64,
    /// Kafka timestamp (ms), if any.
    pub timestamp_ms: Option<i64>,
    /// Record key.
    pub key: Option<Vec<u8>>,
    /// Record value.
    pub payload: Vec<u8>,
    /// Record headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Records of one partition from one poll, in offset order.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionBatch {
    /// Source partition.
    pub source: TopicPartition,
    /// Records.
    pub records: Vec<Envelope>,
}

/// Compute the stable id of a record.
pub fn record_id(tp: &TopicPartition, offset: i64, headers: &[(String, Vec<u8>)]) -> String {
    headers
        .iter()
        .find(|(k, _)| k == HEADER_RECORD_ID)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{}/{}/{}", tp.topic, tp.partition, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_prefers_header() {
        let tp = TopicPartition::new("t", 3);
        assert_eq!(record_id(&tp, 7, &[]), "t/3/7");
        assert_eq!(record_id(&tp, 7, &[(HEADER_RECORD_ID.into(), b"abc".to_vec())]), "abc");
    }
}
