//! Admin API of incidents: `GET /incidents[?all=true]`, `POST /incidents`,
//! `GET /incidents/{id}`, `POST /incidents/{id}/{ack,assign,note,mitigate,resolve}`,
//! `GET /incidents/{id}/postmortem[?format=json]`, `GET /incidents/report?since=90d`.
use super::actor::{Action, IncidentMsg};
use super::model::ActionError;
use crate::pipeline::NodeCtx;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ractor::RpcReplyPort;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use vigil_config::Severity;
use vigil_runtime::admin::json_error as err;
use vigil_runtime::security::access::{Act, Routes};

type Ctx = Arc<NodeCtx>;
type Body<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

fn action_err(e: &ActionError) -> Response {
    let code = match e {
        ActionError::Unknown(_) => StatusCode::NOT_FOUND,
        ActionError::WrongState { .. } => StatusCode::CONFLICT,
        ActionError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    err(code, e.to_string())
}

async fn ask<T: Send + 'static>(ctx: &NodeCtx, f: impl FnOnce(RpcReplyPort<T>) -> IncidentMsg) -> Result<T, Response> {
    if !ctx.incidents_enabled() {
        return Err(err(StatusCode::NOT_FOUND, "incidents are disabled (incidents.enabled, alerts.enabled and quality.enabled must be true)"));
    }
    ctx.slots.incidents.call("incidents", f, Duration::from_secs(10)).await.map_err(|e| err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

#[derive(Deserialize)]
struct ListQuery {
    all: Option<bool>,
}

async fn list(State(ctx): State<Ctx>, q: Query<ListQuery>) -> Response {
    let all = q.all.unwrap_or(false);
    match ask(&ctx, |reply| IncidentMsg::List { all, reply }).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn show(State(ctx): State<Ctx>, Path(id): Path<u64>) -> Response {
    match ask(&ctx, |r| IncidentMsg::Show(id, r)).await {
        Ok(Ok(a)) => Json(a).into_response(),
        Ok(Err(e)) => action_err(&e),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct OpenBody {
    title: String,
    severity: Option<Severity>,
    source: Option<String>,
    by: String,
}

async fn open(State(ctx): State<Ctx>, body: Body<OpenBody>) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("incident: {e}")),
    };
    let severity = b.severity.unwrap_or(Severity::P2);
    match ask(&ctx, |reply| IncidentMsg::Open { title: b.title, severity, source: b.source, by: b.by, reply }).await {
        Ok(Ok(id)) => Json(json!({ "id": id })).into_response(),
        Ok(Err(e)) => action_err(&e),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct ActBody {
    by: String,
    role: Option<String>,
    who: Option<String>,
    text: Option<String>,
}

async fn act(State(ctx): State<Ctx>, Path((id, verb)): Path<(u64, String)>, body: Body<ActBody>) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("{verb}: {e}")),
    };
    if b.by.trim().is_empty() {
        return err(StatusCode::BAD_REQUEST, "`by` (who acts) is required");
    }
    let action = match verb.as_str() {
        "ack" => Action::Ack,
        "assign" => match (b.role, b.who) {
            (Some(role), Some(who)) => Action::Assign { role, who },
            _ => return err(StatusCode::BAD_REQUEST, "assign needs `role` and `who`"),
        },
        "note" => match b.text {
            Some(t) => Action::Note(t),
            None => return err(StatusCode::BAD_REQUEST, "note needs `text`"),
        },
        "mitigate" => Action::Mitigate,
        "resolve" => Action::Resolve,
        other => return err(StatusCode::NOT_FOUND, format!("unknown action `{other}`: ack, assign, note, mitigate, resolve")),
    };
    let by = b.by;
    match ask(&ctx, |reply| IncidentMsg::Act { id, action, by, reply }).await {
        Ok(Ok(())) => Json(json!({ "id": id, "done": verb })).into_response(),
        Ok(Err(e)) => action_err(&e),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct PmQuery {
    format: Option<String>,
}

async fn postmortem(State(ctx): State<Ctx>, Path(id): Path<u64>, q: Query<PmQuery>) -> Response {
    match ask(&ctx, |r| IncidentMsg::Postmortem(id, r)).await {
        Ok(Ok((md, a))) => match q.format.as_deref() {
            Some("json") => Json(json!({ "markdown": md, "analysis": a })).into_response(),
            _ => ([("content-type", "text/markdown; charset=utf-8")], md).into_response(),
        },
        Ok(Err(e)) => action_err(&e),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct ReportQuery {
    since: Option<String>,
}

async fn review(State(ctx): State<Ctx>, q: Query<ReportQuery>) -> Response {
    let since = match humantime::parse_duration(q.since.as_deref().unwrap_or("90d")) {
        Ok(d) => vigil_runtime::now_ms() - d.as_millis() as i64,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("since: {e}")),
    };
    match ask(&ctx, |r| IncidentMsg::Report(since, r)).await {
        Ok(rep) => Json(rep).into_response(),
        Err(r) => r,
    }
}

/// The routes, to be mounted on the admin listener.
pub fn router(ctx: Arc<NodeCtx>) -> Routes {
    const VERBS: &[(&str, &str)] = &[
        ("ack", "incidents.ack"),
        ("assign", "incidents.assign"),
        ("note", "incidents.note"),
        ("mitigate", "incidents.mitigate"),
        ("resolve", "incidents.resolve"),
    ];
    Routes::new()
        .get("/incidents", "incidents.read", list)
        .post("/incidents", "incidents.open", open)
        .get("/incidents/report", "incidents.read", review)
        .get("/incidents/{id}", "incidents.read", show)
        .get("/incidents/{id}/postmortem", "incidents.read", postmortem)
        .post("/incidents/{id}/{verb}", Act::PerVerb(VERBS), act)
        .with_state(ctx)
}
