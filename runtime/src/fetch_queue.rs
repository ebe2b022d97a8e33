//! A consumer's fetch queue of its own: every assigned partition's fetched records are
//! forwarded to one librdkafka queue, which is drained many records per call.
//!
//! rust-rdkafka's consumers take one record per poll through librdkafka's event API: each
//! poll takes the queue's lock, reads the clock two or three times and sets up an event
//! (~30 % of Ingest's CPU at full rate). `rd_kafka_consume_batch_queue` takes up to a whole
//! batch per call. It cannot drain the consumer queue itself, where statistics arrive as
//! events it would drop, so the partitions' queues are forwarded here instead (librdkafka
//! keeps a forwarding set by the application when it starts fetching a partition), and the
//! consumer queue keeps only events, served by the caller's `poll`.
use crate::envelope::{PartitionBatch, TopicPartition};
use crate::{Error, Result};
use rdkafka::bindings as rdsys;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::ffi::{c_void, CStr, CString};
use std::sync::Arc;
use tokio::sync::Notify;

/// One record as librdkafka returned it, read in place.
pub(crate) struct Fetched<'a> {
    msg: &'a rdsys::rd_kafka_message_t,
}

impl Fetched<'_> {
    /// The error librdkafka attached (a consumer error, not a record), if any.
    pub(crate) fn error(&self) -> Option<RDKafkaErrorCode> {
        (self.msg.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| RDKafkaErrorCode::from(self.msg.err))
    }

    /// The record's topic handle: equal handles name the same topic.
    pub(crate) fn topic_handle(&self) -> *const c_void {
        self.msg.rkt.cast()
    }

    /// The record's topic (empty if librdkafka gives none, or it is not UTF-8).
    pub(crate) fn topic(&self) -> &str {
        if self.msg.rkt.is_null() {
            return "";
        }
        // SAFETY: `rkt` is the live topic handle of a message not yet destroyed; librdkafka
        // returns a NUL-terminated name owned by the handle.
        let name = unsafe { rdsys::rd_kafka_topic_name(self.msg.rkt) };
        if name.is_null() {
            return "";
        }
        // SAFETY: non-null, NUL-terminated, alive as long as the message (borrowed by self).
        unsafe { CStr::from_ptr(name) }.to_str().unwrap_or("")
    }

    /// Partition.
    pub(crate) fn partition(&self) -> i32 {
        self.msg.partition
    }

    /// Offset.
    pub(crate) fn offset(&self) -> i64 {
        self.msg.offset
    }

    /// Copy the record (offset, timestamp, key, value, headers) into `batch`.
    pub(crate) fn push_into(&self, batch: &mut PartitionBatch) {
        let bytes = |p: *mut c_void, len: usize| -> Option<&[u8]> {
            // SAFETY: librdkafka's pointer and length of a buffer owned by the message.
            (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
        };
        let key = bytes(self.msg.key, self.msg.key_len);
        let payload = bytes(self.msg.payload, self.msg.len).unwrap_or_default();
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message; `kind` is a valid out-pointer.
        let ts = unsafe { rdsys::rd_kafka_message_timestamp(self.msg, &mut kind) };
        let ts = (kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && ts >= 0).then_some(ts);
        let mut hdrs: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
        // SAFETY: a live message; the headers it returns belong to it.
        let has_headers =
            unsafe { rdsys::rd_kafka_message_headers(self.msg, &mut hdrs) } == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !hdrs.is_null();
        let headers = (0..).map_while(|i| {
            if !has_headers {
                return None;
            }
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
            // SAFETY: `hdrs` belongs to the live message; out-pointers are valid.
            let err = unsafe { rdsys::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size) };
            if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            // SAFETY: NUL-terminated name and a value of `size` bytes, both owned by the headers.
            let name = unsafe { CStr::from_ptr(name) }.to_str().unwrap_or("");
            let value: &[u8] = if value.is_null() { &[] } else { unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) } };
            Some((name, value))
        });
        batch.push(self.msg.offset, ts, key, payload, headers);
    }
}

/// The queue every assigned partition forwards to, and the wake-up it signals.
pub(crate) struct FetchQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// A handle on the consumer queue, where only events are left (for its length).
    events: *mut rdsys::rd_kafka_queue_t,
    /// Notified by librdkafka (from its threads) when records arrive.
    notify: Arc<Notify>,
    /// `Arc::into_raw` of `notify`, the callback's opaque pointer; reclaimed on drop.
    opaque: *const Notify,
    /// Room for one call's message pointers.
    taken: Vec<*mut rdsys::rd_kafka_message_t>,
}

// SAFETY: librdkafka queues are thread-safe; the raw pointers are owned by this value and
// used only by the one thread that holds the value at a time.
unsafe impl Send for FetchQueue {}

/// Wakes the reader: called by librdkafka, on one of its threads, when an op lands in the
/// empty queue.
unsafe extern "C" fn wake(_rk: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Notify` kept alive by `FetchQueue` until it disables this
    // callback (before it frees the Notify).
    let notify = unsafe { &*opaque.cast::<Notify>() };
    notify.notify_one();
}

impl FetchQueue {
    /// A new queue on the consumer `rk`, its wake-up enabled.
    ///
    /// # Safety
    /// `rk` must be a live consumer handle that outlives the returned queue.
    pub(crate) unsafe fn new(rk: *mut rdsys::rd_kafka_t) -> Result<Self> {
        // SAFETY: the caller guarantees `rk`.
        let queue = unsafe { rdsys::rd_kafka_queue_new(rk) };
        if queue.is_null() {
            return Err(Error::kafka("create the fetch queue", KafkaError::ClientCreation("rd_kafka_queue_new returned null".into())));
        }
        // SAFETY: the caller guarantees `rk`; null when the client has no consumer group.
        let events = unsafe { rdsys::rd_kafka_queue_get_consumer(rk) };
        let notify = Arc::new(Notify::new());
        let opaque = Arc::into_raw(notify.clone());
        // SAFETY: a live queue; `opaque` stays valid until drop disables the callback.
        unsafe { rdsys::rd_kafka_queue_cb_event_enable(queue, Some(wake), opaque.cast_mut().cast()) };
        Ok(Self { queue, events, notify, opaque, taken: Vec::new() })
    }

    /// Forward `tp`'s fetched records here. Call before the partition is assigned: records
    /// fetched before would stay on the consumer queue, out of order with these.
    ///
    /// # Safety
    /// `rk` must be the live consumer handle this queue was created on.
    pub(crate) unsafe fn forward(&self, rk: *mut rdsys::rd_kafka_t, tp: &TopicPartition) -> Result<()> {
        let fail = |why: &str| Error::kafka(format!("forward {tp} to the fetch queue"), KafkaError::ClientCreation(why.into()));
        let topic = CString::new(tp.topic.as_str()).map_err(|_| fail("topic name holds a NUL byte"))?;
        // SAFETY: the caller guarantees `rk`; `topic` is a valid C string for the call.
        let pq = unsafe { rdsys::rd_kafka_queue_get_partition(rk, topic.as_ptr(), tp.partition) };
        if pq.is_null() {
            return Err(fail("librdkafka has no queue for the partition"));
        }
        // SAFETY: both queues are live; dropping the partition queue's handle keeps the
        // forwarding (the handle is a reference, not the queue's owner).
        unsafe {
            rdsys::rd_kafka_queue_forward(pq, self.queue);
            rdsys::rd_kafka_queue_destroy(pq);
        }
        Ok(())
    }

    /// Events (statistics, errors, commit results) waiting on the consumer queue.
    pub(crate) fn events_waiting(&self) -> usize {
        if self.events.is_null() {
            return 0;
        }
        // SAFETY: a live queue handle.
        unsafe { rdsys::rd_kafka_queue_length(self.events) }
    }

    /// Signalled when records may have arrived (possibly before the last take).
    pub(crate) fn notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Take up to `max` records without waiting and hand each to `f`, in queue order; each
    /// is destroyed after `f` returns. Returns how many were taken.
    pub(crate) fn take(&mut self, max: usize, mut f: impl FnMut(&Fetched<'_>)) -> usize {
        self.taken.clear();
        self.taken.reserve(max);
        // SAFETY: a live queue; room for `max` pointers; librdkafka writes at most `max`.
        let n = unsafe { rdsys::rd_kafka_consume_batch_queue(self.queue, 0, self.taken.as_mut_ptr(), max) };
        let n = usize::try_from(n).unwrap_or(0).min(max);
        // SAFETY: librdkafka initialised the first `n` pointers.
        unsafe { self.taken.set_len(n) };
        for &m in &self.taken {
            if m.is_null() {
                continue;
            }
            // SAFETY: a message librdkafka handed over, destroyed right after its use.
            f(&Fetched { msg: unsafe { &*m } });
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
        self.taken.clear();
        n
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        // SAFETY: the queue is live until destroyed here; the callback is disabled before
        // the Notify it points to is released.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(self.queue);
            if !self.events.is_null() {
                rdsys::rd_kafka_queue_destroy(self.events);
            }
            drop(Arc::from_raw(self.opaque));
        }
    }
}
