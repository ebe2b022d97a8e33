//! Admin API of alerting and data quality: `GET /alerts`, `GET /alerts/rules`,
//! `POST /alerts/reload`, `GET|POST /silences`, `DELETE /silences/{id}`, `GET /dq`,
//! `GET /dq/history?since=1h`, and
//! `POST /chaos/bad-data` (the generator's malformed-record ratio, for drills).
use super::actor::{parse_silence_matchers, AlertMsg};
use super::engine::Silence;
use crate::pipeline::NodeCtx;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ractor::RpcReplyPort;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use vigil_runtime::admin::json_error as err;
use vigil_runtime::security::access::Routes;

type Ctx = Arc<NodeCtx>;

async fn ask<T: Send + 'static>(ctx: &NodeCtx, f: impl FnOnce(RpcReplyPort<T>) -> AlertMsg) -> Result<T, Response> {
    if !ctx.alerting_enabled() {
        return Err(err(StatusCode::NOT_FOUND, "alerting is disabled (alerts.enabled = false or quality.enabled = false)"));
    }
    ctx.slots.alerting.call("alerting", f, Duration::from_secs(5)).await.map_err(|e| err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

async fn alerts(State(ctx): State<Ctx>) -> Response {
    match ask(&ctx, AlertMsg::List).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn rules(State(ctx): State<Ctx>) -> Response {
    match ask(&ctx, AlertMsg::Rules).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// Re-read `[alerts]` from the node's configuration file: the file and the number of rules,
/// or the status, message and problems of why not (the rules in use then stay).
pub async fn reload_rules(ctx: &NodeCtx) -> Result<(String, usize), (StatusCode, String, Vec<String>)> {
    let Some(path) = ctx.config.loaded_from.clone() else {
        return Err((StatusCode::CONFLICT, "the node runs without a configuration file; there is nothing to reload".into(), vec![]));
    };
    let cfg = vigil_config::Config::load(Some(&path), std::env::vars()).map_err(|e| {
        (StatusCode::BAD_REQUEST, format!("{} is not valid; rules unchanged", path.display()), e.errors.iter().map(ToString::to_string).collect())
    })?;
    if !ctx.alerting_enabled() {
        return Err((StatusCode::NOT_FOUND, "alerting is disabled (alerts.enabled = false or quality.enabled = false)".into(), vec![]));
    }
    let n = ctx
        .slots
        .alerting
        .call("alerting", |r| AlertMsg::Reload(Box::new(cfg.alerts), r), Duration::from_secs(5))
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string(), vec![]))?;
    Ok((path.display().to_string(), n))
}

async fn reload(State(ctx): State<Ctx>) -> Response {
    match reload_rules(&ctx).await {
        Ok((file, n)) => Json(json!({"reloaded": file, "rules": n})).into_response(),
        Err((status, msg, problems)) if !problems.is_empty() => (status, Json(json!({"error": msg, "problems": problems}))).into_response(),
        Err((status, msg, _)) => err(status, msg),
    }
}

async fn silences(State(ctx): State<Ctx>) -> Response {
    match ask(&ctx, AlertMsg::Silences).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// Body of `POST /silences`.
#[derive(Deserialize)]
struct NewSilence {
    matchers: Vec<String>,
    /// End time, ms since epoch; or `duration`.
    ends_at_ms: Option<i64>,
    /// Duration from now, e.g. `2h`.
    duration: Option<String>,
    starts_at_ms: Option<i64>,
    created_by: String,
    comment: String,
}

async fn add_silence(State(ctx): State<Ctx>, body: Result<Json<NewSilence>, axum::extract::rejection::JsonRejection>) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("silence: {e}")),
    };
    let matchers = match parse_silence_matchers(&b.matchers) {
        Ok(m) => m,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("matchers: {e}")),
    };
    if b.created_by.trim().is_empty() || b.comment.trim().is_empty() {
        return err(StatusCode::BAD_REQUEST, "created_by and comment are required");
    }
    let now = vigil_runtime::now_ms();
    let starts = b.starts_at_ms.unwrap_or(now);
    let ends = match (b.ends_at_ms, b.duration.as_deref()) {
        (Some(t), _) => t,
        (None, Some(d)) => match humantime::parse_duration(d) {
            Ok(d) => starts + d.as_millis() as i64,
            Err(e) => return err(StatusCode::BAD_REQUEST, format!("duration `{d}`: {e}")),
        },
        (None, None) => return err(StatusCode::BAD_REQUEST, "ends_at_ms or duration is required"),
    };
    let s = Silence { id: String::new(), matchers, starts_at_ms: starts, ends_at_ms: ends, created_by: b.created_by, comment: b.comment, updated_at_ms: now };
    match ask(&ctx, |r| AlertMsg::AddSilence(Box::new(s), r)).await {
        Ok(Ok(id)) => (StatusCode::OK, Json(json!({"silenceID": id}))).into_response(),
        Ok(Err(e)) => err(StatusCode::BAD_REQUEST, e),
        Err(r) => r,
    }
}

async fn expire_silence(State(ctx): State<Ctx>, Path(id): Path<String>) -> Response {
    match ask(&ctx, |r| AlertMsg::ExpireSilence(id, r)).await {
        Ok(Ok(())) => Json(json!({"expired": true})).into_response(),
        Ok(Err(e)) => err(StatusCode::NOT_FOUND, e),
        Err(r) => r,
    }
}

async fn dq(State(ctx): State<Ctx>) -> Response {
    if !ctx.config.quality.enabled {
        return err(StatusCode::NOT_FOUND, "data quality is disabled (quality.enabled = false)");
    }
    let report = ctx.dq.borrow().clone();
    Json(report).into_response()
}

/// Query of `GET /dq/history`.
#[derive(Deserialize)]
struct HistoryQuery {
    /// How far back, e.g. `1h` (default `15m`).
    since: Option<String>,
}

async fn dq_history(State(ctx): State<Ctx>, q: axum::extract::Query<HistoryQuery>) -> Response {
    let since = match humantime::parse_duration(q.since.as_deref().unwrap_or("15m")) {
        Ok(d) => d,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("since: {e}")),
    };
    let now = vigil_runtime::now_ms();
    let (store, slot) = (ctx.store.clone(), ctx.config.quality.interval);
    let res = tokio::task::spawn_blocking(move || crate::quality::actor::read_history(&store, slot, now - since.as_millis() as i64, now)).await;
    match res {
        Ok(Ok(h)) => Json(h).into_response(),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Body of `POST /chaos/bad-data`.
#[derive(Deserialize)]
struct BadData {
    ratio: f64,
}

async fn bad_data(State(ctx): State<Ctx>, body: Result<Json<BadData>, axum::extract::rejection::JsonRejection>) -> Response {
    let Json(b) = match body {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("bad-data: {e}")),
    };
    if !ctx.config.generator_enabled() {
        return err(StatusCode::CONFLICT, "this node runs no generator (generator.enabled); send bad records with `vigil gen --bad-ratio` instead");
    }
    if !(0.0..=1.0).contains(&b.ratio) {
        return err(StatusCode::BAD_REQUEST, "ratio must be between 0.0 and 1.0");
    }
    ctx.set_bad_ratio(b.ratio);
    tracing::warn!(ratio = b.ratio, "chaos: generator malformed-record ratio changed");
    let topic = ctx.config.pipeline.sources.first().map(|s| s.topic.clone()).unwrap_or_default();
    let e = crate::journal::Event::now(crate::journal::EventKind::Chaos, "chaos", format!("generator writes {:.0}% malformed records", b.ratio * 100.0));
    ctx.journal.record(e.stage("generator").topic(&topic));
    Json(json!({"injected": "bad-data", "ratio": b.ratio})).into_response()
}

/// The routes, to be mounted on the admin listener.
pub fn router(ctx: Arc<NodeCtx>) -> Routes {
    Routes::new()
        .get("/alerts", "alerts.read", alerts)
        .get("/alerts/rules", "alerts.read", rules)
        .post("/alerts/reload", "config.reload", reload)
        .get("/silences", "alerts.read", silences)
        .post("/silences", "silences.write", add_silence)
        .delete("/silences/{id}", "silences.write", expire_silence)
        .get("/dq", "dq.read", dq)
        .get("/dq/history", "dq.read", dq_history)
        .post("/chaos/bad-data", "chaos.inject", bad_data)
        .with_state(ctx)
}
