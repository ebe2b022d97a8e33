//! How the validation path reads a schema id as a source's subject: from the node's own
//! [`Registry`], or from an external Confluent-compatible registry over HTTP with a bounded
//! cache. Also the small blocking HTTP client `vigil gen` and the node use to register
//! schemas in an external registry.
use super::schema::{ParsedSchema, SchemaType};
use super::state::{Lifecycle, Resolution, Unresolved};
use super::Registry;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why an id could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The record's fault: unknown id or not the source's subject.
    Record(Unresolved),
    /// The registry could not be asked (external registry down): not the record's fault.
    Unavailable(String),
}

/// Something that resolves `(subject, id)` for the validation path.
pub trait Resolver: Send + Sync {
    /// How a record with schema `id` reads as `subject`.
    ///
    /// # Errors
    /// [`ResolveError`].
    fn resolve(&self, subject: &str, id: u32) -> Result<Arc<Resolution>, ResolveError>;
    /// Changes whenever earlier answers may be stale (callers cache by it).
    fn generation(&self) -> u64;
}

impl Resolver for Registry {
    fn resolve(&self, subject: &str, id: u32) -> Result<Arc<Resolution>, ResolveError> {
        self.snapshot().resolve(subject, id).map(Arc::new).map_err(ResolveError::Record)
    }

    fn generation(&self) -> u64 {
        Registry::generation(self)
    }
}

/// A blocking client of a Confluent-compatible registry.
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    agent: ureq::Agent,
    auth: Option<String>,
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

impl RegistryClient {
    /// A client of the registry at `base` (`http://host:port`).
    pub fn new(base: &str, timeout: Duration) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into();
        Self::with_agent(base, agent, None)
    }

    /// A client using `agent` (TLS settings, timeouts) that sends `auth` as its
    /// `Authorization` header (`Bearer ...`). The agent must not treat HTTP errors as errors.
    pub fn with_agent(base: &str, agent: ureq::Agent, auth: Option<String>) -> Self {
        Self { base: base.trim_end_matches('/').to_string(), agent, auth }
    }

    /// Base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn answer(&self, what: &str, resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<(u16, Value), String> {
        let mut resp = resp.map_err(|e| format!("{what}: registry at {} unreachable: {e}", self.base))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().map_err(|e| format!("{what}: reading the answer: {e}"))?;
        let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
        Ok((status, v))
    }

    /// `GET path` → (status, JSON body).
    ///
    /// # Errors
    /// A message when the registry cannot be reached.
    pub fn get(&self, path: &str) -> Result<(u16, Value), String> {
        self.send("GET", path, None)
    }

    /// `method path` with a JSON body → (status, JSON body).
    ///
    /// # Errors
    /// A message when the registry cannot be reached.
    pub fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.base);
        let what = format!("{method} {path}");
        let mut req = ureq::http::Request::builder().method(method).uri(&url).header("Accept", CONTENT_TYPE);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let resp = match body {
            Some(b) => req.header("Content-Type", CONTENT_TYPE).body(b.to_string()).map(|r| self.agent.run(r)),
            None => req.body(()).map(|r| self.agent.run(r)),
        }
        .map_err(|e| format!("{what}: {e}"))?;
        self.answer(&what, resp)
    }

    /// Register a schema under a subject; returns its id.
    ///
    /// # Errors
    /// A message with the registry's error code and text.
    pub fn register(&self, subject: &str, kind: SchemaType, schema: &str) -> Result<u32, String> {
        let mut body = serde_json::json!({ "schema": schema });
        if kind != SchemaType::Avro {
            body["schemaType"] = kind.as_str().into();
        }
        let (status, v) = self.send("POST", &format!("/subjects/{}/versions", encode_segment(subject)), Some(&body))?;
        match v.get("id").and_then(Value::as_u64) {
            Some(id) if status == 200 => u32::try_from(id).map_err(|_| format!("registry returned id {id}")),
            _ => Err(format!("registering under `{subject}` failed: HTTP {status}: {v}")),
        }
    }
}

/// Shows record values for people: Confluent-framed Avro decoded to JSON with its writer
/// schema (fetched by id from a registry, cached), framed JSON Schema and plain values as
/// text.
pub struct PayloadView {
    client: Option<RegistryClient>,
    schemas: HashMap<u32, Option<apache_avro::Schema>>,
}

impl PayloadView {
    /// A view resolving schema ids at `client`'s registry (none: framed values shown as bytes).
    pub fn new(client: Option<RegistryClient>) -> Self {
        Self { client, schemas: HashMap::new() }
    }

    /// One value as text.
    pub fn render(&mut self, payload: &[u8]) -> String {
        let Ok((id, body)) = super::wire::unframe(payload) else { return String::from_utf8_lossy(payload).into_owned() };
        let client = self.client.as_ref();
        let schema = self.schemas.entry(id).or_insert_with(|| {
            let (status, v) = client?.get(&format!("/schemas/ids/{id}")).ok()?;
            let avro = status == 200 && v.get("schemaType").and_then(Value::as_str).is_none_or(|t| t == "AVRO");
            avro.then(|| v.get("schema").and_then(Value::as_str).and_then(|s| apache_avro::Schema::parse_str(s).ok())).flatten()
        });
        match schema {
            Some(schema) => match apache_avro::from_avro_datum(schema, &mut &body[..], None).map(Value::try_from) {
                Ok(Ok(v)) => format!("(schema {id}) {v}"),
                _ => format!("(schema {id}, undecodable) {} bytes", body.len()),
            },
            None if serde_json::from_slice::<Value>(body).is_ok() => format!("(schema {id}) {}", String::from_utf8_lossy(body)),
            None => format!("(schema {id}) {} bytes", body.len()),
        }
    }
}

/// Percent-encode a path segment (subjects may hold `/` and other reserved characters).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A cached answer and the generation it was fetched in.
type Cached = (u64, Arc<Resolution>);

/// Resolves ids through an external registry, caching parsed schemas and answers.
pub struct ExternalResolver {
    client: RegistryClient,
    cache_max: usize,
    /// `(subject, id)` → (generation fetched in, answer).
    cache: Mutex<HashMap<(String, u32), Cached>>,
    schemas: Mutex<HashMap<u32, Arc<ParsedSchema>>>,
    started: std::time::Instant,
}

/// How long an external answer is trusted (a newer latest version changes the reader schema).
const EXTERNAL_REFRESH: Duration = Duration::from_secs(60);

impl ExternalResolver {
    /// Resolver over the registry at `url`.
    pub fn new(url: &str, timeout: Duration, cache_max: usize) -> Self {
        Self {
            client: RegistryClient::new(url, timeout),
            cache_max,
            cache: Mutex::new(HashMap::new()),
            schemas: Mutex::new(HashMap::new()),
            started: std::time::Instant::now(),
        }
    }

    /// The HTTP client.
    pub fn client(&self) -> &RegistryClient {
        &self.client
    }

    fn schema(&self, id: u32) -> Result<Arc<ParsedSchema>, ResolveError> {
        if let Some(s) = self.schemas.lock().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(s);
        }
        let (status, v) = self.client.get(&format!("/schemas/ids/{id}")).map_err(ResolveError::Unavailable)?;
        match status {
            200 => {}
            404 => return Err(ResolveError::Record(Unresolved::UnknownId)),
            s => return Err(ResolveError::Unavailable(format!("GET /schemas/ids/{id}: HTTP {s}: {v}"))),
        }
        let text = v.get("schema").and_then(Value::as_str).unwrap_or_default();
        let kind = SchemaType::parse(v.get("schemaType").and_then(Value::as_str)).map_err(ResolveError::Unavailable)?;
        let parsed = Arc::new(ParsedSchema::parse(kind, text).map_err(|e| ResolveError::Unavailable(format!("schema {id} from the registry: {e}")))?);
        if let Ok(mut m) = self.schemas.lock() {
            if m.len() >= self.cache_max {
                m.clear();
            }
            m.insert(id, parsed.clone());
        }
        Ok(parsed)
    }

    fn fetch(&self, subject: &str, id: u32) -> Result<Resolution, ResolveError> {
        let writer = self.schema(id)?;
        let (status, v) = self.client.get(&format!("/schemas/ids/{id}/versions")).map_err(ResolveError::Unavailable)?;
        if status != 200 {
            return Err(ResolveError::Unavailable(format!("GET /schemas/ids/{id}/versions: HTTP {status}: {v}")));
        }
        let version = v
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e.get("subject").and_then(Value::as_str) == Some(subject))
            .and_then(|e| e.get("version").and_then(Value::as_u64))
            .ok_or(ResolveError::Record(Unresolved::WrongSubject))?;
        let (status, latest) = self.client.get(&format!("/subjects/{}/versions/latest", encode_segment(subject))).map_err(ResolveError::Unavailable)?;
        let reader = match latest.get("id").and_then(Value::as_u64) {
            Some(rid) if status == 200 && rid != u64::from(id) => Some(self.schema(rid as u32)?).filter(|r| r.kind() == writer.kind()),
            _ => None,
        };
        Ok(Resolution { subject: subject.into(), version: version as u32, state: Lifecycle::Active, writer, reader })
    }
}

impl Resolver for ExternalResolver {
    fn resolve(&self, subject: &str, id: u32) -> Result<Arc<Resolution>, ResolveError> {
        let key = (subject.to_string(), id);
        let generation = self.generation();
        if let Some((_, r)) = self.cache.lock().ok().and_then(|m| m.get(&key).cloned()).filter(|(g, _)| *g == generation) {
            return Ok(r);
        }
        let r = Arc::new(self.fetch(subject, id)?);
        if let Ok(mut m) = self.cache.lock() {
            if m.len() >= self.cache_max {
                m.clear();
            }
            m.insert(key, (generation, r.clone()));
        }
        Ok(r)
    }

    /// Advances every [`EXTERNAL_REFRESH`], so answers (the latest version) are re-read.
    fn generation(&self) -> u64 {
        self.started.elapsed().as_secs() / EXTERNAL_REFRESH.as_secs()
    }
}
