//! One aggregation's windows: tumbling, hopping and session windows over event time, with
//! allowed lateness and revisions. Pure: the caller supplies the watermark.
//!
//! A window *fires* (revision 0) when the watermark reaches its end, and stays *live* until
//! the watermark passes its end plus the allowed lateness. A record for a live window that
//! already fired updates it, and the next [`Aggregation::advance`] emits it again with the
//! next revision under the same key, so an upserting reader converges on the final value.
//! A record none of whose windows is still live is *late* (the caller routes it to the
//! late-data output). Sessions of a key merge when a record bridges them; the absorbed
//! session's output key is retracted (a tombstone) if it had fired.
//!
//! Hopping windows keep *panes*: a record updates the one pane `[k·slide, (k+1)·slide)` it
//! falls in, and a window merges its `size / slide` panes when it is emitted, so a record
//! costs one metric update however many windows it is in. The pane `[s, s + slide)` lives
//! with the window starting at `s`, the last window that needs it.
use super::metrics::{Accs, Metric, Val};
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// How records are grouped in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size_ms`.
    Tumbling {
        /// Size, ms.
        size_ms: i64,
    },
    /// Windows of `size_ms` starting every `slide_ms` (a record is in `size / slide` windows).
    Hopping {
        /// Size, ms.
        size_ms: i64,
        /// Slide, ms.
        slide_ms: i64,
    },
    /// Activity periods of a key separated by at least `gap_ms` without records.
    Session {
        /// Gap, ms.
        gap_ms: i64,
    },
}

impl WindowKind {
    /// Size, slide (the pane) and windows per record. The size is also how far past its
    /// start a window reaches into later slots (a hopping window merges the panes starting
    /// before its end); a session is whole in its own slot: size and slide 1, no windows.
    fn geometry(&self) -> (i64, i64, i64) {
        match *self {
            WindowKind::Tumbling { size_ms } => (size_ms, size_ms, 1),
            // Starts s = k·slide with ts - size < s <= ts: exactly size / slide of them.
            WindowKind::Hopping { size_ms, slide_ms } => (size_ms, slide_ms, size_ms / slide_ms),
            WindowKind::Session { .. } => (1, 1, 0),
        }
    }

    /// Windows `[start, end)` of a fixed kind containing `ts`, oldest first (none for sessions).
    pub fn assign(&self, ts: i64) -> Vec<(i64, i64)> {
        self.windows_of(ts).collect()
    }

    /// [`WindowKind::assign`] without allocating.
    pub fn windows_of(&self, ts: i64) -> impl Iterator<Item = (i64, i64)> {
        let (size, slide, n) = self.geometry();
        let last = ts.div_euclid(slide) * slide;
        (0..n).rev().map(move |i| {
            let s = last - i * slide;
            (s, s + size)
        })
    }
}

/// One window of one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowAcc {
    /// End (exclusive), ms; for sessions the last record's time plus the gap.
    pub end: i64,
    /// Metrics so far: of the window's records (tumbling, session), or of its first pane's
    /// (hopping: `[start, start + slide)`).
    pub accs: Accs,
    /// Records in [`WindowAcc::accs`].
    pub records: u64,
    /// Revision of the last emission; `None` before the window fired.
    pub revision: Option<u32>,
    /// Changed since the last emission.
    pub dirty: bool,
    /// Merged into an earlier session: emit a retraction, then forget it.
    pub retracted: bool,
    /// A hopping window restored from a checkpoint written before panes: its records then
    /// (metrics, count), kept whole; later records go to panes.
    pub base: Option<Box<(Accs, u64)>>,
    /// Queued in the changes of the next checkpoint.
    #[serde(skip)]
    queued: bool,
    /// When its timer is set: at or before its deadline (a session extended by a record
    /// keeps its timer, which is moved when it comes due; see [`Aggregation::advance`]).
    #[serde(skip)]
    timer: i64,
}

impl WindowAcc {
    fn new(end: i64, accs: Accs) -> Self {
        Self { end, accs, records: 0, revision: None, dirty: true, retracted: false, base: None, queued: false, timer: end }
    }

    /// A window as checkpoints before panes wrote it; a hopping one (`hopping`) keeps its
    /// metrics whole as [`WindowAcc::base`] and starts an empty pane.
    pub fn from_legacy(l: LegacyWindowAcc, metrics: &[Metric], hopping: bool) -> Self {
        let (accs, records, base) = match hopping {
            true => (Accs::new(metrics), 0, Some(Box::new((l.accs, l.records)))),
            false => (l.accs, l.records, None),
        };
        Self { end: l.end, accs, records, revision: l.revision, dirty: l.dirty, retracted: l.retracted, base, queued: false, timer: l.end }
    }

    /// When it next needs attention (its timer): its end until it fired, then the end of
    /// its allowed lateness.
    fn deadline(&self, lateness_ms: i64) -> i64 {
        if self.revision.is_none() && !self.retracted {
            self.end
        } else {
            self.end.saturating_add(lateness_ms)
        }
    }
}

/// A window as checkpoints before panes encoded it (checkpoint windows format 1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyWindowAcc {
    /// End.
    pub end: i64,
    /// The window's metrics.
    pub accs: Accs,
    /// Its records.
    pub records: u64,
    /// Revision of the last emission.
    pub revision: Option<u32>,
    /// Changed since the last emission.
    pub dirty: bool,
    /// A retraction marker.
    pub retracted: bool,
}

/// What an aggregation emits.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    /// Group key.
    pub key: String,
    /// Window start, ms.
    pub start: i64,
    /// Window end, ms.
    pub end: i64,
    /// 0 when first fired, then +1 per update.
    pub revision: u32,
    /// Metric values in the aggregation's metric order; `None` retracts the output (a
    /// merged-away session).
    pub values: Option<Vec<serde_json::Value>>,
    /// Records in the window (0 for a retraction).
    pub count: u64,
}

/// A record no live window would take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    /// Watermark at the time.
    pub watermark: i64,
}

/// A window a record went into, as [`Aggregation::add`] reports it (for lineage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touched {
    /// The record was added to the window starting at `start`; `opened` if it created it.
    Window {
        /// Window start.
        start: i64,
        /// The record opened the window.
        opened: bool,
    },
    /// The session starting at `from` was merged into the one starting at `into`.
    Merged {
        /// Start of the absorbed session.
        from: i64,
        /// Start of the session it became part of.
        into: i64,
    },
}

/// The windows of one group key by start: small sorted vectors (a key holds one or a few
/// windows; a map per key would cost a node allocation each). Starts are kept apart from
/// the windows, so a lookup's binary search reads one cache line, not a line per large
/// window it probes. So are the flags of which windows' panes hold records: a window of a
/// key with few records reads them, not every large window, to find the panes to merge.
#[derive(Debug, Clone, Default)]
pub struct KeyWindows {
    starts: Vec<i64>,
    /// `accs[i].records > 0`.
    filled: Vec<bool>,
    accs: Vec<WindowAcc>,
}

impl KeyWindows {
    fn pos(&self, start: i64) -> Result<usize, usize> {
        self.starts.binary_search(&start)
    }

    fn get_mut(&mut self, start: &i64) -> Option<&mut WindowAcc> {
        self.pos(*start).ok().map(|i| &mut self.accs[i])
    }

    fn insert(&mut self, start: i64, w: WindowAcc) {
        match self.pos(start) {
            Ok(i) => {
                self.filled[i] = w.records > 0;
                self.accs[i] = w;
            }
            Err(i) => {
                self.starts.insert(i, start);
                self.filled.insert(i, w.records > 0);
                self.accs.insert(i, w);
            }
        }
    }

    fn remove(&mut self, start: &i64) -> Option<WindowAcc> {
        let i = self.pos(*start).ok()?;
        self.starts.remove(i);
        self.filled.remove(i);
        Some(self.accs.remove(i))
    }

    /// Add a record to the window (its pane) at position `i`.
    fn add(&mut self, i: usize, vals: &[Val<'_>], ts: i64) -> &mut WindowAcc {
        self.filled[i] = true;
        let w = &mut self.accs[i];
        w.accs.add(vals, ts);
        w.records += 1;
        w
    }

    /// Windows starting before `end`.
    fn before(&self, end: i64) -> impl Iterator<Item = (&i64, &WindowAcc)> {
        self.iter().take_while(move |(s, _)| **s < end)
    }

    fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The windows, by start.
    pub fn iter(&self) -> impl Iterator<Item = (&i64, &WindowAcc)> {
        self.starts.iter().zip(&self.accs)
    }

    /// The metrics and record count of the window at position `i`: its own accumulators,
    /// merged with those of the later slots starting within `span` of it (a hopping
    /// window's panes; see [`WindowKind::geometry`]) and with its [`WindowAcc::base`].
    fn window(&self, i: usize, span: i64) -> (std::borrow::Cow<'_, Accs>, u64) {
        let w = &self.accs[i];
        let reach = self.starts[i].saturating_add(span);
        let end = i + 1 + self.starts[i + 1..].partition_point(|s| *s < reach);
        // Empty panes are skipped: a key with few records holds mostly empty ones.
        let mut later = (i + 1..end).filter(|j| self.filled[*j]).map(|j| (&self.accs[j].accs, self.accs[j].records)).peekable();
        if later.peek().is_none() && w.base.is_none() {
            return (std::borrow::Cow::Borrowed(&w.accs), w.records);
        }
        let (mut accs, mut records) = (w.accs.clone(), w.records);
        for (a, n) in w.base.iter().map(|b| (&b.0, b.1)).chain(later) {
            accs.merge(a);
            records += n;
        }
        (std::borrow::Cow::Owned(accs), records)
    }
}

/// A window's timer: (when, key, start).
type Timer = (i64, Arc<str>, i64);

/// Set `w`'s one timer (key `key`, start `start`) to `at`, remembering where it is.
fn set_timer(timers: &mut BTreeSet<Timer>, w: &mut WindowAcc, at: i64, key: &Arc<str>, start: i64) {
    w.timer = at;
    timers.insert((at, key.clone(), start));
}

/// Cancel `w`'s timer, found where [`set_timer`] put it.
fn cancel_timer(timers: &mut BTreeSet<Timer>, w: &WindowAcc, key: &Arc<str>, start: i64) {
    timers.remove(&(w.timer, key.clone(), start));
}

/// A window changed since the last checkpoint: its new state, or `None` if it is gone.
pub type Change = (String, i64, Option<Vec<u8>>);

/// One aggregation: its definition (from configuration) and its state.
///
/// Every window has one timer: its end until it fires, then its end plus the allowed
/// lateness, when it is forgotten. [`Aggregation::advance`] pops due timers, so its cost
/// follows what fires, not how many windows are open. Windows changed since the last
/// [`Aggregation::take_changes`] are tracked for incremental checkpoints.
#[derive(Debug, Clone)]
pub struct Aggregation {
    kind: WindowKind,
    lateness_ms: i64,
    metrics: Vec<Metric>,
    windows: HashMap<Arc<str>, KeyWindows>,
    /// (deadline, key, start) of every window; set and cancelled only through
    /// [`set_timer`] and [`cancel_timer`], which keep [`WindowAcc::timer`] pointing at it.
    timers: BTreeSet<Timer>,
    /// Fired windows updated since (or retracted): emitted by the next advance.
    pending: Vec<(Arc<str>, i64)>,
    /// Windows changed since the last checkpoint.
    changes: Vec<(Arc<str>, i64)>,
    watermark: i64,
}

impl Aggregation {
    /// Empty state.
    pub fn new(kind: WindowKind, lateness_ms: i64, metrics: Vec<Metric>) -> Self {
        Self {
            kind,
            lateness_ms: lateness_ms.max(0),
            metrics,
            windows: HashMap::default(),
            timers: BTreeSet::new(),
            pending: Vec::new(),
            changes: Vec::new(),
            watermark: i64::MIN,
        }
    }

    /// Continue from checkpointed windows `(key, start, window)` and watermark.
    pub fn restore(
        kind: WindowKind,
        lateness_ms: i64,
        metrics: Vec<Metric>,
        watermark: Option<i64>,
        windows: impl IntoIterator<Item = (String, i64, WindowAcc)>,
    ) -> Self {
        let mut a = Self::new(kind, lateness_ms, metrics);
        a.watermark = watermark.unwrap_or(i64::MIN);
        for (key, start, mut w) in windows {
            let key: Arc<str> = key.into();
            let due = w.deadline(a.lateness_ms);
            set_timer(&mut a.timers, &mut w, due, &key, start);
            if w.retracted || (w.dirty && w.revision.is_some()) {
                a.pending.push((key.clone(), start));
            }
            a.windows.entry(key).or_default().insert(start, w);
        }
        a
    }

    /// The metrics, in output order.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// Watermark of the last advance (`None` before the first).
    pub fn watermark(&self) -> Option<i64> {
        (self.watermark > i64::MIN).then_some(self.watermark)
    }

    fn queue(changes: &mut Vec<(Arc<str>, i64)>, w: &mut WindowAcc, key: &Arc<str>, start: i64) {
        if !w.queued {
            w.queued = true;
            changes.push((key.clone(), start));
        }
    }

    /// The shared key of `key` (one allocation per group, shared by its timers and queues).
    fn intern(&self, key: &str) -> Arc<str> {
        match self.windows.get_key_value(key) {
            Some((k, _)) => k.clone(),
            None => key.into(),
        }
    }

    /// Add a record of `key` at event time `ts` with metric values `vals`; `touched` hears
    /// of every window it went into.
    ///
    /// # Errors
    /// [`Late`] when none of its windows is live any more.
    pub fn add(&mut self, key: &str, ts: i64, vals: &[Val<'_>], mut touched: impl FnMut(Touched)) -> Result<(), Late> {
        match self.kind {
            WindowKind::Session { gap_ms } => {
                let key = &self.intern(key);
                self.add_session(key, ts, gap_ms, vals, &mut touched)
            }
            kind => self.add_fixed(kind, key, ts, vals, &mut touched),
        }
    }

    /// [`Aggregation::add`] for tumbling and hopping windows: the record updates the pane
    /// it falls in (for tumbling windows, the window), and every live window containing it
    /// exists afterwards; a fired one is marked for re-emission.
    fn add_fixed(&mut self, kind: WindowKind, key: &str, ts: i64, vals: &[Val<'_>], touched: &mut impl FnMut(Touched)) -> Result<(), Late> {
        let (watermark, lateness) = (self.watermark, self.lateness_ms);
        let live = move |(_, end): &(i64, i64)| end.saturating_add(lateness) > watermark;
        // Oldest first: the live ones are the last (later windows end later).
        let Some((first, first_end)) = kind.windows_of(ts).find(live) else {
            return Err(Late { watermark });
        };
        let (_, slide, _) = kind.geometry();
        let pane = ts.div_euclid(slide) * slide;
        // One lookup of the key in the common case (it has windows already).
        let (key, per_key) = match self.windows.entry_ref(key) {
            hashbrown::hash_map::EntryRef::Occupied(e) => (e.key().clone(), e.into_mut()),
            hashbrown::hash_map::EntryRef::Vacant(e) => {
                let k: Arc<str> = key.into();
                (k.clone(), e.insert_with_key(k, KeyWindows::default()))
            }
        };
        let key = &key;
        let live_windows = ((pane - first) / slide) as usize + 1;
        // The common case: every live window of the record exists and none has fired
        // (starts are distinct multiples of the slide, so the slots from the first's to the
        // pane's are exactly those windows).
        if let Ok(i) = per_key.pos(pane) {
            if first_end > watermark && i + 1 >= live_windows && per_key.starts[i + 1 - live_windows] == first {
                let w = per_key.add(i, vals, ts);
                Self::queue(&mut self.changes, w, key, pane);
                for k in 0..live_windows as i64 {
                    touched(Touched::Window { start: first + k * slide, opened: false });
                }
                return Ok(());
            }
        }
        for (start, end) in kind.windows_of(ts).filter(live) {
            let opened = match per_key.get_mut(&start) {
                Some(w) => {
                    if w.revision.is_some() {
                        if !w.dirty {
                            self.pending.push((key.clone(), start));
                        }
                        w.dirty = true;
                        Self::queue(&mut self.changes, w, key, start);
                    }
                    false
                }
                None => {
                    let mut w = WindowAcc::new(end, Accs::new(&self.metrics));
                    Self::queue(&mut self.changes, &mut w, key, start);
                    set_timer(&mut self.timers, &mut w, end, key, start);
                    per_key.insert(start, w);
                    true
                }
            };
            if start == pane {
                if let Ok(i) = per_key.pos(pane) {
                    let w = per_key.add(i, vals, ts);
                    Self::queue(&mut self.changes, w, key, pane);
                }
            }
            touched(Touched::Window { start, opened });
        }
        Ok(())
    }

    fn add_session(&mut self, key: &Arc<str>, ts: i64, gap: i64, vals: &[Val<'_>], touched: &mut impl FnMut(Touched)) -> Result<(), Late> {
        let (mut start, mut end) = (ts, ts.saturating_add(gap));
        let (watermark, lateness) = (self.watermark, self.lateness_ms);
        // Late when its own session is past the allowed lateness, even if it would bridge
        // into a live one: merging would reopen the start of a session already forgotten.
        if end.saturating_add(lateness) <= watermark {
            return Err(Late { watermark });
        }
        if self.extend_session(key, ts, gap, vals, touched) {
            return Ok(());
        }
        let hits: Vec<i64> = match self.windows.get(key) {
            // Live sessions [s, e) overlapping [ts, ts + gap).
            Some(per_key) => {
                per_key.before(end).filter(|(_, w)| !w.retracted && w.end > start && w.end.saturating_add(lateness) > watermark).map(|(s, _)| *s).collect()
            }
            None => Vec::new(),
        };
        let mut acc = WindowAcc::new(end, Accs::new(&self.metrics));
        acc.accs.add(vals, ts);
        acc.records = 1;
        let mut retract = Vec::new();
        let mut opened = true;
        for s in &hits {
            let Some(w) = self.windows.get_mut(key).and_then(|p| p.remove(s)) else { continue };
            cancel_timer(&mut self.timers, &w, key, *s);
            acc.accs.merge(&w.accs);
            acc.records += w.records;
            acc.revision = acc.revision.max(w.revision);
            end = end.max(w.end);
            if w.revision.is_some() {
                retract.push((*s, w.end, w.revision.unwrap_or(0)));
            } else if !w.queued {
                self.changes.push((key.clone(), *s));
            }
            start = start.min(*s);
            opened = false;
        }
        acc.end = end;
        let per_key = self.windows.entry(key.clone()).or_default();
        // The merged session keeps the earliest start; fired sessions starting later are
        // retracted (kept as markers until the next advance emits the retraction).
        for (s, e, r) in retract {
            if s != start {
                let mut marker = WindowAcc { revision: Some(r), retracted: true, ..WindowAcc::new(e, Accs(Vec::new())) };
                Self::queue(&mut self.changes, &mut marker, key, s);
                set_timer(&mut self.timers, &mut marker, e.saturating_add(lateness), key, s);
                per_key.insert(s, marker);
                self.pending.push((key.clone(), s));
            } else {
                self.changes.push((key.clone(), s));
            }
        }
        if let Some(marker) = per_key.remove(&start) {
            // A retraction marker whose output key is reused: continue its revisions.
            acc.revision = acc.revision.max(marker.revision);
            cancel_timer(&mut self.timers, &marker, key, start);
        }
        for s in &hits {
            if *s != start {
                touched(Touched::Merged { from: *s, into: start });
            }
        }
        touched(Touched::Window { start, opened });
        Self::queue(&mut self.changes, &mut acc, key, start);
        if acc.revision.is_some() {
            self.pending.push((key.clone(), start));
        }
        let due = acc.deadline(lateness);
        set_timer(&mut self.timers, &mut acc, due, key, start);
        per_key.insert(start, acc);
        Ok(())
    }

    /// The common case of a session record, without allocating: the record falls in one
    /// live session that started at or before it, which it extends in place. Returns
    /// whether it did; otherwise (a new session, or a merge) [`Self::add_session`] goes on.
    fn extend_session(&mut self, key: &Arc<str>, ts: i64, gap: i64, vals: &[Val<'_>], touched: &mut impl FnMut(Touched)) -> bool {
        let (watermark, lateness) = (self.watermark, self.lateness_ms);
        let end = ts.saturating_add(gap);
        let Some(per_key) = self.windows.get_mut(key) else { return false };
        let mut hits = per_key.before(end).filter(|(_, w)| !w.retracted && w.end > ts && w.end.saturating_add(lateness) > watermark).map(|(s, _)| *s);
        let (Some(start), None) = (hits.next(), hits.next()) else { return false };
        drop(hits);
        if start > ts {
            return false;
        }
        let Some(w) = per_key.get_mut(&start) else { return false };
        // Its timer stays where it is (at or before the later deadline): moving it in the
        // ordered set per record cost more than the rest of the update.
        w.accs.add(vals, ts);
        w.records += 1;
        w.end = w.end.max(end);
        // As a merge would: a fired session that grew may end past the watermark, and
        // then an earlier advance dropped it from the pending ones.
        if w.revision.is_some() {
            self.pending.push((key.clone(), start));
        }
        w.dirty = true;
        Self::queue(&mut self.changes, w, key, start);
        touched(Touched::Window { start, opened: false });
        true
    }

    /// Emit the window of `key` starting at `start` if it is due (fired and changed, or a
    /// retraction), its metrics read over `span` ([`KeyWindows::window`]); queue its change.
    fn emit(&mut self, wm: i64, key: &Arc<str>, start: i64, out: &mut Vec<Emit>) {
        let (span, ..) = self.kind.geometry();
        let Some(per_key) = self.windows.get_mut(key) else { return };
        let Ok(i) = per_key.pos(start) else { return };
        let w = &per_key.accs[i];
        if !(w.dirty && (w.end <= wm || w.retracted)) {
            return;
        }
        let revision = w.revision.map_or(0, |r| r + 1);
        let (values, count) = match w.retracted {
            true => (None, w.records),
            false => {
                let (accs, count) = per_key.window(i, span);
                (Some(accs.value_list()), count)
            }
        };
        let w = &mut per_key.accs[i];
        out.push(Emit { key: key.to_string(), start, end: w.end, revision, values, count });
        w.revision = Some(revision);
        w.dirty = false;
        Self::queue(&mut self.changes, w, key, start);
    }

    /// Forget the window of `key` starting at `start` (and the key when it was its last).
    fn forget(&mut self, key: &Arc<str>, start: i64) {
        let Some(per_key) = self.windows.get_mut(key) else { return };
        let Some(gone) = per_key.remove(&start) else { return };
        cancel_timer(&mut self.timers, &gone, key, start);
        if !gone.queued {
            self.changes.push((key.clone(), start));
        }
        if per_key.is_empty() {
            self.windows.remove(key);
        }
    }

    /// Advance to `watermark`: emit windows that fire or changed, and forget those past
    /// their lateness. Emissions are ordered by (end, key, start).
    pub fn advance(&mut self, watermark: i64) -> Vec<Emit> {
        self.watermark = self.watermark.max(watermark);
        let (wm, lateness) = (self.watermark, self.lateness_ms);
        let mut out = Vec::new();
        for (key, start) in std::mem::take(&mut self.pending) {
            self.emit(wm, &key, start, &mut out);
            if self.windows.get(&key).and_then(|p| p.pos(start).ok().map(|i| p.accs[i].retracted)) == Some(true) {
                self.forget(&key, start);
            }
        }
        while let Some(first) = self.timers.first() {
            if first.0 > wm {
                break;
            }
            let Some((_, key, start)) = self.timers.pop_first() else { break };
            let Some(w) = self.windows.get_mut(&key).and_then(|p| p.get_mut(&start)) else { continue };
            // Set before a session grew: due later, so it moves there.
            let deadline = w.deadline(lateness);
            if deadline > wm {
                set_timer(&mut self.timers, w, deadline, &key, start);
                continue;
            }
            self.emit(wm, &key, start, &mut out);
            let Some(w) = self.windows.get_mut(&key).and_then(|p| p.get_mut(&start)) else { continue };
            let purge_at = w.end.saturating_add(lateness);
            if w.retracted || purge_at <= wm {
                // Its timer was just popped: forgetting it cancels nothing more.
                self.forget(&key, start);
            } else {
                set_timer(&mut self.timers, w, purge_at, &key, start);
            }
        }
        out.sort_by(|a, b| (a.end, &a.key, a.start).cmp(&(b.end, &b.key, b.start)));
        out
    }

    /// Windows changed since the last call, encoded, and forget them: what an incremental
    /// checkpoint writes (a put per changed window, a delete per forgotten one).
    ///
    /// # Errors
    /// A window that cannot be encoded.
    pub fn take_changes(&mut self) -> vigil_runtime::Result<Vec<Change>> {
        let mut out = Vec::with_capacity(self.changes.len());
        for (key, start) in std::mem::take(&mut self.changes) {
            match self.windows.get_mut(&key).and_then(|p| p.get_mut(&start)) {
                Some(w) if w.queued => {
                    w.queued = false;
                    out.push((key.to_string(), start, Some(vigil_runtime::store::encode("window", &*w)?)));
                }
                // Queued twice (removed and opened again): the first entry wrote it.
                Some(_) => {}
                None => out.push((key.to_string(), start, None)),
            }
        }
        Ok(out)
    }

    /// Queue every window for the next checkpoint: after a restore that converted windows
    /// from an older checkpoint format, so the next checkpoint rewrites them all.
    pub fn rewrite_all(&mut self) {
        for (key, per_key) in &mut self.windows {
            for (start, w) in per_key.starts.iter().zip(&mut per_key.accs) {
                Self::queue(&mut self.changes, w, key, *start);
            }
        }
    }

    /// Windows changed since the last [`Aggregation::take_changes`] (at most: a window
    /// closed and opened again counts twice).
    pub fn pending_changes(&self) -> usize {
        self.changes.len()
    }

    /// Windows held.
    pub fn open_windows(&self) -> usize {
        self.timers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;
    use std::collections::BTreeMap;

    fn metrics() -> Vec<Metric> {
        vec![Metric::Count, Metric::Sum { field: "v".into() }, Metric::Min { field: "v".into() }, Metric::Last { field: "v".into() }]
    }

    /// An emission's values by metric name (`metrics()`).
    fn named(e: &Emit) -> serde_json::Map<String, Value> {
        metrics().iter().map(Metric::name).zip(e.values.clone().unwrap_or_default()).collect()
    }

    /// Final output per `key@start`: the latest revision, retractions removing the key.
    fn converge(out: &mut BTreeMap<String, (u32, Value)>, emits: Vec<Emit>) {
        for e in emits {
            let k = format!("{}@{}", e.key, e.start);
            if let Some((r, _)) = out.get(&k) {
                assert!(e.revision > *r, "revisions rise: {k} {} after {r}", e.revision);
            }
            match e.values {
                Some(_) => out.insert(k, (e.revision, Value::Object(named(&e)))),
                None => out.remove(&k),
            };
        }
    }

    #[test]
    fn tumbling_fires_updates_with_revisions_and_then_rejects_late() {
        let mut a = Aggregation::new(WindowKind::Tumbling { size_ms: 10 }, 5, metrics());
        a.add("k", 1, &[Val::Missing, Val::Num(1.0), Val::Num(1.0), Val::Num(1.0)], |_| {}).unwrap();
        assert!(a.advance(9).is_empty());
        let e = a.advance(10);
        assert_eq!((e.len(), e[0].revision, named(&e[0])["count"].as_u64()), (1, 0, Some(1)));
        a.add("k", 2, &[Val::Missing, Val::Num(2.0), Val::Num(2.0), Val::Num(2.0)], |_| {}).unwrap();
        let e = a.advance(12);
        assert_eq!((e[0].revision, named(&e[0])["sum_v"].as_f64()), (1, Some(3.0)));
        assert!(a.advance(14).is_empty(), "no change, no emission");
        a.advance(15);
        assert_eq!(a.add("k", 3, &[], |_| {}), Err(Late { watermark: 15 }));
        assert_eq!(a.open_windows(), 0);
    }

    #[test]
    fn hopping_assigns_every_overlapping_window() {
        assert_eq!(WindowKind::Hopping { size_ms: 10, slide_ms: 5 }.assign(12), vec![(5, 15), (10, 20)]);
        assert_eq!(WindowKind::Hopping { size_ms: 10, slide_ms: 5 }.assign(-1), vec![(-10, 0), (-5, 5)]);
        assert_eq!(WindowKind::Hopping { size_ms: 9, slide_ms: 3 }.assign(3).len(), 3);
    }

    #[test]
    fn a_late_but_allowed_record_bridging_two_sessions_merges_them_and_retracts_one() {
        let mut a = Aggregation::new(WindowKind::Session { gap_ms: 10 }, 100, metrics());
        a.add("k", 0, &[Val::Missing, Val::Num(1.0)], |_| {}).unwrap();
        a.add("k", 15, &[Val::Missing, Val::Num(2.0)], |_| {}).unwrap();
        let e = a.advance(30);
        assert_eq!(e.iter().map(|e| (e.start, e.end, e.revision)).collect::<Vec<_>>(), vec![(0, 10, 0), (15, 25, 0)]);
        // Within the gap of both: they become one session [0, 25).
        let mut touched = Vec::new();
        a.add("k", 8, &[Val::Missing, Val::Num(4.0)], |t| touched.push(t)).unwrap();
        assert_eq!(touched, vec![Touched::Merged { from: 15, into: 0 }, Touched::Window { start: 0, opened: false }]);
        let e = a.advance(31);
        assert_eq!(e.len(), 2, "{e:?}");
        let merged = e.iter().find(|e| e.start == 0).unwrap();
        assert_eq!((merged.end, merged.revision, named(merged)["sum_v"].as_f64()), (25, 1, Some(7.0)));
        let gone = e.iter().find(|e| e.start == 15).unwrap();
        assert_eq!((gone.revision, &gone.values), (1, &None));
    }

    /// A record of the reference model.
    #[derive(Debug, Clone)]
    struct Rec {
        key: String,
        ts: i64,
        v: f64,
    }

    /// The reference: the same rules written out naively — windows as lists of records,
    /// metrics computed from the records at the end.
    struct Model {
        kind: WindowKind,
        lateness: i64,
        wm: i64,
        /// (key, start, end, records, fired, purged)
        windows: Vec<(String, i64, i64, Vec<Rec>, bool, bool)>,
        late: usize,
    }

    impl Model {
        fn advance(&mut self, wm: i64) {
            self.wm = self.wm.max(wm);
            for w in &mut self.windows {
                w.4 |= w.2 <= self.wm;
                w.5 |= w.2 + self.lateness <= self.wm;
            }
        }

        fn add(&mut self, r: Rec) {
            match self.kind {
                WindowKind::Session { gap_ms } => {
                    let (s, e) = (r.ts, r.ts + gap_ms);
                    let hit: Vec<usize> = (0..self.windows.len())
                        .filter(|&i| {
                            let w = &self.windows[i];
                            w.0 == r.key && !w.5 && w.1 < e && w.2 > s
                        })
                        .collect();
                    if e + self.lateness <= self.wm {
                        self.late += 1;
                        return;
                    }
                    let mut merged = (r.key.clone(), s, e, vec![r], false, false);
                    for i in hit.into_iter().rev() {
                        let w = self.windows.remove(i);
                        merged.1 = merged.1.min(w.1);
                        merged.2 = merged.2.max(w.2);
                        merged.3.extend(w.3);
                    }
                    self.windows.push(merged);
                }
                kind => {
                    let mut counted = false;
                    for (s, e) in kind.assign(r.ts) {
                        if e + self.lateness <= self.wm {
                            continue;
                        }
                        counted = true;
                        match self.windows.iter_mut().find(|w| w.0 == r.key && w.1 == s) {
                            Some(w) => w.3.push(r.clone()),
                            None => self.windows.push((r.key.clone(), s, e, vec![r.clone()], false, false)),
                        }
                    }
                    if !counted {
                        self.late += 1;
                    }
                }
            }
        }

        fn results(&self) -> BTreeMap<String, Value> {
            self.windows
                .iter()
                .filter(|w| w.2 <= self.wm)
                .map(|w| {
                    let recs = &w.3;
                    let sum: f64 = recs.iter().map(|r| r.v).sum();
                    let min = recs.iter().map(|r| r.v).fold(f64::INFINITY, f64::min);
                    let last = recs.iter().max_by(|a, b| (a.ts, a.v).partial_cmp(&(b.ts, b.v)).unwrap()).unwrap().v;
                    (format!("{}@{}", w.0, w.1), serde_json::json!({"count": recs.len(), "sum_v": sum, "min_v": min, "last_v": last}))
                })
                .collect()
        }
    }

    /// Apply the changes since the last checkpoint to `store`, then check it holds exactly
    /// the aggregation's windows (incremental equals full).
    fn checkpoint(a: &mut Aggregation, store: &mut BTreeMap<(String, i64), Vec<u8>>) -> Result<(), TestCaseError> {
        for (k, s, v) in a.take_changes().map_err(|e| TestCaseError::fail(e.to_string()))? {
            match v {
                Some(v) => store.insert((k, s), v),
                None => store.remove(&(k, s)),
            };
        }
        let full: BTreeMap<(String, i64), Vec<u8>> =
            a.windows.iter().flat_map(|(k, p)| p.iter().map(move |(s, w)| ((k.to_string(), *s), vigil_runtime::store::encode("window", w).unwrap()))).collect();
        prop_assert_eq!(store.keys().collect::<Vec<_>>(), full.keys().collect::<Vec<_>>(), "incremental state has the same windows");
        prop_assert!(store == &full, "incremental state equals the full state");
        prop_assert_eq!(a.timers.len(), full.len(), "one timer per window");
        Ok(())
    }

    fn kinds() -> impl Strategy<Value = WindowKind> {
        prop_oneof![
            (1i64..30).prop_map(|size_ms| WindowKind::Tumbling { size_ms }),
            (1i64..6, 1i64..13).prop_map(|(slide, n)| WindowKind::Hopping { size_ms: slide * n, slide_ms: slide }),
            (1i64..20).prop_map(|gap_ms| WindowKind::Session { gap_ms }),
        ]
    }

    /// Feed `steps` (group key, event time, watermark jump, value, advance?) to `a` and `m`,
    /// checkpointing every fifth step into `store` and, at step `snapshot_at`, restoring
    /// `a` from it; then advance both to the end and compare their results.
    #[allow(clippy::too_many_arguments)]
    fn run_against_model(
        mut a: Aggregation,
        mut m: Model,
        store: &mut BTreeMap<(String, i64), Vec<u8>>,
        steps: &[(u8, i64, i64, u32, bool)],
        snapshot_at: usize,
    ) -> Result<(), TestCaseError> {
        let kind = m.kind;
        let mut out = BTreeMap::new();
        let (mut wm, mut late, mut n) = (i64::MIN, m.late, m.windows.iter().map(|w| w.3.len()).sum::<usize>());
        for (i, (k, ts, jump, v, adv)) in steps.iter().enumerate() {
            if i % 5 == 0 || i == snapshot_at {
                checkpoint(&mut a, store)?;
            }
            if i == snapshot_at {
                // A crash right after the checkpoint: resume from what it wrote.
                let windows = store.iter().map(|((k, s), v)| (k.clone(), *s, vigil_runtime::store::decode("window", v).unwrap()));
                a = Aggregation::restore(kind, m.lateness, metrics(), a.watermark(), windows.collect::<Vec<_>>());
            }
            if *adv {
                wm = wm.max(ts + jump);
                converge(&mut out, a.advance(wm));
                m.advance(wm);
            } else {
                let r = Rec { key: format!("k{k}"), ts: *ts, v: f64::from(*v) };
                n += 1;
                let val = Val::Num(r.v);
                if a.add(&r.key, r.ts, &[Val::Missing, val, val, val], |_| {}).is_err() {
                    late += 1;
                }
                m.add(r);
            }
        }
        converge(&mut out, a.advance(i64::MAX / 4));
        m.advance(i64::MAX / 4);
        prop_assert_eq!(late, m.late, "late records");
        let got: BTreeMap<String, Value> = out.into_iter().map(|(k, (_, v))| (k, v)).collect();
        let want = m.results();
        prop_assert_eq!(got.len(), want.len(), "windows: got {:?} want {:?}", got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
        let counted: u64 = want.values().map(|v| v["count"].as_u64().unwrap_or(0)).sum();
        if !matches!(kind, WindowKind::Hopping { .. }) {
            prop_assert_eq!(counted as usize + late, n, "inputs = counted + late");
        }
        for (k, w) in &want {
            let g = &got[k];
            prop_assert_eq!(&g["count"], &w["count"], "{}", k);
            prop_assert_eq!(&g["min_v"], &w["min_v"], "{}", k);
            prop_assert_eq!(&g["last_v"], &w["last_v"], "{}", k);
            prop_assert!((g["sum_v"].as_f64().unwrap() - w["sum_v"].as_f64().unwrap()).abs() < 1e-6, "{}", k);
        }
        Ok(())
    }

    proptest! {
        /// Random out-of-order records of a few keys with watermark advances in between:
        /// the converged outputs equal the reference's final windows, every record is counted
        /// or late exactly once, and a snapshot mid-way resumes to the same result.
        #[test]
        fn matches_the_reference_model(
            kind in kinds(),
            lateness in 0i64..40,
            steps in prop::collection::vec((0u8..3, 0i64..200, -50i64..50, 1u32..1000, any::<bool>()), 1..120),
            snapshot_at in 0usize..120,
        ) {
            let a = Aggregation::new(kind, lateness, metrics());
            let m = Model { kind, lateness, wm: i64::MIN, windows: Vec::new(), late: 0 };
            run_against_model(a, m, &mut BTreeMap::new(), &steps, snapshot_at)?;
        }

        /// Windows of a checkpoint written before panes (each window whole, format 1) go on
        /// to the reference's results after they are converted, and the first checkpoint
        /// after the conversion rewrites every one of them.
        #[test]
        fn windows_of_the_whole_window_format_convert(
            kind in kinds(),
            lateness in 0i64..40,
            before in prop::collection::vec((0u8..3, 0i64..200, 1u32..1000), 0..40),
            steps in prop::collection::vec((0u8..3, 0i64..200, -50i64..50, 1u32..1000, any::<bool>()), 1..80),
            snapshot_at in 0usize..80,
        ) {
            let mut m = Model { kind, lateness, wm: i64::MIN, windows: Vec::new(), late: 0 };
            for (k, ts, v) in before {
                m.add(Rec { key: format!("k{k}"), ts, v: f64::from(v) });
            }
            // What the whole-window engine held: every window with its records, not fired.
            let legacy = m.windows.iter().map(|(key, start, end, recs, ..)| {
                let mut accs = Accs::new(&metrics());
                for r in recs {
                    accs.add(&[Val::Missing, Val::Num(r.v), Val::Num(r.v), Val::Num(r.v)], r.ts);
                }
                let l = LegacyWindowAcc { end: *end, accs, records: recs.len() as u64, revision: None, dirty: true, retracted: false };
                let bytes = vigil_runtime::store::encode("window", &l).unwrap();
                let l: LegacyWindowAcc = vigil_runtime::store::decode("window", &bytes).unwrap();
                (key.clone(), *start, WindowAcc::from_legacy(l, &metrics(), matches!(kind, WindowKind::Hopping { .. })))
            });
            let mut a = Aggregation::restore(kind, lateness, metrics(), None, legacy.collect::<Vec<_>>());
            a.rewrite_all();
            prop_assert_eq!(a.pending_changes(), a.open_windows(), "every converted window is rewritten");
            run_against_model(a, m, &mut BTreeMap::new(), &steps, snapshot_at)?;
        }
    }
}
