//! Recurring drill plans (`vigil drill schedule`): which scenario to rehearse how often,
//! kept in `schedule.json` beside the drills' reports, and what is due from each plan's
//! interval and the last drill of its scenario. Pure apart from reading and writing the file.
use crate::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// File name of the schedule inside the drills' directory.
pub const FILE: &str = "schedule.json";

/// One recurring drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Scenario name as its reports carry it.
    pub scenario: String,
    /// What `vigil drill run` takes: a built-in name or a scenario file.
    pub source: String,
    /// How often.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// Who runs it, why, with whom on call.
    #[serde(default)]
    pub note: String,
    /// When it was added, ms.
    pub added_ms: i64,
}

/// Every plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// In the order they were added.
    pub plans: Vec<Plan>,
}

/// The last finished (not interrupted) drill of a scenario: when it started, whether it passed.
pub type LastRun = (i64, bool);

/// Where a plan stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanStatus {
    /// The plan.
    pub plan: Plan,
    /// Its last drill, if any.
    pub last_ms: Option<i64>,
    /// Whether that drill passed.
    pub last_passed: Option<bool>,
    /// When the next drill is due, ms (a plan never run is due from when it was added).
    pub due_ms: i64,
    /// Due now.
    pub due: bool,
}

/// `daily`, `weekly`, `monthly` (30 days), `quarterly` (91 days) or a duration (`14d`).
///
/// # Errors
/// A message naming what was not understood.
pub fn parse_every(s: &str) -> Result<Duration, String> {
    const DAY: u64 = 86_400;
    let d = match s {
        "daily" => Duration::from_secs(DAY),
        "weekly" => Duration::from_secs(7 * DAY),
        "monthly" => Duration::from_secs(30 * DAY),
        "quarterly" => Duration::from_secs(91 * DAY),
        _ => humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (daily, weekly, monthly, quarterly or a duration such as 14d)"))?,
    };
    if d < Duration::from_secs(60) {
        return Err(format!("`{s}`: a drill plan recurs at most every minute"));
    }
    Ok(d)
}

impl Schedule {
    /// The schedule in `dir` (empty when there is none yet).
    ///
    /// # Errors
    /// [`Error::Io`] if the file exists but cannot be read or parsed.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let p = dir.join(FILE);
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| Error::Io(format!("{} is not a drill schedule: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::Io(format!("read {}: {e}", p.display()))),
        }
    }

    /// Write the schedule into `dir` (atomically: a reader sees the old or the new one).
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be written.
    pub fn save(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("create {}: {e}", dir.display())))?;
        let (p, tmp) = (dir.join(FILE), dir.join(format!("{FILE}.tmp")));
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Io(e.to_string()))?;
        std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &p)).map_err(|e| Error::Io(format!("write {}: {e}", p.display())))
    }

    /// Add a plan, or replace the one of the same scenario; whether one was replaced.
    pub fn add(&mut self, plan: Plan) -> bool {
        match self.plans.iter_mut().find(|p| p.scenario == plan.scenario) {
            Some(p) => {
                *p = plan;
                true
            }
            None => {
                self.plans.push(plan);
                false
            }
        }
    }

    /// Remove the plan of `scenario`; whether there was one.
    pub fn remove(&mut self, scenario: &str) -> bool {
        let before = self.plans.len();
        self.plans.retain(|p| p.scenario != scenario);
        self.plans.len() != before
    }

    /// Every plan's status at `now_ms`, given each scenario's last finished drill.
    pub fn status(&self, last: &BTreeMap<String, LastRun>, now_ms: i64) -> Vec<PlanStatus> {
        self.plans
            .iter()
            .map(|p| {
                let l = last.get(&p.scenario);
                let due_ms = l.map_or(p.added_ms, |(at, _)| at + p.every.as_millis() as i64);
                PlanStatus { plan: p.clone(), last_ms: l.map(|l| l.0), last_passed: l.map(|l| l.1), due_ms, due: due_ms <= now_ms }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn plan(s: &str, days: u64, added_ms: i64) -> Plan {
        Plan { scenario: s.into(), source: s.into(), every: Duration::from_secs(days * 86_400), note: String::new(), added_ms }
    }

    #[test]
    fn due_follows_the_last_drill_and_a_plan_never_run_is_due_at_once() {
        let mut s = Schedule::default();
        assert!(!s.add(plan("breach", 30, 0)));
        s.add(plan("node-kill", 7, 0));
        s.add(plan("poison-pill", 1, 5 * DAY));
        let last: BTreeMap<String, LastRun> = [("breach".to_string(), (10 * DAY, false)), ("node-kill".to_string(), (2 * DAY, true))].into();
        let st = s.status(&last, 12 * DAY);
        let due: Vec<(&str, bool)> = st.iter().map(|x| (x.plan.scenario.as_str(), x.due)).collect();
        assert_eq!(due, [("breach", false), ("node-kill", true), ("poison-pill", true)]);
        assert_eq!((st[0].due_ms, st[0].last_passed), (40 * DAY, Some(false)));
        assert_eq!((st[2].due_ms, st[2].last_ms), (5 * DAY, None));
    }

    #[test]
    fn plans_replace_by_scenario_remove_and_survive_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Schedule::load(dir.path()).unwrap(), Schedule::default());
        let mut s = Schedule::default();
        s.add(plan("breach", 30, 1));
        assert!(s.add(plan("breach", 7, 2)), "same scenario replaces");
        s.add(plan("node-kill", 7, 3));
        s.save(dir.path()).unwrap();
        let back = Schedule::load(dir.path()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.plans[0].every, Duration::from_secs(7 * 86_400));
        let mut back = back;
        assert!(back.remove("breach") && !back.remove("breach"));
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        assert!(Schedule::load(dir.path()).unwrap_err().to_string().contains("not a drill schedule"));
    }

    #[test]
    fn intervals_have_names_and_a_floor() {
        assert_eq!(parse_every("monthly"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_every("14d"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_every("5s").unwrap_err().contains("at most every minute"));
        assert!(parse_every("fortnightly").unwrap_err().contains("fortnightly"));
    }
}
