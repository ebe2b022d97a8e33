//! A running node: opens the store, starts the embedded broker if configured, builds the
//! supervision tree (root → pipeline → stages), and serves metrics and the admin API.
//!
//! Tree (children start top to bottom and stop bottom to top):
//! ```text
//! root        one_for_one
//! ├─ pipeline one_for_all   a stage failure rewinds every stage to the last checkpoint
//! │  ├─ sink
//! │  ├─ process
//! │  ├─ validate
//! │  └─ ingest              stopped first on shutdown: takes the final checkpoint
//! └─ generator              embedded default only
//! ```
use crate::pipeline::{GenMsg, IngestMsg, NodeCtx, ProcessMsg, SinkMsg, Slots, ValidateMsg};
use crate::stages::{Generator, Ingest, Process, Sink, Validate};
use crate::Result;
use futures::future::BoxFuture;
use ractor::ActorRef;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use vigil_config::Config;
use vigil_runtime::admin::AdminApi;
use vigil_runtime::embedded::EmbeddedBroker;
use vigil_runtime::kafka::TrackedProducer;
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
    let pipeline = SupervisorSpec {
        name: "pipeline".into(),
        strategy: Strategy::OneForAll,
        intensity,
        backoff,
        children: vec![
            ChildSpec::worker("sink", Restart::Permanent, t, Sink, args(ctx)),
            ChildSpec::worker("process", Restart::Permanent, t, Process, args(ctx)),
            ChildSpec::worker("validate", Restart::Permanent, t, Validate, args(ctx)),
            ChildSpec::worker("ingest", Restart::Permanent, ingest_t, Ingest, args(ctx)),
        ],
        events: Some(events.clone()),
    };
    let mut children = vec![pipeline.child(Restart::Permanent, ingest_t + t * 4)];
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
    pub async fn start(config: Config) -> Result<Node> {
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
        let store = Arc::new(Store::open(&data_dir)?);
        if embedded.is_some() && store.latest_checkpoint()?.is_some() {
            tracing::warn!(data_dir = %data_dir.display(), "embedded broker starts empty: discarding the previous run's checkpoints");
            store.reset()?;
        }
        let latest = store.latest_checkpoint()?;
        if let Some(cp) = &latest {
            tracing::info!(checkpoint = cp.id, partitions = cp.offsets.len(), "restoring from checkpoint");
        }
        let last_id = latest.as_ref().map(|c| c.id).unwrap_or(0);
        let producer = TrackedProducer::new(&bootstrap, &config.kafka)?;
        let (checkpoint_done, _) = watch::channel(last_id);
        let ctx = Arc::new(NodeCtx {
            config: config.clone(),
            bootstrap,
            store,
            producer,
            stats: Arc::new(NodeStats::default()),
            slots: Slots::default(),
            epoch: AtomicU64::new(0),
            next_checkpoint: AtomicU64::new(last_id + 1),
            checkpoint_done,
            shutting_down: AtomicBool::new(false),
            generator_position: AtomicU64::new(0),
            generator_start_ms: vigil_runtime::now_ms(),
        });
        let (events, _) = broadcast::channel(256);
        let root = vigil_supervision::start_root(tree_spec(&ctx, &events)).await?;
        let metrics_addr = vigil_runtime::metrics::serve(&config.observability.metrics_addr, prom).await?;
        let api = Arc::new(NodeAdmin { ctx: ctx.clone(), root: root.actor.clone() });
        let admin_addr = vigil_runtime::admin::serve(&config.observability.admin_addr, api).await?;
        Ok(Node { ctx, root, metrics_addr, admin_addr, events, embedded })
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
        let Node { ctx, mut root, embedded, .. } = self;
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
        drop(embedded);
        res
    }
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
        }
        v
    }

    fn ready(&self) -> bool {
        self.ctx.stats.is_ready()
    }

    fn inject_panic(&self, stage: &str) -> std::result::Result<(), String> {
        let why = "injected via admin API".to_string();
        let s = &self.ctx.slots;
        let res = match stage {
            "ingest" => s.ingest.send("ingest", IngestMsg::Panic(why)),
            "validate" => s.validate.send("validate", ValidateMsg::Panic(why)),
            "process" => s.process.send("process", ProcessMsg::Panic(why)),
            "sink" => s.sink.send("sink", SinkMsg::Panic(why)),
            "generator" => s.generator.send("generator", GenMsg::Panic(why)),
            other => return Err(format!("unknown stage `{other}` (one of: {})", crate::pipeline::STAGES.join(", "))),
        };
        res.map_err(|e| e.to_string())
    }
}
