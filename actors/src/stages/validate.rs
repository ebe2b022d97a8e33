//! Validate: decodes each record once (plain JSON, or Confluent-framed Avro / JSON Schema
//! through the registry), applies the field rules, and sends failures to the DLQ with a
//! reason and the schema subject/version. Counts records per schema version.
use super::R;
use crate::analytics::spec::FieldTable;
use crate::lineage::record::DeadLetter;
use crate::pipeline::{key_shard, NodeCtx, ProcessMsg, Record, Rejection, Route, Valid, ValidateMsg};
use crate::quality::dedup::DuplicateDetector;
use crate::quality::tracker::BatchQuality;
use crate::signing::SigReject;
use crate::validate::{DecodeResult, Decoded, Reject, Scalar, SchemaInfo, SourceDecoder};
use crate::Error;
use ractor::{Actor, ActorRef};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;
use vigil_runtime::envelope::{EnvelopeRef, PartitionBatch};
use vigil_runtime::failpoints::StagePoint;
use vigil_runtime::stats::Stage;

/// Validate stage.
#[derive(Clone, Copy)]
pub struct Validate;

/// Validate's state: one decoder per source (each caches its schema resolutions), and the
/// data-quality bookkeeping when `quality.enabled`.
pub struct ValidateState {
    ctx: Arc<NodeCtx>,
    /// This shard's index.
    shard: usize,
    decoders: Vec<SourceDecoder>,
    by_topic: HashMap<String, usize>,
    quality: Option<QualityProbe>,
    /// Checkpoint the records passing now are committed in.
    epoch: u64,
    /// Records dead-lettered since the last barrier, for lineage (when `lineage.enabled`).
    rejects: Vec<DeadLetter>,
    /// Fault injection (`stage.validate`, `stage.validate-<i>`), once per batch.
    fault: StagePoint,
    /// Field text per valid record in the last batch: the next batch's table starts with
    /// room for as much, instead of growing record by record.
    text_per_row: usize,
}

/// What Validate measures for data quality: duplicate ids and missing fields.
struct QualityProbe {
    dedup: DuplicateDetector,
    /// Fields whose completeness is measured: the rule fields, the event time, then the fields aggregations read.
    watched: Vec<String>,
}

/// A record's id as its producer signed it (the `vigil.id` header; empty without one).
fn record_id<'a>(env: &EnvelopeRef<'a>) -> &'a [u8] {
    env.header(vigil_runtime::envelope::HEADER_RECORD_ID).unwrap_or_default()
}

/// The verdict on one record: its event time (fields appended to the batch's table), or why
/// it was rejected; with the schema it was read with.
type Verdict = Result<(i64, Option<SchemaInfo>), (Reject, Option<SchemaInfo>)>;

/// One judged record: batch and index within it, verdict, and index of its quality report.
type Judged = (u32, u32, Verdict, usize);

/// Why a record failed its signature check (and the producer it claimed), if it did.
type SigVerdict = Option<(SigReject, Option<String>)>;

impl ValidateState {
    /// Producer authentication, per partition batch (empty where the source is not signed):
    /// every signature is checked without a lock, then the authentic ids against each
    /// source's replay memory (shared by the Validate shards) under one lock for the whole
    /// batch, in batch order. Locking per partition batch made the shards contend dozens of
    /// times a batch.
    fn check_signatures(&self, batches: &[PartitionBatch]) -> Vec<Vec<SigVerdict>> {
        let ctx = &self.ctx;
        if ctx.verifiers.iter().all(Option::is_none) {
            return Vec::new();
        }
        let now_ms = vigil_runtime::now_ms();
        // The signed source of each partition batch: its index and its verifier.
        let sources: Vec<Option<(usize, &crate::signing::Verifier)>> = batches
            .iter()
            .map(|pb| {
                let i = *self.by_topic.get(&pb.source.topic)?;
                Some((i, ctx.verifiers.get(i)?.as_ref()?))
            })
            .collect();
        let authentic: Vec<Option<Vec<_>>> = batches
            .iter()
            .zip(&sources)
            .map(|(pb, source)| {
                let (_, v) = (*source)?;
                Some(
                    pb.iter()
                        .map(|env| v.authenticate(env.header(crate::signing::HEADER), record_id(&env), env.key().unwrap_or_default(), env.payload(), now_ms))
                        .collect(),
                )
            })
            .collect();
        let mut memories: Vec<Option<std::sync::MutexGuard<'_, crate::signing::ReplayGuard>>> = ctx.verifiers.iter().map(|_| None).collect();
        batches
            .iter()
            .zip(sources.into_iter().zip(authentic))
            .map(|(pb, source)| match source {
                (Some((i, v)), Some(authentic)) => match memories.get_mut(i) {
                    Some(slot) => {
                        let memory = slot.get_or_insert_with(|| v.replay_memory());
                        pb.iter().zip(authentic).map(|(env, a)| a.and_then(|p| memory.admit(p, record_id(&env), now_ms)).err()).collect()
                    }
                    None => Vec::new(),
                },
                _ => Vec::new(),
            })
            .collect()
    }

    /// Decode and check every record of a batch (no awaits: may run in `block_in_place`),
    /// appending the fields of the valid ones to `fields` in order.
    /// Reports `qual` is indexed by: one per source, one for unconfigured topics.
    fn judge(&mut self, batches: &[PartitionBatch], fields: &mut FieldTable, qual: &mut [BatchQuality]) -> crate::Result<Vec<Judged>> {
        let ctx = self.ctx.clone();
        let mut out = Vec::with_capacity(batches.iter().map(PartitionBatch::len).sum());
        let mut signatures = self.check_signatures(batches).into_iter();
        // One allocation for every plain JSON record's fields, handed back after each.
        let mut buf = Vec::new();
        for (bi, pb) in batches.iter().enumerate() {
            let idx = self.by_topic.get(&pb.source.topic).copied();
            let qi = idx.unwrap_or(self.decoders.len());
            let mut rejected = signatures.next().unwrap_or_default().into_iter();
            for (ri, env) in pb.iter().enumerate() {
                let forged = rejected.next().flatten();
                let decoded: DecodeResult<'_> = match (forged, idx.and_then(|i| self.decoders.get_mut(i))) {
                    (Some((r, producer)), _) => Err((Reject::Security { code: r.code(), detail: r.to_string(), producer }, None)),
                    (None, Some(d)) => d.decode_reusing(env.payload(), ctx.resolver.as_ref(), &mut buf).map_err(Error::Registry)?,
                    (None, None) => Err((Reject::BadFraming(format!("topic `{}` is not a configured source", pb.source.topic)), None)),
                };
                if let (Some(p), Some(q)) = (&mut self.quality, qual.get_mut(qi)) {
                    q.records += 1;
                    q.duplicates += u64::from(p.dedup.check_and_insert(env.id().as_bytes()));
                    if let Ok((rec, _)) = &decoded {
                        q.decoded += 1;
                        for f in &p.watched {
                            if matches!(rec.get(f), None | Some(Scalar::Null)) {
                                *q.missing.entry(f.clone()).or_default() += 1;
                            }
                        }
                    }
                }
                let verdict = decoded.and_then(|(rec, info)| {
                    let judged = ctx.rules.apply_into(&rec, &ctx.analytics, fields);
                    if let Decoded::Fields(f) = rec {
                        buf = f.into_buffer();
                    }
                    match judged {
                        Ok(ts) => Ok((ts, info)),
                        Err(r) => Err((r, info)),
                    }
                });
                out.push((bi as u32, ri as u32, verdict, qi));
            }
        }
        Ok(out)
    }
}

impl Actor for Validate {
    type Msg = ValidateMsg;
    type State = ValidateState;
    type Arguments = (Arc<NodeCtx>, usize);

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "validate", shard))]
    async fn pre_start(&self, myself: ActorRef<ValidateMsg>, (ctx, shard): (Arc<NodeCtx>, usize)) -> R<ValidateState> {
        ctx.slots.validate.get(shard).set(myself);
        let sources = &ctx.config.pipeline.sources;
        let decoders = sources.iter().map(SourceDecoder::new).collect();
        let by_topic = sources.iter().enumerate().map(|(i, s)| (s.topic.clone(), i)).collect();
        let q = &ctx.config.quality;
        let quality = q.enabled.then(|| {
            let an = &ctx.analytics;
            let mut watched: Vec<String> = ctx.config.pipeline.fields.iter().map(|f| f.name.clone()).collect();
            for f in std::iter::once(&an.time_field).chain(&an.fields) {
                if !watched.contains(f) {
                    watched.push(f.clone());
                }
            }
            QualityProbe { dedup: DuplicateDetector::new(q.dedup_capacity, q.dedup_fp_rate), watched }
        });
        let epoch = ctx.current_epoch();
        let fault = StagePoint::new("validate", &crate::pipeline::shard_name("validate", shard, ctx.slots.validate.len()));
        Ok(ValidateState { ctx, shard, decoders, by_topic, quality, epoch, rejects: Vec::new(), fault, text_per_row: 0 })
    }

    #[tracing::instrument(name = "stage", skip_all, fields(stage = "validate", shard = st.shard))]
    async fn handle(&self, _myself: ActorRef<ValidateMsg>, msg: ValidateMsg, st: &mut ValidateState) -> R<()> {
        let ctx = st.ctx.clone();
        match msg {
            // Each Validate shard introduces the partitions to its Process shard of the same index.
            ValidateMsg::Assign(tps) => ctx.slots.process.get(st.shard).send("process", ProcessMsg::Assign(tps))?,
            ValidateMsg::Batch { credit, batches } => {
                st.fault.eval();
                let started = Instant::now();
                let mut qual: Vec<BatchQuality> = match &st.quality {
                    Some(p) => {
                        let missing: BTreeMap<String, u64> = p.watched.iter().map(|f| (f.clone(), 0)).collect();
                        let mut topics: Vec<String> = ctx.config.pipeline.sources.iter().map(|s| s.topic.clone()).collect();
                        topics.push("(unconfigured)".into());
                        topics.into_iter().map(|source| BatchQuality { source, missing: missing.clone(), ..BatchQuality::default() }).collect()
                    }
                    None => Vec::new(),
                };
                // An external registry answers over HTTP on a cache miss: keep that off the async workers.
                let rows = batches.iter().map(PartitionBatch::len).sum::<usize>();
                let mut fields = FieldTable::with_capacity(ctx.analytics.fields.len(), rows, rows.saturating_mul(st.text_per_row));
                let judged = if ctx.resolver_blocks {
                    tokio::task::block_in_place(|| st.judge(&batches, &mut fields, &mut qual))?
                } else {
                    st.judge(&batches, &mut fields, &mut qual)?
                };
                if fields.rows() > 0 {
                    st.text_per_row = fields.text_len().div_ceil(fields.rows());
                }
                let now_ms = vigil_runtime::now_ms();
                // Freshness is sampled: at most ~64 values per batch feed the quantile sketch.
                let stride = (judged.len() / 64).max(1);
                let mut valid_seen = 0usize;
                let mut records = Vec::with_capacity(judged.len());
                let mut usage: BTreeMap<(Arc<str>, u32), u64> = BTreeMap::new();
                let mut deprecated: BTreeMap<(Arc<str>, u32), u64> = BTreeMap::new();
                let mut failures: BTreeMap<String, u64> = BTreeMap::new();
                for (batch, index, verdict, qi) in judged {
                    let q = qual.get_mut(qi);
                    match verdict {
                        Ok((ts, info)) => {
                            let schema = info.as_ref().and_then(|i| Some((i.subject.clone(), i.version?)));
                            if let Some(q) = q {
                                q.valid += 1;
                                q.event_time = crate::quality::tracker::span(q.event_time, Some((ts, ts)));
                                if valid_seen % stride == 0 {
                                    q.freshness_ms.push((now_ms - ts).max(0) as f64);
                                }
                                valid_seen += 1;
                                if let Some(SchemaInfo { subject, version: Some(version), .. }) = &info {
                                    *q.versions.entry((subject.to_string(), *version)).or_default() += 1;
                                }
                            }
                            if let Some(SchemaInfo { subject, version: Some(version), deprecated: dep, .. }) = info {
                                if dep {
                                    *deprecated.entry((subject.clone(), version)).or_default() += 1;
                                }
                                *usage.entry((subject, version)).or_default() += 1;
                            }
                            records.push(Record { batch, index, ts, schema });
                        }
                        Err((r, info)) => {
                            let Some(envelope) = batches.get(batch as usize).and_then(|b| b.get(index as usize)) else { continue };
                            let code = r.code();
                            let detail = r.to_string();
                            // Failed authentication goes to the security quarantine, naming the claimed producer.
                            let (to, producer) = match &r {
                                Reject::Security { producer, .. } => {
                                    metrics::counter!("vigil_security_quarantined_total", "source" => envelope.source().topic.clone(), "reason" => code.clone()).increment(1);
                                    (Some(ctx.config.pipeline.quarantine_topic.as_str()), Some(producer.as_deref().unwrap_or("")))
                                }
                                _ => (None, None),
                            };
                            let extra: Vec<(&str, &[u8])> = producer.map(|p| ("vigil.quarantine.producer", p.as_bytes())).into_iter().collect();
                            let why = Rejection { stage: "validate", code: &code, detail: &detail, schema: info.as_ref(), epoch: st.epoch, to, extra: &extra };
                            ctx.send_to_dlq(envelope, why).await?;
                            if ctx.config.lineage.enabled {
                                st.rejects.push(DeadLetter::new(
                                    envelope.source(),
                                    envelope.offset(),
                                    &envelope.id(),
                                    "validate",
                                    &code,
                                    &detail,
                                    ctx.config.lineage.detail_max,
                                ));
                            }
                            if let Some(q) = q {
                                *q.dlq.entry(code.clone()).or_default() += 1;
                            }
                            *failures.entry(code).or_default() += 1;
                        }
                    }
                }
                for ((subject, version), n) in &usage {
                    metrics::counter!("vigil_schema_records_total", "subject" => subject.to_string(), "version" => version.to_string()).increment(*n);
                }
                for ((subject, version), n) in &deprecated {
                    metrics::counter!("vigil_deprecated_schema_records_total", "subject" => subject.to_string(), "version" => version.to_string())
                        .increment(*n);
                }
                for (reason, n) in failures {
                    metrics::counter!("vigil_validation_failures_total", "reason" => reason).increment(n);
                }
                if let Some(reg) = &ctx.registry {
                    reg.record_usage(&usage, vigil_runtime::now_ms());
                }
                for q in qual.into_iter().filter(|q| q.records > 0) {
                    ctx.report_quality(q);
                }
                ctx.stats.add(Stage::Validate, records.len() as u64);
                metrics::histogram!("vigil_stage_batch_seconds", "stage" => "validate").record(started.elapsed().as_secs_f64());
                let maxima = batch_maxima(&batches, &records);
                let valid = Arc::new(Valid { batches, records, fields, maxima });
                let from = st.shard;
                for (j, route) in route(&ctx, &valid).into_iter().enumerate() {
                    let msg = ProcessMsg::Records { from, credit: credit.clone(), valid: valid.clone(), route };
                    ctx.slots.process.get(j).send("process", msg)?;
                }
            }
            ValidateMsg::Barrier(mut b) => {
                st.epoch = b.id + 1;
                // Every Process shard gets the barrier; this shard's dead letters go with shard 0's copy.
                for j in 1..ctx.slots.process.len() {
                    ctx.slots.process.get(j).send("process", ProcessMsg::Barrier { from: st.shard, barrier: b.clone() })?;
                }
                b.lineage.rejects.append(&mut st.rejects);
                ctx.slots.process.get(0).send("process", ProcessMsg::Barrier { from: st.shard, barrier: b })?;
            }
            ValidateMsg::Panic(m) => panic!("injected panic in validate: {m}"),
        }
        Ok(())
    }
}

/// Largest event time of the valid records per partition batch.
fn batch_maxima(batches: &[PartitionBatch], records: &[Record]) -> Vec<(vigil_runtime::envelope::TopicPartition, i64)> {
    let mut out: Vec<(u32, i64)> = Vec::new();
    for r in records {
        match out.last_mut() {
            Some((b, max)) if *b == r.batch => *max = (*max).max(r.ts),
            _ => out.push((r.batch, r.ts)),
        }
    }
    out.into_iter().filter_map(|(b, max)| Some((batches.get(b as usize)?.source.clone(), max))).collect()
}

/// Which records (and aggregations) each Process shard handles: with one shard all of
/// them; otherwise each `(record, aggregation)` goes to the shard owning its group key.
/// Every shard gets a route, even an empty one: it still observes the batch's watermarks.
fn route(ctx: &NodeCtx, valid: &Valid) -> Vec<Route> {
    let n = ctx.slots.process.len();
    let an = &ctx.analytics;
    if n == 1 || an.aggs.is_empty() {
        return (0..n).map(|j| if j == 0 { Route::All } else { Route::Pairs(Vec::new()) }).collect();
    }
    let mut pairs: Vec<Vec<(u32, u32)>> = (0..n).map(|_| Vec::with_capacity(valid.records.len() * an.aggs.len() / n + 1)).collect();
    let (mut fields, mut key) = (Vec::with_capacity(an.fields.len()), String::new());
    for row in 0..valid.records.len() {
        valid.fields.row_into(row, &mut fields);
        for (a, spec) in an.aggs.iter().enumerate() {
            spec.key_into(&fields, &mut key);
            pairs[key_shard(&spec.name, &key, n)].push((row as u32, a as u32));
        }
    }
    pairs.into_iter().map(Route::Pairs).collect()
}
