//! Security end to end, on real `vigil run` processes: TLS and mTLS on the listeners with
//! certificates from `vigil certs dev`, a certificate swap picked up on SIGHUP, every
//! route × every role × no credentials against an independent table of who may do what,
//! denials in the audit log, and `vigil audit verify` finding one changed byte in either
//! copy of the log.
mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// An HTTP agent trusting `ca` and presenting `client` (`<dir>/<name>.pem` + `-key.pem`).
fn agent(ca: Option<&Path>, client: Option<(&Path, &str)>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        tls = tls.root_certs(RootCerts::Specific(Arc::new(vec![Certificate::from_pem(&pem).unwrap()])));
    }
    if let Some((dir, name)) = client {
        let cert = Certificate::from_pem(&std::fs::read(dir.join(format!("{name}.pem"))).unwrap()).unwrap();
        let key = PrivateKey::from_pem(&std::fs::read(dir.join(format!("{name}-key.pem"))).unwrap()).unwrap();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(10))).tls_config(tls.build()).build().into()
}

/// `GET url`: the status, or the transport error's text.
fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> Result<u16, String> {
    let mut r = agent.get(url);
    if let Some(t) = token {
        r = r.header("Authorization", format!("Bearer {t}"));
    }
    // The body is read to its end so that the agent keeps the connection for the next call.
    let mut resp = r.call().map_err(|e| e.to_string())?;
    let _ = resp.body_mut().read_to_string();
    Ok(resp.status().as_u16())
}

fn certs(dir: &Path, out: &str, clients: &str) -> std::path::PathBuf {
    let path = dir.join(out);
    vigil_ok(&["certs", "dev", "--out", path.to_str().unwrap(), "--client", clients]);
    path
}

fn node_config(dir: &Path, broker: &str, security: &str) -> std::path::PathBuf {
    let data = dir.join("data");
    let c = NodeCfg { extra: security, ..NodeCfg::new(broker, &data, "sec") };
    write_config(dir, &c)
}

#[test]
fn tls_refuses_plaintext_and_certless_clients_and_reloads_certificates_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, bootstrap) = start_broker(2, &["events", "out", "dlq"]);
    let c1 = certs(dir.path(), "certs", "ops-console");
    let stranger = certs(dir.path(), "stranger", "ops-console");
    // The node reads its certificate from `live/`, which the test swaps later.
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    for f in ["node.pem", "node-key.pem", "ca.pem"] {
        std::fs::copy(c1.join(f), live.join(f)).unwrap();
    }
    let security = format!(
        r#"
[security]
auth = true
[security.tls]
cert = "{l}/node.pem"
key = "{l}/node-key.pem"
client_ca = "{l}/ca.pem"
[[security.identities]]
name = "ops-console"
role = "viewer"
"#,
        l = live.display()
    );
    let cfg = node_config(dir.path(), &bootstrap, &security);
    let mut node = start_node(&cfg);
    let trusting = agent(Some(&c1.join("ca.pem")), Some((&c1, "ops-console")));
    let status_url = format!("https://{}/status", node.admin);

    // Plaintext to the TLS port: no HTTP answer.
    let plain = get(&agent(None, None), &format!("http://{}/healthz", node.admin), None);
    assert!(plain.is_err(), "plaintext got an HTTP answer: {plain:?}");
    // TLS without a client certificate, or with one from another CA: refused in the handshake.
    assert!(get(&agent(Some(&c1.join("ca.pem")), None), &status_url, None).is_err(), "no client certificate was accepted");
    assert!(get(&agent(Some(&c1.join("ca.pem")), Some((&stranger, "ops-console"))), &status_url, None).is_err(), "a certificate of an unknown CA was accepted");
    // A valid certificate passes, on both listeners, and maps to its role.
    assert_eq!(get(&trusting, &status_url, None), Ok(200));
    assert_eq!(get(&trusting, &format!("https://{}/metrics", node.metrics), None), Ok(200));
    assert_eq!(get(&trusting, &format!("https://{}/security/tokens", node.admin), None), Ok(403), "viewer may not list tokens");
    // The CLI with the same credentials.
    let out = vigil_ok(&[
        "whoami",
        "--admin",
        &node.admin,
        "--cacert",
        c1.join("ca.pem").to_str().unwrap(),
        "--cert",
        c1.join("ops-console.pem").to_str().unwrap(),
        "--key",
        c1.join("ops-console-key.pem").to_str().unwrap(),
    ]);
    assert!(out.contains("cert:ops-console (role viewer"), "{out}");

    // Swap in a certificate of a new CA (which also signs clients now) and send SIGHUP.
    let c2 = certs(dir.path(), "certs2", "ops-console");
    for f in ["node.pem", "node-key.pem", "ca.pem"] {
        std::fs::copy(c2.join(f), live.join(f)).unwrap();
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(node.proc.child.id() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let renewed = agent(Some(&c2.join("ca.pem")), Some((&c2, "ops-console")));
    wait_for("the new certificate on new connections", Duration::from_secs(10), || (get(&renewed, &status_url, None) == Ok(200)).then_some(()));
    let fresh_old_trust = agent(Some(&c1.join("ca.pem")), Some((&c1, "ops-console")));
    assert!(get(&fresh_old_trust, &status_url, None).is_err(), "a new connection still got the old certificate");
    // The connection opened before the swap is still served (kept alive by the agent).
    assert_eq!(get(&trusting, &status_url, None), Ok(200), "an open connection was dropped by the reload");
    // A broken certificate file on reload keeps the one in use.
    std::fs::write(live.join("node.pem"), "not a certificate").unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(node.proc.child.id() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    let metrics_url = format!("https://{}/metrics", node.metrics);
    let renewed_metrics = agent(Some(&c2.join("ca.pem")), Some((&c2, "ops-console")));
    wait_for("the failed reload to be counted", Duration::from_secs(10), || {
        let text = renewed_metrics.get(&metrics_url).call().ok()?.body_mut().read_to_string().ok()?;
        (metric(&text, "vigil_tls_reloads_total{outcome=\"failed\"}")? >= 1.0).then_some(())
    });
    assert_eq!(get(&agent(Some(&c2.join("ca.pem")), Some((&c2, "ops-console"))), &status_url, None), Ok(200));
    assert!(node.proc.terminate(Duration::from_secs(30)).success());
}

/// Who may call what, written independently of the node's table: the least role allowed,
/// `None` for everyone (health), or a custom role's name.
fn expected_roles() -> BTreeMap<(&'static str, &'static str), &'static str> {
    let rows: &[(&str, &str, &str)] = &[
        ("GET", "/healthz", "anyone"),
        ("GET", "/readyz", "anyone"),
        ("GET", "/status", "viewer"),
        ("GET", "/tree", "viewer"),
        ("POST", "/chaos/panic/{stage}", "operator"),
        ("POST", "/chaos/bad-data", "operator"),
        ("GET", "/chaos/failpoints", "viewer"),
        ("DELETE", "/chaos/failpoints", "operator"),
        ("PUT", "/chaos/failpoints/{name}", "operator"),
        ("DELETE", "/chaos/failpoints/{name}", "operator"),
        ("GET", "/alerts", "viewer"),
        ("GET", "/alerts/rules", "viewer"),
        ("POST", "/alerts/reload", "admin"),
        ("GET", "/silences", "viewer"),
        ("POST", "/silences", "operator"),
        ("DELETE", "/silences/{id}", "operator"),
        ("GET", "/dq", "viewer"),
        ("GET", "/dq/history", "viewer"),
        ("GET", "/incidents", "viewer"),
        ("POST", "/incidents", "operator"),
        ("GET", "/incidents/report", "viewer"),
        ("GET", "/incidents/{id}", "viewer"),
        ("GET", "/incidents/{id}/postmortem", "viewer"),
        ("POST", "/incidents/{id}/ack", "operator"),
        ("POST", "/incidents/{id}/assign", "operator"),
        ("POST", "/incidents/{id}/note", "operator"),
        ("POST", "/incidents/{id}/mitigate", "operator"),
        ("POST", "/incidents/{id}/resolve", "operator"),
        ("GET", "/lineage/events", "viewer"),
        ("GET", "/lineage/output/{*output}", "viewer"),
        ("GET", "/lineage/record/{*record}", "viewer"),
        ("GET", "/lineage/status", "viewer"),
        ("GET", "/subjects", "viewer"),
        ("POST", "/subjects/{s}", "viewer"),
        ("DELETE", "/subjects/{s}", "admin"),
        ("GET", "/subjects/{s}/versions", "viewer"),
        ("POST", "/subjects/{s}/versions", "admin"),
        ("GET", "/subjects/{s}/versions/{v}", "viewer"),
        ("DELETE", "/subjects/{s}/versions/{v}", "admin"),
        ("GET", "/subjects/{s}/versions/{v}/schema", "viewer"),
        ("GET", "/subjects/{s}/versions/{v}/referencedby", "viewer"),
        ("GET", "/schemas/types", "viewer"),
        ("GET", "/schemas/ids/{id}", "viewer"),
        ("GET", "/schemas/ids/{id}/schema", "viewer"),
        ("GET", "/schemas/ids/{id}/versions", "viewer"),
        ("GET", "/schemas/ids/{id}/subjects", "viewer"),
        ("POST", "/compatibility/subjects/{s}/versions", "viewer"),
        ("POST", "/compatibility/subjects/{s}/versions/{v}", "viewer"),
        ("GET", "/config", "viewer"),
        ("PUT", "/config", "admin"),
        ("DELETE", "/config", "admin"),
        ("GET", "/config/{s}", "viewer"),
        ("PUT", "/config/{s}", "admin"),
        ("DELETE", "/config/{s}", "admin"),
        ("GET", "/mode", "viewer"),
        ("GET", "/vigil/schemas", "viewer"),
        ("GET", "/vigil/schemas/audit", "viewer"),
        ("POST", "/vigil/schemas/{s}/versions/{v}/deprecate", "operator"),
        ("POST", "/vigil/schemas/{s}/versions/{v}/activate", "operator"),
        ("POST", "/vigil/schemas/{s}/versions/{v}/archive", "admin"),
        ("GET", "/security/whoami", "viewer"),
        ("GET", "/security/routes", "viewer"),
        ("GET", "/security/tokens", "admin"),
        ("POST", "/security/tokens", "admin"),
        ("DELETE", "/security/tokens/{name}", "admin"),
        ("GET", "/audit", "auditor"),
    ];
    rows.iter().map(|(m, p, r)| ((*m, *p), *r)).collect()
}

/// Whether `role` may make a call whose least role is `least`.
fn may(role: &str, least: &str) -> bool {
    let rank = |r: &str| ["viewer", "operator", "admin"].iter().position(|x| *x == r);
    match (least, role) {
        ("anyone", _) => true,
        (_, "none") => false,
        // The custom role holds audit.read and nothing else; audit is also readable by viewers.
        ("auditor", r) => r == "auditor" || rank(r).is_some(),
        (_, "auditor") => false,
        (l, r) => rank(r) >= rank(l),
    }
}

fn concrete(path: &str) -> String {
    path.replace("{stage}", "no-such-stage")
        .replace("{id}", "999999")
        .replace("{s}", "sec-test")
        .replace("{v}", "1")
        .replace("{name}", "nobody")
        .replace("{*output}", "out/0/1")
        .replace("{*record}", "events/0/1")
}

#[test]
fn every_route_for_every_role_and_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, bootstrap) = start_broker(2, &["events", "out", "dlq"]);
    let tokens = dir.path().join("tokens.json");
    let security = format!(
        r#"
[security]
auth = true
token_file = "{}"
[security.roles.auditor]
actions = ["audit.read"]
"#,
        tokens.display()
    );
    let cfg = node_config(dir.path(), &bootstrap, &security);
    let mut creds: BTreeMap<&str, Option<String>> = BTreeMap::new();
    creds.insert("none", None);
    for role in ["viewer", "operator", "admin", "auditor"] {
        let t = vigil_ok(&[
            "token",
            "create",
            "--name",
            &format!("t-{role}"),
            "--role",
            role,
            "--token-file",
            tokens.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ]);
        creds.insert(role, Some(t.trim().to_string()));
    }
    let mut node = start_node(&cfg);
    let http = agent(None, None);
    let admin_token = creds["admin"].clone();

    // The node's table and this test's must name the same routes.
    let mut r = http
        .get(&format!("http://{}/security/routes", node.admin))
        .header("Authorization", format!("Bearer {}", admin_token.as_deref().unwrap()))
        .call()
        .unwrap();
    let table: serde_json::Value = r.body_mut().read_json().unwrap();
    let mut served: BTreeSet<(String, String)> = BTreeSet::new();
    for row in table.as_array().unwrap() {
        let (m, p) = (row["method"].as_str().unwrap(), row["path"].as_str().unwrap());
        match row["verbs"].as_object().filter(|v| !v.is_empty()) {
            // Actions chosen by the last segment: one route per verb.
            Some(verbs) => {
                let base = p.rsplit_once('/').unwrap().0;
                for verb in verbs.keys() {
                    served.insert((m.to_string(), format!("{base}/{verb}")));
                }
            }
            None => {
                assert!(row["action"].is_string(), "{row}");
                served.insert((m.to_string(), p.to_string()));
            }
        }
    }
    let expected: BTreeSet<(String, String)> = expected_roles().keys().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(served, expected, "the node's route table and this test's differ (a new route needs a row here)");

    let mut denied = Vec::new();
    for ((method, path), least) in expected_roles() {
        let url = format!("http://{}{}", node.admin, concrete(path));
        for (role, token) in &creds {
            let mut req = ureq::http::Request::builder().method(method).uri(&url);
            if let Some(t) = token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            let body = if method == "GET" || method == "DELETE" { String::new() } else { "{}".to_string() };
            let status = http.run(req.header("Content-Type", "application/json").body(body).unwrap()).unwrap().status().as_u16();
            let allowed = may(role, least);
            if allowed {
                assert!(status != 401 && status != 403, "{role} {method} {path}: expected to pass, got {status}");
            } else {
                let want = if token.is_none() { 401 } else { 403 };
                assert_eq!(status, want, "{role} {method} {path}: expected {want}");
                denied.push((if token.is_none() { "anonymous".to_string() } else { format!("token:t-{role}") }, method, concrete(path)));
            }
        }
    }
    assert!(denied.len() > 100, "the matrix denies many calls: {}", denied.len());

    // Every denial is in the audit log, with who, what and why.
    let mut r = http
        .get(&format!("http://{}/audit?limit=100000", node.admin))
        .header("Authorization", format!("Bearer {}", creds["auditor"].as_deref().unwrap()))
        .call()
        .unwrap();
    let log: Vec<serde_json::Value> = r.body_mut().read_json().unwrap();
    let logged: Vec<(String, String, String)> = log
        .iter()
        .filter(|e| e["allowed"] == false)
        .map(|e| (e["principal"].as_str().unwrap().to_string(), e["method"].as_str().unwrap().to_string(), e["target"].as_str().unwrap().to_string()))
        .collect();
    for (who, method, target) in &denied {
        assert!(logged.iter().any(|(p, m, t)| p == who && m == method && t == target), "denial of {who} {method} {target} is not in the audit log");
    }
    assert_eq!(logged.len(), denied.len(), "denials logged that the test did not make");
    // Allowed mutating calls are there too, with their outcome.
    assert!(log.iter().any(|e| e["allowed"] == true
        && e["principal"] == "token:t-admin"
        && e["method"] == "DELETE"
        && e["target"] == "/security/tokens/nobody"
        && e["status"] == 404));
    assert!(log.iter().all(|e| e["method"] != "GET" || e["allowed"] == false), "allowed reads are not audited");

    // A revoked token is refused from the next request on.
    vigil_ok(&["token", "revoke", "t-operator", "--token-file", tokens.to_str().unwrap()]);
    let status = get(&http, &format!("http://{}/status", node.admin), creds["operator"].as_deref());
    assert_eq!(status, Ok(401));
    assert!(node.proc.terminate(Duration::from_secs(30)).success());
}

fn verify(data: &Path) -> (bool, String) {
    let out = Command::new(BIN).args(["audit", "verify", "--data-dir", data.to_str().unwrap()]).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string())
}

#[test]
fn audit_verify_names_the_entry_with_one_changed_byte_in_the_store_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, bootstrap) = start_broker(2, &["events", "out", "dlq"]);
    let cfg = node_config(dir.path(), &bootstrap, "[security]\nauth = true\n");
    let data = dir.path().join("data");
    let token = vigil_ok(&["token", "create", "--name", "ops", "--role", "operator", "--config", cfg.to_str().unwrap()]).trim().to_string();
    let mut node = start_node(&cfg);
    let http = agent(None, None);
    for i in 0..6 {
        // Denied (no token), then allowed mutating calls.
        assert_eq!(get(&http, &format!("http://{}/status?n={i}", node.admin), None), Ok(401));
        let r = http
            .post(&format!("http://{}/silences", node.admin))
            .header("Authorization", format!("Bearer {token}"))
            .send_json(serde_json::json!({"matchers": [format!("alertname=A{i}")], "duration": "1h", "comment": "test", "created_by": "t"}));
        assert!(r.is_ok());
    }
    assert!(node.proc.terminate(Duration::from_secs(30)).success());
    let (ok, out) = verify(&data);
    assert!(ok, "untouched log: {out}");
    assert!(out.contains("12 entries"), "{out}");

    // One byte changed in the store copy (entry 5).
    let store = vigil_runtime::store::Store::open(&data).unwrap();
    let key = 5u64.to_be_bytes().to_vec();
    let original = store.get("audit", &key).unwrap().unwrap();
    let mut changed = original.clone();
    let at = String::from_utf8_lossy(&changed).find("/status").unwrap() + 2;
    changed[at] ^= 0x01;
    store.write_ops("audit", &[(key.clone(), Some(changed))]).unwrap();
    drop(store);
    let (ok, out) = verify(&data);
    assert!(!ok && out.contains("entry 5 in the store"), "{out}");
    let store = vigil_runtime::store::Store::open(&data).unwrap();
    store.write_ops("audit", &[(key, Some(original))]).unwrap();
    drop(store);
    assert!(verify(&data).0, "restored");

    // One byte changed in the JSON-lines copy (entry 8, line 8).
    let file = data.join("audit.jsonl");
    let mut bytes = std::fs::read(&file).unwrap();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let line8 = text.lines().take(7).map(|l| l.len() + 1).sum::<usize>();
    let at = line8 + text.lines().nth(7).unwrap().find("\"source\"").unwrap() + 12;
    bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(&file, bytes).unwrap();
    let (ok, out) = verify(&data);
    assert!(!ok && out.contains("entry 8 in") && out.contains("line 8"), "{out}");
}

#[test]
fn kafka_over_tls_end_to_end_with_no_secret_in_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), "certs", "vigil-admin");
    let (key_password, sasl_password) = (test_secrets()[0].clone(), test_secrets()[1].clone());
    let c = |f: &str| certs.join(f).display().to_string();
    let mut broker = Proc::spawn(
        "broker",
        &["broker", "--partitions", "2", "--topic", "events,out,dlq", "--tls-cert", &c("node.pem"), "--tls-key", &c("node-key.pem")],
        &[],
    );
    let bootstrap = broker.wait_line("bootstrap", Duration::from_secs(30), |l| l.starts_with("bootstrap: ")).trim_start_matches("bootstrap: ").to_string();

    // A plaintext client gets nowhere.
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let plain: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "plain").create().unwrap();
    assert!(plain.fetch_metadata(Some("events"), Duration::from_secs(3)).is_err(), "plaintext metadata over a TLS listener");

    let security = format!(
        r#"
[kafka.security]
protocol = "ssl"
ca = "{ca}"
cert = "{cert}"
key = "{key}"
key_password = "{key_password}"
"#,
        ca = c("ca.pem"),
        cert = c("vigil-admin.pem"),
        key = c("vigil-admin-key.pem"),
    );
    let cfg = node_config(dir.path(), &bootstrap, &security);
    let checked = vigil_ok(&["config", "check", cfg.to_str().unwrap(), "--json"]);
    let default = vigil_ok(&["config", "default"]);
    // A configuration with errors around a SASL password: the errors name fields, not values.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("[kafka]\nbootstrap = \"{bootstrap}\"\nproperties = {{ \"sasl.password\" = \"{sasl_password}\" }}\n[kafka.security]\nprotocol = \"sasl_ssl\"\nmechanism = \"PLAIN\"\npassword = \"{sasl_password}\"\nca = \"/nonexistent.pem\"\n"),
    )
    .unwrap();
    let out = Command::new(BIN).args(["config", "check", bad.to_str().unwrap()]).output().unwrap();
    let bad_check = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && bad_check.contains("kafka.properties.\"sasl.password\"") && bad_check.contains("kafka.security.ca"), "{bad_check}");

    // Records go in and windows come out through TLS, with the node's TLS client certificate.
    vigil_ok(&["gen", "--bootstrap", &bootstrap, "-c", cfg.to_str().unwrap(), "--topic", "events", "--count", "2000", "--seed", "7"]);
    let mut node = start_node(&cfg);
    let st = wait_for("2000 records read over TLS and windows written", Duration::from_secs(60), || {
        let s = status(&node.admin)?;
        (s["ingested"].as_u64()? >= 2000 && s["windows_out"].as_u64()? > 0).then_some(s)
    });
    let metrics = http_get(&node.metrics, "/metrics").unwrap();
    assert!(node.proc.terminate(Duration::from_secs(30)).success());
    while let Ok(l) = node.proc.lines.try_recv() {
        node.proc.seen.push(l);
    }
    let everything = [checked, default, bad_check, st.to_string(), metrics, node.proc.seen.join("\n")].join("\n");
    for s in test_secrets() {
        assert!(!everything.contains(&s), "a configured secret appears in an output");
    }
}

#[test]
fn forged_unsigned_replayed_and_unknown_producer_records_are_quarantined_and_raise_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, bootstrap) = start_broker(2, &["events", "out", "dlq", "vigil-quarantine"]);
    let key = test_secrets()[2].clone();
    let key_file = dir.path().join("pay-api.key");
    std::fs::write(&key_file, &key).unwrap();
    let wrong_file = dir.path().join("guess.key");
    std::fs::write(&wrong_file, "not-the-key").unwrap();
    let extra = r#"
[pipeline.sources.signing]
keys = { "pay-api" = { env = "VIGIL_TEST_SIGN_KEY" } }
max_skew = "5m"
replay_window = "10m"

[quality]
interval = "1s"
window = "10s"
"#;
    let data = dir.path().join("data");
    let cfg = write_config(dir.path(), &NodeCfg { extra, ..NodeCfg::new(&bootstrap, &data, "signed") });
    let gen = |seed: &str, count: &str, sign: Option<(&Path, &str)>| {
        let mut args = vec!["gen", "--bootstrap", &bootstrap, "--topic", "events", "--count", count, "--seed", seed];
        let file;
        if let Some((f, producer)) = sign {
            file = f.display().to_string();
            args.extend(["--sign-key-file", &file, "--producer", producer]);
        }
        vigil_ok(&args);
    };
    gen("1", "300", Some((&key_file, "pay-api"))); // authentic
    gen("2", "20", None); // unsigned
    gen("3", "20", Some((&wrong_file, "pay-api"))); // forged: another key
    gen("4", "20", Some((&key_file, "mallory"))); // a producer without a key here
    gen("1", "20", Some((&key_file, "pay-api"))); // the first 20 again: replays

    let mut node = start_node_with_env(&cfg, &[("VIGIL_TEST_SIGN_KEY", &key)]);
    let st = wait_for("all 380 records judged", Duration::from_secs(60), || {
        let s = status(&node.admin)?;
        (s["ingested"].as_u64()? >= 380 && s["validated"].as_u64()? + 80 >= 380).then_some(s)
    });
    assert_eq!((st["ingested"].as_u64(), st["validated"].as_u64(), st["dlq"].as_u64()), (Some(380), Some(300), Some(0)), "{st}");
    let q = read_topic_with(
        &bootstrap,
        "vigil-quarantine",
        2,
        Duration::from_secs(30),
        |m| m.len() >= 80,
        |m| format!("{}|{}", header(m, "vigil.dlq.reason").unwrap_or_default(), header(m, "vigil.quarantine.producer").unwrap_or_default()),
    );
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for v in q.values() {
        *by_reason.entry(v.clone()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> =
        [("security.unsigned|", 20), ("security.forged|pay-api", 20), ("security.unknown_producer|mallory", 20), ("security.replayed|pay-api", 20)]
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
    assert_eq!(by_reason, want);
    // The alert fires per reason, through the alerting rules.
    let firing = wait_for("SecurityQuarantine firing for each reason", Duration::from_secs(30), || {
        let alerts: serde_json::Value = serde_json::from_str(&http_get(&node.admin, "/alerts")?).ok()?;
        let reasons: BTreeSet<String> = alerts
            .as_array()?
            .iter()
            .filter(|a| a["labels"]["alertname"] == "SecurityQuarantine" && a["state"] == "firing")
            .filter_map(|a| a["labels"]["reason"].as_str().map(str::to_string))
            .collect();
        (reasons.len() == 4).then_some(reasons)
    });
    assert!(firing.contains("security.forged") && firing.contains("security.replayed"), "{firing:?}");
    let metrics = http_get(&node.metrics, "/metrics").unwrap();
    assert_eq!(metric(&metrics, r#"vigil_security_quarantined_total{source="events",reason="security.forged"}"#), Some(20.0));
    assert!(node.proc.terminate(Duration::from_secs(30)).success());
}
