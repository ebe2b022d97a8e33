//! Strategy, restart-type, intensity and shutdown-order tests against real ractor actors.
use super::*;
use std::collections::HashMap;

type Log = Arc<Mutex<Vec<String>>>;
type Refs = Arc<Mutex<HashMap<String, ActorRef<TestMsg>>>>;

#[derive(Clone)]
struct TestWorker;

enum TestMsg {
    Panic,
    Stop,
}

impl Actor for TestWorker {
    type Msg = TestMsg;
    type State = (String, Log);
    type Arguments = (String, Log, Refs);

    async fn pre_start(&self, myself: ActorRef<TestMsg>, (name, log, refs): Self::Arguments) -> std::result::Result<Self::State, ActorProcessingErr> {
        log.lock().unwrap().push(format!("start {name}"));
        refs.lock().unwrap().insert(name.clone(), myself);
        Ok((name, log))
    }

    async fn handle(&self, myself: ActorRef<TestMsg>, msg: TestMsg, _state: &mut Self::State) -> std::result::Result<(), ActorProcessingErr> {
        match msg {
            TestMsg::Panic => panic!("boom"),
            TestMsg::Stop => myself.stop(None),
        }
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<TestMsg>, (name, log): &mut Self::State) -> std::result::Result<(), ActorProcessingErr> {
        log.lock().unwrap().push(format!("stop {name}"));
        Ok(())
    }
}

struct Fixture {
    log: Log,
    refs: Refs,
}

impl Fixture {
    fn new() -> Self {
        Self { log: Arc::default(), refs: Arc::default() }
    }

    fn child(&self, name: &str, restart: Restart) -> ChildSpec {
        let (log, refs, n) = (self.log.clone(), self.refs.clone(), name.to_string());
        ChildSpec::worker(name, restart, Duration::from_secs(2), TestWorker, move || (n.clone(), log.clone(), refs.clone()))
    }

    fn spec(&self, name: &str, strategy: Strategy, max_restarts: u32, children: Vec<ChildSpec>) -> SupervisorSpec {
        SupervisorSpec {
            name: name.into(),
            strategy,
            intensity: Intensity { max_restarts, window: Duration::from_secs(30) },
            backoff: Backoff { initial: Duration::from_millis(1), max: Duration::from_millis(5), jitter: 0.25 },
            children,
            events: None,
        }
    }

    fn send(&self, name: &str, msg: TestMsg) {
        let r = self.refs.lock().unwrap().get(name).cloned().expect("child ref");
        r.send_message(msg).expect("send");
    }

    fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// Poll `cond` until it holds or the deadline passes.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn restarts_of(root: &RootHandle, path: &[&str]) -> (u64, ChildStatus) {
    let mut node = root.inspect(Duration::from_secs(2)).await.unwrap();
    for p in path {
        node = node.children.into_iter().find(|c| c.name == *p).expect("child in tree");
    }
    (node.restarts, node.status)
}

async fn wait_restarts(root: &RootHandle, path: &[&str], n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (r, s) = restarts_of(root, path).await;
        if r >= n && s == ChildStatus::Running {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {path:?} to restart {n} times (at {r}, {s:?})");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn one_for_one_restarts_only_the_failed_child() {
    let f = Fixture::new();
    let kids = vec![f.child("a", Restart::Permanent), f.child("b", Restart::Permanent), f.child("c", Restart::Permanent)];
    let root = start_root(f.spec("root", Strategy::OneForOne, 5, kids)).await.unwrap();
    assert_eq!(f.take_log(), ["start a", "start b", "start c"]);
    f.send("b", TestMsg::Panic);
    wait_restarts(&root, &["b"], 1).await;
    assert_eq!(f.take_log(), ["start b"]);
    assert_eq!(restarts_of(&root, &["a"]).await.0, 0);
    assert_eq!(restarts_of(&root, &["c"]).await.0, 0);
    root.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn one_for_all_restarts_every_child_stopping_others_in_reverse() {
    let f = Fixture::new();
    let kids = vec![f.child("a", Restart::Permanent), f.child("b", Restart::Permanent), f.child("c", Restart::Permanent)];
    let root = start_root(f.spec("root", Strategy::OneForAll, 5, kids)).await.unwrap();
    f.take_log();
    f.send("b", TestMsg::Panic);
    wait_restarts(&root, &["c"], 1).await;
    wait_restarts(&root, &["a"], 1).await;
    assert_eq!(f.take_log(), ["stop c", "stop a", "start a", "start b", "start c"]);
    root.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn rest_for_one_restarts_failed_and_later_children() {
    let f = Fixture::new();
    let kids = vec![f.child("a", Restart::Permanent), f.child("b", Restart::Permanent), f.child("c", Restart::Permanent)];
    let root = start_root(f.spec("root", Strategy::RestForOne, 5, kids)).await.unwrap();
    f.take_log();
    f.send("b", TestMsg::Panic);
    wait_restarts(&root, &["c"], 1).await;
    assert_eq!(f.take_log(), ["stop c", "start b", "start c"]);
    assert_eq!(restarts_of(&root, &["a"]).await.0, 0);
    root.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn transient_restarts_on_failure_but_not_on_normal_exit() {
    let f = Fixture::new();
    let root = start_root(f.spec("root", Strategy::OneForOne, 5, vec![f.child("t", Restart::Transient)])).await.unwrap();
    f.send("t", TestMsg::Panic);
    wait_restarts(&root, &["t"], 1).await;
    f.take_log();
    f.send("t", TestMsg::Stop);
    wait_until("t stopped", || f.log.lock().unwrap().contains(&"stop t".to_string())).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let (r, s) = restarts_of(&root, &["t"]).await;
        if s == ChildStatus::Stopped {
            assert_eq!(r, 1);
            break;
        }
        assert!(Instant::now() < deadline, "transient child not marked stopped: {s:?}");
    }
    assert_eq!(f.take_log(), ["stop t"]);
    root.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn temporary_child_is_never_restarted() {
    let f = Fixture::new();
    let kids = vec![f.child("tmp", Restart::Temporary), f.child("p", Restart::Permanent)];
    let root = start_root(f.spec("root", Strategy::OneForAll, 5, kids)).await.unwrap();
    f.send("tmp", TestMsg::Panic);
    let deadline = Instant::now() + Duration::from_secs(5);
    while restarts_of(&root, &["tmp"]).await.1 != ChildStatus::Stopped {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A later one_for_all restart triggered by a permanent sibling does not revive it.
    f.send("p", TestMsg::Panic);
    wait_restarts(&root, &["p"], 1).await;
    let (r, s) = restarts_of(&root, &["tmp"]).await;
    assert_eq!((r, s), (0, ChildStatus::Stopped));
    root.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn exceeding_intensity_escalates_to_parent() {
    let f = Fixture::new();
    let inner = f.spec("inner", Strategy::OneForOne, 2, vec![f.child("w", Restart::Permanent)]);
    let outer = f.spec("outer", Strategy::OneForOne, 5, vec![inner.child(Restart::Permanent, Duration::from_secs(2))]);
    let root = start_root(outer).await.unwrap();
    for n in 1..=2 {
        f.send("w", TestMsg::Panic);
        wait_restarts(&root, &["inner", "w"], n).await;
    }
    // The third failure within the window exceeds max_restarts = 2: inner gives up and
    // the outer supervisor restarts it (with a fresh `w`).
    f.send("w", TestMsg::Panic);
    wait_restarts(&root, &["inner"], 1).await;
    let (r, s) = restarts_of(&root, &["inner", "w"]).await;
    assert_eq!((r, s), (0, ChildStatus::Running), "fresh child under restarted supervisor");
    root.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn root_escalation_is_reported_as_failure() {
    let f = Fixture::new();
    let mut root = start_root(f.spec("root", Strategy::OneForOne, 0, vec![f.child("w", Restart::Permanent)])).await.unwrap();
    f.send("w", TestMsg::Panic);
    let res = tokio::time::timeout(Duration::from_secs(10), root.wait()).await.expect("root exits");
    let reason = res.unwrap_err();
    assert!(reason.contains("restart intensity exceeded"), "{reason}");
}

#[tokio::test]
async fn shutdown_stops_children_in_reverse_order() {
    let f = Fixture::new();
    let inner = f.spec("inner", Strategy::OneForOne, 2, vec![f.child("x", Restart::Permanent), f.child("y", Restart::Permanent)]);
    let kids = vec![f.child("a", Restart::Permanent), inner.child(Restart::Permanent, Duration::from_secs(2)), f.child("c", Restart::Permanent)];
    let root = start_root(f.spec("root", Strategy::OneForOne, 5, kids)).await.unwrap();
    assert_eq!(f.take_log(), ["start a", "start x", "start y", "start c"]);
    root.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(f.take_log(), ["stop c", "stop y", "stop x", "stop a"]);
}

#[tokio::test]
async fn tree_snapshot_renders_names_and_restarts() {
    let f = Fixture::new();
    let inner = f.spec("pipeline", Strategy::RestForOne, 2, vec![f.child("ingest", Restart::Permanent)]);
    let root = start_root(f.spec("root", Strategy::OneForOne, 5, vec![inner.child(Restart::Permanent, Duration::from_secs(2))])).await.unwrap();
    f.send("ingest", TestMsg::Panic);
    wait_restarts(&root, &["pipeline", "ingest"], 1).await;
    let text = root.inspect(Duration::from_secs(2)).await.unwrap().render();
    assert!(text.contains("root [supervisor one_for_one]"), "{text}");
    assert!(text.contains("pipeline [supervisor rest_for_one, permanent] running restarts=0"), "{text}");
    assert!(text.contains("ingest [worker, permanent] running restarts=1"), "{text}");
    root.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[test]
fn backoff_doubles_and_is_capped() {
    let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1), jitter: 0.0 };
    assert_eq!(b.delay(0), Duration::from_millis(100));
    assert_eq!(b.delay(2), Duration::from_millis(400));
    assert_eq!(b.delay(10), Duration::from_secs(1));
    let j = Backoff { jitter: 0.25, ..b };
    for _ in 0..100 {
        let d = j.delay(1);
        assert!(d >= Duration::from_millis(150) && d <= Duration::from_millis(250), "{d:?}");
    }
}
