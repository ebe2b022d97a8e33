//! The admin API's REST handlers behind the access guard (the schema registry's Confluent
//! API, the largest surface): any method, path, credentials and body get an answer below
//! 500, never a panic.
#![no_main]
use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;
use vigil_actors::registry::{rest, Registry};
use vigil_runtime::security::access::{Guard, Security};
use vigil_runtime::security::tokens::TokenStore;

fn app() -> &'static (axum::Router, tokio::runtime::Runtime) {
    static APP: OnceLock<(axum::Router, tokio::runtime::Runtime)> = OnceLock::new();
    APP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vigil-fuzz-{}", std::process::id()));
        let tokens = Arc::new(TokenStore::new(vec![], dir.join("tokens.json")).expect("token store"));
        let cfg = vigil_config::SecurityConfig::default();
        let (router, table) = rest::router(Arc::new(Registry::in_memory())).into_parts();
        let app = Guard::admin(Arc::new(Security::new(&cfg, tokens, None)), table).layer(router);
        (app, tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
    })
}

fuzz_target!(|data: &[u8]| {
    let (app, rt) = app();
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let method = match parts.next().unwrap_or_default().len() % 4 {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::PUT,
        _ => Method::DELETE,
    };
    let path = format!("/{}", parts.next().unwrap_or_default());
    let auth = parts.next().unwrap_or_default().to_string();
    let body = parts.next().unwrap_or_default().as_bytes().to_vec();
    let Ok(req) = Request::builder().method(method).uri(path.as_str()).header("Authorization", auth.as_str()).body(Body::from(body)) else { return };
    let status = rt.block_on(app.clone().oneshot(req)).map(|r| r.status().as_u16()).unwrap_or(0);
    assert!(status != 0 && status < 500, "{path}: {status}");
});
