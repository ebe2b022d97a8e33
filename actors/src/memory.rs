//! The node's memory limit: when the resident set passes [`HIGH_PERCENT`] of
//! `node.memory_limit`, Ingest slows to a trickle until it is back under [`LOW_PERCENT`]
//! (hysteresis, so it does not flap). The rule is pure: the resident size is passed in.

/// Ingest trickles above this percentage of the memory limit. The rest above it is for what
/// a checkpoint briefly takes (the changed windows encoded, the store's write batch and
/// memtable) and for a watermark jump that closes tens of thousands of windows at once (their
/// outputs built in one step); both grow with the state in memory.
pub const HIGH_PERCENT: u64 = 70;

/// ... until the node is back under this percentage.
pub const LOW_PERCENT: u64 = 60;

/// Whether Ingest must hold back for memory.
#[derive(Debug, Clone)]
pub struct MemoryGovernor {
    high: u64,
    low: u64,
    throttled: bool,
}

impl MemoryGovernor {
    /// For a limit of `limit` bytes: held above [`HIGH_PERCENT`], until back under
    /// [`LOW_PERCENT`].
    pub fn new(limit: u64) -> Self {
        Self::with_bands(limit, HIGH_PERCENT, LOW_PERCENT)
    }

    /// Held above `high` percent of `limit`, until back under `low` percent; with `high`
    /// 0, held from the start and always.
    pub fn with_bands(limit: u64, high: u64, low: u64) -> Self {
        Self { high: limit / 100 * high, low: limit / 100 * low, throttled: high == 0 }
    }

    /// Take a new reading of the resident size; returns `Some(now_throttled)` when the
    /// state changed.
    pub fn observe(&mut self, resident: u64) -> Option<bool> {
        let next = if self.throttled { resident >= self.low } else { resident > self.high };
        (next != self.throttled).then(|| {
            self.throttled = next;
            next
        })
    }

    /// Whether reading is held back.
    pub fn throttled(&self) -> bool {
        self.throttled
    }
}

/// How the process's allocator hands free memory back, when it is not glibc's.
static RELEASE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Set how [`release_free_memory`] releases memory: the binary that chooses the process's
/// allocator says how (once; later calls are ignored).
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Hand memory the allocator holds but does not use back to the system (allocators keep
/// freed memory for reuse, which the resident size still counts): the allocator's own way
/// when one was set ([`set_release`]), else glibc's `malloc_trim`.
pub fn release_free_memory() {
    if let Some(release) = RELEASE.get() {
        release();
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// After a checkpoint, whose encoding and store write briefly take memory in proportion to
/// the state that changed: above half of `limit`, hand what was freed back to the system
/// (on a blocking thread; it takes milliseconds on a large heap). The allocator would keep
/// it for reuse, but Ingest may be held back (credits, memory) so nothing reuses it until
/// the next checkpoint, whose own temporaries then come on top of it.
pub fn after_checkpoint(limit: u64) {
    let resident = vigil_runtime::metrics::resident_bytes().unwrap_or(0);
    if resident > limit / 2 {
        tokio::task::spawn_blocking(release_free_memory);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_above_seventy_and_resumes_below_sixty_percent() {
        let mut g = MemoryGovernor::new(1000);
        assert_eq!(g.observe(650), None);
        assert_eq!(g.observe(701), Some(true));
        assert_eq!(g.observe(650), None, "still above 60 %: held");
        assert!(g.throttled());
        assert_eq!(g.observe(599), Some(false));
        assert_eq!(g.observe(700), None, "70 % exactly is not over");
        assert!(!g.throttled());
    }

    #[test]
    fn bands_are_percentages_of_the_limit() {
        let mut g = MemoryGovernor::with_bands(1000, 50, 40);
        assert_eq!(g.observe(500), None, "50 % exactly is not over");
        assert_eq!(g.observe(501), Some(true));
        assert_eq!(g.observe(401), None);
        assert_eq!(g.observe(399), Some(false));
        let mut always = MemoryGovernor::with_bands(1000, 0, 0);
        assert!(always.throttled(), "a band from 0 % holds before any reading");
        assert_eq!(always.observe(0), None);
        assert!(always.throttled());
    }
}
