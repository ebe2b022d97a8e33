//! A running node: opens the store, starts the embedded broker if configured, builds the
//! supervision tree (root → pipeline → stages), and serves metrics and the admin API.
//!
//! Tree (children start top to bottom and stop bottom to top):
//! ```text
//! root        one_for_one
//! ├─ pipeline one_for_all   a stage failure rewinds every stage to the last checkpoint
//! │  ├─ sink
//! │  ├─ process-0 … process-N-1    (`process` with one shard)
//! │  ├─ validate-0 … validate-N-1  (`validate` with one shard)
//! │  └─ ingest              stopped first on shutdown: takes the final checkpoint
//! ├─ monitor  one_for_one   temporary: if it gives up, the data path runs on without it
//! │  ├─ lineage             retention (lineage is written by sink, in the checkpoint)
//! │  ├─ incidents
//! │  ├─ alerting
//! │  └─ quality
//! └─ generator              embedded default only
//! ```
use crate::alerting::actor::{AlertMsg, Alerting};
use crate::generator::Wire;
use crate::incidents::actor::{IncidentMsg, Incidents};
use crate::journal::{Event, EventKind, Journal};
use crate::pipeline::{shard_name, GenMsg, IngestMsg, NodeCtx, ProcessMsg, SinkMsg, Slots, ValidateMsg};
use crate::quality::actor::{Quality, QualityMsg};
use crate::registry::resolver::{ExternalResolver, RegistryClient, Resolver};
use crate::registry::schema::SchemaType;
use crate::registry::Registry;
use crate::stages::{Generator, Ingest, Process, Sink, Validate};
use crate::validate::Rules;
use crate::Error;
use crate::Result;
use futures::future::BoxFuture;
use ractor::ActorRef;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use vigil_config::{Config, SinkFormat, SourceFormat};
use vigil_runtime::admin::AdminApi;
use vigil_runtime::embedded::EmbeddedBroker;
use vigil_runtime::kafka::TrackedProducer;
use vigil_runtime::security::access::{Guard, Security};
use vigil_runtime::security::audit::AuditLog;
use vigil_runtime::security::tls::Reloadable;
use vigil_runtime::security::tokens::TokenStore;
use vigil_runtime::security::ListenerOpts;
use vigil_runtime::stats::NodeStats;
use vigil_runtime::store::Store;
use vigil_supervision::{Backoff, ChildSpec, Intensity, Restart, RootHandle, Strategy, SupervisorMsg, SupervisorSpec, TreeEvent, TreeNode};

/// A started node.
pub struct Node {
    /// Shared context of the stages.
    pub ctx: Arc<NodeCtx>,
    root: RootHandle,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    /// Where the admin API is served.
    pub admin_addr: SocketAddr,
    /// Supervision events (restarts, escalations).
    pub events: broadcast::Sender<TreeEvent>,
    embedded: Option<EmbeddedBroker>,
    housekeeping: Option<tokio::task::JoinHandle<()>>,
    /// Credentials, roles and the audit log of the listeners.
    pub security: Arc<Security>,
    /// TLS of the listeners (reloaded on SIGHUP), if configured.
    pub tls: Option<Arc<Reloadable>>,
    /// The metrics and admin listeners: they stop when the node does (their routes hold
    /// the context, so a node in a process that goes on lets its store and clients go).
    listeners: [vigil_runtime::security::Listening; 2],
    /// The task journaling supervision events (it holds the context).
    tree_events: tokio::task::JoinHandle<()>,
}

/// Longest a stopping node waits for the last holders of its context (tasks and listener
/// threads winding down) before it returns anyway.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// The producer-signature checks of the sources that require them, keys read now.
fn verifiers(config: &Config) -> Result<Vec<Option<crate::signing::Verifier>>> {
    let mut out = Vec::new();
    for (i, s) in config.pipeline.sources.iter().enumerate() {
        let Some(sig) = &s.signing else {
            out.push(None);
            continue;
        };
        let mut keys = BTreeMap::new();
        for (producer, secret) in &sig.keys {
            let k = secret.reveal().map_err(|e| Error::Secret(format!("pipeline.sources[{i}].signing.keys.{producer}: {e}")))?;
            keys.insert(producer.clone(), k.into_bytes());
        }
        out.push(Some(crate::signing::Verifier::new(keys, sig.max_skew.as_millis() as i64, sig.replay_window.as_millis() as i64, sig.replay_capacity)));
    }
    Ok(out)
}

/// The listeners' security from `[security]`: tokens (configured and the token file), the
/// audit log beside the store, and the TLS config.
fn security_of(config: &Config, store: &Arc<Store>) -> Result<(Arc<Security>, Option<Arc<Reloadable>>)> {
    let s = &config.security;
    let dir = &config.node.data_dir;
    let tokens = Arc::new(TokenStore::new(s.tokens.clone(), s.token_file.clone().unwrap_or_else(|| dir.join("tokens.json")))?);
    let audit = Arc::new(AuditLog::open(store.clone(), s.audit_file.clone().unwrap_or_else(|| dir.join("audit.jsonl")))?);
    let tls = if s.tls.enabled() { Some(Arc::new(Reloadable::new(s.tls.clone())?)) } else { None };
    Ok((Arc::new(Security::new(s, tokens, Some(audit))), tls))
}

/// What SIGHUP re-reads: the listeners' certificates and the alert rules. It does not keep
/// a stopped node's context (its store and clients) alive.
#[derive(Clone)]
pub struct Reloader {
    ctx: std::sync::Weak<NodeCtx>,
    tls: Option<Arc<Reloadable>>,
}

impl Reloader {
    /// Reload both; one line per part saying what happened.
    pub async fn reload(&self) -> Vec<std::result::Result<String, String>> {
        let mut out = Vec::new();
        if let Some(tls) = &self.tls {
            out.push(
                tls.reload().map(|()| "TLS certificates reloaded".to_string()).map_err(|e| format!("TLS certificates not reloaded (the old ones stay): {e}")),
            );
        }
        let Some(ctx) = self.ctx.upgrade() else { return out };
        if ctx.config.loaded_from.is_some() {
            out.push(
                crate::alerting::rest::reload_rules(&ctx)
                    .await
                    .map(|(file, n)| format!("{n} alert rules reloaded from {file}"))
                    .map_err(|(_, e, problems)| format!("alert rules not reloaded: {e}{}", problems.iter().map(|p| format!("; {p}")).collect::<String>())),
            );
        }
        out
    }
}

/// The node's schema registry arrangement: its own (served on the admin listener) or an
/// external one.
struct SchemaSetup {
    local: Option<Arc<Registry>>,
    resolver: Arc<dyn Resolver>,
    client: Option<RegistryClient>,
}

impl SchemaSetup {
    fn open(config: &Config, store: &Arc<Store>) -> Result<SchemaSetup> {
        let r = &config.schema_registry;
        if r.external() {
            let ext = ExternalResolver::new(&r.url, r.request_timeout, r.cache_max);
            let client = ext.client().clone();
            return Ok(SchemaSetup { local: None, resolver: Arc::new(ext), client: Some(client) });
        }
        let reg = Arc::new(Registry::open(store.clone(), r.clone()).map_err(|e| Error::Registry(e.to_string()))?);
        Ok(SchemaSetup { local: Some(reg.clone()), resolver: reg, client: None })
    }

    /// Register a schema the node itself writes with (generator, Avro sink); returns its id.
    fn register(&self, subject: &str, kind: SchemaType, schema: &str) -> Result<u32> {
        match (&self.local, &self.client) {
            (Some(reg), _) => reg
                .register_text("node", subject, Some(kind.as_str()), schema)
                .map(|r| r.id)
                .map_err(|e| Error::Registry(format!("registering the node's schema under `{subject}`: {e}"))),
            (None, Some(client)) => client.register(subject, kind, schema).map_err(Error::Registry),
            (None, None) => Err(Error::Registry("no registry configured".into())),
        }
    }

    /// How the embedded generator encodes: the first source's format, its schema registered.
    fn generator_wire(&self, config: &Config) -> Result<Wire> {
        let Some(source) = config.pipeline.sources.first() else { return Ok(Wire::Json) };
        match source.format {
            SourceFormat::Json => Ok(Wire::Json),
            SourceFormat::Avro => Wire::avro(self.register(&source.subject(), SchemaType::Avro, crate::generator::AVRO_SCHEMA)?).map_err(Error::Encode),
            SourceFormat::JsonSchema => Ok(Wire::JsonSchema { id: self.register(&source.subject(), SchemaType::Json, crate::generator::JSON_SCHEMA)? }),
        }
    }
}

/// Register at 0 the counters that only move on trouble, so dashboards and alert rules see
/// a 0 instead of an absent series.
fn init_series(config: &Config) {
    metrics::counter!("vigil_checkpoint_failures_total").increment(0);
    for outcome in ["ok", "failed"] {
        metrics::counter!("vigil_checkpoints_total", "outcome" => outcome).increment(0);
    }
    let shards = config.pipeline.shard_count();
    for actor in crate::pipeline::STAGES.iter().chain(["pipeline"].iter()) {
        match *actor {
            "validate" | "process" => {
                for i in 0..shards {
                    metrics::counter!("vigil_actor_restarts_total", "actor" => shard_name(actor, i, shards)).increment(0);
                }
            }
            _ => metrics::counter!("vigil_actor_restarts_total", "actor" => *actor).increment(0),
        }
    }
    for topic in [&config.pipeline.sink_topic, &config.pipeline.dlq_topic] {
        metrics::counter!("vigil_delivery_failures_total", "topic" => topic.clone()).increment(0);
    }
    if config.quality.enabled {
        metrics::counter!("vigil_dq_reports_dropped_total").increment(0);
        for actor in ["quality", "alerting", "incidents"] {
            metrics::counter!("vigil_actor_restarts_total", "actor" => actor).increment(0);
        }
        for level in ["1", "2"] {
            metrics::counter!("vigil_incident_pages_total", "level" => level).increment(0);
        }
    }
    if config.lineage.enabled {
        metrics::counter!("vigil_actor_restarts_total", "actor" => "lineage").increment(0);
    }
}

/// Periodic registry work: persist usage, apply the lifecycle policy.
async fn registry_housekeeping(reg: Arc<Registry>) {
    let mut tick = tokio::time::interval(reg.config().usage_flush_interval);
    loop {
        tick.tick().await;
        if let Err(e) = reg.flush_usage() {
            tracing::warn!(error = %e, "schema usage not persisted");
        }
        if let Err(e) = reg.apply_lifecycle_policy(vigil_runtime::now_ms()) {
            tracing::warn!(error = %e, "schema lifecycle policy not applied");
        }
    }
}

fn tree_spec(ctx: &Arc<NodeCtx>, events: &broadcast::Sender<TreeEvent>) -> SupervisorSpec {
    let s = &ctx.config.supervision;
    let intensity = Intensity { max_restarts: s.max_restarts, window: s.restart_window };
    let backoff = Backoff { initial: s.backoff_initial, max: s.backoff_max, jitter: 0.25 };
    let t = s.shutdown_timeout;
    let args = |c: &Arc<NodeCtx>| {
        let c = c.clone();
        move || c.clone()
    };
    // Ingest's stop includes the final checkpoint, so it gets the flush timeout on top.
    let ingest_t = t + ctx.config.checkpoint.flush_timeout;
    let shard = |c: &Arc<NodeCtx>, i: usize| {
        let c = c.clone();
        move || (c.clone(), i)
    };
    let shards = ctx.slots.process.len();
    let mut stages = vec![ChildSpec::worker("sink", Restart::Permanent, t, Sink, args(ctx))];
    for i in 0..shards {
        stages.push(ChildSpec::worker(&shard_name("process", i, shards), Restart::Permanent, t, Process, shard(ctx, i)));
    }
    for i in 0..shards {
        stages.push(ChildSpec::worker(&shard_name("validate", i, shards), Restart::Permanent, t, Validate, shard(ctx, i)));
    }
    stages.push(ChildSpec::worker("ingest", Restart::Permanent, ingest_t, Ingest, args(ctx)));
    let n = stages.len() as u32;
    let pipeline =
        SupervisorSpec { name: "pipeline".into(), strategy: Strategy::OneForAll, intensity, backoff, children: stages, events: Some(events.clone()) };
    let mut children = vec![pipeline.child(Restart::Permanent, ingest_t + t * n)];
    let mut kids = Vec::new();
    if ctx.config.lineage.enabled {
        kids.push(ChildSpec::worker("lineage", Restart::Permanent, t, crate::lineage::actor::Lineage, args(ctx)));
    }
    if ctx.config.quality.enabled {
        if ctx.incidents_enabled() {
            kids.push(ChildSpec::worker("incidents", Restart::Permanent, t, Incidents, args(ctx)));
        }
        if ctx.alerting_enabled() {
            kids.push(ChildSpec::worker("alerting", Restart::Permanent, t, Alerting, args(ctx)));
        }
        kids.push(ChildSpec::worker("quality", Restart::Permanent, t, Quality, args(ctx)));
    }
    if !kids.is_empty() {
        let n = kids.len() as u32;
        let monitor =
            SupervisorSpec { name: "monitor".into(), strategy: Strategy::OneForOne, intensity, backoff, children: kids, events: Some(events.clone()) };
        children.push(monitor.child(Restart::Temporary, t * (n + 1)));
    }
    if ctx.config.generator_enabled() {
        children.push(ChildSpec::worker("generator", Restart::Permanent, t, Generator, args(ctx)));
    }
    SupervisorSpec { name: "root".into(), strategy: Strategy::OneForOne, intensity, backoff, children, events: Some(events.clone()) }
}

impl Node {
    /// Start a node from a validated configuration.
    ///
    /// # Errors
    /// Any failure to start the broker, open the store, create clients, start the tree or
    /// bind the listeners, with what and where.
    pub async fn start(mut config: Config) -> Result<Node> {
        if config.embedded_kafka() {
            vigil_runtime::embedded::tune_for_mock(&mut config.kafka);
        }
        let config = Arc::new(config);
        let prom = vigil_runtime::metrics::install()?;
        let embedded = if config.embedded_kafka() {
            let mut topics: Vec<String> = config.pipeline.sources.iter().map(|s| s.topic.clone()).collect();
            topics.push(config.pipeline.sink_topic.clone());
            topics.push(config.pipeline.dlq_topic.clone());
            Some(EmbeddedBroker::start(config.kafka.embedded_partitions, &topics, None)?)
        } else {
            None
        };
        let bootstrap = embedded.as_ref().map(|e| e.bootstrap().to_string()).unwrap_or_else(|| config.kafka.bootstrap.clone());
        let data_dir = config.node.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| vigil_runtime::Error::Embedded(format!("create data_dir {}: {e}", data_dir.display())))?;
        // RocksDB's memtables and block cache: an eighth of the memory limit.
        let store = Arc::new(Store::open_within(&data_dir, config.node.memory_limit.0 / 8)?);
        // Certificates and token files are checked before anything starts.
        let (security, tls) = security_of(&config, &store)?;
        if embedded.is_some() && store.latest_checkpoint()?.is_some() {
            tracing::warn!(data_dir = %data_dir.display(), "embedded broker starts empty: discarding the previous run's checkpoints");
            store.reset()?;
        }
        let latest = store.latest_checkpoint()?;
        if let Some(cp) = &latest {
            tracing::info!(checkpoint = cp.id, partitions = cp.offsets.len(), "restoring from checkpoint");
        }
        let last_id = latest.as_ref().map(|c| c.id).unwrap_or(0);
        if embedded.is_none() {
            check_resume(&config, &bootstrap, &store, latest.as_ref()).await?;
        }
        let journal = Arc::new(Journal::new(store.clone()));
        // A marker that only a clean stop removes: found at start, the last run crashed.
        let unclean = store.get("meta", RUNNING_MARKER.as_bytes())?.is_some();
        store.put_meta(RUNNING_MARKER, &vigil_runtime::now_ms().to_be_bytes())?;
        let config_hash = config_hash(&config);
        let from = config.loaded_from.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "defaults".into());
        journal.record(Event::now(
            EventKind::NodeStart,
            "node",
            format!("node {} started: vigil {}, config {config_hash} ({from})", config.node.id, env!("CARGO_PKG_VERSION")),
        ));
        if let Some(cp) = &latest {
            journal.record(
                Event::now(EventKind::Restore, "node", format!("node started from checkpoint {} ({} partitions)", cp.id, cp.offsets.len())).stage("pipeline"),
            );
        }
        let rules = Rules::compile(&config.pipeline.fields).map_err(|(path, message)| Error::Config { path, message })?;
        let schemas = SchemaSetup::open(&config, &store)?;
        let generator_wire = if config.generator_enabled() { schemas.generator_wire(&config)? } else { Wire::Json };
        let analytics = crate::analytics::spec::Analytics::compile(&config.pipeline);
        let mut sink_schemas = BTreeMap::new();
        for (topic, format) in analytics.topics() {
            if format == SinkFormat::Avro && !sink_schemas.contains_key(topic) {
                let schema_text = crate::analytics::output::OUTPUT_AVRO_SCHEMA;
                let id = schemas.register(&format!("{topic}-value"), SchemaType::Avro, schema_text)?;
                let schema = apache_avro::Schema::parse_str(schema_text).map_err(|e| Error::Encode(e.to_string()))?;
                sink_schemas.insert(topic.to_string(), (id, schema));
            }
        }
        let producer = TrackedProducer::new(&bootstrap, &config.kafka)?;
        let (checkpoint_done, _) = watch::channel(last_id);
        let lineage = crate::lineage::LineageCtx::open(&config, &store, &bootstrap, &config_hash)?;
        let ctx = Arc::new(NodeCtx {
            config: config.clone(),
            bootstrap,
            store,
            producer,
            stats: Arc::new(NodeStats::default()),
            slots: Slots::new(config.pipeline.shard_count()),
            epoch: AtomicU64::new(0),
            next_checkpoint: AtomicU64::new(last_id + 1),
            checkpoint_done,
            shutting_down: AtomicBool::new(false),
            memory_throttled: AtomicBool::new(false),
            window_changes: (0..config.pipeline.shard_count()).map(|_| std::sync::atomic::AtomicUsize::new(0)).collect(),
            event_time: Default::default(),
            generator_position: AtomicU64::new(0),
            generator_start_ms: vigil_runtime::now_ms(),
            registry: schemas.local.clone(),
            resolver: schemas.resolver.clone(),
            resolver_blocks: schemas.local.is_none(),
            rules,
            generator_wire,
            verifiers: verifiers(&config)?,
            sink_schemas,
            analytics,
            quality_queue: std::sync::atomic::AtomicUsize::new(0),
            quality_dropped: AtomicU64::new(0),
            dq: watch::channel(crate::quality::report::DqReport::default()).0,
            alerts_config: std::sync::RwLock::new(Arc::new(config.alerts.clone())),
            bad_ratio: AtomicU64::new(f64::NAN.to_bits()),
            unclean_start_ms: unclean.then(vigil_runtime::now_ms),
            recent: Default::default(),
            security: security.clone(),
            journal,
            config_hash,
            lineage,
        });
        init_series(&config);
        let (events, _) = broadcast::channel(256);
        // Ends when the tree's event channel closes, or when the node stops.
        let tree_events = tokio::spawn(journal_tree_events(ctx.clone(), events.subscribe()));
        let root = vigil_supervision::start_root(tree_spec(&ctx, &events)).await?;
        let limits = &config.security.limits;
        let opts = ListenerOpts {
            tls: tls.clone(),
            max_headers: limits.max_headers.0 as usize,
            header_timeout: limits.request_timeout,
            max_connections: limits.max_connections,
        };
        let metrics_opts = ListenerOpts { tls: if config.security.tls.metrics { tls.clone() } else { None }, ..opts.clone() };
        let sec = security.clone();
        let metrics = vigil_runtime::security::serve(
            "metrics listener",
            &config.observability.metrics_addr,
            vigil_runtime::metrics::routes(prom),
            |t| Guard::metrics(sec, t),
            metrics_opts,
        )?;
        let api = Arc::new(NodeAdmin { ctx: ctx.clone(), root: root.actor.clone() });
        let mut routes = vigil_runtime::admin::routes(api)
            .merge(crate::alerting::rest::router(ctx.clone()))
            .merge(crate::incidents::rest::router(ctx.clone()))
            .merge(crate::lineage::rest::router(ctx.clone()));
        if let Some(reg) = schemas.local.clone() {
            routes = routes.merge(crate::registry::rest::router(reg));
        }
        let routes = vigil_runtime::security::rest::with_security_routes(routes, security.clone());
        let sec = security.clone();
        let admin = vigil_runtime::security::serve("admin listener", &config.observability.admin_addr, routes, |t| Guard::admin(sec, t), opts)?;
        let (metrics_addr, admin_addr) = (metrics.addr, admin.addr);
        let housekeeping = schemas.local.clone().map(|reg| tokio::spawn(registry_housekeeping(reg)));
        tokio::spawn(journal_housekeeping(Arc::downgrade(&ctx)));
        Ok(Node { ctx, root, metrics_addr, admin_addr, events, embedded, housekeeping, security, tls, listeners: [metrics, admin], tree_events })
    }

    /// What SIGHUP reloads.
    pub fn reloader(&self) -> Reloader {
        Reloader { ctx: Arc::downgrade(&self.ctx), tls: self.tls.clone() }
    }

    /// `https` when the admin listener serves TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// `https` when `/metrics` is served over TLS, else `http`.
    pub fn metrics_scheme(&self) -> &'static str {
        if self.tls.is_some() && self.ctx.config.security.tls.metrics {
            "https"
        } else {
            "http"
        }
    }

    /// Bootstrap servers of the Kafka cluster in use.
    pub fn bootstrap(&self) -> &str {
        &self.ctx.bootstrap
    }

    /// Whether the node runs the embedded mock cluster.
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// Snapshot of the supervision tree.
    ///
    /// # Errors
    /// If the root does not answer.
    pub async fn tree(&self) -> Result<TreeNode> {
        Ok(self.root.inspect(Duration::from_secs(5)).await?)
    }

    /// Run until `shutdown` resolves (then stop in reverse order with a final checkpoint)
    /// or until the tree fails on its own. `Err` carries why the node failed.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) -> std::result::Result<(), String> {
        let Node { ctx, mut root, embedded, housekeeping, listeners, tree_events, .. } = self;
        let failed = tokio::select! {
            _ = shutdown => None,
            r = root.wait() => Some(r),
        };
        let res = match failed {
            Some(r) => r.and(Err("supervision tree stopped unexpectedly".to_string())),
            None => {
                tracing::info!("shutting down: stopping stages in reverse order");
                ctx.shutting_down.store(true, Ordering::SeqCst);
                let s = &ctx.config.supervision;
                let total = ctx.config.checkpoint.flush_timeout + s.shutdown_timeout * 8;
                root.shutdown(total).await
            }
        };
        if let Err(e) = ctx.producer.flush(Duration::from_secs(10)).await {
            tracing::warn!(error = %e, "outputs still unacknowledged at exit");
        }
        if res.is_ok() {
            ctx.lineage.stopped(&ctx.store, ctx.config.lineage.openlineage.timeout).await;
        }
        if let Some(h) = housekeeping {
            h.abort();
        }
        let how = match &res {
            Ok(()) => "node stopped cleanly".to_string(),
            Err(e) => format!("node stopped: {e}"),
        };
        ctx.journal.record(Event::now(EventKind::NodeStop, "node", how));
        if let Err(e) = ctx.store.write_ops("meta", &[(RUNNING_MARKER.as_bytes().to_vec(), None)]) {
            tracing::warn!(error = %e, "clean stop not recorded: the next start will report a crash");
        }
        if let Some(reg) = &ctx.registry {
            if let Err(e) = reg.flush_usage() {
                tracing::warn!(error = %e, "schema usage not persisted at exit");
            }
        }
        tree_events.abort();
        let _ = tree_events.await;
        drop(listeners);
        release(ctx, RELEASE_WAIT).await;
        drop(embedded);
        res
    }
}

/// Let go of the node's context once nothing else holds it (bounded by `within`), so that
/// its Kafka clients and store are closed when the node has stopped: a process that goes on
/// (the bench, drills, tests) may then drop the cluster, or open the store again.
async fn release<T>(ctx: Arc<T>, within: Duration) {
    let deadline = Instant::now() + within;
    while Arc::strong_count(&ctx) > 1 {
        if Instant::now() >= deadline {
            tracing::warn!(
                holders = Arc::strong_count(&ctx) - 1,
                "the node stopped, but its context is still held: its clients and store close when that lets go"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(ctx);
}

struct NodeAdmin {
    ctx: Arc<NodeCtx>,
    root: ActorRef<SupervisorMsg>,
}

impl AdminApi for NodeAdmin {
    fn tree(&self) -> BoxFuture<'_, std::result::Result<TreeNode, String>> {
        Box::pin(async move { vigil_supervision::inspect(&self.root, Duration::from_secs(5)).await.map_err(|e| e.to_string()) })
    }

    fn status(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.ctx.stats.snapshot()).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("node_id".into(), self.ctx.config.node.id.clone().into());
            o.insert("bootstrap".into(), self.ctx.bootstrap.clone().into());
            let limit = self.ctx.config.node.memory_limit.0;
            let throttled = self.ctx.memory_throttled.load(Ordering::SeqCst);
            let memory = serde_json::json!({"resident_bytes": vigil_runtime::metrics::resident_bytes(), "limit_bytes": limit, "throttled": throttled});
            o.insert("memory".into(), memory);
        }
        v
    }

    fn ready(&self) -> bool {
        self.ctx.stats.is_ready()
    }

    fn inject_panic(&self, stage: &str) -> std::result::Result<(), String> {
        let why = "injected via admin API".to_string();
        let s = &self.ctx.slots;
        // `validate` / `process` name shard 0; `validate-1` another shard.
        let shard_of = |stage: &str, prefix: &str, n: usize| -> Option<usize> {
            match stage.strip_prefix(prefix)? {
                "" => Some(0),
                rest => rest.strip_prefix('-')?.parse().ok().filter(|i| *i < n),
            }
        };
        let (validate, process) = (shard_of(stage, "validate", s.validate.len()), shard_of(stage, "process", s.process.len()));
        let res = match stage {
            _ if validate.is_some() => s.validate.get(validate.unwrap_or(0)).send("validate", ValidateMsg::Panic(why)),
            _ if process.is_some() => s.process.get(process.unwrap_or(0)).send("process", ProcessMsg::Panic(why)),
            "ingest" => s.ingest.send("ingest", IngestMsg::Panic(why)),
            "sink" => s.sink.send("sink", SinkMsg::Panic(why)),
            "generator" => s.generator.send("generator", GenMsg::Panic(why)),
            "quality" => s.quality.send("quality", QualityMsg::Panic(why)),
            "alerting" => s.alerting.send("alerting", AlertMsg::Panic(why)),
            "incidents" => s.incidents.send("incidents", IncidentMsg::Panic(why)),
            "lineage" => s.lineage.send("lineage", crate::lineage::actor::LineageMsg::Panic(why)),
            other => return Err(format!("unknown actor `{other}` (one of: {})", crate::pipeline::ACTORS.join(", "))),
        };
        res.map_err(|e| e.to_string())?;
        self.ctx.journal.record(Event::now(EventKind::Chaos, "chaos", format!("panic injected into {stage}")).stage(stage));
        Ok(())
    }

    fn chaos_event(&self, text: String) {
        self.ctx.journal.record(Event::now(EventKind::Chaos, "chaos", text));
    }
}

/// Before resuming from `latest`, check it against the cluster: the same cluster id as at
/// the last start, and every checkpointed topic and partition still there. Records the
/// cluster id for the next start. A cluster that cannot be asked is not checked.
async fn check_resume(config: &Config, bootstrap: &str, store: &Store, latest: Option<&vigil_runtime::store::CheckpointMeta>) -> Result<()> {
    let mut topics: Vec<String> = config.pipeline.sources.iter().map(|s| s.topic.clone()).collect();
    if let Some(cp) = latest {
        topics.extend(cp.offsets.keys().map(|tp| tp.topic.clone()));
    }
    topics.sort();
    topics.dedup();
    let (b, k, t) = (bootstrap.to_string(), config.kafka.clone(), topics.clone());
    let facts = match tokio::task::spawn_blocking(move || vigil_runtime::kafka::cluster_facts(&b, &k, &t, Duration::from_secs(10))).await {
        Ok(Ok(f)) => f,
        // Kafka unreachable is not a wrong cluster: Ingest reports it (and retries) as usual.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot check the checkpoint against the cluster now");
            return Ok(());
        }
        Err(e) => return Err(Error::Resume(format!("metadata lookup failed: {e}"))),
    };
    let stored = store.meta("cluster")?.map(|v| String::from_utf8_lossy(&v).to_string());
    if let Some(cp) = latest {
        let mut problems = Vec::new();
        if let (Some(was), Some(now)) = (&stored, &facts.cluster_id) {
            if was != now {
                problems.push(format!("it was taken against Kafka cluster {was}, but {bootstrap} is cluster {now}"));
            }
        }
        for tp in cp.offsets.keys() {
            match facts.partitions.get(&tp.topic) {
                None => problems.push(format!("topic `{}` of the checkpoint does not exist on {bootstrap}", tp.topic)),
                Some(n) if tp.partition as usize >= *n => {
                    problems.push(format!("partition {tp} of the checkpoint does not exist (the topic has {n} partitions now)"))
                }
                Some(_) => {}
            }
        }
        problems.dedup();
        if !problems.is_empty() {
            let dir = config.node.data_dir.display();
            if !config.checkpoint.allow_cluster_change {
                return Err(Error::Resume(format!(
                    "checkpoint {} in {dir}: {}. Its offsets mean nothing there: point kafka.bootstrap at the original cluster, start with an empty node.data_dir, or set checkpoint.allow_cluster_change = true to resume anyway",
                    cp.id,
                    problems.join("; ")
                )));
            }
            tracing::warn!(checkpoint = cp.id, problems = %problems.join("; "), "resuming from a checkpoint of another cluster (checkpoint.allow_cluster_change)");
        }
    }
    if let Some(id) = &facts.cluster_id {
        store.put_meta("cluster", id.as_bytes())?;
    }
    Ok(())
}

/// Forget journal events older than `incidents.journal_retention`, hourly (and at start).
async fn journal_housekeeping(ctx: std::sync::Weak<NodeCtx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        // Ends with the node.
        let Some(ctx) = ctx.upgrade() else { return };
        let journal = ctx.journal.clone();
        let before = vigil_runtime::now_ms() - ctx.config.incidents.journal_retention.as_millis() as i64;
        drop(ctx);
        let _ = tokio::task::spawn_blocking(move || journal.prune(before)).await;
    }
}

/// Stable hash (FNV-1a, 16 hex digits) of the configuration in force, for output headers
/// and the journal: two nodes with the same hash run the same pipeline.
fn config_hash(config: &Config) -> String {
    format!("{:016x}", crate::alerting::engine::fnv1a(serde_json::to_string(config).unwrap_or_default().bytes()))
}

/// Meta key present while a node runs on the data directory; a clean stop removes it.
const RUNNING_MARKER: &str = "node.running";

/// Journal what the supervision tree reports: failures, restarts, escalations; remember
/// when restarts happened for the `restarts_per_min` series.
async fn journal_tree_events(ctx: Arc<NodeCtx>, mut rx: broadcast::Receiver<TreeEvent>) {
    let journal = ctx.journal.clone();
    loop {
        let e = match rx.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "journal fell behind the supervision events");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let event = match e {
            TreeEvent::ChildExited { child, failed: true, reason, .. } => {
                Event::now(EventKind::Restart, "supervision", format!("{child} failed: {reason}")).stage(&child)
            }
            TreeEvent::ChildExited { .. } => continue,
            TreeEvent::ChildRestarted { child, restarts, .. } => {
                ctx.note(crate::pipeline::Recent::Restart, vigil_runtime::now_ms());
                Event::now(EventKind::Restart, "supervision", format!("{child} restarted (restart {restarts})")).stage(&child)
            }
            TreeEvent::Escalated { supervisor, reason } => {
                Event::now(EventKind::SupervisorEscalation, "supervision", format!("{supervisor} gave up and escalated: {reason}")).stage(&supervisor)
            }
        };
        journal.record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands for the node's context: records when it is dropped.
    struct Held(Arc<AtomicBool>);

    impl Drop for Held {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopping_node_lets_go_of_its_context_only_after_its_last_holder() {
        let dropped = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Held(dropped.clone()));
        // A task winding down after the node stopped (a listener thread, a checkpoint's
        // flush): it lets go a little later.
        let (go, gone) = tokio::sync::oneshot::channel::<()>();
        let holder = ctx.clone();
        tokio::spawn(async move {
            let _ = gone.await;
            drop(holder);
        });
        let releasing = tokio::spawn(release(ctx, Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!releasing.is_finished(), "release returned while another task held the context");
        let _ = go.send(());
        releasing.await.unwrap();
        assert!(dropped.load(Ordering::SeqCst), "the context is dropped by the time release returns");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_context_held_for_good_is_given_up_on_after_the_bound() {
        let dropped = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Held(dropped.clone()));
        let kept = ctx.clone();
        release(ctx, Duration::from_millis(100)).await;
        assert!(!dropped.load(Ordering::SeqCst));
        drop(kept);
        assert!(dropped.load(Ordering::SeqCst));
    }
}
