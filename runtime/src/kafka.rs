//! Kafka I/O in batches: client configuration from `[kafka]`, a batch consumer with
//! explicit assignment, pause/resume and retention-gap detection, and a producer that
//! tracks delivery failures so a checkpoint never covers an unacknowledged output.
use crate::envelope::{BatchSize, EnvelopeRef, PartitionBatch, TopicPartition};
use crate::fetch_queue::FetchQueue;
use crate::stats::PartitionProgress;
use crate::{Error, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_config::KafkaConfig;

/// Base librdkafka configuration for any client of this node: bootstrap servers,
/// `[kafka.security]` (TLS, SASL; secrets read now) and `kafka.properties`.
///
/// # Errors
/// [`Error::Security`] naming the field whose secret cannot be read.
pub fn client_config(bootstrap: &str, kafka: &KafkaConfig) -> Result<ClientConfig> {
    configure(bootstrap, kafka, &[])
}

/// [`client_config`] with a client's own `defaults` under the security settings and the
/// explicit properties (which win).
fn configure(bootstrap: &str, kafka: &KafkaConfig, defaults: &[(&str, String)]) -> Result<ClientConfig> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in defaults {
        c.set(*k, v);
    }
    for (k, v) in kafka.security.librdkafka_properties().map_err(Error::Security)? {
        c.set(k, v);
    }
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    Ok(c)
}

/// Context that exports librdkafka statistics (consumer lag, broker states) as metrics.
pub struct LagContext {
    total_lag: AtomicI64,
    /// Brokers in state UP at the last report; -1 before the first.
    brokers_up: AtomicI64,
    partitions: std::sync::Mutex<BTreeMap<TopicPartition, PartitionReport>>,
}

/// One partition in the last statistics report.
#[derive(Debug, Clone, Copy)]
struct PartitionReport {
    /// Consumer lag (from the committed offset; 0 when unknown).
    lag: i64,
    /// Low and high watermark offsets, once fetched.
    ends: Option<(i64, i64)>,
    /// How long the connection it is fetched from (its leader, or a follower with
    /// `client.rack`) had received nothing, ms (`None`: unknown, or not being fetched).
    silent_ms: Option<i64>,
}

impl Default for LagContext {
    fn default() -> Self {
        Self { total_lag: AtomicI64::new(0), brokers_up: AtomicI64::new(-1), partitions: std::sync::Mutex::new(BTreeMap::new()) }
    }
}

impl LagContext {
    /// Total consumer lag over all partitions, from the last statistics report.
    pub fn total_lag(&self) -> i64 {
        self.total_lag.load(Ordering::Relaxed)
    }

    /// Brokers (not bootstrap entries) the client sees UP; `None` before the first report.
    pub fn brokers_up(&self) -> Option<i64> {
        let n = self.brokers_up.load(Ordering::Relaxed);
        (n >= 0).then_some(n)
    }
}

impl ClientContext for LagContext {
    fn stats(&self, stats: Statistics) {
        let mut total = 0;
        let mut prefetched = 0u64;
        let mut per = BTreeMap::new();
        // Microseconds since each broker's connection last received anything (-1: never).
        let rxidle: BTreeMap<i32, i64> = stats.brokers.values().filter(|b| b.nodeid >= 0).map(|b| (b.nodeid, b.rxidle)).collect();
        for (topic, t) in stats.topics {
            for (p, part) in t.partitions {
                if p < 0 || !part.desired {
                    continue;
                }
                // Every partition reports the consumer queue its fetch queue forwards to.
                prefetched = prefetched.max(part.fetchq_size);
                // Offsets are -1 until the partition's first fetch response: unknown.
                let ends = (part.hi_offset >= 0).then_some((part.lo_offset, part.hi_offset));
                let lag = part.consumer_lag.max(0);
                total += lag;
                metrics::gauge!("vigil_consumer_lag", "topic" => topic.clone(), "partition" => p.to_string()).set(lag as f64);
                let silent_ms = rxidle.get(&part.broker).filter(|us| **us >= 0).map(|us| us / 1000);
                per.insert(TopicPartition { topic: topic.clone(), partition: p }, PartitionReport { lag, ends, silent_ms });
            }
        }
        let up = stats.brokers.values().filter(|b| b.nodeid >= 0 && b.state == "UP").count() as i64;
        self.brokers_up.store(up, Ordering::Relaxed);
        metrics::gauge!("vigil_kafka_brokers_up").set(up as f64);
        self.total_lag.store(total, Ordering::Relaxed);
        metrics::gauge!("vigil_memory_bytes", "component" => "prefetch").set(prefetched as f64);
        if let Ok(mut m) = self.partitions.lock() {
            *m = per;
        }
    }
}

impl ConsumerContext for LagContext {}

/// A consumer with an explicit assignment, reading in batches: its partitions' records are
/// forwarded to a queue of its own and taken many per call (see `fetch_queue`).
pub struct BatchConsumer {
    /// Declared before `consumer`, so dropped before it: the queue lives on its client.
    fetch: FetchQueue,
    consumer: BaseConsumer<LagContext>,
    assignment: Vec<TopicPartition>,
    /// Next offset expected per partition (None until known).
    next: BTreeMap<TopicPartition, Option<i64>>,
    paused: bool,
    /// Partitions held back on their own (watermark alignment), whatever `paused` says.
    held: BTreeSet<TopicPartition>,
    /// The size of each assigned partition's last batch: the next one starts with room for
    /// as much, instead of growing its buffers from empty record by record.
    last_sizes: BTreeMap<TopicPartition, BatchSize>,
}

/// Records skipped because the log start moved past them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionGap {
    /// Partition.
    pub source: TopicPartition,
    /// First offset we expected.
    pub expected: i64,
    /// First offset actually available.
    pub resumed_at: i64,
}

impl RetentionGap {
    /// Records lost.
    pub fn lost(&self) -> i64 {
        self.resumed_at - self.expected
    }
}

impl BatchConsumer {
    /// Create a consumer for `group_id` and fetch the partitions of `topics`.
    ///
    /// # Errors
    /// [`Error::Kafka`] if the client cannot be created, [`Error::TopicNotFound`] if a
    /// topic has no partitions within `timeout`.
    pub fn new(bootstrap: &str, kafka: &KafkaConfig, topics: &[String], timeout: Duration) -> Result<Self> {
        // The partition count sizes the prefetch, so ask for it before creating the consumer.
        let meta: rdkafka::consumer::BaseConsumer = client_config(bootstrap, kafka)?.create().map_err(|e| Error::kafka("create metadata client", e))?;
        let mut assignment = Vec::new();
        for topic in topics {
            let parts = partitions_of(meta.client(), topic, timeout)?;
            assignment.extend(parts.into_iter().map(|p| TopicPartition::new(topic.clone(), p)));
        }
        drop(meta);
        let fetch = FetchBudget::new(kafka.prefetch_kbytes_max, assignment.len());
        let defaults = [
            ("group.id", kafka.group_id.clone()),
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("auto.offset.reset", "earliest".into()),
            ("enable.partition.eof", "false".into()),
            ("statistics.interval.ms", "1000".into()),
            // The high-level consumer applies `queued.max.messages.kbytes` to its one queue
            // (every partition's fetch queue forwards to it), and a fetch response (capped
            // by librdkafka at the same size, but at least `message.max.bytes`) may land on
            // top of a full queue: half the budget each.
            ("queued.max.messages.kbytes", fetch.queue_kbytes.to_string()),
            ("max.partition.fetch.bytes", fetch.partition_bytes.to_string()),
            ("queued.min.messages", "1000000".into()),
            // A partition whose prefetch is full is fetched again this soon after (the
            // default, 1 s, stalls a consumer only slightly slower than its fetches).
            ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS.to_string()),
            ("fetch.wait.max.ms", kafka.fetch_wait.unwrap_or(DEFAULT_FETCH_WAIT).as_millis().to_string()),
        ];
        let cfg = configure(bootstrap, kafka, &defaults)?;
        let consumer: BaseConsumer<LagContext> = cfg.create_with_context(LagContext::default()).map_err(|e| Error::kafka("create consumer", e))?;
        // SAFETY: the consumer's handle is live, and outlives the queue (dropped first).
        let fetch = unsafe { FetchQueue::new(consumer.client().native_ptr())? };
        let next = assignment.iter().map(|tp| (tp.clone(), None)).collect();
        let last_sizes = assignment.iter().map(|tp| (tp.clone(), BatchSize::default())).collect();
        Ok(Self { fetch, consumer, assignment, next, paused: false, held: BTreeSet::new(), last_sizes })
    }

    /// Partitions this consumer reads.
    pub fn assignment(&self) -> &[TopicPartition] {
        &self.assignment
    }

    /// Assign all partitions, starting at `offsets` where known and at the beginning
    /// otherwise.
    ///
    /// # Errors
    /// [`Error::Kafka`].
    pub fn assign_from(&mut self, offsets: &BTreeMap<TopicPartition, i64>) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for tp in &self.assignment {
            let off = match offsets.get(tp) {
                Some(o) => Offset::Offset(*o),
                None => Offset::Beginning,
            };
            tpl.add_partition_offset(&tp.topic, tp.partition, off).map_err(|e| Error::kafka(format!("assign {tp}"), e))?;
            self.next.insert(tp.clone(), offsets.get(tp).copied());
            // Before the assignment starts fetching, so that every record of the partition
            // arrives on the fetch queue, in order.
            // SAFETY: the consumer's handle is live; the queue was created on it.
            unsafe { self.fetch.forward(self.consumer.client().native_ptr(), tp)? };
        }
        self.consumer.assign(&tpl).map_err(|e| Error::kafka("assign", e))
    }

    /// Poll up to `max` records: waits up to `timeout` for the first, then takes what is
    /// already buffered. Returns per-partition batches in offset order and any retention
    /// gaps detected (records the log start moved past before we read them).
    ///
    /// # Errors
    /// [`Error::Kafka`] on a fatal consumer error.
    pub async fn poll(&mut self, max: usize, timeout: Duration) -> Result<(Vec<PartitionBatch>, Vec<RetentionGap>)> {
        self.serve_events()?;
        let mut batches: Vec<PartitionBatch> = Vec::new();
        let mut jumps = Vec::new();
        let deadline = Instant::now() + timeout;
        let notify = self.fetch.notify();
        loop {
            if self.take(max, &mut batches, &mut jumps)? > 0 {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            // librdkafka signals when the queue goes from empty to non-empty, and the take
            // just found it empty, so the next arrival wakes this wait. `Notify` keeps one
            // signal given while nobody waited, possibly for records a take already got:
            // such a wake-up finds nothing, and the loop waits again.
            if left.is_zero() || tokio::time::timeout(left, notify.notified()).await.is_err() {
                break;
            }
        }
        let gaps = jumps.iter().filter_map(|(tp, expected, got)| self.check_gap(tp, *expected, *got)).collect();
        for b in &mut batches {
            b.trim();
            if let Some(size) = self.last_sizes.get_mut(&b.source) {
                *size = b.size();
            }
            if let Some(last) = b.last_offset() {
                match self.next.get_mut(&b.source) {
                    Some(slot) => *slot = Some(last + 1),
                    None => {
                        self.next.insert(b.source.clone(), Some(last + 1));
                    }
                }
            }
        }
        batches.sort_by(|a, b| a.source.cmp(&b.source));
        Ok((batches, gaps))
    }

    /// Take up to `max` records already fetched into `batches` (one per partition, in
    /// offset order), noting offset jumps (partition, expected, got) in `jumps`. Returns
    /// the records taken.
    ///
    /// # Errors
    /// [`Error::Kafka`] on a fatal consumer error (transient ones are logged and skipped).
    fn take(&mut self, max: usize, batches: &mut Vec<PartitionBatch>, jumps: &mut Vec<(TopicPartition, i64, i64)>) -> Result<usize> {
        let (next, last_sizes) = (&self.next, &self.last_sizes);
        let mut fatal = None;
        let mut n = 0;
        // The batch of the last record's (topic handle, partition): records of a partition
        // arrive together.
        let mut last: Option<(*const std::ffi::c_void, i32, usize)> = None;
        self.fetch.take(max, |m| {
            if let Some(code) = m.error() {
                if is_transient(code) {
                    tracing::warn!(error = %code, "transient consumer error");
                } else {
                    fatal.get_or_insert(code);
                }
                return;
            }
            let (handle, partition, offset) = (m.topic_handle(), m.partition(), m.offset());
            let i = match last {
                Some((h, p, i)) if h == handle && p == partition => i,
                _ => {
                    let topic = m.topic();
                    match batches.iter().rposition(|b| b.source.partition == partition && b.source.topic == topic) {
                        Some(i) => i,
                        None => {
                            let source = TopicPartition::new(topic, partition);
                            let size = last_sizes.get(&source).copied().unwrap_or_default();
                            batches.push(PartitionBatch::with_capacity(source, size));
                            batches.len() - 1
                        }
                    }
                }
            };
            last = Some((handle, partition, i));
            let b = &mut batches[i];
            let expected = match b.last_offset() {
                Some(last) => Some(last + 1),
                None => next.get(&b.source).copied().flatten(),
            };
            if let Some(expected) = expected.filter(|e| offset > *e) {
                jumps.push((b.source.clone(), expected, offset));
            }
            m.push_into(b);
            n += 1;
        });
        match fatal {
            Some(code) => Err(Error::kafka("consume", KafkaError::MessageConsumption(code))),
            None => Ok(n),
        }
    }

    /// Serve what waits on the consumer queue: statistics (lag, brokers), commit results and
    /// client errors. Records never arrive there (every partition forwards to the fetch
    /// queue before it is assigned); one that did would be out of order, so it fails the
    /// poll, and the stage restarts from its checkpoint.
    ///
    /// # Errors
    /// [`Error::Kafka`] on a fatal client error, or a record on the consumer queue.
    fn serve_events(&self) -> Result<()> {
        for _ in 0..EVENTS_PER_POLL {
            if self.fetch.events_waiting() == 0 {
                break;
            }
            match self.consumer.poll(Duration::ZERO) {
                None => {}
                Some(Ok(m)) => {
                    let what = format!("{}/{} offset {} arrived on the consumer queue, not the fetch queue", m.topic(), m.partition(), m.offset());
                    return Err(Error::kafka(format!("consume: {what}"), KafkaError::MessageConsumption(RDKafkaErrorCode::Fail)));
                }
                Some(Err(KafkaError::MessageConsumption(code))) if is_transient(code) => tracing::warn!(error = %code, "transient consumer error"),
                Some(Err(e)) => return Err(Error::kafka("consume", e)),
            }
        }
        Ok(())
    }

    /// An offset jump is data loss only if the log start moved past what we expected;
    /// transaction markers and compaction also leave gaps, which are not loss.
    fn check_gap(&self, tp: &TopicPartition, expected: i64, got: i64) -> Option<RetentionGap> {
        // Rare (only on an offset jump), but a blocking broker round trip: keep it off the
        // async worker's other tasks.
        let watermarks = tokio::task::block_in_place(|| self.consumer.fetch_watermarks(&tp.topic, tp.partition, Duration::from_secs(2)));
        match watermarks {
            Ok((low, _)) if low > expected => Some(RetentionGap { source: tp.clone(), expected, resumed_at: low.min(got) }),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(partition = %tp, error = %e, expected, got, "offset gap; could not read log start to tell whether records were lost");
                None
            }
        }
    }

    /// Next offset to read per partition (for barriers), where known.
    pub fn positions(&self) -> BTreeMap<TopicPartition, i64> {
        self.next.iter().filter_map(|(tp, o)| o.map(|o| (tp.clone(), o))).collect()
    }

    /// Sum of the known next offsets: how far through its input the consumer is.
    pub fn position_sum(&self) -> i64 {
        self.next.values().flatten().sum()
    }

    /// Stop fetching all partitions (backpressure). Idempotent.
    ///
    /// # Errors
    /// [`Error::Kafka`].
    pub fn pause(&mut self) -> Result<()> {
        if !self.paused {
            self.consumer.pause(&self.tpl()).map_err(|e| Error::kafka("pause", e))?;
            self.paused = true;
        }
        Ok(())
    }

    /// Resume fetching. Idempotent.
    ///
    /// # Errors
    /// [`Error::Kafka`].
    pub fn resume(&mut self) -> Result<()> {
        if self.paused {
            let tpl = Self::list(self.assignment.iter().filter(|tp| !self.held.contains(*tp)));
            self.consumer.resume(&tpl).map_err(|e| Error::kafka("resume", e))?;
            self.paused = false;
        }
        Ok(())
    }

    /// Hold back exactly `held` (pausing the partitions that join it, resuming those that
    /// leave it unless everything is paused).
    ///
    /// # Errors
    /// [`Error::Kafka`].
    pub fn set_held(&mut self, held: BTreeSet<TopicPartition>) -> Result<()> {
        let join = Self::list(held.difference(&self.held));
        let leave = Self::list(self.held.difference(&held));
        if join.count() > 0 && !self.paused {
            self.consumer.pause(&join).map_err(|e| Error::kafka("pause", e))?;
        }
        if leave.count() > 0 && !self.paused {
            self.consumer.resume(&leave).map_err(|e| Error::kafka("resume", e))?;
        }
        self.held = held;
        Ok(())
    }

    /// Partitions held back on their own.
    pub fn held(&self) -> &BTreeSet<TopicPartition> {
        &self.held
    }

    fn list<'a>(tps: impl Iterator<Item = &'a TopicPartition>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for tp in tps {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        tpl
    }

    /// Whether partitions are paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn tpl(&self) -> TopicPartitionList {
        Self::list(self.assignment.iter())
    }

    /// Commit checkpointed offsets to the consumer group (visibility only: recovery reads
    /// offsets from the checkpoint, never from the group).
    pub fn commit_offsets(&self, offsets: &BTreeMap<TopicPartition, i64>) {
        let mut tpl = TopicPartitionList::new();
        for (tp, off) in offsets {
            if tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*off)).is_err() {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "group offset commit failed (lag reporting only)");
        }
    }

    /// Total consumer lag from the last statistics report.
    pub fn total_lag(&self) -> i64 {
        self.consumer.context().total_lag()
    }

    /// Per assigned partition: next offset to read (-1 until known), and lag and broker
    /// silence from the last statistics report (silence only while it is being fetched).
    pub fn progress(&self) -> Vec<PartitionProgress> {
        let reports = self.consumer.context().partitions.lock();
        self.next
            .iter()
            .map(|(tp, o)| {
                let r = reports.as_ref().ok().and_then(|m| m.get(tp));
                let fetching = !self.paused && !self.held.contains(tp);
                PartitionProgress {
                    tp: tp.clone(),
                    position: o.unwrap_or(-1),
                    lag: r.map_or(0, |r| r.lag),
                    silent_ms: r.and_then(|r| r.silent_ms).filter(|_| fetching),
                }
            })
            .collect()
    }

    /// Partitions that may have records left to read: the high watermark of the last
    /// statistics report is past the next offset (or past the log start, before the first
    /// record), or no watermark is known yet (not fetched since the consumer started).
    pub fn pending(&self) -> Vec<TopicPartition> {
        let Ok(reports) = self.consumer.context().partitions.lock() else { return self.assignment.clone() };
        let ends = |tp: &TopicPartition| reports.get(tp).and_then(|r| r.ends);
        self.assignment.iter().filter(|tp| records_left(ends(tp), self.next.get(*tp).copied().flatten())).cloned().collect()
    }

    /// Brokers the consumer sees UP (`None` before the first statistics report).
    pub fn brokers_up(&self) -> Option<i64> {
        self.consumer.context().brokers_up()
    }
}

/// Most events a poll serves from the consumer queue (statistics come once a second).
const EVENTS_PER_POLL: usize = 64;

/// `fetch.queue.backoff.ms` of Vigil's consumers: how soon a partition skipped because the
/// consumer queue was full is fetched again (librdkafka's default, 1 s, stalls a consumer
/// only slightly slower than its fetches).
pub const FETCH_QUEUE_BACKOFF_MS: u32 = 10;

/// `kafka.fetch_wait` with brokers, when unset: a broker answers as soon as data arrives,
/// so this only bounds how often an idle consumer asks.
pub const DEFAULT_FETCH_WAIT: Duration = Duration::from_millis(100);

/// Whether a partition may have records left to read, given its low and high watermark
/// offsets (if fetched yet) and the next offset to read (if known).
fn records_left(ends: Option<(i64, i64)>, next: Option<i64>) -> bool {
    match (ends, next) {
        (None, _) => true,
        (Some((_, hi)), Some(next)) => hi > next,
        (Some((lo, hi)), None) => hi > lo.max(0),
    }
}

/// How the consumer spends `kafka.prefetch_kbytes_max` (librdkafka 2.x semantics, see
/// `rd_kafka_toppar_fetch_decide`: a partition is fetched while the consumer queue its
/// fetch queue forwards to holds less than `queued.max.messages.kbytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchBudget {
    /// `queued.max.messages.kbytes`: the whole consumer queue, KiB. Half the budget: one
    /// fetch response (`fetch.max.bytes`, which librdkafka caps at this size) may arrive
    /// on top of a full queue.
    pub queue_kbytes: u32,
    /// `max.partition.fetch.bytes`: one partition's share of a response (at least 64 KiB,
    /// so a fetch still carries a batch; a larger first batch is returned whole anyway).
    pub partition_bytes: u32,
}

impl FetchBudget {
    /// The split of `total_kbytes` for a consumer of `partitions` partitions.
    pub fn new(total_kbytes: u32, partitions: usize) -> Self {
        let queue_kbytes = (total_kbytes / 2).max(1);
        let partition_bytes = (queue_kbytes.saturating_mul(1024) / partitions.max(1) as u32).max(64 * 1024);
        Self { queue_kbytes, partition_bytes }
    }
}

/// Copy a consumed message into `batch`.
fn push_message(batch: &mut PartitionBatch, m: &impl Message) {
    let headers = m.headers();
    let hs = headers.iter().flat_map(|hs| hs.iter().map(|h| (h.key, h.value.unwrap_or_default())));
    batch.push(m.offset(), m.timestamp().to_millis(), m.key(), m.payload().unwrap_or_default(), hs);
}

fn is_transient(code: RDKafkaErrorCode) -> bool {
    !matches!(
        code,
        RDKafkaErrorCode::Fatal | RDKafkaErrorCode::Authentication | RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::GroupAuthorizationFailed
    )
}

/// Partition ids of `topic`, waiting up to `timeout` for it to appear.
///
/// # Errors
/// [`Error::TopicNotFound`] or [`Error::Kafka`].
pub fn partitions_of<C: ClientContext>(client: &rdkafka::client::Client<C>, topic: &str, timeout: Duration) -> Result<Vec<i32>> {
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
        let last_error = match client.fetch_metadata(Some(topic), remaining) {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
                    if t.error().is_none() && !t.partitions().is_empty() {
                        let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                        ps.sort_unstable();
                        return Ok(ps);
                    }
                }
                None
            }
            Err(e) => Some(e),
        };
        if Instant::now() >= deadline {
            return Err(match last_error {
                Some(e) => Error::kafka(format!("metadata for `{topic}` (is the cluster reachable?)"), e),
                None => Error::TopicNotFound { topic: topic.into() },
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Delivery bookkeeping shared with librdkafka's callback thread.
#[derive(Default)]
pub struct DeliveryTracker {
    failed: AtomicU64,
    last_error: Mutex<String>,
}

impl ClientContext for DeliveryTracker {
    fn stats(&self, stats: Statistics) {
        metrics::gauge!("vigil_memory_bytes", "component" => "produce_queue").set(stats.msg_size as f64);
    }
}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("vigil_delivery_failures_total", "topic" => msg.topic().to_string()).increment(1);
            tracing::error!(topic = msg.topic(), partition = msg.partition(), error = %e, "output delivery failed");
            if let Ok(mut l) = self.last_error.lock() {
                *l = e.to_string();
            }
        }
    }
}

/// Longest pause between a flush's checks of what is still in flight.
const FLUSH_PAUSE_MAX: Duration = Duration::from_millis(5);

/// An idempotent producer whose deliveries are tracked so checkpoints can wait for them.
#[derive(Clone)]
pub struct TrackedProducer {
    inner: Arc<ThreadedProducer<DeliveryTracker>>,
}

/// One output record.
pub struct OutRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition; `None` lets the producer's partitioner pick it from the key.
    pub partition: Option<i32>,
    /// Key (deterministic, so replays deduplicate).
    pub key: &'a [u8],
    /// Value.
    pub payload: &'a [u8],
    /// Headers.
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl TrackedProducer {
    /// Create a producer with idempotence and `acks=all`.
    ///
    /// # Errors
    /// [`Error::Kafka`].
    pub fn new(bootstrap: &str, kafka: &KafkaConfig) -> Result<Self> {
        let defaults = [
            ("enable.idempotence", "true".to_string()),
            ("acks", "all".into()),
            ("linger.ms", "5".into()),
            ("queue.buffering.max.messages", "100000".into()),
            ("queue.buffering.max.kbytes", kafka.produce_queue_kbytes_max.to_string()),
            ("statistics.interval.ms", "1000".into()),
            // The tracker only counts failures; a report per delivered record cost the
            // polling thread ~1 µs each (a quarter of a core at 250k records/s).
            ("delivery.report.only.error", "true".into()),
        ];
        let cfg = configure(bootstrap, kafka, &defaults)?;
        let inner: ThreadedProducer<DeliveryTracker> = cfg.create_with_context(DeliveryTracker::default()).map_err(|e| Error::kafka("create producer", e))?;
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Enqueue a record; waits (bounded by `timeout`) while librdkafka's queue is full.
    ///
    /// # Errors
    /// [`Error::KafkaTimeout`] if the queue stays full, [`Error::Kafka`] otherwise.
    pub async fn send(&self, rec: &OutRecord<'_>, timeout: Duration) -> Result<()> {
        self.send_payload(rec, Some(rec.payload), timeout).await
    }

    /// Like [`TrackedProducer::send`], with a null value (a tombstone: compaction and
    /// upserting readers delete the key); `rec.payload` is ignored.
    ///
    /// # Errors
    /// As [`TrackedProducer::send`].
    pub async fn send_tombstone(&self, rec: &OutRecord<'_>, timeout: Duration) -> Result<()> {
        self.send_payload(rec, None, timeout).await
    }

    async fn send_payload(&self, rec: &OutRecord<'_>, payload: Option<&[u8]>, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
            for (k, v) in rec.headers {
                headers = headers.insert(Header { key: k, value: Some(*v) });
            }
            let mut record = BaseRecord::to(rec.topic).key(rec.key).headers(headers);
            if let Some(p) = rec.partition {
                record = record.partition(p);
            }
            if let Some(p) = payload {
                record = record.payload(p);
            }
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if Instant::now() >= deadline {
                        return Err(Error::KafkaTimeout { op: format!("enqueue to `{}` (queue full)", rec.topic), timeout });
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(Error::kafka(format!("produce to `{}`", rec.topic), e)),
            }
        }
    }

    /// Wait until every enqueued record is acknowledged or failed.
    ///
    /// # Errors
    /// [`Error::KafkaTimeout`] if not done within `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<()> {
        // rust-rdkafka's `flush(timeout)` waits on the main queue 100 ms at a time, and
        // with `delivery.report.only.error` no event ends that wait early: every flush with
        // a record in flight took ≥ 100 ms, and a checkpoint's stalled the pipeline as long.
        // `flush(0)` only sends what lingers and counts what is left; poll it briefly.
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            match self.inner.flush(Duration::ZERO) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) if Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(FLUSH_PAUSE_MAX);
                }
                Err(_) => return Err(Error::KafkaTimeout { op: "flush outputs".into(), timeout }),
            }
        }
    }

    /// Failed deliveries so far (monotonic).
    pub fn failed(&self) -> u64 {
        self.inner.context().failed.load(Ordering::Relaxed)
    }

    /// Last delivery error text.
    pub fn last_error(&self) -> String {
        self.inner.context().last_error.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Flush and fail if any delivery failed since `failed_before` (a prior [`Self::failed`]).
    ///
    /// # Errors
    /// [`Error::KafkaTimeout`] or [`Error::Delivery`].
    pub async fn flush_checked(&self, timeout: Duration, failed_before: u64) -> Result<()> {
        self.flush(timeout).await?;
        let failed = self.failed();
        if failed > failed_before {
            return Err(Error::Delivery { failed: failed - failed_before, last_error: self.last_error() });
        }
        Ok(())
    }
}

/// Reads stretches of single partitions from given offsets (lineage `--fetch`, id lookups).
pub struct PartitionReader {
    consumer: rdkafka::consumer::BaseConsumer,
}

impl PartitionReader {
    /// A reader of the cluster at `bootstrap` (no group offsets are committed).
    ///
    /// # Errors
    /// [`Error::Kafka`] if the client cannot be created.
    pub fn new(bootstrap: &str, kafka: &KafkaConfig) -> Result<Self> {
        let consumer = client_config(bootstrap, kafka)?
            .set("group.id", format!("vigil-reader-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .map_err(|e| Error::kafka("create reader", e))?;
        Ok(Self { consumer })
    }

    /// Read `tp` from `first` up to and including `last` (or to its end), calling `f` with
    /// each record until it returns true. Gives up after `timeout`.
    ///
    /// # Errors
    /// [`Error::Kafka`] on read failures, [`Error::KafkaTimeout`] when reading takes too long.
    pub fn scan(&self, tp: &TopicPartition, first: i64, last: Option<i64>, timeout: Duration, mut f: impl FnMut(EnvelopeRef<'_>) -> bool) -> Result<()> {
        let c = &self.consumer;
        let (low, high) = c.fetch_watermarks(&tp.topic, tp.partition, Duration::from_secs(10)).map_err(|e| Error::kafka(format!("offsets of {tp}"), e))?;
        let end = last.map_or(high, |l| l.saturating_add(1).min(high));
        let start = first.max(low);
        if start >= end {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(start)).map_err(|e| Error::kafka(format!("assign {tp}"), e))?;
        c.assign(&tpl).map_err(|e| Error::kafka(format!("assign {tp}"), e))?;
        let deadline = Instant::now() + timeout;
        let mut one = PartitionBatch::new(tp.clone());
        while Instant::now() < deadline {
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    one.clear();
                    push_message(&mut one, &m);
                    let Some(env) = one.get(0) else { continue };
                    if f(env) || m.offset() + 1 >= end {
                        return Ok(());
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
                Some(Err(e)) => return Err(Error::kafka(format!("read {tp}"), e)),
                None => {}
            }
        }
        Err(Error::KafkaTimeout { op: format!("read {tp} from offset {start}"), timeout })
    }
}

/// What a checkpoint must agree with before a node resumes from it: the cluster's id (if the
/// broker reports one) and each topic's partition count (absent: the topic does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFacts {
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// Partitions per topic asked about.
    pub partitions: BTreeMap<String, usize>,
}

/// Ask the cluster at `bootstrap` for its id and the partition counts of `topics`.
///
/// # Errors
/// [`Error::Kafka`] if the client cannot be created or metadata cannot be fetched.
pub fn cluster_facts(bootstrap: &str, kafka: &KafkaConfig, topics: &[String], timeout: Duration) -> Result<ClusterFacts> {
    let c: rdkafka::consumer::BaseConsumer = client_config(bootstrap, kafka)?.create().map_err(|e| Error::kafka("create metadata client", e))?;
    let cluster_id = c.client().fetch_cluster_id(timeout);
    let mut partitions = BTreeMap::new();
    for t in topics {
        let md = c.fetch_metadata(Some(t), timeout).map_err(|e| Error::kafka(format!("metadata of {t}"), e))?;
        if let Some(topic) = md.topics().iter().find(|m| m.name() == t && m.error().is_none() && !m.partitions().is_empty()) {
            partitions.insert(t.clone(), topic.partitions().len());
        }
    }
    Ok(ClusterFacts { cluster_id, partitions })
}

#[cfg(test)]
mod fetch_budget_tests {
    use super::{records_left, FetchBudget};

    #[test]
    fn records_are_left_until_the_next_offset_reaches_the_high_watermark() {
        assert!(records_left(None, Some(5)), "not fetched yet: may have records");
        assert!(records_left(Some((0, 10)), Some(5)));
        assert!(!records_left(Some((0, 10)), Some(10)));
        assert!(records_left(Some((0, 10)), None), "nothing read yet, records after the log start");
        assert!(!records_left(Some((0, 0)), None), "an empty partition");
        assert!(!records_left(Some((7, 7)), None), "emptied by retention");
        assert!(records_left(Some((-1, 3)), None), "log start unknown");
    }

    #[test]
    fn the_budget_is_half_queue_half_response_and_shared_by_partitions() {
        let b = FetchBudget::new(8192, 4);
        assert_eq!(b.queue_kbytes, 4096, "the whole consumer queue, not one partition's");
        assert_eq!(b.partition_bytes, 1024 * 1024);
        // Many partitions: each still gets a batch's worth.
        assert_eq!(FetchBudget::new(8192, 1000).partition_bytes, 64 * 1024);
        assert_eq!(FetchBudget::new(1, 0), FetchBudget { queue_kbytes: 1, partition_bytes: 64 * 1024 });
    }
}

#[cfg(test)]
mod batch_consumer_tests {
    use super::{BatchConsumer, OutRecord, TrackedProducer};
    use crate::embedded::EmbeddedBroker;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};
    use vigil_config::KafkaConfig;

    /// Every record arrives once, in offset order per partition, with its key, value,
    /// timestamp and headers; and the consumer queue's events are still served (the
    /// statistics that report brokers and lag arrive while records are read from the
    /// fetch queue).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_arrive_whole_and_in_order_and_statistics_still_arrive() {
        let topic = "batch-consumer-test".to_string();
        let broker = EmbeddedBroker::start(4, std::slice::from_ref(&topic), None).expect("mock cluster");
        let kafka = KafkaConfig { group_id: "batch-consumer-test".into(), ..KafkaConfig::default() };
        let producer = TrackedProducer::new(broker.bootstrap(), &kafka).expect("producer");
        let n = 4_000;
        for i in 0..n {
            let (key, value, id) = (format!("k{i}"), format!("{{\"i\":{i}}}"), format!("id-{i}"));
            let headers: [(&str, &[u8]); 2] = [("vigil.id", id.as_bytes()), ("empty", b"")];
            let rec = OutRecord { topic: &topic, partition: Some(i % 4), key: key.as_bytes(), payload: value.as_bytes(), headers: &headers };
            producer.send(&rec, Duration::from_secs(10)).await.expect("send");
        }
        producer.flush(Duration::from_secs(10)).await.expect("flush");
        let (b, k, t) = (broker.bootstrap().to_string(), kafka.clone(), topic.clone());
        let mut c = tokio::task::spawn_blocking(move || BatchConsumer::new(&b, &k, &[t], Duration::from_secs(10))).await.expect("join").expect("consumer");
        c.assign_from(&BTreeMap::new()).expect("assign");
        let mut next = BTreeMap::new();
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen < n && Instant::now() < deadline {
            let (batches, gaps) = c.poll(300, Duration::from_millis(100)).await.expect("poll");
            assert!(gaps.is_empty(), "{gaps:?}");
            for b in &batches {
                for r in b.iter() {
                    let expected = next.entry(b.source.partition).or_insert(0i64);
                    assert_eq!(r.offset(), *expected, "partition {} out of order", b.source.partition);
                    *expected += 1;
                    let i: i32 = std::str::from_utf8(r.key().expect("key")).expect("utf-8")[1..].parse().expect("index");
                    assert_eq!(i % 4, b.source.partition);
                    assert_eq!(r.payload(), format!("{{\"i\":{i}}}").as_bytes());
                    assert!(r.timestamp_ms().is_some_and(|t| t > 0), "timestamp");
                    assert_eq!(r.id(), format!("id-{i}"));
                    assert_eq!(r.header("empty"), Some(&b""[..]));
                    assert_eq!(r.headers().map(|(h, _)| h).collect::<Vec<_>>(), ["vigil.id", "empty"], "headers in order");
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, n, "every record, once");
        assert_eq!(c.position_sum(), i64::from(n));
        // Statistics come once a second on the consumer queue, which each poll serves.
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.brokers_up().is_none() && Instant::now() < deadline {
            let (batches, _) = c.poll(100, Duration::from_millis(100)).await.expect("poll");
            assert!(batches.is_empty(), "no record twice");
        }
        assert_eq!(c.brokers_up(), Some(1), "statistics served while records come from the fetch queue");
    }
}
