//! Who may call what. Every route is added through [`Routes`], which records the action it
//! requires in one [`RouteTable`]; the guard in front of the listener authenticates the
//! caller (bearer token or client certificate), allows the call only if the caller's role
//! holds the route's action, denies routes that declare none, rate-limits per principal,
//! bounds each request's time, and writes mutating and denied calls to the audit log.
use super::audit::{AuditLog, AuditRecord};
use super::tls::PeerCert;
use super::tokens::TokenStore;
use crate::rate::RateLimit;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vigil_config::{IdentityEntry, SecurityConfig};

/// The action a route requires: one, or one per value of the path's last segment
/// (`/incidents/{id}/{verb}`: `ack` → `incidents.ack`). A verb not listed is denied.
#[derive(Debug, Clone, Copy)]
pub enum Act {
    /// The same action for every call.
    One(&'static str),
    /// By the last path segment.
    PerVerb(&'static [(&'static str, &'static str)]),
}

impl From<&'static str> for Act {
    fn from(a: &'static str) -> Self {
        Act::One(a)
    }
}

/// Whether an action changes something (audited even when allowed).
pub fn is_mutating(action: &str) -> bool {
    !action.ends_with(".read")
}

/// Method and path template → action, for every route added through [`Routes`].
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    rules: BTreeMap<(String, String), Act>,
}

/// One row of the route table, as `/security/routes` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteInfo {
    /// HTTP method.
    pub method: String,
    /// Path template (`/subjects/{s}/versions`).
    pub path: String,
    /// Action required, when the same for every call.
    pub action: Option<String>,
    /// Otherwise: the action per value of the last path segment (others are denied).
    pub verbs: BTreeMap<String, String>,
}

impl RouteTable {
    /// The action a request needs: `None` when the route declares none (denied).
    pub fn action(&self, method: &Method, template: &str, path: &str) -> Option<&'static str> {
        let method = if *method == Method::HEAD { "GET" } else { method.as_str() };
        match self.rules.get(&(method.to_string(), template.to_string()))? {
            Act::One(a) => Some(a),
            Act::PerVerb(verbs) => {
                let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
                verbs.iter().find(|(v, _)| *v == last).map(|(_, a)| *a)
            }
        }
    }

    /// Every route, sorted by path then method.
    pub fn list(&self) -> Vec<RouteInfo> {
        let mut v: Vec<RouteInfo> = self
            .rules
            .iter()
            .map(|((m, p), a)| RouteInfo {
                method: m.clone(),
                path: p.clone(),
                action: match a {
                    Act::One(a) => Some(a.to_string()),
                    Act::PerVerb(_) => None,
                },
                verbs: match a {
                    Act::One(_) => BTreeMap::new(),
                    Act::PerVerb(v) => v.iter().map(|(verb, a)| (verb.to_string(), a.to_string())).collect(),
                },
            })
            .collect();
        v.sort_by(|a, b| (&a.path, &a.method).cmp(&(&b.path, &b.method)));
        v
    }
}

/// An axum router whose every route carries its action. Build one per capability and
/// [`Routes::merge`] them; the listener's guard denies anything not in the table.
pub struct Routes<S = ()> {
    router: Router<S>,
    table: RouteTable,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self { router: Router::new(), table: RouteTable::default() }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, method: Method, path: &str, act: Act, mr: MethodRouter<S>) -> Self {
        self.table.rules.insert((method.to_string(), path.to_string()), act);
        self.router = self.router.route(path, mr);
        self
    }

    /// `GET path` (and `HEAD`) needing `act`.
    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &str, act: impl Into<Act>, h: H) -> Self {
        self.add(Method::GET, path, act.into(), axum::routing::get(h))
    }

    /// `POST path` needing `act`.
    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &str, act: impl Into<Act>, h: H) -> Self {
        self.add(Method::POST, path, act.into(), on(MethodFilter::POST, h))
    }

    /// `PUT path` needing `act`.
    pub fn put<H: Handler<T, S>, T: 'static>(self, path: &str, act: impl Into<Act>, h: H) -> Self {
        self.add(Method::PUT, path, act.into(), on(MethodFilter::PUT, h))
    }

    /// `DELETE path` needing `act`.
    pub fn delete<H: Handler<T, S>, T: 'static>(self, path: &str, act: impl Into<Act>, h: H) -> Self {
        self.add(Method::DELETE, path, act.into(), on(MethodFilter::DELETE, h))
    }

    /// Answer unmatched requests with `h` (after the guard: unauthenticated callers get 401).
    pub fn fallback<H: Handler<T, S>, T: 'static>(mut self, h: H) -> Self {
        self.router = self.router.fallback(h);
        self
    }

    /// Request bodies of these routes up to `bytes` (instead of `security.limits.max_body`).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.router = self.router.layer(axum::extract::DefaultBodyLimit::max(bytes));
        self
    }

    /// Both sets of routes (paths must not overlap, as with [`Router::merge`]).
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.table.rules.extend(other.table.rules);
        self
    }

    /// Supply the handlers' state.
    pub fn with_state<S2: Clone + Send + Sync + 'static>(self, state: S) -> Routes<S2> {
        Routes { router: self.router.with_state(state), table: self.table }
    }

    /// The table so far.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The router and its table.
    pub fn into_parts(self) -> (Router<S>, RouteTable) {
        (self.router, self.table)
    }

    /// Add a route that is not in the table (tests of deny-by-default only).
    #[doc(hidden)]
    pub fn undeclared_route(mut self, path: &str, mr: MethodRouter<S>) -> Self {
        self.router = self.router.route(path, mr);
        self
    }
}

/// The authenticated caller, put in each request's extensions for handlers that record
/// who acted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Principal {
    /// `token:<name>`, `cert:<name>` or `anonymous`.
    pub name: String,
    /// Role (empty when none).
    pub role: String,
}

impl Principal {
    /// Nobody in particular.
    pub fn anonymous() -> Self {
        Self { name: "anonymous".into(), role: String::new() }
    }
}

/// The node's security state shared by its listeners: roles, credentials, audit log,
/// limits.
pub struct Security {
    auth: bool,
    metrics_auth: bool,
    roles: HashMap<String, HashSet<String>>,
    identities: Vec<IdentityEntry>,
    tokens: Arc<TokenStore>,
    audit: Option<Arc<AuditLog>>,
    limits: vigil_config::LimitsConfig,
    buckets: Mutex<HashMap<String, RateLimit>>,
    /// When calls were refused (401/403), ms, the last minute's worth.
    denials: Mutex<std::collections::VecDeque<i64>>,
}

/// Refusals remembered for [`Security::denied_last_minute`], at most (a flood beyond this
/// is still counted as this many).
const DENIALS_MAX: usize = 100_000;

impl Security {
    /// From `[security]`, with the token store and the audit log (none: nothing audited).
    pub fn new(cfg: &SecurityConfig, tokens: Arc<TokenStore>, audit: Option<Arc<AuditLog>>) -> Self {
        let mut roles: HashMap<String, HashSet<String>> = HashMap::new();
        for r in vigil_config::BUILTIN_ROLES.iter().map(|r| r.to_string()).chain(cfg.roles.keys().cloned()) {
            let actions = cfg.role_actions(&r).into_iter().collect();
            roles.insert(r, actions);
        }
        Self {
            auth: cfg.auth,
            metrics_auth: cfg.metrics_auth,
            roles,
            identities: cfg.identities.clone(),
            tokens,
            audit,
            limits: cfg.limits.clone(),
            buckets: Mutex::new(HashMap::new()),
            denials: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Whether credentials are required.
    pub fn auth(&self) -> bool {
        self.auth
    }

    /// The token store.
    pub fn tokens(&self) -> &Arc<TokenStore> {
        &self.tokens
    }

    /// The audit log, if kept.
    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// Whether `role` exists.
    pub fn knows_role(&self, role: &str) -> bool {
        self.roles.contains_key(role)
    }

    /// Actions of `role`, sorted.
    pub fn actions_of(&self, role: &str) -> Vec<String> {
        let mut v: Vec<String> = self.roles.get(role).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        v.sort();
        v
    }

    fn allows(&self, role: &str, action: &str) -> bool {
        self.roles.get(role).is_some_and(|a| a.contains(action))
    }

    /// Who is calling: `Ok(None)` without credentials, `Err` for a bad token.
    fn authenticate(&self, bearer: Option<&str>, cert: Option<&PeerCert>) -> Result<Option<Principal>, &'static str> {
        if let Some(token) = bearer {
            return match self.tokens.authenticate(token) {
                Some((name, role)) => Ok(Some(Principal { name: format!("token:{name}"), role })),
                None => Err("invalid or revoked token"),
            };
        }
        if let Some(cert) = cert {
            let role = self.identities.iter().find(|i| cert.names.contains(&i.name));
            let name = role.map(|i| i.name.clone()).or_else(|| cert.names.first().cloned()).unwrap_or_else(|| "unnamed".into());
            return Ok(Some(Principal { name: format!("cert:{name}"), role: role.map(|i| i.role.clone()).unwrap_or_default() }));
        }
        Ok(None)
    }

    /// Calls refused for bad, missing, revoked or insufficient credentials in the minute
    /// before `now_ms` (the `access_denied_per_min` health series).
    pub fn denied_last_minute(&self, now_ms: i64) -> u32 {
        let d = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        d.iter().rev().take_while(|t| **t >= now_ms - 60_000).count() as u32
    }

    fn note_denial(&self, now_ms: i64) {
        let mut d = self.denials.lock().unwrap_or_else(|p| p.into_inner());
        while d.front().is_some_and(|t| *t < now_ms - 60_000) || d.len() >= DENIALS_MAX {
            d.pop_front();
        }
        d.push_back(now_ms);
    }

    fn rate_limited(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() > 10_000 && !b.contains_key(key) {
            // Bounded: forget idle principals (full buckets) first.
            b.retain(|_, r| r.available(now) < u64::from(self.limits.burst));
        }
        let bucket = b.entry(key.to_string()).or_insert_with(|| RateLimit::new(self.limits.rate_per_principal, self.limits.burst, now));
        if bucket.available(now) == 0 {
            return true;
        }
        bucket.take(1);
        false
    }

    fn record(&self, rec: AuditRecord) {
        if let Some(a) = &self.audit {
            if let Err(e) = a.append(rec) {
                metrics::counter!("vigil_audit_write_errors_total").increment(1);
                tracing::error!("audit log: {e}");
            }
        }
    }
}

/// What the guard decided before the handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Allow,
    /// Refuse with this status and reason.
    Deny(StatusCode, String),
}

/// The access decision, pure: `public` actions need no credentials; with `auth` off
/// everything declared is allowed; a route without an action is always denied.
pub fn decide(
    auth: bool,
    public: bool,
    who: &Result<Option<Principal>, &'static str>,
    action: Option<&str>,
    matched: bool,
    allows: impl Fn(&str, &str) -> bool,
) -> Decision {
    let unauth = |why: &str| Decision::Deny(StatusCode::UNAUTHORIZED, why.to_string());
    match (who, action) {
        (Err(why), _) => unauth(why),
        (_, None) if !matched => match who {
            Ok(None) if auth => unauth("credentials required"),
            _ => Decision::Allow,
        },
        (_, None) => Decision::Deny(StatusCode::FORBIDDEN, "this route declares no action: denied by default".into()),
        (_, Some(_)) if public || !auth => Decision::Allow,
        (Ok(None), Some(_)) => unauth("credentials required (bearer token or client certificate)"),
        (Ok(Some(p)), Some(a)) if allows(&p.role, a) => Decision::Allow,
        (Ok(Some(p)), Some(a)) if p.role.is_empty() => {
            Decision::Deny(StatusCode::FORBIDDEN, format!("{} has no role (map it in [[security.identities]]); `{a}` denied", p.name))
        }
        (Ok(Some(p)), Some(a)) => Decision::Deny(StatusCode::FORBIDDEN, format!("role `{}` does not allow `{a}`", p.role)),
    }
}

/// The guard of one listener: the shared [`Security`], this listener's route table, and
/// the actions it serves without credentials.
pub struct Guard {
    sec: Arc<Security>,
    table: RouteTable,
    public: HashSet<&'static str>,
}

impl Guard {
    /// A guard for the admin listener (`health.read` public).
    pub fn admin(sec: Arc<Security>, table: RouteTable) -> Self {
        Self { sec, table, public: HashSet::from(["health.read"]) }
    }

    /// A guard for the metrics listener (`metrics.read` public unless `metrics_auth`).
    pub fn metrics(sec: Arc<Security>, table: RouteTable) -> Self {
        let mut public = HashSet::from(["health.read"]);
        if !sec.metrics_auth {
            public.insert("metrics.read");
        }
        Self { sec, table, public }
    }

    /// Wrap `router` with the guard, the body limit and the request timeout.
    pub fn layer(self, router: Router) -> Router {
        let max_body = self.sec.limits.max_body.0 as usize;
        router.layer(axum::middleware::from_fn_with_state(Arc::new(self), guard)).layer(axum::extract::DefaultBodyLimit::max(max_body))
    }
}

fn deny(status: StatusCode, reason: &str) -> Response {
    // `message` and `error_code` as Confluent's registry answers, `error` as Vigil's API.
    let mut r = (status, axum::Json(serde_json::json!({ "error": reason, "message": reason, "error_code": status.as_u16() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vigil\""));
    }
    r
}

async fn guard(State(g): State<Arc<Guard>>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_default();
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    let action = matched.as_deref().and_then(|m| g.table.action(&method, m, &path));
    let bearer = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let who = g.sec.authenticate(bearer, req.extensions().get::<PeerCert>());
    let public = action.is_some_and(|a| g.public.contains(a));
    let decision = decide(g.sec.auth, public, &who, action, matched.is_some(), |r, a| g.sec.allows(r, a));
    let principal = who.clone().ok().flatten().unwrap_or_else(Principal::anonymous);
    let record = |status: StatusCode, allowed: bool, reason: String| AuditRecord {
        principal: principal.name.clone(),
        role: principal.role.clone(),
        source: source.clone(),
        action: action.unwrap_or("unknown").to_string(),
        method: method.to_string(),
        target: path.clone(),
        status: status.as_u16(),
        allowed,
        reason,
    };
    if let Decision::Deny(status, reason) = decision {
        let kind = if status == StatusCode::UNAUTHORIZED { "unauthenticated" } else { "forbidden" };
        metrics::counter!("vigil_admin_denied_total", "reason" => kind).increment(1);
        g.sec.note_denial(crate::now_ms());
        g.sec.record(record(status, false, reason.clone()));
        return deny(status, &reason);
    }
    let limit_key = if principal.name == "anonymous" {
        format!("anonymous@{}", source.rsplit_once(':').map(|(h, _)| h).unwrap_or(&source))
    } else {
        principal.name.clone()
    };
    // Open (no auth) means loopback only: local tools are not throttled.
    if g.sec.auth && !public && g.sec.rate_limited(&limit_key) {
        metrics::counter!("vigil_admin_denied_total", "reason" => "rate_limited").increment(1);
        return deny(StatusCode::TOO_MANY_REQUESTS, &format!("more than {} requests/s from {limit_key}", g.sec.limits.rate_per_principal));
    }
    req.extensions_mut().insert(principal.clone());
    let timeout = g.sec.limits.request_timeout;
    let resp = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => deny(StatusCode::SERVICE_UNAVAILABLE, &format!("request took longer than {timeout:?} (security.limits.request_timeout)")),
    };
    if action.is_some_and(is_mutating) {
        g.sec.record(record(resp.status(), true, String::new()));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: &str) -> Result<Option<Principal>, &'static str> {
        Ok(Some(Principal { name: "token:t".into(), role: role.into() }))
    }

    #[test]
    fn decisions() {
        let allows = |r: &str, a: &str| r == "admin" || (r == "viewer" && a.ends_with(".read"));
        let d = |auth, public, who: &Result<Option<Principal>, &'static str>, action, matched| decide(auth, public, who, action, matched, allows);
        assert_eq!(d(true, false, &p("admin"), Some("tokens.write"), true), Decision::Allow);
        assert!(matches!(d(true, false, &p("viewer"), Some("tokens.write"), true), Decision::Deny(StatusCode::FORBIDDEN, _)));
        assert!(matches!(d(true, false, &Ok(None), Some("node.read"), true), Decision::Deny(StatusCode::UNAUTHORIZED, _)));
        assert_eq!(d(true, true, &Ok(None), Some("health.read"), true), Decision::Allow);
        assert!(
            matches!(d(true, true, &Err("bad"), Some("health.read"), true), Decision::Deny(StatusCode::UNAUTHORIZED, _)),
            "a bad token is refused everywhere"
        );
        assert!(matches!(d(true, false, &p("admin"), None, true), Decision::Deny(StatusCode::FORBIDDEN, _)), "undeclared route");
        assert!(matches!(d(false, false, &Ok(None), None, true), Decision::Deny(StatusCode::FORBIDDEN, _)), "undeclared route, even open");
        assert_eq!(d(false, false, &Ok(None), Some("tokens.write"), true), Decision::Allow, "auth off");
        assert!(matches!(d(true, false, &Ok(None), None, false), Decision::Deny(StatusCode::UNAUTHORIZED, _)), "unknown path");
        assert_eq!(d(true, false, &p("viewer"), None, false), Decision::Allow, "unknown path, known caller: 404 from the fallback");
        assert!(matches!(d(true, false, &p(""), Some("node.read"), true), Decision::Deny(StatusCode::FORBIDDEN, _)));
    }

    /// A guarded listener with one declared route, one added without an action, and an
    /// admin token.
    fn guarded() -> (Router, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let tokens = Arc::new(TokenStore::new(vec![], dir.path().join("tokens.json")).unwrap());
        let token = tokens.create("root", "admin").unwrap();
        let cfg = SecurityConfig { auth: true, ..SecurityConfig::default() };
        let sec = Arc::new(Security::new(&cfg, tokens, None));
        let routes: Routes =
            Routes::new().get("/declared", "node.read", || async { "ok" }).undeclared_route("/forgotten", axum::routing::get(|| async { "oops" }));
        let (router, table) = routes.into_parts();
        (Guard::admin(sec, table).layer(router), token, dir)
    }

    fn call(app: &Router, path: &str, token: Option<&str>) -> u16 {
        use tower::ServiceExt;
        let mut req = axum::http::Request::builder().uri(path);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(app.clone().oneshot(req.body(axum::body::Body::empty()).unwrap())).unwrap().status().as_u16()
    }

    #[test]
    fn a_route_added_without_an_action_is_denied_even_to_admin() {
        let (app, token, _d) = guarded();
        assert_eq!(call(&app, "/declared", Some(&token)), 200);
        assert_eq!(call(&app, "/forgotten", Some(&token)), 403);
        assert_eq!(call(&app, "/declared", None), 401);
        assert_eq!(call(&app, "/declared", Some("vgl_forged")), 401);
        assert_eq!(call(&app, "/nowhere", None), 401, "unknown paths reveal nothing without credentials");
        assert_eq!(call(&app, "/nowhere", Some(&token)), 404);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        /// Arbitrary credentials and paths: 401, 403 or 404, never a panic or a 5xx.
        #[test]
        fn arbitrary_credentials_and_paths_are_refused_cleanly(auth in "[ -~]{0,60}", path in "/[a-z/%.]{0,20}") {
            let (app, _token, _d) = guarded();
            use tower::ServiceExt;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            for p in [path.as_str(), "/declared", "/forgotten"] {
                let Ok(req) = axum::http::Request::builder().uri(p).header("Authorization", auth.as_str()).body(axum::body::Body::empty()) else { continue };
                let status = rt.block_on(app.clone().oneshot(req)).unwrap().status().as_u16();
                proptest::prop_assert!(matches!(status, 401 | 403 | 404), "{p} with `{auth}`: {status}");
            }
        }
    }

    #[test]
    fn per_verb_actions_and_head() {
        let r: Routes =
            Routes::new()
                .post("/incidents/{id}/{verb}", Act::PerVerb(&[("ack", "incidents.ack")]), || async { "" })
                .get("/status", "node.read", || async { "" });
        let t = r.table();
        assert_eq!(t.action(&Method::POST, "/incidents/{id}/{verb}", "/incidents/3/ack"), Some("incidents.ack"));
        assert_eq!(t.action(&Method::POST, "/incidents/{id}/{verb}", "/incidents/3/delete"), None);
        assert_eq!(t.action(&Method::HEAD, "/status", "/status"), Some("node.read"));
        assert_eq!(t.action(&Method::DELETE, "/status", "/status"), None);
        assert_eq!(t.list().len(), 2);
    }
}
