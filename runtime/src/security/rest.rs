//! The security routes of the admin API: who am I, the route table, tokens, the audit log.
use super::access::{Principal, RouteInfo, Routes, Security};
use crate::admin::json_error;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

#[derive(Clone)]
struct Ctx {
    sec: Arc<Security>,
    routes: Arc<std::sync::OnceLock<Vec<RouteInfo>>>,
}

async fn whoami(State(c): State<Ctx>, Extension(p): Extension<Principal>) -> Response {
    // Open (no auth): everyone may do everything declared.
    let actions = if c.sec.auth() { c.sec.actions_of(&p.role) } else { vigil_config::ACTIONS.iter().map(|(a, _)| a.to_string()).collect() };
    Json(json!({ "principal": p.name, "role": p.role, "actions": actions, "auth": c.sec.auth() })).into_response()
}

async fn list_routes(State(c): State<Ctx>) -> Response {
    Json(c.routes.get().cloned().unwrap_or_default()).into_response()
}

async fn list_tokens(State(c): State<Ctx>) -> Response {
    let list: Vec<_> = c.sec.tokens().list().into_iter().map(|t| json!({ "name": t.name, "role": t.role, "created_ms": t.created_ms })).collect();
    Json(list).into_response()
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    role: String,
}

async fn create_token(State(c): State<Ctx>, body: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("expected {{\"name\": ..., \"role\": ...}}: {e}")),
    };
    if !c.sec.knows_role(&b.role) {
        return json_error(StatusCode::BAD_REQUEST, format!("unknown role `{}` (viewer, operator, admin or a [security.roles] entry)", b.role));
    }
    match c.sec.tokens().create(&b.name, &b.role) {
        Ok(token) => (StatusCode::CREATED, Json(json!({ "name": b.name, "role": b.role, "token": token }))).into_response(),
        Err(e) => json_error(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn revoke_token(State(c): State<Ctx>, Path(name): Path<String>) -> Response {
    match c.sec.tokens().revoke(&name) {
        Ok(true) => Json(json!({ "revoked": name })).into_response(),
        Ok(false) => json_error(StatusCode::NOT_FOUND, format!("no token named `{name}` in {}", c.sec.tokens().file().display())),
        Err(e) => json_error(StatusCode::CONFLICT, e.to_string()),
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    since: Option<String>,
    limit: Option<usize>,
}

async fn audit(State(c): State<Ctx>, q: Query<AuditQuery>) -> Response {
    let Some(log) = c.sec.audit() else { return json_error(StatusCode::NOT_FOUND, "this node keeps no audit log") };
    let since = match q.since.as_deref().map(humantime::parse_duration).transpose() {
        Ok(d) => d.map(|d| crate::now_ms() - d.as_millis() as i64).unwrap_or(0),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("since: {e} (e.g. `1h`)")),
    };
    match log.list(since, q.limit.unwrap_or(1000).clamp(1, 100_000)) {
        Ok(list) => Json(list).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `routes` with the security routes added (`/security/routes` lists them all).
pub fn with_security_routes(routes: Routes, sec: Arc<Security>) -> Routes {
    let table = Arc::new(std::sync::OnceLock::new());
    let own = Routes::new()
        .get("/security/whoami", "session.read", whoami)
        .get("/security/routes", "node.read", list_routes)
        .get("/security/tokens", "tokens.read", list_tokens)
        .post("/security/tokens", "tokens.write", create_token)
        .delete("/security/tokens/{name}", "tokens.write", revoke_token)
        .get("/audit", "audit.read", audit)
        .with_state(Ctx { sec, routes: table.clone() });
    let all = routes.merge(own);
    let _ = table.set(all.table().list());
    all
}
