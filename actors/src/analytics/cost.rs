//! What incremental checkpoints cost as state grows: open `n` windows, checkpoint them all,
//! change a fraction, checkpoint again, then restore — against a real [`Store`]. Used by
//! `vigil bench state` and by a test that holds the bytes ratio to its bound.
use super::engine::Aggregation;
use super::metrics::Val;
use super::spec::Analytics;
use super::state;
use super::watermark::Watermarks;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use vigil_runtime::store::{Checkpoint, CheckpointMeta, Op, Store};

/// The aggregation measured: one hour tumbling windows per user with exact metrics and both
/// sketches, so a window's size is that of a realistic one.
pub const AGGREGATION: &str = r#"
[[pipeline.aggregations]]
name = "bench"
group_by = ["user"]
window = { kind = "tumbling", size = "1h" }
metrics = ["count", "sum(amount)", "avg(amount)", "max(amount)", "p99(amount)", "distinct(page)"]
"#;

/// Figures of one measurement.
#[derive(Debug, Clone, Serialize)]
pub struct StateCost {
    /// Open windows.
    pub windows: u64,
    /// Windows changed between the two checkpoints.
    pub changed: u64,
    /// Bytes (keys + values) written by the first checkpoint: the full state.
    pub full_bytes: u64,
    /// Bytes written by the checkpoint after the change.
    pub delta_bytes: u64,
    /// `delta_bytes / full_bytes`.
    pub ratio: f64,
    /// Duration of the first (full) checkpoint: encode and write, seconds.
    pub full_checkpoint_secs: f64,
    /// Duration of the incremental checkpoint, seconds.
    pub delta_checkpoint_secs: f64,
    /// Time to read every window back, seconds.
    pub restore_secs: f64,
    /// Windows restored.
    pub restored: u64,
}

fn checkpoint(store: &Store, id: u64, an: &Analytics, agg: &mut Aggregation) -> crate::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut ops: Vec<Op> = Vec::new();
    let meta = state::snapshot(an, std::slice::from_mut(agg), &Watermarks::default(), &mut ops)?;
    let bytes = ops.iter().map(|(k, v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64).sum();
    let states: BTreeMap<String, Vec<u8>> = state::merge_metas(vec![meta])?.into_iter().collect();
    let cp = Checkpoint {
        meta: CheckpointMeta {
            id,
            completed_ms: vigil_runtime::now_ms(),
            node_id: "bench".into(),
            offsets: BTreeMap::new(),
            state_bytes: BTreeMap::new(),
            duration_us: 0,
        },
        states,
    };
    store.commit_checkpoint(&cp, 2, &[(state::CF, &ops)])?;
    Ok((bytes, started.elapsed()))
}

/// Open `windows` windows (three records each), checkpoint, change `changed_fraction` of
/// them (one more record each), checkpoint, and restore, in the store at `dir`.
///
/// # Errors
/// Store or configuration failures.
pub fn measure(dir: &std::path::Path, windows: u64, changed_fraction: f64) -> crate::Result<StateCost> {
    let config =
        vigil_config::Config::from_toml_str(AGGREGATION, Vec::new()).map_err(|e| crate::Error::Config { path: "bench".into(), message: e.to_string() })?;
    let an = Analytics::compile(&config.pipeline);
    let spec = &an.aggs[0];
    let store = Store::open(dir)?;
    let mut agg = Aggregation::new(spec.kind, spec.lateness_ms, spec.metrics.clone());
    let pages = ["/", "/search", "/cart", "/checkout"];
    let t0 = 1_700_000_000_000i64;
    let add = |agg: &mut Aggregation, i: u64, j: u64| {
        let key = format!("user-{i:08}");
        let amount = ((i * 7919 + j * 104_729) % 50_000) as f64 / 100.0;
        let vals = [Val::Missing, Val::Num(amount), Val::Num(amount), Val::Num(amount), Val::Num(amount), Val::Str(pages[((i + j) % 4) as usize])];
        let _ = agg.add(&key, t0 + (j as i64), &vals, |_| {});
    };
    for i in 0..windows {
        for j in 0..3 {
            add(&mut agg, i, j);
        }
    }
    let (full_bytes, full) = checkpoint(&store, 1, &an, &mut agg)?;
    let step = (1.0 / changed_fraction.clamp(1e-6, 1.0)).round().max(1.0) as u64;
    let mut changed = 0;
    for i in (0..windows).step_by(step as usize) {
        add(&mut agg, i, 3);
        changed += 1;
    }
    let (delta_bytes, delta) = checkpoint(&store, 2, &an, &mut agg)?;
    let started = Instant::now();
    let restored = match state::restore(&store, &an, Duration::ZERO, (0, 1), |_| {})? {
        Ok(r) => r,
        Err(reason) => return Err(crate::Error::IncompatibleState { stage: "bench", reason }),
    };
    let restore_secs = started.elapsed().as_secs_f64();
    Ok(StateCost {
        windows,
        changed,
        full_bytes,
        delta_bytes,
        ratio: delta_bytes as f64 / full_bytes.max(1) as f64,
        full_checkpoint_secs: full.as_secs_f64(),
        delta_checkpoint_secs: delta.as_secs_f64(),
        restore_secs,
        restored: restored.windows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint after 1 % of the windows changed writes about 1 % of the full state's
    /// bytes (the bound is 5 %), and a restore reads every window back.
    #[test]
    fn incremental_checkpoint_writes_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let c = measure(dir.path(), 20_000, 0.01).unwrap();
        assert_eq!((c.changed, c.restored), (200, 20_000), "{c:?}");
        assert!(c.ratio <= 0.05 && c.ratio >= 0.005, "{c:?}");
    }
}
