//! OpenLineage export: each checkpoint epoch is a run of the job `<node>/<pipeline>`.
//! A run STARTs when the previous checkpoint commits (or the pipeline starts), COMPLETEs
//! when its checkpoint commits — with the Kafka datasets it read and wrote and their row
//! counts — and FAILs when its checkpoint fails or the node recovers from a crash in it.
//! Events go to a JSON-lines file and/or `POST <url>/api/v1/lineage` (Marquez) from a
//! bounded queue; the pipeline never waits for them.
use super::record::EpochRecord;
use crate::outbox::{Outbox, Retry};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vigil_config::{Config, OpenLineageConfig};

/// Spec version the events follow.
pub const SCHEMA_URL: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const FACET_BASE: &str = "https://openlineage.io/spec/facets";
/// Producer URI of every event and facet.
pub const PRODUCER: &str = concat!("https://github.com/vigil-rs/vigil/tree/v", env!("CARGO_PKG_VERSION"));

/// One run: the work between two checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// UUID.
    pub id: String,
    /// Checkpoint the run started from (0: none).
    pub after: u64,
    /// Start time, ms.
    pub started_ms: i64,
}

impl Run {
    /// A new run starting now from checkpoint `after`.
    pub fn new(after: u64) -> Self {
        Self { id: uuid::Uuid::new_v4().to_string(), after, started_ms: vigil_runtime::now_ms() }
    }
}

/// What the events say about the job and its datasets, fixed for a node's life.
#[derive(Debug, Clone)]
pub struct Job {
    /// Job namespace.
    pub namespace: String,
    /// `<node>/<pipeline>`.
    pub name: String,
    /// Dataset namespace: `kafka://host:port` of the first bootstrap server.
    pub kafka: String,
    /// Source topics with their schema fields `(name, type)`.
    pub inputs: Vec<(String, Vec<(String, String)>)>,
    /// Sink topic.
    pub sink: String,
    /// DLQ topic.
    pub dlq: String,
    /// Node id.
    pub node: String,
    /// Configuration hash.
    pub config_hash: String,
}

/// Fields of window results, as the sink writes them.
const OUTPUT_FIELDS: [(&str, &str); 8] = [
    ("aggregation", "string"),
    ("key", "string"),
    ("group", "map"),
    ("window_start", "long"),
    ("window_end", "long"),
    ("revision", "int"),
    ("records", "long"),
    ("metrics", "map"),
];

impl Job {
    /// The job of a node.
    pub fn new(config: &Config, bootstrap: &str, config_hash: &str) -> Self {
        let first = bootstrap.split(',').next().unwrap_or("").trim();
        let p = &config.pipeline;
        let mut fields: Vec<(String, String)> = vec![(p.event_time.field.clone(), "long".into())];
        for f in &p.fields {
            if !fields.iter().any(|(n, _)| *n == f.name) {
                fields.push((f.name.clone(), crate::variant_name(&f.kind)));
            }
        }
        // Fields only the aggregations read: numeric when a numeric metric reads them.
        for a in &p.aggregations {
            for f in a.fields() {
                if !fields.iter().any(|(n, _)| *n == f) {
                    let numeric = a.metrics.iter().any(|m| m.field() == Some(f.as_str()) && !matches!(m, vigil_config::Metric::Distinct { .. }));
                    fields.push((f, if numeric { "double" } else { "string" }.into()));
                }
            }
        }
        Self {
            namespace: config.lineage.openlineage.namespace.clone(),
            name: format!("{}/{}", config.node.id, config.pipeline.name),
            kafka: format!("kafka://{first}"),
            inputs: config.pipeline.sources.iter().map(|s| (s.topic.clone(), fields.clone())).collect(),
            sink: config.pipeline.sink_topic.clone(),
            dlq: config.pipeline.dlq_topic.clone(),
            node: config.node.id.clone(),
            config_hash: config_hash.into(),
        }
    }
}

fn facet(path: &str, def: &str, body: Value) -> Value {
    let mut v = json!({ "_producer": PRODUCER, "_schemaURL": format!("{FACET_BASE}/{path}#/$defs/{def}") });
    if let (Some(o), Value::Object(b)) = (v.as_object_mut(), body) {
        o.extend(b);
    }
    v
}

fn schema_facet(fields: &[(String, String)]) -> Value {
    let fields: Vec<Value> = fields.iter().map(|(n, t)| json!({ "name": n, "type": t })).collect();
    facet("1-2-0/SchemaDatasetFacet.json", "SchemaDatasetFacet", json!({ "fields": fields }))
}

/// How a run ended, or that it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Began.
    Start,
    /// Its checkpoint committed.
    Complete,
    /// Its checkpoint failed, or the node or pipeline restarted in it.
    Fail,
    /// The node stopped in an orderly way before it did any work.
    Abort,
}

/// A RunEvent. `epoch` (the committed checkpoint's record) adds the datasets with their row
/// counts; `error` the reason of a failure.
pub fn run_event(job: &Job, run: &Run, t: Transition, at_ms: i64, epoch: Option<&EpochRecord>, error: Option<&str>) -> Value {
    let event_type = match t {
        Transition::Start => "START",
        Transition::Complete => "COMPLETE",
        Transition::Fail => "FAIL",
        Transition::Abort => "ABORT",
    };
    let mut run_facets = serde_json::Map::new();
    run_facets.insert(
        "processing_engine".into(),
        facet("1-1-1/ProcessingEngineRunFacet.json", "ProcessingEngineRunFacet", json!({ "name": "vigil", "version": env!("CARGO_PKG_VERSION") })),
    );
    let mut vigil = json!({ "node": job.node, "config": job.config_hash, "afterCheckpoint": run.after });
    if let (Some(e), Some(o)) = (epoch, vigil.as_object_mut()) {
        o.insert("checkpoint".into(), json!(e.epoch));
    }
    run_facets
        .insert("vigil_checkpoint".into(), json!({ "_producer": PRODUCER, "_schemaURL": format!("{PRODUCER}/docs/lineage.md#openlineage"), "vigil": vigil }));
    if let Some(msg) = error {
        run_facets.insert(
            "errorMessage".into(),
            facet("1-0-1/ErrorMessageRunFacet.json", "ErrorMessageRunFacet", json!({ "message": msg, "programmingLanguage": "rust" })),
        );
    }
    let job_facets = json!({
        "jobType": facet("2-0-4/JobTypeJobFacet.json", "JobTypeJobFacet", json!({ "processingType": "STREAMING", "integration": "VIGIL", "jobType": "JOB" })),
    });
    let mut ev = json!({
        "eventType": event_type,
        "eventTime": vigil_runtime::rfc3339_ms(at_ms),
        "producer": PRODUCER,
        "schemaURL": SCHEMA_URL,
        "run": { "runId": run.id, "facets": run_facets },
        "job": { "namespace": job.namespace, "name": job.name, "facets": job_facets },
    });
    let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
    let rows: BTreeMap<&str, i64> = epoch.map_or_else(BTreeMap::new, |e| {
        let mut m = BTreeMap::new();
        for c in &e.consumed {
            *m.entry(c.topic.as_str()).or_default() += c.to - c.from;
        }
        m
    });
    for (topic, fields) in &job.inputs {
        let mut d = json!({ "namespace": job.kafka, "name": topic, "facets": { "schema": schema_facet(fields) } });
        if epoch.is_some() {
            let n = rows.get(topic.as_str()).copied().unwrap_or(0);
            d["inputFacets"] = json!({ "dataQualityMetrics": facet(
                "1-0-3/DataQualityMetricsInputDatasetFacet.json",
                "DataQualityMetricsInputDatasetFacet",
                json!({ "rowCount": n, "columnMetrics": {} }),
            ) });
        }
        inputs.push(d);
    }
    let out_fields: Vec<(String, String)> = OUTPUT_FIELDS.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    let counts = epoch.map(|e| (e.windows_closed, e.rejects.len() as u64));
    for (topic, fields, n) in [(&job.sink, Some(&out_fields), counts.map(|c| c.0)), (&job.dlq, None, counts.map(|c| c.1))] {
        let mut d = json!({ "namespace": job.kafka, "name": topic });
        if let Some(f) = fields {
            d["facets"] = json!({ "schema": schema_facet(f) });
        }
        if let Some(n) = n {
            d["outputFacets"] = json!({ "outputStatistics": facet("1-0-2/OutputStatisticsOutputDatasetFacet.json", "OutputStatisticsOutputDatasetFacet", json!({ "rowCount": n })) });
        }
        outputs.push(d);
    }
    ev["inputs"] = Value::Array(inputs);
    ev["outputs"] = Value::Array(outputs);
    ev
}

/// The export queue and its worker.
pub struct Exporter {
    queue: Arc<Outbox<Value>>,
    task: tokio::task::JoinHandle<()>,
    /// Events queued and not dropped.
    accepted: AtomicU64,
    /// Events the worker has finished with (exported or failed).
    finished: Arc<AtomicU64>,
    /// Transports configured (`file`, `http`).
    transports: Vec<&'static str>,
}

fn count(transport: &str, outcome: &'static str, n: u64) {
    metrics::counter!("vigil_lineage_export_total", "transport" => transport.to_string(), "outcome" => outcome).increment(n);
}

impl Exporter {
    /// Start exporting, if a transport is configured.
    pub fn start(cfg: &OpenLineageConfig) -> Option<Self> {
        if !cfg.enabled() {
            return None;
        }
        let transports: Vec<&'static str> = [cfg.file.is_some().then_some("file"), cfg.url.is_some().then_some("http")].into_iter().flatten().collect();
        for t in &transports {
            for outcome in ["ok", "failed", "dropped"] {
                count(t, outcome, 0);
            }
        }
        let queue = Arc::new(Outbox::new(cfg.queue_max));
        let finished = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(work(cfg.clone(), queue.clone(), finished.clone()));
        Some(Self { queue, task, accepted: AtomicU64::new(0), finished, transports })
    }

    /// Queue an event; beyond `queue_max` the oldest waiting one is dropped and counted.
    pub fn emit(&self, event: Value) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let dropped = self.queue.push(event) as u64;
        self.accepted.fetch_sub(dropped, Ordering::SeqCst);
        if dropped > 0 {
            for t in &self.transports {
                count(t, "dropped", dropped);
            }
            tracing::warn!(dropped, "OpenLineage export queue full: dropped the oldest events");
        }
    }

    /// Whether every event queued so far has been exported (or has failed).
    pub fn drained(&self) -> bool {
        self.finished.load(Ordering::SeqCst) >= self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn append_line(path: &std::path::Path, event: &Value) -> Result<(), String> {
    let mut line = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(&line).map_err(|e| format!("{}: {e}", path.display()))
}

async fn work(cfg: OpenLineageConfig, queue: Arc<Outbox<Value>>, finished: Arc<AtomicU64>) {
    let agent = crate::outbox::agent(cfg.timeout);
    let url = cfg.url.as_deref().filter(|u| !u.trim().is_empty()).map(|u| format!("{}/api/v1/lineage", u.trim_end_matches('/')));
    let retry = Retry { attempts: cfg.attempts, initial: cfg.backoff_initial, max: cfg.backoff_max };
    loop {
        let event = queue.next().await;
        if let Some(path) = &cfg.file {
            let (p, e) = (path.clone(), event.clone());
            match tokio::task::spawn_blocking(move || append_line(&p, &e)).await.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(()) => count("file", "ok", 1),
                Err(e) => {
                    count("file", "failed", 1);
                    tracing::error!(error = %e, "OpenLineage event not written to file");
                }
            }
        }
        if let Some(url) = &url {
            match retry.run(|| crate::outbox::post_json(&agent, url, event.clone())).await {
                Ok(_) => count("http", "ok", 1),
                Err(e) => {
                    count("http", "failed", 1);
                    tracing::error!(error = %e, attempts = retry.attempts, "OpenLineage event not delivered after every retry");
                }
            }
        }
        finished.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lineage::record::Consumed;

    #[test]
    fn complete_event_names_kafka_datasets_and_counts_rows() {
        let mut cfg = Config::default();
        cfg.node.id = "n1".into();
        let job = Job::new(&cfg, "127.0.0.1:9092,other:9092", "abc");
        let run = Run::new(4);
        let rec = EpochRecord {
            epoch: 5,
            completed_ms: 1_700_000_000_000,
            node: "n1".into(),
            sink_topic: cfg.pipeline.sink_topic.clone(),
            consumed: vec![Consumed { topic: cfg.pipeline.sources[0].topic.clone(), partition: 0, from: 10, to: 30 }],
            windows: vec![],
            records: 20,
            windows_closed: 3,
            rejects: vec![],
            outputs: vec![],
            merges: vec![],
        };
        let ev = run_event(&job, &run, Transition::Complete, rec.completed_ms, Some(&rec), None);
        assert_eq!(ev["eventType"], "COMPLETE");
        assert_eq!(ev["eventTime"], "2023-11-14T22:13:20.000Z");
        assert_eq!(ev["job"]["name"], format!("n1/{}", cfg.pipeline.name));
        assert_eq!(ev["inputs"][0]["namespace"], "kafka://127.0.0.1:9092");
        assert_eq!(ev["inputs"][0]["inputFacets"]["dataQualityMetrics"]["rowCount"], 20);
        assert_eq!(ev["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"], 3);
        assert_eq!(ev["outputs"][1]["name"], cfg.pipeline.dlq_topic);
        assert!(uuid::Uuid::parse_str(ev["run"]["runId"].as_str().unwrap()).is_ok());
        let fail = run_event(&job, &run, Transition::Fail, 0, None, Some("boom"));
        assert_eq!(fail["run"]["facets"]["errorMessage"]["message"], "boom");
        assert!(fail["inputs"][0].get("inputFacets").is_none());
    }
}
