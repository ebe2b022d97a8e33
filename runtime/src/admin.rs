//! The admin HTTP API (JSON): `/healthz`, `/readyz`, `/status`, `/tree`, and
//! `POST /chaos/panic/{stage}` and `/chaos/failpoints` to inject faults for drills, plus the routes other
//! layers mount on the same listener (the schema registry's Confluent API), all behind
//! the listener's guard ([`crate::security`]).
use crate::security::access::Routes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::BoxFuture;
use std::sync::Arc;
use vigil_supervision::TreeNode;

/// What the admin API needs from a running node.
pub trait AdminApi: Send + Sync + 'static {
    /// The live supervision tree.
    fn tree(&self) -> BoxFuture<'_, std::result::Result<TreeNode, String>>;
    /// Status counters as JSON.
    fn status(&self) -> serde_json::Value;
    /// Whether the node is ready to process.
    fn ready(&self) -> bool;
    /// Make a stage panic (drills). Err names why not.
    fn inject_panic(&self, stage: &str) -> std::result::Result<(), String>;
    /// Record a fault switched on or off through the admin API in the node's journal.
    fn chaos_event(&self, text: String);
}

type Api = Arc<dyn AdminApi>;

/// A JSON error answer, `{"error": msg}`, as every admin route gives.
pub fn json_error(code: StatusCode, msg: impl Into<String>) -> Response {
    let msg: String = msg.into();
    (code, Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn tree(State(api): State<Api>) -> Response {
    match api.tree().await {
        Ok(t) => Json(t).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn status(State(api): State<Api>) -> Response {
    Json(api.status()).into_response()
}

async fn readyz(State(api): State<Api>) -> Response {
    if api.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn panic_stage(State(api): State<Api>, Path(stage): Path<String>) -> Response {
    match api.inject_panic(&stage) {
        Ok(()) => Json(serde_json::json!({ "injected": "panic", "stage": stage })).into_response(),
        Err(e) => json_error(StatusCode::NOT_FOUND, e),
    }
}

#[derive(serde::Deserialize)]
struct FailpointBody {
    actions: String,
}

fn failpoints_json() -> serde_json::Value {
    let on: Vec<_> = crate::failpoints::list().into_iter().map(|(name, actions)| serde_json::json!({ "name": name, "actions": actions })).collect();
    serde_json::json!({ "enabled": crate::failpoints::enabled(), "failpoints": on })
}

async fn list_failpoints() -> Response {
    Json(failpoints_json()).into_response()
}

async fn set_failpoint(State(api): State<Api>, Path(name): Path<String>, Json(body): Json<FailpointBody>) -> Response {
    match crate::failpoints::set(&name, &body.actions) {
        Ok(()) => {
            tracing::warn!(failpoint = %name, actions = %body.actions, "failpoint switched on");
            api.chaos_event(format!("failpoint {name} = {}", body.actions));
            Json(failpoints_json()).into_response()
        }
        Err(e) if !crate::failpoints::enabled() => json_error(StatusCode::NOT_IMPLEMENTED, e),
        Err(e) => json_error(StatusCode::BAD_REQUEST, e),
    }
}

async fn clear_failpoint(State(api): State<Api>, Path(name): Path<String>) -> Response {
    if crate::failpoints::clear(&name) {
        api.chaos_event(format!("failpoint {name} off"));
    }
    Json(failpoints_json()).into_response()
}

async fn clear_failpoints(State(api): State<Api>) -> Response {
    let cleared = crate::failpoints::clear_all();
    if !cleared.is_empty() {
        api.chaos_event(format!("failpoints off: {}", cleared.join(", ")));
    }
    Json(failpoints_json()).into_response()
}

/// The node's own routes (health, status, tree, panics), each with its action.
pub fn routes(api: Api) -> Routes {
    Routes::new()
        .get("/healthz", "health.read", || async { "ok\n" })
        .get("/readyz", "health.read", readyz)
        .get("/status", "node.read", status)
        .get("/tree", "node.read", tree)
        .post("/chaos/panic/{stage}", "chaos.inject", panic_stage)
        .get("/chaos/failpoints", "chaos.read", list_failpoints)
        .delete("/chaos/failpoints", "chaos.inject", clear_failpoints)
        .put("/chaos/failpoints/{name}", "chaos.inject", set_failpoint)
        .delete("/chaos/failpoints/{name}", "chaos.inject", clear_failpoint)
        .with_state(api)
}
