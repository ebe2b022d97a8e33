//! Delivery of notifications: one worker per receiver with a bounded queue (the oldest
//! waiting notification is dropped beyond `alerts.queue_max`), retries with exponential
//! backoff, and a health flag per receiver — a receiver whose last notification failed
//! every attempt is *down* and raises `receiver_up < 1`.
use super::notify::{alertmanager_payload, kafka_records, webhook_payload, Notification};
use crate::outbox::{post_json, Outbox, Retry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vigil_config::{AlertsConfig, ReceiverConfig, ReceiverKind};
use vigil_runtime::kafka::{OutRecord, TrackedProducer};

/// Where notifications leave the node.
pub struct Receivers {
    queues: BTreeMap<String, Arc<Outbox<Notification>>>,
    health: Arc<Mutex<BTreeMap<String, bool>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    max: usize,
}

/// What a worker needs to deliver.
#[derive(Clone)]
struct Target {
    cfg: ReceiverConfig,
    agent: ureq::Agent,
    producer: TrackedProducer,
    external_url: String,
    resend_ms: i64,
    retry: Retry,
    timeout: Duration,
}

impl Target {
    async fn deliver(&self, n: &Notification) -> Result<(), String> {
        match self.cfg.kind {
            ReceiverKind::Log => {
                for a in &n.alerts {
                    let status = if a.state == super::engine::AlertState::Firing { "firing" } else { "resolved" };
                    let summary = a.annotations.get("summary").map(String::as_str).unwrap_or("");
                    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    tracing::warn!(receiver = %n.receiver, status, alertname = %a.rule, labels = %labels.join(","), "alert: {summary}");
                }
                Ok(())
            }
            ReceiverKind::Webhook => post_json(&self.agent, &self.cfg.url, webhook_payload(n, &self.external_url)).await,
            ReceiverKind::Alertmanager => {
                let url = format!("{}/api/v2/alerts", self.cfg.url.trim_end_matches('/'));
                post_json(&self.agent, &url, alertmanager_payload(n, &self.external_url, vigil_runtime::now_ms(), self.resend_ms)).await
            }
            ReceiverKind::Kafka => {
                for (key, value) in kafka_records(n, &self.external_url) {
                    let payload = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
                    let rec = OutRecord { topic: &self.cfg.topic, partition: None, key: key.as_bytes(), payload: &payload, headers: &[] };
                    self.producer.send(&rec, self.timeout).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }
    }
}

async fn work(target: Target, q: Arc<Outbox<Notification>>, health: Arc<Mutex<BTreeMap<String, bool>>>) {
    let name = target.cfg.name.clone();
    loop {
        let n = q.next().await;
        let up = match target.retry.run(|| target.deliver(&n)).await {
            Ok(attempts) => {
                metrics::counter!("vigil_alert_notifications_total", "receiver" => name.clone(), "outcome" => "sent").increment(1);
                if attempts > 1 {
                    tracing::info!(receiver = %name, attempts, "notification delivered after retries");
                }
                true
            }
            Err(e) => {
                metrics::counter!("vigil_alert_notifications_total", "receiver" => name.clone(), "outcome" => "failed").increment(1);
                tracing::error!(receiver = %name, attempts = target.retry.attempts, error = %e, "notification failed after every retry; receiver marked down");
                false
            }
        };
        metrics::gauge!("vigil_alert_receiver_up", "receiver" => name.clone()).set(if up { 1.0 } else { 0.0 });
        if let Ok(mut h) = health.lock() {
            h.insert(name.clone(), up);
        }
    }
}

impl Receivers {
    /// Start one worker per receiver (and `log`).
    pub fn start(cfg: &AlertsConfig, producer: TrackedProducer, external_url: String) -> Self {
        let agent = crate::outbox::agent(cfg.request_timeout);
        let mut all = cfg.receivers.clone();
        if !all.iter().any(|r| r.name == "log") {
            all.push(ReceiverConfig { name: "log".into(), kind: ReceiverKind::Log, url: String::new(), topic: String::new() });
        }
        let health = Arc::new(Mutex::new(BTreeMap::new()));
        let (mut queues, mut tasks) = (BTreeMap::new(), Vec::new());
        for r in all {
            let q = Arc::new(Outbox::new(cfg.queue_max));
            let target = Target {
                cfg: r.clone(),
                agent: agent.clone(),
                producer: producer.clone(),
                external_url: external_url.clone(),
                resend_ms: cfg.resend_interval.as_millis() as i64,
                retry: Retry { attempts: cfg.retry_attempts.max(1), initial: cfg.retry_initial, max: cfg.retry_max },
                timeout: cfg.request_timeout,
            };
            metrics::counter!("vigil_alert_notifications_total", "receiver" => r.name.clone(), "outcome" => "failed").increment(0);
            metrics::counter!("vigil_alert_notifications_total", "receiver" => r.name.clone(), "outcome" => "dropped").increment(0);
            metrics::gauge!("vigil_alert_receiver_up", "receiver" => r.name.clone()).set(1.0);
            tasks.push(tokio::spawn(work(target, q.clone(), health.clone())));
            queues.insert(r.name, q);
        }
        Self { queues, health, tasks, max: cfg.queue_max.max(1) }
    }

    /// Queue a notification; beyond the bound the oldest waiting one is dropped (counted).
    pub fn enqueue(&self, n: Notification) {
        let Some(q) = self.queues.get(&n.receiver) else {
            tracing::error!(receiver = %n.receiver, "no such receiver");
            return;
        };
        let receiver = n.receiver.clone();
        let dropped = q.push(n);
        if dropped > 0 {
            metrics::counter!("vigil_alert_notifications_total", "receiver" => receiver.clone(), "outcome" => "dropped").increment(dropped as u64);
            tracing::warn!(receiver = %receiver, queue_max = self.max, "notification queue full: dropped the oldest");
        }
    }

    /// Per receiver: whether its last notification got through (true until one fails).
    pub fn health(&self) -> BTreeMap<String, bool> {
        let h = self.health.lock().map(|g| g.clone()).unwrap_or_default();
        self.queues.keys().map(|k| (k.clone(), h.get(k).copied().unwrap_or(true))).collect()
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
