//! The embedded default's synthetic producer.
use super::R;
use crate::generator::{EventGen, GenSpec, Wire, HEADER_PRODUCER, PRODUCER_ID};
use crate::pipeline::{GenMsg, NodeCtx};
use crate::rate::RateLimit;
use ractor::{Actor, ActorRef};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil_runtime::kafka::{OutRecord, TrackedProducer};
/// The embedded default's synthetic producer, rate-limited, continuing its deterministic
/// stream across restarts.
#[derive(Clone, Copy)]
pub struct Generator;

/// Generator's state.
pub struct GeneratorState {
    ctx: Arc<NodeCtx>,
    gen: EventGen,
    producer: TrackedProducer,
    /// `generator.rate`; None when the rate is 0 (produce nothing). Holds at most one
    /// second of backlog, so a stalled broker cannot make it explode.
    pace: Option<RateLimit>,
    ticker: Option<ractor::concurrency::JoinHandle<()>>,
}

/// Event-time step for a generator running at `rate` records per second.
pub fn step_ms_for_rate(rate: u32) -> i64 {
    if rate == 0 {
        1
    } else {
        (1000 / i64::from(rate)).max(1)
    }
}

/// Produce one generated record to `topic`, encoded as `wire` says, with its id and the
/// producer id as headers, signed (`vigil.sig`) as `sign = (producer, key)` if given.
/// Returns the bytes produced (key, value and headers).
///
/// # Errors
/// [`vigil_runtime::Error`] if Kafka does not take it within `timeout`.
pub async fn produce_generated(
    producer: &TrackedProducer,
    topic: &str,
    r: &crate::generator::GenRecord,
    wire: &Wire,
    timeout: Duration,
    sign: Option<(&str, &[u8])>,
) -> vigil_runtime::Result<usize> {
    produce_record(producer, (topic, None), (&r.id, &r.key, &wire.encode(r)), timeout, sign).await
}

/// Produce one record `(id, key, value)` to `topic`, at `partition` or by key, as the
/// generators do: with its id and the producer id as headers, signed (`vigil.sig`) as
/// `sign = (producer, key)` if given. Returns the bytes produced (key, value and headers).
///
/// # Errors
/// [`vigil_runtime::Error`] if Kafka does not take it within `timeout`.
pub async fn produce_record(
    producer: &TrackedProducer,
    (topic, partition): (&str, Option<i32>),
    (id, key, payload): (&str, &str, &[u8]),
    timeout: Duration,
    sign: Option<(&str, &[u8])>,
) -> vigil_runtime::Result<usize> {
    let sig = sign.map(|(producer, k)| crate::signing::sign(producer, k, id.as_bytes(), key.as_bytes(), payload, vigil_runtime::now_ms()));
    let mut headers: Vec<(&str, &[u8])> = vec![(vigil_runtime::envelope::HEADER_RECORD_ID, id.as_bytes()), (HEADER_PRODUCER, PRODUCER_ID.as_bytes())];
    if let Some(s) = &sig {
        headers.push((crate::signing::HEADER, s.as_bytes()));
    }
    producer.send(&OutRecord { topic, partition, key: key.as_bytes(), payload, headers: &headers }, timeout).await?;
    Ok(key.len() + payload.len() + headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>())
}

impl Actor for Generator {
    type Msg = GenMsg;
    type State = GeneratorState;
    type Arguments = Arc<NodeCtx>;

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "generator"))]
    async fn pre_start(&self, myself: ActorRef<GenMsg>, ctx: Arc<NodeCtx>) -> R<GeneratorState> {
        let g = &ctx.config.generator;
        let mut gen = EventGen::new(GenSpec {
            seed: g.seed,
            users: g.users,
            bad_ratio: ctx.bad_ratio(),
            start_ms: ctx.generator_start_ms,
            step_ms: step_ms_for_rate(g.rate),
        });
        gen.skip_to(ctx.generator_position.load(Ordering::SeqCst));
        let producer = TrackedProducer::new(&ctx.bootstrap, &ctx.config.kafka)?;
        let pace = (g.rate > 0).then(|| RateLimit::new(g.rate, g.rate, Instant::now()).empty());
        let ticker = myself.send_interval(Duration::from_millis(50), || GenMsg::Tick);
        ctx.slots.generator.set(myself);
        Ok(GeneratorState { ctx, gen, producer, pace, ticker: Some(ticker) })
    }

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "generator"))]
    async fn handle(&self, _myself: ActorRef<GenMsg>, msg: GenMsg, st: &mut GeneratorState) -> R<()> {
        match msg {
            GenMsg::Tick => {
                let Some(pace) = &mut st.pace else { return Ok(()) };
                let due = pace.available(Instant::now());
                pace.take(due);
                let topic = st.ctx.config.pipeline.sources.first().map(|s| s.topic.clone()).unwrap_or_default();
                st.gen.set_bad_ratio(st.ctx.bad_ratio());
                for _ in 0..due {
                    let r = st.gen.next_record();
                    produce_generated(&st.producer, &topic, &r, &st.ctx.generator_wire, st.ctx.send_timeout(), None).await?;
                    st.ctx.generator_position.store(st.gen.position(), Ordering::SeqCst);
                }
            }
            GenMsg::Panic(m) => panic!("injected panic in generator: {m}"),
        }
        Ok(())
    }

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "generator"))]
    async fn post_stop(&self, _myself: ActorRef<GenMsg>, st: &mut GeneratorState) -> R<()> {
        if let Some(t) = st.ticker.take() {
            t.abort();
        }
        let _ = st.producer.flush(Duration::from_secs(5)).await;
        Ok(())
    }
}
