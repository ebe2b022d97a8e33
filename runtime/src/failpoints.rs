//! Fault injection points (the `fail` crate): the catalogue of their names, the per-stage
//! point every stage evaluates once per message, and switching points on and off at run
//! time (the admin API's `/chaos/failpoints`, `FAILPOINTS` at start). Compiled in with the
//! `failpoints` feature; without it every point is a no-op and switching one is refused.

/// The checkpoint's atomic store write. `return(reason)` fails it like a full or broken
/// disk would; `sleep(ms)` makes it slow like a stalled fsync.
pub const STORE_COMMIT: &str = "store-commit-checkpoint";

/// Right after a checkpoint that holds window outputs commits, before they are published:
/// `return` aborts the process there, as a SIGKILL at that instant would (the outputs are
/// then published by the next start).
pub const SINK_PUBLISH: &str = "sink-publish";

/// Self-test of the drills only: Sink commits a checkpoint without waiting for its outputs
/// to be flushed ("acknowledge before flushing"), a real bug that a SIGKILL turns into
/// lost records. `vigil drill run node-kill --sabotage ack-before-flush` must fail.
pub const BUG_ACK_BEFORE_FLUSH: &str = "bug-ack-before-flush";

/// Self-test of the drills only: the checkpoint commits states but not the source offsets,
/// so a restart reads from the start again on top of restored state.
/// `vigil drill run node-kill --sabotage skip-offset-commit` must fail.
pub const BUG_SKIP_OFFSET_COMMIT: &str = "bug-skip-offset-commit";

/// Prefix of the per-stage points: `stage.<name>` where name is a stage (`validate`, every
/// shard) or one shard (`validate-1`); see [`StagePoint`].
pub const STAGE_PREFIX: &str = "stage.";

/// Fixed points besides the per-stage ones.
pub const FIXED: [&str; 4] = [STORE_COMMIT, SINK_PUBLISH, BUG_ACK_BEFORE_FLUSH, BUG_SKIP_OFFSET_COMMIT];

/// Whether this build has failpoints compiled in.
pub const fn enabled() -> bool {
    cfg!(feature = "failpoints")
}

/// Whether `name` is a point this build evaluates (fixed, or `stage.<something>`).
pub fn is_known(name: &str) -> bool {
    FIXED.contains(&name) || name.strip_prefix(STAGE_PREFIX).is_some_and(|s| !s.is_empty())
}

/// Switch point `name` to `actions` (`fail` syntax: `panic`, `sleep(ms)`, `delay(ms)`,
/// `return(arg)`, `off`, with `p%` and `n*` modifiers, `->` chains).
///
/// # Errors
/// A message naming the point or the action that is wrong, or saying the build has no
/// failpoints.
pub fn set(name: &str, actions: &str) -> Result<(), String> {
    if !enabled() {
        return Err("this build has no failpoints (build with the `failpoints` feature)".into());
    }
    if !is_known(name) {
        return Err(format!("unknown failpoint `{name}`: one of {} or {STAGE_PREFIX}<stage or shard>", FIXED.join(", ")));
    }
    fail::cfg(name, actions).map_err(|e| format!("failpoint `{name}`: actions `{actions}`: {e}"))
}

/// Switch point `name` off. Returns whether it was on.
pub fn clear(name: &str) -> bool {
    let on = list().iter().any(|(n, _)| n == name);
    fail::remove(name);
    on
}

/// Switch every point off; returns the names that were on.
pub fn clear_all() -> Vec<String> {
    let names: Vec<String> = list().into_iter().map(|(n, _)| n).collect();
    for n in &names {
        fail::remove(n);
    }
    names
}

/// Points that are on, with their actions.
pub fn list() -> Vec<(String, String)> {
    let mut v: Vec<_> = fail::list().into_iter().filter(|(_, a)| !a.is_empty() && a != "off").collect();
    v.sort();
    v
}

/// Evaluate a fixed point whose only effect is its action (`panic`, `sleep`, ...), or
/// `return`, reported as `Some(argument)`.
pub fn eval(name: &str) -> Option<Option<String>> {
    if !enabled() {
        return None;
    }
    fail::eval(name, |arg| arg)
}

/// The point(s) of one stage shard: `stage.<shard>` and, for a sharded stage, also
/// `stage.<stage>`, so a drill can hit one shard or all of them.
#[derive(Debug, Clone)]
pub struct StagePoint {
    shard: String,
    stage: Option<String>,
}

impl StagePoint {
    /// Points of shard `shard` of `stage` (equal names for an unsharded stage).
    pub fn new(stage: &str, shard: &str) -> Self {
        let stage = (stage != shard).then(|| format!("{STAGE_PREFIX}{stage}"));
        Self { shard: format!("{STAGE_PREFIX}{shard}"), stage }
    }

    /// Evaluate: a `panic` panics this actor (its supervisor restarts it), `sleep(ms)`
    /// stalls it (blocking its thread, as a stuck call would), `delay(ms)` slows it.
    pub fn eval(&self) {
        if !enabled() {
            return;
        }
        let _ = fail::eval(&self.shard, |_| ());
        if let Some(s) = &self.stage {
            let _ = fail::eval(s, |_| ());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(is_known("stage.validate-1"));
        assert!(is_known(STORE_COMMIT));
        assert!(!is_known("stage."));
        assert!(!is_known("store-commit"));
        if enabled() {
            let e = set("nope", "panic").unwrap_err();
            assert!(e.contains("unknown failpoint `nope`"), "{e}");
            let e = set("stage.x", "explode").unwrap_err();
            assert!(e.contains("stage.x") && e.contains("explode"), "{e}");
        } else {
            assert!(set(STORE_COMMIT, "off").is_err());
        }
    }

    #[test]
    fn stage_points_cover_the_shard_and_the_stage() {
        let p = StagePoint::new("validate", "validate-1");
        assert_eq!((p.shard.as_str(), p.stage.as_deref()), ("stage.validate-1", Some("stage.validate")));
        let p = StagePoint::new("sink", "sink");
        assert_eq!((p.shard.as_str(), p.stage), ("stage.sink", None));
    }
}
