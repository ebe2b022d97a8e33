//! vigil-supervision: OTP-style supervision trees on top of ractor.
//!
//! ractor catches panics at the actor boundary and tells a linked supervisor, but leaves
//! restart policy to the user. This crate fills that gap with Erlang/OTP semantics:
//!
//! - **Strategies**: [`Strategy::OneForOne`] restarts only the failed child;
//!   [`Strategy::OneForAll`] stops the others (reverse order) and restarts all;
//!   [`Strategy::RestForOne`] stops and restarts the failed child and every child started
//!   after it.
//! - **Restart types**: [`Restart::Permanent`] always restarts, [`Restart::Transient`] only
//!   after a failure, [`Restart::Temporary`] never.
//! - **Restart intensity**: more than `max_restarts` within `window` and the supervisor
//!   stops its children (in reverse order) and fails, escalating to its parent.
//! - **Backoff**: restarts wait `initial * 2^n` capped at `max`, with ±25 % jitter, so a
//!   crash loop does not spin.
//! - **Ordered lifecycle**: children start in spec order (each waits for the previous one's
//!   `pre_start`), and stop in reverse order, each with its own timeout before it is killed.
//! - **Inspectable**: [`SupervisorMsg::Inspect`] returns a [`TreeNode`] of the whole subtree
//!   with status and restart counts; every restart increments
//!   `vigil_actor_restarts_total{actor=...}` and is published as a [`TreeEvent`].
//!
//! Why not the `ractor-supervisor` crate: it was evaluated (0.2.0). It identifies children
//! by globally registered actor names (two pipelines cannot both have an `ingest`), stops
//! children through ractor's unordered kill instead of a reverse-order shutdown with
//! per-child timeouts, and has no hook for metrics, events or tree inspection. Those are
//! the parts Vigil needs, so this crate implements the ~600 lines itself.
#![warn(missing_docs, unreachable_pub)]

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Errors of the supervision layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// More restarts happened within the window than allowed; the supervisor gave up.
    #[error("supervisor `{supervisor}`: restart intensity exceeded ({restarts} restarts within {window:?}, last failure in `{child}`: {reason})")]
    IntensityExceeded {
        /// Supervisor that gave up.
        supervisor: String,
        /// Child whose failure tipped it over.
        child: String,
        /// Restarts counted within the window.
        restarts: usize,
        /// The intensity window.
        window: Duration,
        /// Last failure reason.
        reason: String,
    },
    /// A child could not be started during the supervisor's own start.
    #[error("supervisor `{supervisor}`: child `{child}` failed to start: {reason}")]
    ChildStartFailed {
        /// Supervisor starting it.
        supervisor: String,
        /// Child that failed.
        child: String,
        /// Why.
        reason: String,
    },
    /// A tree could not start; the reason names the supervisor and child.
    #[error("{reason}")]
    StartFailed {
        /// Why, from the supervisor that failed.
        reason: String,
    },
    /// The supervisor could not be spawned or did not answer.
    #[error("supervisor `{supervisor}`: {reason}")]
    Unavailable {
        /// Supervisor concerned.
        supervisor: String,
        /// What happened.
        reason: String,
    },
}

/// Result of supervision operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Which siblings are restarted when one child fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Restart only the failed child.
    OneForOne,
    /// Restart every child.
    OneForAll,
    /// Restart the failed child and all children started after it.
    RestForOne,
}

/// When a child that exits is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted, whether it failed or stopped normally.
    Permanent,
    /// Restarted only if it failed (panic or error).
    Transient,
    /// Never restarted.
    Temporary,
}

/// Restart intensity: at most `max_restarts` within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// Sliding window.
    pub window: Duration,
}

/// Exponential restart backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Relative jitter, 0.0..=1.0 (0.25 = ±25 %).
    pub jitter: f64,
}

impl Backoff {
    /// Delay before restart number `attempt` (0-based) within the current window.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max);
        let j = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + j * (rand::random::<f64>() * 2.0 - 1.0);
        base.mul_f64(factor.max(0.0)).min(self.max)
    }
}

/// Future that spawns one child linked to the given supervisor cell.
pub type SpawnFuture = Pin<Box<dyn Future<Output = std::result::Result<ActorCell, SpawnErr>> + Send>>;

/// Function that (re)starts a child, linked to the supervisor passed in.
pub type StartFn = Arc<dyn Fn(ActorCell) -> SpawnFuture + Send + Sync>;

/// Whether a child is a worker or a nested supervisor (which can be inspected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildKind {
    /// A plain actor.
    Worker,
    /// A [`Supervisor`] started with [`SupervisorSpec::child`].
    Supervisor,
}

/// How to start, restart and stop one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Name, unique among siblings; used in metrics, events and `vigil tree`.
    pub name: String,
    /// Restart type.
    pub restart: Restart,
    /// Graceful stop timeout before the child is killed.
    pub shutdown_timeout: Duration,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Starts the child linked to the supervisor cell it is given.
    pub start: StartFn,
}

impl ChildSpec {
    /// A worker child running actor `A` with arguments produced by `args` at each (re)start.
    pub fn worker<A, F>(name: impl Into<String>, restart: Restart, shutdown_timeout: Duration, actor: A, args: F) -> Self
    where
        A: Actor + Clone + Sync,
        F: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        let start: StartFn = Arc::new(move |sup: ActorCell| {
            let actor = actor.clone();
            let a = args();
            Box::pin(async move { Actor::spawn_linked(None, actor, a, sup).await.map(|(r, _)| r.get_cell()) })
        });
        Self { name: name.into(), restart, shutdown_timeout, kind: ChildKind::Worker, start }
    }
}

/// What happened in a tree, for observers (logs, quality, incidents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TreeEvent {
    /// A child failed or stopped.
    ChildExited {
        /// Supervisor.
        supervisor: String,
        /// Child.
        child: String,
        /// Whether it failed (panic/error) rather than stopping normally.
        failed: bool,
        /// Reason text.
        reason: String,
    },
    /// A child was restarted.
    ChildRestarted {
        /// Supervisor.
        supervisor: String,
        /// Child.
        child: String,
        /// Restarts of this child so far.
        restarts: u64,
    },
    /// A supervisor gave up and escalated to its parent.
    Escalated {
        /// Supervisor.
        supervisor: String,
        /// Why.
        reason: String,
    },
}

/// Everything a supervisor needs to run.
#[derive(Clone)]
pub struct SupervisorSpec {
    /// Supervisor name.
    pub name: String,
    /// Restart strategy.
    pub strategy: Strategy,
    /// Restart intensity.
    pub intensity: Intensity,
    /// Restart backoff.
    pub backoff: Backoff,
    /// Children in start order.
    pub children: Vec<ChildSpec>,
    /// Where tree events are published (optional).
    pub events: Option<broadcast::Sender<TreeEvent>>,
}

impl SupervisorSpec {
    /// This supervisor as a child of another supervisor.
    pub fn child(self, restart: Restart, shutdown_timeout: Duration) -> ChildSpec {
        let name = self.name.clone();
        let start: StartFn = Arc::new(move |sup: ActorCell| {
            let spec = self.clone();
            Box::pin(async move {
                let outcome = Arc::new(Mutex::new(None));
                Actor::spawn_linked(None, Supervisor, (spec, outcome), sup).await.map(|(r, _)| r.get_cell())
            })
        });
        ChildSpec { name, restart, shutdown_timeout, kind: ChildKind::Supervisor, start }
    }
}

/// Live status of a node in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildStatus {
    /// Running.
    Running,
    /// Waiting for its restart backoff.
    Restarting,
    /// Exited and not restarted.
    Stopped,
}

/// A snapshot of one node of the supervision tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    /// Name.
    pub name: String,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Strategy, for supervisors.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub strategy: Option<Strategy>,
    /// Restart type (None for the root).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub restart: Option<Restart>,
    /// Status.
    pub status: ChildStatus,
    /// Times this node was restarted by its supervisor.
    pub restarts: u64,
    /// Last exit reason, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_exit: Option<String>,
    /// Children, in start order.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// Render as an indented text tree (what `vigil tree` prints).
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(&mut out, "", true, true);
        out
    }

    fn render_into(&self, out: &mut String, prefix: &str, last: bool, root: bool) {
        let (branch, next) = if root {
            ("", "")
        } else if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        let kind = match (self.kind, self.strategy) {
            (ChildKind::Supervisor, Some(s)) => format!("supervisor {}", serde_plain(&s)),
            (ChildKind::Supervisor, None) => "supervisor".to_string(),
            (ChildKind::Worker, _) => "worker".to_string(),
        };
        let restart = self.restart.map(|r| format!(", {}", serde_plain(&r))).unwrap_or_default();
        out.push_str(&format!("{prefix}{branch}{} [{kind}{restart}] {} restarts={}\n", self.name, serde_plain(&self.status), self.restarts));
        let child_prefix = format!("{prefix}{next}");
        for (i, c) in self.children.iter().enumerate() {
            c.render_into(out, &child_prefix, i + 1 == self.children.len(), false);
        }
    }
}

fn serde_plain<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Messages a supervisor understands.
pub enum SupervisorMsg {
    /// Reply with a snapshot of this subtree.
    Inspect(RpcReplyPort<TreeNode>),
    /// Internal: restart the given children after their backoff (generation guards staleness).
    Restart {
        /// Child indices, in start order.
        indices: Vec<usize>,
        /// Restart generation that scheduled this.
        generation: u64,
    },
}

/// The supervisor actor. Start a root with [`start_root`], nested ones with
/// [`SupervisorSpec::child`].
#[derive(Clone, Copy)]
pub struct Supervisor;

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    status: ChildStatus,
    restarts: u64,
    last_exit: Option<String>,
}

/// Supervisor state (internal).
pub struct SupervisorState {
    spec: SupervisorSpec,
    children: Vec<Child>,
    restart_log: VecDeque<Instant>,
    generation: u64,
    outcome: Arc<Mutex<Option<String>>>,
}

impl SupervisorState {
    fn index_of(&self, id: ActorId) -> Option<usize> {
        self.children.iter().position(|c| c.cell.as_ref().map(|x| x.get_id()) == Some(id))
    }

    fn publish(&self, ev: TreeEvent) {
        if let Some(tx) = &self.spec.events {
            // No receivers is fine: events are best-effort observations.
            let _ = tx.send(ev);
        }
    }

    /// Stop the given children in reverse order, each with its timeout, then kill.
    async fn stop_children(&mut self, indices: &[usize]) {
        for &i in indices.iter().rev() {
            let Some(cell) = self.children[i].cell.take() else { continue };
            let timeout = self.children[i].spec.shutdown_timeout;
            let name = &self.children[i].spec.name;
            if cell.stop_and_wait(Some("supervisor shutdown".into()), Some(timeout)).await.is_err() {
                tracing::warn!(supervisor = %self.spec.name, child = %name, ?timeout, "child did not stop in time; killing it");
                let _ = cell.kill_and_wait(Some(timeout)).await;
            }
            self.children[i].status = ChildStatus::Stopped;
        }
    }

    async fn start_child(&mut self, i: usize, myself: &ActorCell) -> std::result::Result<(), String> {
        let start = self.children[i].spec.start.clone();
        match start(myself.clone()).await {
            Ok(cell) => {
                self.children[i].cell = Some(cell);
                self.children[i].status = ChildStatus::Running;
                Ok(())
            }
            Err(e) => Err(spawn_reason(e)),
        }
    }

    fn escalate(&mut self, child: &str, reason: &str) -> Error {
        let err = Error::IntensityExceeded {
            supervisor: self.spec.name.clone(),
            child: child.to_string(),
            restarts: self.restart_log.len(),
            window: self.spec.intensity.window,
            reason: reason.to_string(),
        };
        tracing::error!(supervisor = %self.spec.name, %err, "escalating to parent");
        self.publish(TreeEvent::Escalated { supervisor: self.spec.name.clone(), reason: err.to_string() });
        if let Ok(mut o) = self.outcome.lock() {
            *o = Some(err.to_string());
        }
        err
    }

    /// Record a restart in the intensity log; false if intensity is exceeded.
    fn admit_restart(&mut self, now: Instant) -> bool {
        let window = self.spec.intensity.window;
        while let Some(t) = self.restart_log.front() {
            if now.duration_since(*t) > window {
                self.restart_log.pop_front();
            } else {
                break;
            }
        }
        self.restart_log.push_back(now);
        self.restart_log.len() <= self.spec.intensity.max_restarts as usize
    }

    async fn inspect(&self) -> TreeNode {
        let mut children = Vec::with_capacity(self.children.len());
        for c in &self.children {
            let mut node = TreeNode {
                name: c.spec.name.clone(),
                kind: c.spec.kind,
                strategy: None,
                restart: Some(c.spec.restart),
                status: c.status,
                restarts: c.restarts,
                last_exit: c.last_exit.clone(),
                children: Vec::new(),
            };
            if let (ChildKind::Supervisor, Some(cell), ChildStatus::Running) = (c.spec.kind, &c.cell, c.status) {
                let r: ActorRef<SupervisorMsg> = cell.clone().into();
                if let Ok(ractor::rpc::CallResult::Success(sub)) = r.call(SupervisorMsg::Inspect, Some(Duration::from_secs(2))).await {
                    node.strategy = sub.strategy;
                    node.children = sub.children;
                }
            }
            children.push(node);
        }
        TreeNode {
            name: self.spec.name.clone(),
            kind: ChildKind::Supervisor,
            strategy: Some(self.spec.strategy),
            restart: None,
            status: ChildStatus::Running,
            restarts: 0,
            last_exit: None,
            children,
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = (SupervisorSpec, Arc<Mutex<Option<String>>>);

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, (spec, outcome): Self::Arguments) -> std::result::Result<Self::State, ActorProcessingErr> {
        let children =
            spec.children.iter().cloned().map(|spec| Child { spec, cell: None, status: ChildStatus::Stopped, restarts: 0, last_exit: None }).collect();
        let mut state = SupervisorState { spec, children, restart_log: VecDeque::new(), generation: 0, outcome };
        // Ordered start: each child's pre_start completes before the next is started.
        let me = myself.get_cell();
        for i in 0..state.children.len() {
            if let Err(reason) = state.start_child(i, &me).await {
                let started: Vec<usize> = (0..i).collect();
                state.stop_children(&started).await;
                let err = Error::ChildStartFailed { supervisor: state.spec.name.clone(), child: state.children[i].spec.name.clone(), reason };
                if let Ok(mut o) = state.outcome.lock() {
                    *o = Some(err.to_string());
                }
                return Err(Box::new(err));
            }
        }
        tracing::debug!(supervisor = %state.spec.name, children = state.children.len(), "supervisor started");
        Ok(state)
    }

    async fn handle(&self, myself: ActorRef<Self::Msg>, msg: Self::Msg, state: &mut Self::State) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Inspect(reply) => {
                let _ = reply.send(state.inspect().await);
            }
            SupervisorMsg::Restart { indices, generation } => {
                if generation != state.generation {
                    return Ok(());
                }
                let me = myself.get_cell();
                for i in indices {
                    if state.children[i].status != ChildStatus::Restarting {
                        continue;
                    }
                    let name = state.children[i].spec.name.clone();
                    match state.start_child(i, &me).await {
                        Ok(()) => {
                            state.children[i].restarts += 1;
                            metrics::counter!("vigil_actor_restarts_total", "actor" => name.clone()).increment(1);
                            tracing::info!(supervisor = %state.spec.name, child = %name, restarts = state.children[i].restarts, "child restarted");
                            state.publish(TreeEvent::ChildRestarted { supervisor: state.spec.name.clone(), child: name, restarts: state.children[i].restarts });
                        }
                        Err(reason) => {
                            // A failed restart counts against intensity like any failure.
                            state.children[i].last_exit = Some(format!("restart failed: {reason}"));
                            self.on_child_exit(&myself, state, i, true, format!("restart failed: {reason}")).await?;
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let (cell, failed, reason) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, true, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (cell, false, reason.unwrap_or_else(|| "normal".into())),
            _ => return Ok(()),
        };
        // Children this supervisor stopped itself were detached first, so they are not found.
        let Some(i) = state.index_of(cell.get_id()) else { return Ok(()) };
        state.children[i].cell = None;
        self.on_child_exit(&myself, state, i, failed, reason).await
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> std::result::Result<(), ActorProcessingErr> {
        let all: Vec<usize> = (0..state.children.len()).collect();
        state.stop_children(&all).await;
        tracing::debug!(supervisor = %state.spec.name, "supervisor stopped");
        Ok(())
    }
}

impl Supervisor {
    async fn on_child_exit(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        i: usize,
        failed: bool,
        reason: String,
    ) -> std::result::Result<(), ActorProcessingErr> {
        let name = state.children[i].spec.name.clone();
        state.children[i].last_exit = Some(reason.clone());
        state.children[i].status = ChildStatus::Stopped;
        if failed {
            tracing::error!(supervisor = %state.spec.name, child = %name, %reason, "child failed");
        } else {
            tracing::info!(supervisor = %state.spec.name, child = %name, %reason, "child stopped");
        }
        state.publish(TreeEvent::ChildExited { supervisor: state.spec.name.clone(), child: name.clone(), failed, reason: reason.clone() });
        let restart = match state.children[i].spec.restart {
            Restart::Permanent => true,
            Restart::Transient => failed,
            Restart::Temporary => false,
        };
        if !restart {
            return Ok(());
        }
        if !state.admit_restart(Instant::now()) {
            let err = state.escalate(&name, &reason);
            let all: Vec<usize> = (0..state.children.len()).collect();
            state.stop_children(&all).await;
            return Err(Box::new(err));
        }
        let n = state.children.len();
        let group: Vec<usize> = match state.spec.strategy {
            Strategy::OneForOne => vec![i],
            Strategy::OneForAll => (0..n).collect(),
            Strategy::RestForOne => (i..n).collect(),
        };
        // Siblings in the group that are still running are stopped (reverse order) first.
        let running: Vec<usize> = group.iter().copied().filter(|&j| j != i && state.children[j].cell.is_some()).collect();
        state.stop_children(&running).await;
        // Temporary siblings are not brought back by a group restart either.
        let to_start: Vec<usize> = group.into_iter().filter(|&j| j == i || state.children[j].spec.restart != Restart::Temporary).collect();
        for &j in &to_start {
            state.children[j].status = ChildStatus::Restarting;
        }
        state.generation += 1;
        let attempt = (state.restart_log.len() as u32).saturating_sub(1);
        let delay = state.spec.backoff.delay(attempt);
        tracing::info!(supervisor = %state.spec.name, child = %name, ?delay, restarting = to_start.len(), "scheduling restart");
        let generation = state.generation;
        myself.send_after(delay, move || SupervisorMsg::Restart { indices: to_start, generation });
        Ok(())
    }
}

/// The reason of a failed spawn, without ractor's "Actor panicked during startup" wrapper
/// (it says that for ordinary `pre_start` errors too).
fn spawn_reason(e: SpawnErr) -> String {
    match e {
        SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// A running root supervisor.
pub struct RootHandle {
    /// The root supervisor actor.
    pub actor: ActorRef<SupervisorMsg>,
    join: tokio::task::JoinHandle<()>,
    outcome: Arc<Mutex<Option<String>>>,
}

/// Start a root supervisor and its whole tree.
///
/// # Errors
/// [`Error::Unavailable`] (or the start failure of a child) if the tree cannot start.
pub async fn start_root(spec: SupervisorSpec) -> Result<RootHandle> {
    let name = spec.name.clone();
    let outcome = Arc::new(Mutex::new(None));
    match Actor::spawn(None, Supervisor, (spec, outcome.clone())).await {
        Ok((actor, join)) => Ok(RootHandle { actor, join, outcome }),
        Err(e) => match outcome.lock().ok().and_then(|o| o.clone()) {
            // The supervisor recorded why (e.g. ChildStartFailed, which names it already).
            Some(reason) => Err(Error::StartFailed { reason }),
            None => Err(Error::Unavailable { supervisor: name, reason: spawn_reason(e) }),
        },
    }
}

impl RootHandle {
    /// Snapshot of the whole tree.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if the root does not answer within `timeout`.
    pub async fn inspect(&self, timeout: Duration) -> Result<TreeNode> {
        inspect(&self.actor, timeout).await
    }

    /// Stop the tree in reverse start order and wait for it.
    pub async fn shutdown(self, timeout: Duration) -> std::result::Result<(), String> {
        let _ = self.actor.stop_and_wait(Some("shutdown".into()), Some(timeout)).await;
        let _ = self.join.await;
        match self.outcome.lock().ok().and_then(|o| o.clone()) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// Wait until the root exits on its own; `Err` carries why it failed.
    pub async fn wait(&mut self) -> std::result::Result<(), String> {
        let _ = (&mut self.join).await;
        match self.outcome.lock().ok().and_then(|o| o.clone()) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// Whether the root has exited.
    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }
}

/// Snapshot of the subtree under any supervisor.
///
/// # Errors
/// [`Error::Unavailable`] if it does not answer within `timeout`.
pub async fn inspect(actor: &ActorRef<SupervisorMsg>, timeout: Duration) -> Result<TreeNode> {
    match actor.call(SupervisorMsg::Inspect, Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(t)) => Ok(t),
        Ok(_) => Err(Error::Unavailable { supervisor: actor.get_id().to_string(), reason: "inspect timed out".into() }),
        Err(e) => Err(Error::Unavailable { supervisor: actor.get_id().to_string(), reason: e.to_string() }),
    }
}

#[cfg(test)]
mod tests;
