//! Lineage on the admin API:
//! - `GET /lineage/output/<topic>/<key>@<window_start>`: an output back to its source records;
//! - `GET /lineage/record/<topic>/<partition>/<offset>`: a source record forward;
//! - `GET /lineage/status`: what is retained and what retention removed;
//! - `GET /lineage/events?since=10m&kind=checkpoint,restart`: the data-flow event log.
use super::trace::{parse_output, parse_position, trace_output, trace_record};
use crate::journal::{Event, EventKind};
use crate::pipeline::NodeCtx;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use vigil_runtime::admin::json_error as err;
use vigil_runtime::security::access::Routes;

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
    let res = tokio::task::spawn_blocking(move || journal.range_with_schemas(now - since.as_millis() as i64, now + 1)).await;
    match res {
        Ok(Ok(list)) => Json(select(list, &kinds, q.limit.unwrap_or(10_000))).into_response(),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Run a read of the store off the async workers, timing it as a trace of `kind`.
async fn read_store<T: serde::Serialize + Send + 'static>(
    kind: &'static str,
    ctx: &NodeCtx,
    f: impl FnOnce(&vigil_runtime::store::Store) -> vigil_runtime::Result<T> + Send + 'static,
) -> Response {
    let started = std::time::Instant::now();
    let store = ctx.store.clone();
    let res = tokio::task::spawn_blocking(move || f(&store)).await;
    metrics::histogram!("vigil_lineage_trace_seconds", "kind" => kind).record(started.elapsed().as_secs_f64());
    match res {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn output(State(ctx): State<Arc<NodeCtx>>, Path(output): Path<String>) -> Response {
    let (topic, key, start) = match parse_output(&output) {
        Ok(o) => o,
        Err(e) => return err(StatusCode::BAD_REQUEST, e),
    };
    let agg = crate::analytics::output::aggregation_of(&key);
    let Some(spec) = ctx.analytics.aggs.iter().find(|a| &*a.name == agg) else {
        let names: Vec<&str> = ctx.analytics.aggs.iter().map(|a| &*a.name).collect();
        return err(
            StatusCode::NOT_FOUND,
            format!("no aggregation `{agg}` on this node (it has {}); outputs are <topic>/<aggregation>/<key>@<start>", names.join(", ")),
        );
    };
    if topic != spec.topic {
        return err(StatusCode::NOT_FOUND, format!("aggregation `{agg}` writes to `{}`, not `{topic}`", spec.topic));
    }
    read_store("output", &ctx, move |s| trace_output(s, &topic, &key, start)).await
}

async fn record(State(ctx): State<Arc<NodeCtx>>, Path(record): Path<String>) -> Response {
    let Some((topic, partition, offset)) = parse_position(&record) else {
        return err(
            StatusCode::BAD_REQUEST,
            format!("`{record}` is not a position <topic>/<partition>/<offset>; `vigil lineage trace --record <id>` resolves record ids by reading the source topics"),
        );
    };
    read_store("record", &ctx, move |s| trace_record(s, &topic, partition, offset)).await
}

async fn status(State(ctx): State<Arc<NodeCtx>>) -> Response {
    let enabled = ctx.config.lineage.enabled;
    read_store("status", &ctx, move |s| super::retention::status(s, enabled)).await
}

/// The routes, to be mounted on the admin listener.
pub fn router(ctx: Arc<NodeCtx>) -> Routes {
    Routes::new()
        .get("/lineage/events", "lineage.read", events)
        .get("/lineage/output/{*output}", "lineage.read", output)
        .get("/lineage/record/{*record}", "lineage.read", record)
        .get("/lineage/status", "lineage.read", status)
        .with_state(ctx)
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
