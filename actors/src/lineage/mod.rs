//! Data lineage: which source records made each output, and where each source record went.
//!
//! - [`record`]: what Process and Validate collect per checkpoint epoch and how Sink writes
//!   it into the checkpoint's own atomic batch (so lineage never disagrees with committed
//!   outputs after a crash); [`offsets`]: the compact offset sets it stores.
//! - [`trace`]: output → source records and source record → output or DLQ entry.
//! - [`retention`]: removal by age and size, remembered so traces say what was removed.
//! - [`openlineage`]: checkpoint epochs as OpenLineage runs, exported to a file or Marquez.
//! - [`actor`]: the Lineage actor (retention, the size gauge); [`rest`]: the admin API,
//!   including the data-flow event log (the node's [`crate::journal`]).
pub mod actor;
pub mod offsets;
pub mod openlineage;
pub mod record;
pub mod rest;
pub mod retention;
pub mod trace;

use openlineage::{run_event, Exporter, Job, Run, Transition};
use record::{EpochRecord, RUN_KEY};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vigil_config::Config;
use vigil_runtime::store::{decode, encode, Op, Store};

/// The node's lineage bookkeeping beside the stages: retained size, and the OpenLineage
/// run of the epoch in progress.
pub struct LineageCtx {
    job: Job,
    exporter: Option<Exporter>,
    run: Mutex<Option<Run>>,
    /// Bytes of lineage retained.
    pub bytes: AtomicU64,
}

impl LineageCtx {
    /// Measure what the store holds and start the export; a run left open by a node that
    /// did not stop cleanly is reported as FAILed.
    ///
    /// # Errors
    /// Store failures.
    pub fn open(config: &Config, store: &Store, bootstrap: &str, config_hash: &str) -> vigil_runtime::Result<Self> {
        let (_, bytes, _, _) = retention::totals(store)?;
        metrics::gauge!("vigil_lineage_bytes").set(bytes as f64);
        metrics::counter!("vigil_lineage_entries_total").increment(0);
        let ctx = Self {
            job: Job::new(config, bootstrap, config_hash),
            exporter: Exporter::start(&config.lineage.openlineage),
            run: Mutex::new(None),
            bytes: AtomicU64::new(bytes),
        };
        if let Some(v) = store.get("lineage", RUN_KEY)? {
            let run: Run = decode("lineage run", &v)?;
            let why = format!(
                "the node stopped without committing the work after checkpoint {}; it recovers by replaying from the last committed checkpoint",
                run.after
            );
            ctx.emit(&run, Transition::Fail, None, Some(&why));
            store.write_ops("lineage", &[(RUN_KEY.to_vec(), None)])?;
        }
        Ok(ctx)
    }

    fn emit(&self, run: &Run, t: Transition, epoch: Option<&EpochRecord>, error: Option<&str>) {
        if let Some(x) = &self.exporter {
            x.emit(run_event(&self.job, run, t, vigil_runtime::now_ms(), epoch, error));
        }
    }

    /// The pipeline (re)starts from checkpoint `after`: a run still open failed with the
    /// pipeline; a new one starts.
    ///
    /// # Errors
    /// Store failures persisting the new run.
    pub fn begin(&self, store: &Store, after: u64) -> vigil_runtime::Result<()> {
        if self.exporter.is_none() {
            return Ok(());
        }
        let run = Run::new(after);
        store.write_ops("lineage", &[(RUN_KEY.to_vec(), Some(encode("lineage run", &run)?))])?;
        let old = self.run.lock().ok().and_then(|mut g| g.replace(run.clone()));
        if let Some(old) = old {
            self.emit(&old, Transition::Fail, None, Some(&format!("the pipeline restarted after a failure and replays from checkpoint {after}")));
        }
        self.emit(&run, Transition::Start, None, None);
        Ok(())
    }

    /// The run that starts when checkpoint `epoch` commits, and its write for the
    /// checkpoint's batch (none when nothing is exported or the epoch was idle).
    ///
    /// # Errors
    /// Encoding failures.
    pub fn next_run(&self, epoch: u64, idle: bool) -> vigil_runtime::Result<Option<(Run, Op)>> {
        if self.exporter.is_none() || idle {
            return Ok(None);
        }
        let run = Run::new(epoch);
        let op = (RUN_KEY.to_vec(), Some(encode("lineage run", &run)?));
        Ok(Some((run, op)))
    }

    /// Checkpoint `record.epoch` committed with `entries` lineage entries of `bytes`: the
    /// run in progress COMPLETEs and `next` STARTs (an idle epoch continues the run).
    pub fn committed(&self, record: &EpochRecord, entries: u64, bytes: u64, next: Option<Run>) {
        metrics::counter!("vigil_lineage_entries_total").increment(entries);
        let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        metrics::gauge!("vigil_lineage_bytes").set(total as f64);
        let Some(next) = next else { return };
        let done = self.run.lock().ok().and_then(|mut g| g.replace(next.clone()));
        if let Some(done) = done {
            self.emit(&done, Transition::Complete, Some(record), None);
        }
        self.emit(&next, Transition::Start, None, None);
    }

    /// The checkpoint in progress failed: its run FAILs. When processing continues
    /// (`retry_after`: the last committed checkpoint), a new run starts at once for the retry;
    /// otherwise the pipeline restarts and [`LineageCtx::begin`] starts one.
    pub fn failed(&self, error: &str, retry_after: Option<u64>) {
        let next = retry_after.filter(|_| self.exporter.is_some()).map(Run::new);
        let run = self.run.lock().ok().and_then(|mut g| std::mem::replace(&mut *g, next.clone()));
        if let Some(run) = run {
            self.emit(&run, Transition::Fail, None, Some(error));
        }
        if let Some(next) = next {
            self.emit(&next, Transition::Start, None, None);
        }
    }

    /// Orderly stop after the final checkpoint: the run that began with it did nothing and
    /// is ABORTed; waits up to `timeout` for the export to drain.
    pub async fn stopped(&self, store: &Store, timeout: Duration) {
        let run = self.run.lock().ok().and_then(|mut g| g.take());
        if let Some(run) = run {
            self.emit(&run, Transition::Abort, None, Some("the node stopped"));
            if let Err(e) = store.write_ops("lineage", &[(RUN_KEY.to_vec(), None)]) {
                tracing::warn!(error = %e, "open OpenLineage run not cleared");
            }
        }
        if let Some(x) = &self.exporter {
            let deadline = Instant::now() + timeout;
            while !x.drained() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
