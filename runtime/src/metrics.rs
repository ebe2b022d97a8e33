//! Prometheus exposition: installs the process-wide `metrics` recorder and serves
//! `/metrics` in the Prometheus text format.
use crate::security::access::Routes;
use crate::{Error, Result};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the recorder once per process and describe Vigil's metrics.
///
/// # Errors
/// [`Error::Metrics`] if another recorder is already installed.
pub fn install() -> Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        .map_err(|e| Error::Metrics(e.to_string()))?
        .install_recorder()
        .map_err(|e| Error::Metrics(e.to_string()))?;
    describe();
    let _ = HANDLE.set(handle.clone());
    Ok(HANDLE.get().cloned().unwrap_or(handle))
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("vigil_records_total", "Records seen per pipeline stage (ingest, validate, process, sink=windows written, dlq).");
    describe_counter!("vigil_window_records_emitted_total", "Input records represented by the windows written.");
    describe_counter!("vigil_records_lost_to_retention_total", "Records the log start offset moved past before Vigil read them.");
    describe_counter!("vigil_actor_restarts_total", "Restarts of each supervised actor.");
    describe_counter!("vigil_delivery_failures_total", "Output records Kafka failed to acknowledge.");
    describe_counter!("vigil_checkpoints_total", "Checkpoints by outcome (ok, failed).");
    describe_gauge!("vigil_checkpoint_last_success_timestamp_seconds", Unit::Seconds, "Completion time of the last committed checkpoint.");
    describe_gauge!("vigil_checkpoint_bytes", Unit::Bytes, "Bytes the last checkpoint wrote: stage state plus lineage.");
    describe_gauge!("vigil_restore_duration_seconds", Unit::Seconds, "Time the last restore of window state from the checkpoint took.");
    describe_counter!("vigil_restore_keys_total", "Open windows restored from checkpoints (all restores).");
    describe_gauge!("vigil_watermark_lag_seconds", Unit::Seconds, "Wall-clock time minus Process's event-time watermark.");
    describe_counter!("vigil_checkpoint_failures_total", "Checkpoints that failed (outputs not acknowledged or store write failed).");
    describe_histogram!("vigil_checkpoint_duration_seconds", Unit::Seconds, "Barrier injection to atomic commit.");
    describe_histogram!("vigil_stage_batch_seconds", Unit::Seconds, "Time a stage spends on one batch.");
    describe_histogram!(
        "vigil_record_latency_seconds",
        Unit::Seconds,
        "Produce to processed latency of the oldest record of each batch, from its Kafka timestamp."
    );
    describe_gauge!(
        "vigil_memory_bytes",
        Unit::Bytes,
        "Memory in use by component: prefetch (fetched, unread records), in_flight (batches between Ingest and Sink), produce_queue (outputs awaiting acknowledgement), process (resident set)."
    );
    describe_gauge!("vigil_checkpoint_size_bytes", Unit::Bytes, "Size of the last checkpoint's stage state.");
    describe_gauge!("vigil_last_checkpoint_id", "Id of the last completed checkpoint.");
    describe_gauge!("vigil_consumer_lag", "Records behind the end of each source partition.");
    describe_gauge!("vigil_ingest_credits", "Batches Ingest may still send before it pauses (backpressure).");
    describe_gauge!("vigil_ingest_paused", "1 while Ingest has paused its partitions for backpressure.");
    describe_gauge!("vigil_open_windows", "Windows currently open, per aggregation and Process shard.");
    describe_gauge!("vigil_sink_held_outputs", "Window outputs Sink holds until the checkpoint that produced them commits.");
    describe_gauge!(
        "vigil_ingest_held_partitions",
        "Partitions Ingest holds back for running more than pipeline.event_time.max_drift ahead of the slowest, or while a partition with records left has delivered none (watermark alignment)."
    );
    describe_gauge!(
        "vigil_ingest_aligning",
        "1 while the node is over pipeline.event_time.align_above_memory_percent of node.memory_limit (until 10 points under), when watermark alignment applies."
    );
    describe_gauge!("vigil_memory_limit_bytes", "node.memory_limit: the resident size the node keeps under.");
    describe_gauge!("vigil_memory_throttled", "1 while Ingest holds back because the node is over 70 % of node.memory_limit (until under 60 %).");
    describe_gauge!(
        "vigil_checkpoint_pending_changes",
        "Windows changed since the last checkpoint (what the next one encodes and writes); past checkpoint.changes_max Ingest waits for that checkpoint."
    );
    describe_counter!("vigil_ingest_change_holds_total", "Times Ingest waited for a checkpoint because windows changed past checkpoint.changes_max.");
    describe_counter!("vigil_memory_throttle_total", "Times Ingest started holding back for node.memory_limit.");
    describe_gauge!("vigil_aligner_held_messages", "Messages a stage (shard) holds back behind a checkpoint barrier until every input's barrier has arrived.");
    describe_counter!("vigil_aggregation_records_total", "Validated records per aggregation and outcome: counted, filtered (by its filter) or late.");
    describe_counter!("vigil_late_records_total", "Records later than an aggregation's allowed lateness (sent to the late topic or the DLQ).");
    describe_counter!("vigil_checkpoint_window_writes_total", "Window state written by checkpoints: put per changed window, delete per closed one.");
    describe_gauge!("vigil_watermark_seconds", Unit::Seconds, "Event-time watermark of Process, seconds since epoch.");
    describe_counter!("vigil_validation_failures_total", "Records sent to the DLQ by Validate, by reason.");
    describe_counter!("vigil_schema_records_total", "Valid records read per schema subject and version.");
    describe_counter!("vigil_deprecated_schema_records_total", "Valid records written with a deprecated schema version.");
    describe_gauge!("vigil_kafka_brokers_up", "Kafka brokers the consumer sees up (librdkafka statistics).");
    describe_gauge!("vigil_dq_records_per_second", "Records read per second per source over quality.window.");
    describe_gauge!("vigil_dq_validity_ratio", "Share of the records read per source that passed validation.");
    describe_gauge!("vigil_dq_dlq_per_second", "Dead letters per second per source and reason.");
    describe_gauge!("vigil_dq_completeness_ratio", "Share of decoded records that have each watched field (not absent or null).");
    describe_gauge!("vigil_dq_freshness_p50_seconds", Unit::Seconds, "Median of now minus event time of valid records.");
    describe_gauge!("vigil_dq_freshness_p99_seconds", Unit::Seconds, "99th percentile of now minus event time of valid records.");
    describe_gauge!("vigil_dq_latency_p50_seconds", Unit::Seconds, "Median end-to-end latency, Ingest poll to Sink done.");
    describe_gauge!("vigil_dq_latency_p99_seconds", Unit::Seconds, "99th percentile end-to-end latency, Ingest poll to Sink done.");
    describe_gauge!("vigil_dq_lag_records", "Consumer lag per source.");
    describe_gauge!("vigil_dq_duplicates_per_second", "Records per second whose id was seen before (Bloom filter; see docs/quality.md).");
    describe_gauge!("vigil_dq_late_per_second", "Records per second later than the allowed lateness.");
    describe_gauge!("vigil_dq_stalled_partitions", "Partitions without progress for quality.stall_after while they have lag or their broker is silent.");
    describe_gauge!("vigil_dq_schema_version_share", "Share of valid records per schema subject/version.");
    describe_counter!("vigil_dq_reports_dropped_total", "Batch quality reports dropped (quality actor full or restarting).");
    describe_gauge!("vigil_alerts", "Alerts by state (pending, firing, suppressed, resolved) and severity.");
    describe_counter!("vigil_alert_evaluations_total", "Alert rule evaluations.");
    describe_counter!("vigil_alert_notifications_total", "Notifications per receiver by outcome (sent, failed, dropped).");
    describe_gauge!("vigil_alert_receiver_up", "1 while a receiver's last notification got through.");
    describe_gauge!("vigil_node_restarts_last_minute", "Actor restarts by supervisors in the last minute.");
    describe_gauge!("vigil_node_checkpoint_failures_last_minute", "Checkpoints that failed in the last minute.");
    describe_gauge!(
        "vigil_node_access_denied_last_minute",
        "Admin and metrics calls refused for bad, missing, revoked or insufficient credentials in the last minute."
    );
    describe_gauge!("vigil_node_unclean_restart", "1 for one quality window after a start whose previous run did not stop cleanly.");
    describe_counter!("vigil_journal_events_total", "Operational events journaled, by kind (restart, dlq_burst, chaos, ...).");
    describe_gauge!("vigil_incidents", "Incidents by state (open, acknowledged, mitigated).");
    describe_counter!("vigil_incidents_opened_total", "Incidents opened, by severity.");
    describe_counter!("vigil_incident_pages_total", "Escalation pages sent, by level.");
    describe_counter!("vigil_lineage_entries_total", "Lineage entries written with checkpoints (window segments and dead letters).");
    describe_gauge!("vigil_lineage_bytes", "Bytes of lineage retained, as written (before compression).");
    describe_counter!("vigil_lineage_expired_bytes_total", "Bytes of lineage removed by retention (age or size).");
    describe_counter!("vigil_lineage_export_total", "OpenLineage events by transport (file, http) and outcome (ok, failed, dropped).");
    describe_histogram!("vigil_lineage_trace_seconds", "Time to answer a lineage trace on the admin API, by kind (output, record, status).");
    describe_counter!("vigil_admin_denied_total", "Admin and metrics calls refused, by reason (unauthenticated, forbidden, rate_limited).");
    describe_counter!(
        "vigil_tls_handshake_failures_total",
        "TLS handshakes that failed or timed out (plaintext to a TLS port, no or untrusted client certificate)."
    );
    describe_counter!("vigil_tls_reloads_total", "Certificate reloads (SIGHUP) by outcome (ok, failed: the certificate in use stays).");
    describe_counter!("vigil_audit_write_errors_total", "Audit log entries that could not be written.");
    describe_counter!(
        "vigil_schema_registrations_total",
        "Schema registrations by outcome (registered, existing, incompatible, invalid, lint_blocked, error)."
    );
}

/// The `/metrics` route (action `metrics.read`) and `/healthz`; runs the recorder's
/// periodic upkeep for as long as the routes exist.
pub fn routes(handle: PrometheusHandle) -> Routes {
    let alive = Arc::new(());
    upkeep_while(Arc::downgrade(&alive), handle.clone(), UPKEEP_EVERY);
    Routes::new().get("/healthz", "health.read", || async { "ok\n" }).get("/metrics", "metrics.read", move || {
        // Held by the route, so the upkeep ends when the routes are dropped.
        let _routes_alive = &alive;
        let h = handle.clone();
        async move { ([("content-type", "text/plain; version=0.0.4")], h.render()) }
    })
}

/// How often the recorder's upkeep runs (drains histogram samples into their summaries).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Run `handle`'s upkeep every `every` until `alive` is gone (a node's stopped listener
/// dropped its routes).
fn upkeep_while(alive: std::sync::Weak<()>, handle: PrometheusHandle, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if alive.strong_count() == 0 {
                return;
            }
            handle.run_upkeep();
        }
    })
}

/// A `kB` field of `/proc/self/status` (Linux), in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory of this process in bytes (`VmRSS`), where the platform tells.
pub fn resident_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

/// Peak resident memory of this process in bytes (`VmHWM`), where the platform tells.
pub fn peak_resident_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_upkeep_ends_once_the_routes_are_gone() {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let alive = Arc::new(());
        let task = upkeep_while(Arc::downgrade(&alive), handle, Duration::from_millis(10));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished(), "runs while the routes exist");
        drop(alive);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !task.is_finished() {
            assert!(std::time::Instant::now() < deadline, "still running 5 s after the routes were dropped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
