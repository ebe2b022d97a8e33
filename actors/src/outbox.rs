//! What leaves the node in the background: a bounded queue that drops its oldest item when
//! full, retries with exponential backoff, and JSON over HTTP. Alert receivers and the
//! OpenLineage export use them; neither ever makes the data path wait.
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// A bounded queue for one worker: beyond `max` items the oldest is dropped.
pub struct Outbox<T> {
    items: Mutex<VecDeque<T>>,
    wake: Notify,
    max: usize,
}

impl<T> Outbox<T> {
    /// An empty queue holding at most `max` (at least 1) items.
    pub fn new(max: usize) -> Self {
        Self { items: Mutex::new(VecDeque::new()), wake: Notify::new(), max: max.max(1) }
    }

    /// Append an item; returns how many old items were dropped to make room.
    pub fn push(&self, item: T) -> usize {
        let mut dropped = 0;
        if let Ok(mut items) = self.items.lock() {
            items.push_back(item);
            while items.len() > self.max {
                items.pop_front();
                dropped += 1;
            }
        }
        self.wake.notify_one();
        dropped
    }

    /// The next item, waiting for one.
    pub async fn next(&self) -> T {
        loop {
            if let Some(item) = self.items.lock().ok().and_then(|mut g| g.pop_front()) {
                return item;
            }
            self.wake.notified().await;
        }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How often and how patiently to retry.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Delay after the first failure; doubled after each further one.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Retry {
    /// Run `attempt` until it succeeds or the attempts are spent. Returns the attempts it
    /// took, or the last error.
    ///
    /// # Errors
    /// The last attempt's error.
    pub async fn run<F, Fut>(&self, mut attempt: F) -> Result<u32, String>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut delay = self.initial;
        let mut last = String::new();
        let attempts = self.attempts.max(1);
        for n in 1..=attempts {
            match attempt().await {
                Ok(()) => return Ok(n),
                Err(e) => last = e,
            }
            if n < attempts {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(self.max);
            }
        }
        Err(last)
    }
}

/// An HTTP agent whose requests give up after `timeout` and that reports every status.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build().into()
}

/// POST `body` as JSON to `url` (off the async workers); any 2xx is success.
///
/// # Errors
/// The transport error or the status, with the URL.
pub async fn post_json(agent: &ureq::Agent, url: &str, body: serde_json::Value) -> Result<(), String> {
    let (agent, url2) = (agent.clone(), url.to_string());
    let res = tokio::task::spawn_blocking(move || agent.post(&url2).send_json(&body).map(|r| r.status().as_u16()).map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    match res {
        Ok(code) if (200..300).contains(&code) => Ok(()),
        Ok(code) => Err(format!("{url} answered HTTP {code}")),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn queue_drops_the_oldest_and_retry_backs_off_then_gives_up() {
        let q = Outbox::new(2);
        assert_eq!(q.push(1), 0);
        assert_eq!(q.push(2), 0);
        assert_eq!(q.push(3), 1);
        assert_eq!((q.next().await, q.next().await, q.len()), (2, 3, 0));

        let r = Retry { attempts: 3, initial: Duration::from_millis(1), max: Duration::from_millis(2) };
        let calls = AtomicU32::new(0);
        let ok = r
            .run(|| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 1 {
                    Err("down".to_string())
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(ok, Ok(2));
        let err = r.run(|| async { Err::<(), _>("still down".to_string()) }).await;
        assert_eq!(err, Err("still down".into()));
    }
}
