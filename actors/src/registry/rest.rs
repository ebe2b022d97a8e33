//! Confluent Schema Registry's REST API (the subset clients use) over [`Registry`], plus
//! Vigil's lifecycle, usage and audit endpoints under `/vigil/schemas`. Served on the
//! admin listener, so `schema.registry.url=http://<admin_addr>` works with Confluent's
//! clients. Every error is a JSON body `{"error_code": N, "message": "..."}` with
//! Confluent's codes; request bodies are size-limited (413).
// Helpers return the finished error `Response` as their `Err`: it is what the handler sends.
#![allow(clippy::result_large_err)]

use super::state::{Lifecycle, VersionInfo, VersionSel};
use super::{Registry, RegistryError};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use vigil_runtime::security::access::{Act, Principal, Routes};

/// Confluent's content type; plain `application/json` is accepted too.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Reg = Arc<Registry>;
type Params = Query<HashMap<String, String>>;

/// The caller, as recorded in the registry's audit log: the authenticated principal (or
/// `anonymous`) at its source address.
pub struct Actor(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let addr = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_else(|| "unknown".into());
        let who = parts.extensions.get::<Principal>().map(|p| p.name.clone()).unwrap_or_else(|| "anonymous".into());
        Ok(Actor(format!("{who}@{addr}")))
    }
}

fn reply(status: StatusCode, v: Value) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], v.to_string()).into_response()
}

fn ok(v: Value) -> Response {
    reply(StatusCode::OK, v)
}

fn fail(e: RegistryError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply(status, json!({ "error_code": e.code(), "message": e.to_string() }))
}

fn bad_request(code: u16, message: String) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    reply(status, json!({ "error_code": code, "message": message }))
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Add `schema` and (unless AVRO, which Confluent leaves implied) `schemaType` of schema `id`.
fn with_schema(mut out: Value, st: &super::state::State, id: u32) -> Value {
    if let Some(e) = st.schema(id) {
        out["schema"] = e.stored.text.clone().into();
        if e.stored.kind != super::schema::SchemaType::Avro {
            out["schemaType"] = e.stored.kind.as_str().into();
        }
    }
    out
}

fn version_json(v: &VersionInfo, st: &super::state::State) -> Value {
    with_schema(json!({ "subject": v.subject, "version": v.version, "id": v.id }), st, v.id)
}

/// Parse a request body into `(schemaType, schema)`.
fn schema_body(body: Result<Bytes, BytesRejection>) -> Result<(Option<String>, String), Response> {
    let body = body.map_err(|e| bad_request(e.status().as_u16(), format!("request body: {}", e.body_text())))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| bad_request(400, format!("request body is not valid JSON: {e}")))?;
    let Some(obj) = v.as_object() else { return Err(bad_request(400, "request body must be a JSON object".into())) };
    if obj.get("references").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        return Err(fail(RegistryError::InvalidSchema("schema references are not supported by this registry".into())));
    }
    let schema = match obj.get("schema") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) | None => return Err(fail(RegistryError::InvalidSchema("empty schema: the body needs a \"schema\" string".into()))),
        Some(_) => return Err(fail(RegistryError::InvalidSchema("\"schema\" must be a string holding the schema's JSON".into()))),
    };
    let kind = match obj.get("schemaType") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(fail(RegistryError::InvalidSchema("\"schemaType\" must be a string".into()))),
    };
    Ok((kind, schema))
}

fn path_err(e: PathRejection) -> Response {
    bad_request(e.status().as_u16(), format!("path: {}", e.body_text()))
}

macro_rules! try_resp {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

async fn list_subjects(State(reg): State<Reg>, q: Params) -> Response {
    ok(json!(reg.snapshot().subjects(flag(&q, "deleted"))))
}

async fn list_versions(State(reg): State<Reg>, p: Result<Path<String>, PathRejection>, q: Params) -> Response {
    let Path(s) = try_resp!(p.map_err(path_err));
    match reg.snapshot().versions(&s, flag(&q, "deleted")) {
        Ok(v) => ok(json!(v)),
        Err(e) => fail(e),
    }
}

async fn register(State(reg): State<Reg>, actor: Actor, p: Result<Path<String>, PathRejection>, body: Result<Bytes, BytesRejection>) -> Response {
    let Path(s) = try_resp!(p.map_err(path_err));
    let (kind, text) = try_resp!(schema_body(body));
    match reg.register_text(&actor.0, &s, kind.as_deref(), &text) {
        Ok(r) => {
            let mut v = with_schema(json!({ "id": r.id, "subject": s, "version": r.version }), &reg.snapshot(), r.id);
            if !r.warnings.is_empty() {
                v["warnings"] = json!(r.warnings);
            }
            ok(v)
        }
        Err(e) => fail(e),
    }
}

async fn get_version(State(reg): State<Reg>, p: Result<Path<(String, String)>, PathRejection>, q: Params) -> Response {
    let Path((s, v)) = try_resp!(p.map_err(path_err));
    let sel = try_resp!(VersionSel::parse(&v).map_err(fail));
    let st = reg.snapshot();
    match st.version(&s, sel, flag(&q, "deleted")) {
        Ok(vi) => ok(version_json(&vi, &st)),
        Err(e) => fail(e),
    }
}

async fn get_version_schema(State(reg): State<Reg>, p: Result<Path<(String, String)>, PathRejection>, q: Params) -> Response {
    let Path((s, v)) = try_resp!(p.map_err(path_err));
    let sel = try_resp!(VersionSel::parse(&v).map_err(fail));
    let st = reg.snapshot();
    match st.version(&s, sel, flag(&q, "deleted")) {
        Ok(vi) => match st.schema(vi.id) {
            Some(e) => reply(StatusCode::OK, e.parsed.json().clone()),
            None => fail(RegistryError::SchemaNotFound(Some(vi.id))),
        },
        Err(e) => fail(e),
    }
}

async fn referenced_by(State(reg): State<Reg>, p: Result<Path<(String, String)>, PathRejection>) -> Response {
    let Path((s, v)) = try_resp!(p.map_err(path_err));
    let sel = try_resp!(VersionSel::parse(&v).map_err(fail));
    match reg.snapshot().version(&s, sel, false) {
        Ok(_) => ok(json!([])),
        Err(e) => fail(e),
    }
}

async fn delete_version(State(reg): State<Reg>, actor: Actor, p: Result<Path<(String, String)>, PathRejection>, q: Params) -> Response {
    let Path((s, v)) = try_resp!(p.map_err(path_err));
    let sel = try_resp!(VersionSel::parse(&v).map_err(fail));
    match reg.delete_version(&actor.0, &s, sel, flag(&q, "permanent")) {
        Ok(n) => ok(json!(n)),
        Err(e) => fail(e),
    }
}

async fn lookup(State(reg): State<Reg>, p: Result<Path<String>, PathRejection>, q: Params, body: Result<Bytes, BytesRejection>) -> Response {
    let Path(s) = try_resp!(p.map_err(path_err));
    let (kind, text) = try_resp!(schema_body(body));
    let parsed = try_resp!(Registry::parse(kind.as_deref(), &text).map_err(fail));
    let st = reg.snapshot();
    match st.lookup(&s, &parsed, flag(&q, "deleted")) {
        Ok(vi) => ok(version_json(&vi, &st)),
        Err(e) => fail(e),
    }
}

async fn delete_subject(State(reg): State<Reg>, actor: Actor, p: Result<Path<String>, PathRejection>, q: Params) -> Response {
    let Path(s) = try_resp!(p.map_err(path_err));
    match reg.delete_subject(&actor.0, &s, flag(&q, "permanent")) {
        Ok(v) => ok(json!(v)),
        Err(e) => fail(e),
    }
}

fn parse_id(s: &str) -> Result<u32, Response> {
    s.parse::<u32>().map_err(|_| fail(RegistryError::SchemaNotFound(None)))
}

async fn schema_by_id(State(reg): State<Reg>, p: Result<Path<String>, PathRejection>) -> Response {
    let Path(id) = try_resp!(p.map_err(path_err));
    let id = try_resp!(parse_id(&id));
    let st = reg.snapshot();
    match st.schema(id) {
        Some(_) => ok(with_schema(json!({}), &st, id)),
        None => fail(RegistryError::SchemaNotFound(Some(id))),
    }
}

async fn schema_by_id_raw(State(reg): State<Reg>, p: Result<Path<String>, PathRejection>) -> Response {
    let Path(id) = try_resp!(p.map_err(path_err));
    let id = try_resp!(parse_id(&id));
    match reg.snapshot().schema(id) {
        Some(e) => reply(StatusCode::OK, e.parsed.json().clone()),
        None => fail(RegistryError::SchemaNotFound(Some(id))),
    }
}

async fn id_versions(State(reg): State<Reg>, p: Result<Path<String>, PathRejection>, q: Params) -> Response {
    let Path(id) = try_resp!(p.map_err(path_err));
    let id = try_resp!(parse_id(&id));
    let st = reg.snapshot();
    if st.schema(id).is_none() {
        return fail(RegistryError::SchemaNotFound(Some(id)));
    }
    let list: Vec<Value> = st.id_versions(id, flag(&q, "deleted")).into_iter().map(|(s, v)| json!({"subject": s, "version": v})).collect();
    ok(json!(list))
}

async fn id_subjects(State(reg): State<Reg>, p: Result<Path<String>, PathRejection>, q: Params) -> Response {
    let Path(id) = try_resp!(p.map_err(path_err));
    let id = try_resp!(parse_id(&id));
    let st = reg.snapshot();
    if st.schema(id).is_none() {
        return fail(RegistryError::SchemaNotFound(Some(id)));
    }
    let mut subjects: Vec<String> = st.id_versions(id, flag(&q, "deleted")).into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    ok(json!(subjects))
}

async fn compatibility(State(reg): State<Reg>, p: Result<Path<Vec<String>>, PathRejection>, q: Params, body: Result<Bytes, BytesRejection>) -> Response {
    let Path(parts) = try_resp!(p.map_err(path_err));
    let subject = parts.first().cloned().unwrap_or_default();
    let sel = match parts.get(1) {
        Some(v) => Some(try_resp!(VersionSel::parse(v).map_err(fail))),
        None => None,
    };
    let (kind, text) = try_resp!(schema_body(body));
    let parsed = try_resp!(Registry::parse(kind.as_deref(), &text).map_err(fail));
    let st = reg.snapshot();
    match st.check_compat(&subject, sel, &parsed, reg.config().default_compatibility) {
        Ok(messages) => {
            let mut v = json!({ "is_compatible": messages.is_empty() });
            if flag(&q, "verbose") {
                v["messages"] = json!(messages);
            }
            ok(v)
        }
        // Confluent: checking against the versions of a subject that has none is compatible.
        Err(RegistryError::SubjectNotFound(_)) if sel.is_none() => ok(json!({ "is_compatible": true })),
        Err(e) => fail(e),
    }
}

fn level_body(body: Result<Bytes, BytesRejection>) -> Result<vigil_config::Compatibility, Response> {
    let body = body.map_err(|e| bad_request(e.status().as_u16(), format!("request body: {}", e.body_text())))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| bad_request(400, format!("request body is not valid JSON: {e}")))?;
    let level = v.get("compatibility").or_else(|| v.get("compatibilityLevel")).and_then(Value::as_str).unwrap_or_default();
    vigil_config::Compatibility::parse(level).ok_or_else(|| fail(RegistryError::InvalidCompatibility(level.chars().take(64).collect())))
}

async fn get_global_config(State(reg): State<Reg>) -> Response {
    ok(json!({ "compatibilityLevel": reg.snapshot().global_level(reg.config().default_compatibility).as_str() }))
}

async fn put_global_config(State(reg): State<Reg>, actor: Actor, body: Result<Bytes, BytesRejection>) -> Response {
    let level = try_resp!(level_body(body));
    match reg.set_config(&actor.0, None, level) {
        Ok(()) => ok(json!({ "compatibility": level.as_str() })),
        Err(e) => fail(e),
    }
}

async fn delete_global_config(State(reg): State<Reg>, actor: Actor) -> Response {
    match reg.delete_config(&actor.0, None) {
        Ok(old) => ok(json!({ "compatibilityLevel": old.as_str() })),
        Err(e) => fail(e),
    }
}

async fn get_subject_config(State(reg): State<Reg>, p: Result<Path<String>, PathRejection>, q: Params) -> Response {
    let Path(s) = try_resp!(p.map_err(path_err));
    let st = reg.snapshot();
    match st.subject_level(&s) {
        Some(l) => ok(json!({ "compatibilityLevel": l.as_str() })),
        None if flag(&q, "defaultToGlobal") => ok(json!({ "compatibilityLevel": st.global_level(reg.config().default_compatibility).as_str() })),
        None => fail(RegistryError::SubjectLevelNotConfigured(s)),
    }
}

async fn put_subject_config(State(reg): State<Reg>, actor: Actor, p: Result<Path<String>, PathRejection>, body: Result<Bytes, BytesRejection>) -> Response {
    let Path(s) = try_resp!(p.map_err(path_err));
    let level = try_resp!(level_body(body));
    match reg.set_config(&actor.0, Some(&s), level) {
        Ok(()) => ok(json!({ "compatibility": level.as_str() })),
        Err(e) => fail(e),
    }
}

async fn delete_subject_config(State(reg): State<Reg>, actor: Actor, p: Result<Path<String>, PathRejection>) -> Response {
    let Path(s) = try_resp!(p.map_err(path_err));
    match reg.delete_config(&actor.0, Some(&s)) {
        Ok(old) => ok(json!({ "compatibilityLevel": old.as_str() })),
        Err(e) => fail(e),
    }
}

// ------------------------------------------------------------------ Vigil extensions

/// Every version with its lifecycle state and usage (`GET /vigil/schemas`).
async fn vigil_list(State(reg): State<Reg>, q: Params) -> Response {
    let st = reg.snapshot();
    let usage = reg.usage();
    let list: Vec<Value> = st
        .all_versions(flag(&q, "deleted"))
        .into_iter()
        .map(|v| {
            let u = usage.get(&(v.subject.clone(), v.version)).copied().unwrap_or_default();
            let kind = st.schema(v.id).map(|e| e.stored.kind.as_str()).unwrap_or("AVRO");
            json!({"subject": v.subject, "version": v.version, "id": v.id, "schemaType": kind, "state": v.state.as_str(), "deleted": v.deleted,
                "registered_ms": v.registered_ms, "state_changed_ms": v.state_changed_ms,
                "records": u.records, "first_seen_ms": u.first_seen_ms, "last_seen_ms": u.last_seen_ms})
        })
        .collect();
    ok(json!(list))
}

async fn vigil_lifecycle(State(reg): State<Reg>, actor: Actor, p: Result<Path<(String, String, String)>, PathRejection>) -> Response {
    let Path((s, v, action)) = try_resp!(p.map_err(path_err));
    let sel = try_resp!(VersionSel::parse(&v).map_err(fail));
    let to = match action.as_str() {
        "deprecate" => Lifecycle::Deprecated,
        "archive" => Lifecycle::Archived,
        "activate" => Lifecycle::Active,
        other => return bad_request(404, format!("unknown lifecycle action `{other}` (deprecate, archive, activate)")),
    };
    match reg.set_lifecycle(&actor.0, &s, sel, to) {
        Ok(vi) => ok(json!({"subject": vi.subject, "version": vi.version, "id": vi.id, "state": vi.state.as_str()})),
        Err(e) => fail(e),
    }
}

async fn vigil_audit(State(reg): State<Reg>, q: Params) -> Response {
    let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(100).clamp(1, 10_000);
    match reg.audit(limit) {
        Ok(list) => ok(json!(list
            .into_iter()
            .map(|e| json!({"seq": e.seq, "time_ms": e.time_ms, "actor": e.actor, "action": e.action, "subject": e.subject,
                "version": e.version, "before": e.before, "after": e.after, "notes": e.notes}))
            .collect::<Vec<_>>())),
        Err(e) => fail(e),
    }
}

async fn not_found() -> Response {
    bad_request(404, "HTTP 404 Not Found".into())
}

/// The registry's routes, with the request body limit from the configuration.
///
/// Confluent's paths map to their natural actions: reads and checks (`POST /subjects/{s}`
/// looks a schema up, `POST /compatibility/...` tests one) need `schemas.read`.
pub fn router(reg: Arc<Registry>) -> Routes {
    const LIFECYCLE: &[(&str, &str)] = &[("deprecate", "schemas.deprecate"), ("activate", "schemas.deprecate"), ("archive", "schemas.archive")];
    let limit = reg.config().max_request_bytes;
    Routes::new()
        .get("/subjects", "schemas.read", list_subjects)
        .post("/subjects/{s}", "schemas.read", lookup)
        .delete("/subjects/{s}", "schemas.delete", delete_subject)
        .get("/subjects/{s}/versions", "schemas.read", list_versions)
        .post("/subjects/{s}/versions", "schemas.register", register)
        .get("/subjects/{s}/versions/{v}", "schemas.read", get_version)
        .delete("/subjects/{s}/versions/{v}", "schemas.delete", delete_version)
        .get("/subjects/{s}/versions/{v}/schema", "schemas.read", get_version_schema)
        .get("/subjects/{s}/versions/{v}/referencedby", "schemas.read", referenced_by)
        .get("/schemas/types", "schemas.read", || async { ok(json!(["JSON", "AVRO"])) })
        .get("/schemas/ids/{id}", "schemas.read", schema_by_id)
        .get("/schemas/ids/{id}/schema", "schemas.read", schema_by_id_raw)
        .get("/schemas/ids/{id}/versions", "schemas.read", id_versions)
        .get("/schemas/ids/{id}/subjects", "schemas.read", id_subjects)
        .post("/compatibility/subjects/{s}/versions", "schemas.read", compatibility)
        .post("/compatibility/subjects/{s}/versions/{v}", "schemas.read", compatibility)
        .get("/config", "schemas.read", get_global_config)
        .put("/config", "schemas.config", put_global_config)
        .delete("/config", "schemas.config", delete_global_config)
        .get("/config/{s}", "schemas.read", get_subject_config)
        .put("/config/{s}", "schemas.config", put_subject_config)
        .delete("/config/{s}", "schemas.config", delete_subject_config)
        .get("/mode", "schemas.read", || async { ok(json!({ "mode": "READWRITE" })) })
        .get("/vigil/schemas", "schemas.read", vigil_list)
        .get("/vigil/schemas/audit", "schemas.read", vigil_audit)
        .post("/vigil/schemas/{s}/versions/{v}/{action}", Act::PerVerb(LIFECYCLE), vigil_lifecycle)
        .fallback(not_found)
        .body_limit(limit)
        .with_state(reg)
}
