//! A drill's report: faults injected and undone, alerts, incidents and recoveries on one
//! timeline, time to detect and to recover, the reconciliation of every record, each
//! expectation judged, the incidents' post-mortems; written as `report.json` and
//! `report.md` in the drill's directory.
use crate::model::{Reconciliation, Stream};
use crate::proxy::ProxyStats;
use crate::scenario::{Expect, Fault, Scenario};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One occurrence of a fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRun {
    /// Index in the scenario's `faults`.
    pub fault: usize,
    /// What, e.g. `node-kill` or `stage-stall validate`.
    pub label: String,
    /// Seconds since the drill started.
    pub start_s: f64,
    /// When it ended (one-shot faults: when the injection returned).
    pub end_s: f64,
    /// Started.
    pub started: bool,
    /// Ended.
    pub ended: bool,
    /// Undone (a lasting fault's undo ran).
    pub undone: bool,
    /// End → processing again, seconds.
    pub recovered_s: Option<f64>,
    /// Why the injection failed, if it did.
    pub error: Option<String>,
    /// Start → the first alert that fired (or outside probe that failed) before the next
    /// occurrence started, seconds.
    #[serde(default)]
    pub detected_s: Option<f64>,
    /// What detected it.
    #[serde(default)]
    pub detected_by: Option<String>,
}

impl FaultRun {
    /// A scheduled occurrence.
    pub fn planned(fault: usize, f: &Fault, start_s: f64, end_s: f64) -> Self {
        let kind = f.kind.name();
        let label = match (&f.target, &f.producer) {
            (Some(t), _) => format!("{kind} {t}"),
            (None, Some(p)) => format!("{kind} as {p}"),
            (None, None) => kind,
        };
        Self { fault, label, start_s, end_s, started: false, ended: false, undone: false, recovered_s: None, error: None, detected_s: None, detected_by: None }
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// Seconds since the drill started.
    pub at_s: f64,
    /// `fault`, `alert`, `incident`, `process`, `reconcile`.
    pub kind: String,
    /// What happened.
    pub what: String,
}

impl Timeline {
    /// An entry.
    pub fn at(at_s: f64, kind: &str, what: String) -> Self {
        Self { at_s, kind: kind.into(), what }
    }
}

/// An alert that fired during the drill.
#[derive(Debug, Clone, Serialize)]
pub struct AlertSeen {
    /// Rule.
    pub rule: String,
    /// Severity label.
    pub severity: String,
    /// When it fired, ms since epoch (the node's clock).
    pub fired_ms: i64,
    /// Seconds since the drill started.
    pub fired_s: f64,
}

/// An incident opened during the drill.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentSeen {
    /// Id.
    pub id: u64,
    /// Severity when it opened.
    pub severity: String,
    /// Each more severe level it was raised to (an alert of higher severity joined it), with
    /// when the drill first saw it, seconds since the drill started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub raised: Vec<(String, f64)>,
    /// Title.
    pub title: String,
    /// Opened, ms since epoch.
    pub opened_ms: i64,
    /// Seconds since the drill started.
    pub opened_s: f64,
    /// Its post-mortem (Markdown), fetched at the end.
    pub postmortem: Option<String>,
}

/// One expectation judged.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    /// As written.
    pub expect: String,
    /// Held.
    pub passed: bool,
    /// What was measured.
    pub detail: String,
}

/// A drill's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario.
    pub scenario: String,
    /// The running node of a game day (`--live`); none for a drill on its own processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What it rehearses.
    pub description: String,
    /// Seed (rerun with `--seed` to reproduce).
    pub seed: u64,
    /// Start, ms since epoch.
    pub started_ms: i64,
    /// Start, RFC 3339.
    pub started: String,
    /// Length, seconds.
    pub duration_s: f64,
    /// All expectations held and the steady state was reached before and after.
    pub passed: bool,
    /// Stopped by a signal before the end.
    pub interrupted: bool,
    /// Steady state before the first fault (Err: why not).
    pub steady_before: Result<(), String>,
    /// Steady state after the last recovery.
    pub steady_after: Result<(), String>,
    /// Fault occurrences.
    pub faults: Vec<FaultRun>,
    /// Alerts that fired.
    pub alerts: Vec<AlertSeen>,
    /// Incidents opened.
    pub incidents: Vec<IncidentSeen>,
    /// Everything in time order.
    pub timeline: Vec<Timeline>,
    /// Time to detect: first fault → first alert firing after it, seconds.
    pub mttd_s: Option<f64>,
    /// The alert (or probe) that detected it.
    pub detected_by: Option<String>,
    /// When the drill's own probe found the admin API silent, seconds since start.
    pub probe_failures: Vec<f64>,
    /// Time to recover: the slowest fault end → processing again, seconds.
    pub mttr_s: Option<f64>,
    /// Every record reconciled.
    pub records: Option<Reconciliation>,
    /// The generated streams (workload and bad-data faults).
    pub streams: Vec<Stream>,
    /// Expectations.
    pub expectations: Vec<Judged>,
    /// What the fault proxy did.
    pub proxy: ProxyStats,
    /// Findings worth a follow-up.
    pub lessons: Vec<String>,
    /// Drill directory (config, data, logs).
    pub dir: PathBuf,
}

impl Report {
    /// An empty report of a drill starting now.
    pub fn new(s: &Scenario, seed: u64, started_ms: i64, dir: &Path) -> Self {
        Self {
            scenario: s.name.clone(),
            target: None,
            description: s.description.trim().to_string(),
            seed,
            started_ms,
            started: vigil_runtime::rfc3339_ms(started_ms),
            duration_s: 0.0,
            passed: false,
            interrupted: false,
            steady_before: Ok(()),
            steady_after: Ok(()),
            faults: Vec::new(),
            alerts: Vec::new(),
            incidents: Vec::new(),
            timeline: Vec::new(),
            mttd_s: None,
            detected_by: None,
            probe_failures: Vec::new(),
            mttr_s: None,
            records: None,
            streams: Vec::new(),
            expectations: Vec::new(),
            proxy: ProxyStats::default(),
            lessons: Vec::new(),
            dir: dir.to_path_buf(),
        }
    }

    /// Close the report: duration, MTTD, MTTR, timeline order.
    pub fn finish(&mut self, now_ms: i64, records: Option<Reconciliation>) {
        self.duration_s = (now_ms - self.started_ms) as f64 / 1000.0;
        self.records = records;
        let first = self.faults.iter().filter(|f| f.started).map(|f| f.start_s).fold(f64::INFINITY, f64::min);
        if first.is_finite() {
            let alert = self.alerts.iter().filter(|a| a.fired_s >= first - 0.5).min_by(|a, b| a.fired_s.total_cmp(&b.fired_s));
            let probe = self.probe_failures.iter().copied().filter(|t| *t >= first).reduce(f64::min);
            // The node's own alert first; a probe from outside when the node could not tell.
            match (alert, probe) {
                (Some(a), _) => {
                    self.mttd_s = Some((a.fired_s - first).max(0.0));
                    self.detected_by = Some(format!("alert {}", a.rule));
                }
                (None, Some(t)) => {
                    self.mttd_s = Some(t - first);
                    self.detected_by = Some("probe: the admin API stopped answering".into());
                    self.lessons.push("no alert fired: only an outside probe (a Prometheus scrape) would have noticed".into());
                }
                (None, None) => self.lessons.push("nothing detected this fault: no alert fired and the node kept answering".into()),
            }
        }
        self.detect_each();
        self.mttr_s = self.faults.iter().filter_map(|f| f.recovered_s).reduce(f64::max);
        for f in &self.faults {
            if f.ended && f.recovered_s.is_none() && f.error.is_none() && !self.interrupted {
                self.lessons.push(format!("no recovery observed after {} (t={:.1}s)", f.label, f.end_s));
            }
            if let Some(e) = &f.error {
                self.lessons.push(format!("{} could not be injected: {e}", f.label));
            }
        }
        if let Some(r) = &self.records {
            if r.reemitted > 0 {
                self.lessons
                    .push(format!("{} window outputs were emitted again after a restart (same key and value; consumers keep the last per key)", r.reemitted));
            }
        }
        self.timeline.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    }

    /// Each occurrence's time to detect: the first alert firing (else the first failed outside
    /// probe) from its start until the next occurrence starts.
    fn detect_each(&mut self) {
        let mut starts: Vec<f64> = self.faults.iter().filter(|f| f.started).map(|f| f.start_s).collect();
        starts.sort_by(f64::total_cmp);
        for f in self.faults.iter_mut().filter(|f| f.started) {
            let until = starts.iter().copied().find(|s| *s > f.start_s).unwrap_or(f64::INFINITY);
            let seen = |t: f64| t >= f.start_s - 0.5 && t < until;
            let alert = self.alerts.iter().filter(|a| seen(a.fired_s)).min_by(|a, b| a.fired_s.total_cmp(&b.fired_s));
            let probe = self.probe_failures.iter().copied().filter(|t| seen(*t)).reduce(f64::min);
            (f.detected_s, f.detected_by) = match (alert, probe) {
                (Some(a), _) => (Some((a.fired_s - f.start_s).max(0.0)), Some(format!("alert {}", a.rule))),
                (None, Some(t)) => (Some(t - f.start_s), Some("probe".into())),
                (None, None) => (None, None),
            };
        }
    }

    /// Judge the expectations; `passed` when all hold and the steady state held around.
    pub fn judge(&mut self, expectations: &[(String, Expect)]) {
        self.expectations = expectations
            .iter()
            .map(|(text, e)| {
                let (passed, detail) = crate::runner::judge(e, self);
                Judged { expect: text.clone(), passed, detail }
            })
            .collect();
        // A fault that could not be injected was not rehearsed (and a refused bad credential
        // that got through is a breach): either fails the drill.
        self.passed = !self.interrupted
            && self.steady_before.is_ok()
            && self.steady_after.is_ok()
            && self.faults.iter().all(|f| f.error.is_none())
            && self.expectations.iter().all(|j| j.passed);
    }

    /// Write `report.json` and `report.md` into the drill's directory.
    ///
    /// # Errors
    /// [`crate::Error::Io`] if a file cannot be written.
    pub fn write(&self) -> Result<(), crate::Error> {
        let json = serde_json::to_string_pretty(self).map_err(|e| crate::Error::Io(e.to_string()))?;
        for (name, text) in [("report.json", json), ("report.md", self.markdown())] {
            let p = self.dir.join(name);
            std::fs::write(&p, text).map_err(|e| crate::Error::Io(format!("write {}: {e}", p.display())))?;
        }
        Ok(())
    }

    /// One line for a summary table.
    pub fn summary(&self) -> String {
        let secs = |v: Option<f64>| v.map(|s| format!("{s:.2}s")).unwrap_or_else(|| "-".into());
        let (lost, dup) = self.records.as_ref().map(|r| (r.lost.to_string(), r.duplicated.to_string())).unwrap_or(("?".into(), "?".into()));
        let verdict = if self.interrupted {
            "INTERRUPTED"
        } else if self.passed {
            "PASS"
        } else {
            "FAIL"
        };
        format!("{verdict:<11} {:<20} MTTD {:>7}  MTTR {:>7}  lost {lost:>5}  duplicated {dup:>5}", self.scenario, secs(self.mttd_s), secs(self.mttr_s))
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let verdict = if self.interrupted {
            "interrupted"
        } else if self.passed {
            "passed"
        } else {
            "FAILED"
        };
        let secs = |v: Option<f64>| v.map(|s| format!("{s:.2} s")).unwrap_or_else(|| "not measured".into());
        let _ = writeln!(m, "# Drill `{}`: {verdict}\n", self.scenario);
        let _ = writeln!(m, "{}\n", self.description);
        let _ = writeln!(
            m,
            "- Started {} (seed {}; rerun: `vigil drill run {} --seed {}`), {:.1} s",
            self.started, self.seed, self.scenario, self.seed, self.duration_s
        );
        if let Some(t) = &self.target {
            let _ = writeln!(m, "- **Game day** against the running node at {t} (`--live`): its own traffic was the workload");
        }
        let _ = writeln!(m, "- Time to detect: {}{}", secs(self.mttd_s), self.detected_by.as_ref().map(|d| format!(" ({d})")).unwrap_or_default());
        let _ = writeln!(m, "- Time to recover: {} (slowest fault end → processing again)", secs(self.mttr_s));
        if let Some(r) = &self.records {
            let _ = writeln!(
                m,
                "- Records: {} expected in windows, {} counted; lost {}, duplicated {}, wrong values {}; DLQ {} of {} expected; quarantine {} of {} expected; {} outputs re-emitted",
                r.expected_records,
                r.output_records,
                r.lost,
                r.duplicated,
                r.wrong_values,
                r.dlq,
                r.expected_dlq,
                r.quarantined,
                r.expected_quarantine,
                r.reemitted
            );
            for e in &r.examples {
                let _ = writeln!(m, "  - differs: {e}");
            }
        }
        let steady = |r: &Result<(), String>| match r {
            Ok(()) => "held".to_string(),
            Err(e) => format!("did not hold ({e})"),
        };
        let _ = writeln!(m, "- Steady state: before {}, after {}\n", steady(&self.steady_before), steady(&self.steady_after));
        let _ = writeln!(m, "## Expectations\n\n| | expectation | measured |\n|---|---|---|");
        for j in &self.expectations {
            let _ = writeln!(m, "| {} | `{}` | {} |", if j.passed { "pass" } else { "**FAIL**" }, j.expect, j.detail);
        }
        let _ = writeln!(m, "\n## Faults\n\n| fault | start | end | undone | detected after | recovered after |\n|---|---|---|---|---|---|");
        for f in &self.faults {
            let rec = f.recovered_s.map(|r| format!("{r:.2} s")).unwrap_or_else(|| f.error.clone().unwrap_or_else(|| "-".into()));
            let det = match (f.detected_s, &f.detected_by) {
                (Some(d), Some(by)) => format!("{d:.2} s ({by})"),
                _ => "-".into(),
            };
            let _ = writeln!(m, "| {} | {:.1} s | {:.1} s | {} | {det} | {rec} |", f.label, f.start_s, f.end_s, if f.undone { "yes" } else { "**no**" });
        }
        let _ = writeln!(m, "\n## Timeline\n");
        for t in &self.timeline {
            let _ = writeln!(m, "- `{:>7.2} s` {}: {}", t.at_s, t.kind, t.what);
        }
        if !self.lessons.is_empty() {
            let _ = writeln!(m, "\n## Lessons\n");
            for l in &self.lessons {
                let _ = writeln!(m, "- {l}");
            }
        }
        for i in &self.incidents {
            if let Some(pm) = &i.postmortem {
                let _ = writeln!(m, "\n## Post-mortem of incident #{}\n\n{}", i.id, pm.trim());
            }
        }
        let _ = writeln!(m, "\nFiles: {} (node.toml, node.log, broker.log, report.json).", self.dir.display());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_is_detected_by_what_fired_after_it_and_before_the_next() {
        let s = Scenario::builtin("breach").unwrap().unwrap();
        let dir = std::env::temp_dir();
        let mut r = Report::new(&s, 1, 0, &dir);
        let run = |i: usize, start: f64| FaultRun { started: true, ended: true, ..FaultRun::planned(i, &s.faults[i], start, start) };
        r.faults = vec![run(0, 3.0), run(1, 5.0), run(2, 10.0)];
        let alert = |rule: &str, at: f64| AlertSeen { rule: rule.into(), severity: "P2".into(), fired_ms: (at * 1000.0) as i64, fired_s: at };
        r.alerts = vec![alert("SecurityQuarantine", 4.0), alert("AccessDenied", 6.0), alert("SecurityQuarantine", 11.5)];
        r.finish(20_000, None);
        let got: Vec<(Option<f64>, Option<&str>)> = r.faults.iter().map(|f| (f.detected_s, f.detected_by.as_deref())).collect();
        assert_eq!(
            got,
            [(Some(1.0), Some("alert SecurityQuarantine")), (Some(1.0), Some("alert AccessDenied")), (Some(1.5), Some("alert SecurityQuarantine"))]
        );
        assert_eq!((r.mttd_s, r.detected_by.as_deref()), (Some(1.0), Some("alert SecurityQuarantine")));
        r.alerts.clear();
        r.finish(20_000, None);
        assert!(r.faults.iter().all(|f| f.detected_s.is_none()) && r.lessons.iter().any(|l| l.contains("nothing detected")));
    }
}
