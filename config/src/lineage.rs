//! `[lineage]`: record-level lineage kept beside checkpoints, its retention, and the
//! OpenLineage export of checkpoint epochs.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// `[lineage.openlineage]`: each checkpoint epoch is exported as an OpenLineage run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenLineageConfig {
    /// Append RunEvents as JSON lines to this file. Default none.
    pub file: Option<PathBuf>,
    /// POST RunEvents to `<url>/api/v1/lineage` (Marquez and compatible). Default none.
    pub url: Option<String>,
    /// Job namespace. Default `vigil`.
    pub namespace: String,
    /// Events waiting for export; beyond it the oldest are dropped and counted. Default 1000.
    pub queue_max: usize,
    /// Bound on one HTTP request. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per event before it is counted as failed. Default 5.
    pub attempts: u32,
    /// First retry delay, doubled per attempt. Default `200ms`.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Longest retry delay. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for OpenLineageConfig {
    fn default() -> Self {
        Self {
            file: None,
            url: None,
            namespace: "vigil".into(),
            queue_max: 1000,
            timeout: Duration::from_secs(5),
            attempts: 5,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }
}

impl OpenLineageConfig {
    /// Whether any transport is configured.
    pub fn enabled(&self) -> bool {
        self.file.is_some() || self.url.as_deref().is_some_and(|u| !u.trim().is_empty())
    }
}

/// `[lineage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LineageConfig {
    /// Record, per output window, the exact source offsets that produced it. Default true.
    pub enabled: bool,
    /// Lineage of checkpoints older than this is removed. Default `7d`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Beyond this many bytes of lineage the oldest checkpoints' lineage is removed.
    /// Default 1073741824 (1 GiB).
    pub max_bytes: u64,
    /// Longest DLQ detail kept per rejected record, in bytes. Default 256.
    pub detail_max: usize,
    /// OpenLineage export.
    pub openlineage: OpenLineageConfig,
}

impl Default for LineageConfig {
    fn default() -> Self {
        Self { enabled: true, retention: Duration::from_secs(7 * 86_400), max_bytes: 1 << 30, detail_max: 256, openlineage: OpenLineageConfig::default() }
    }
}

impl LineageConfig {
    pub(crate) fn validate(&self, err: &mut impl FnMut(&str, &str)) {
        if self.retention < Duration::from_secs(1) {
            err("lineage.retention", "must be at least 1s");
        }
        if self.max_bytes < 1 << 20 {
            err("lineage.max_bytes", "must be at least 1048576 (1 MiB)");
        }
        let o = &self.openlineage;
        if o.enabled() && !self.enabled {
            err("lineage.openlineage", "exporting runs needs lineage.enabled = true (their datasets and counts come from the lineage of each checkpoint)");
        }
        if let Some(u) = &o.url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                err("lineage.openlineage.url", "must start with http:// or https://");
            }
        }
        if o.namespace.trim().is_empty() {
            err("lineage.openlineage.namespace", "must not be empty");
        }
        if o.queue_max == 0 {
            err("lineage.openlineage.queue_max", "must be at least 1");
        }
        if o.attempts == 0 {
            err("lineage.openlineage.attempts", "must be at least 1");
        }
        if o.timeout.is_zero() || o.backoff_initial.is_zero() || o.backoff_max < o.backoff_initial {
            err("lineage.openlineage", "timeout and backoff_initial must be > 0 and backoff_max >= backoff_initial");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_needs_lineage_and_limits_are_checked() {
        let mut c = LineageConfig { enabled: false, max_bytes: 10, ..LineageConfig::default() };
        c.openlineage.url = Some("marquez:5000".into());
        let mut errs = Vec::new();
        c.validate(&mut |p: &str, m: &str| errs.push(format!("{p}: {m}")));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].starts_with("lineage.max_bytes"));
        assert!(errs[1].contains("needs lineage.enabled"));
        assert!(errs[2].starts_with("lineage.openlineage.url"));
        let mut errs = Vec::new();
        LineageConfig::default().validate(&mut |p: &str, m: &str| errs.push(format!("{p}: {m}")));
        assert!(errs.is_empty(), "{errs:?}");
    }
}
