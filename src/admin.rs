//! Talking to a running node's admin API: JSON over HTTP, errors that say what to check.
use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn unreachable(addr: &str) -> String {
    format!("cannot reach the admin API at {addr} (is `vigil run` running? pass --admin ADDR or --config FILE)")
}

fn answer<T: DeserializeOwned>(url: &str, resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>, addr: &str) -> Result<T> {
    let mut resp = resp.with_context(|| unreachable(addr))?;
    let status = resp.status().as_u16();
    let body: Value = resp.body_mut().read_json().with_context(|| format!("unexpected answer from {url}"))?;
    if !(200..300).contains(&status) {
        let msg = body.get("error").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| body.to_string());
        let problems = body
            .get("problems")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(Value::as_str).map(|s| format!("\n  {s}")).collect::<String>())
            .unwrap_or_default();
        bail!("{msg}{problems}");
    }
    serde_json::from_value(body).with_context(|| format!("unexpected answer from {url}"))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(std::time::Duration::from_secs(30))).build().into()
}

/// GET `path` as JSON.
pub(crate) fn get<T: DeserializeOwned>(addr: &str, path: &str) -> Result<T> {
    let url = format!("http://{addr}{path}");
    answer(&url, agent().get(&url).call(), addr)
}

/// POST a JSON body to `path`; the answer as JSON.
pub(crate) fn post<T: DeserializeOwned>(addr: &str, path: &str, body: &Value) -> Result<T> {
    let url = format!("http://{addr}{path}");
    answer(&url, agent().post(&url).send_json(body), addr)
}

/// DELETE `path`; the answer as JSON.
pub(crate) fn delete<T: DeserializeOwned>(addr: &str, path: &str) -> Result<T> {
    let url = format!("http://{addr}{path}");
    answer(&url, agent().delete(&url).call(), addr)
}
