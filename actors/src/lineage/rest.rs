//! `GET /lineage/events?since=10m&kind=checkpoint,restart`: the data-flow event log.
use crate::journal::{Event, EventKind};
use crate::pipeline::NodeCtx;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use vigil_runtime::admin::json_error as err;

/// Parse a comma-separated list of event kinds (`checkpoint,restart`).
///
/// # Errors
/// The first name that is not a kind, with the list of kinds.
pub fn parse_kinds(list: &str) -> Result<Vec<EventKind>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|k| {
            serde_json::from_value::<EventKind>(serde_json::Value::String(k.into())).map_err(|_| {
                format!(
                    "unknown event kind `{k}`: one of alert, dlq_burst, restart, supervisor_escalation, checkpoint_failure, restore, retention_loss, schema, config_reload, chaos, incident, operator, checkpoint, node_start, node_stop"
                )
            })
        })
        .collect()
}

/// Events of the journal since `since_ms`, keeping `kinds` (all when empty), at most `limit`
/// (the newest).
pub fn select(events: Vec<Event>, kinds: &[EventKind], limit: usize) -> Vec<Event> {
    let mut v: Vec<Event> = events.into_iter().filter(|e| kinds.is_empty() || kinds.contains(&e.kind)).collect();
    let skip = v.len().saturating_sub(limit);
    v.drain(..skip);
    v
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
}

async fn events(State(ctx): State<Arc<NodeCtx>>, q: Query<EventsQuery>) -> Response {
    let since = match humantime::parse_duration(q.since.as_deref().unwrap_or("1h")) {
        Ok(d) => d,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("since: {e}")),
    };
    let kinds = match parse_kinds(q.kind.as_deref().unwrap_or("")) {
        Ok(k) => k,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let now = vigil_runtime::now_ms();
    let journal = ctx.journal.clone();
    let res = tokio::task::spawn_blocking(move || journal.range(now - since.as_millis() as i64, now + 1)).await;
    match res {
        Ok(Ok(list)) => Json(select(list, &kinds, q.limit.unwrap_or(10_000))).into_response(),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The routes, to be mounted on the admin listener.
pub fn router(ctx: Arc<NodeCtx>) -> Router {
    Router::new().route("/lineage/events", get(events)).with_state(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_select_keeps_the_newest() {
        assert_eq!(parse_kinds("checkpoint, restart").unwrap(), vec![EventKind::Checkpoint, EventKind::Restart]);
        assert!(parse_kinds("checkpoints").unwrap_err().contains("node_start"));
        let ev = |t: i64, k| Event { at_ms: t, ..Event::now(k, "t", "x") };
        let all = vec![ev(1, EventKind::NodeStart), ev(2, EventKind::Checkpoint), ev(3, EventKind::Restart), ev(4, EventKind::Checkpoint)];
        let cps = select(all.clone(), &[EventKind::Checkpoint], 10);
        assert_eq!(cps.iter().map(|e| e.at_ms).collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(select(all, &[], 2).iter().map(|e| e.at_ms).collect::<Vec<_>>(), vec![3, 4], "the newest within the limit");
    }
}
