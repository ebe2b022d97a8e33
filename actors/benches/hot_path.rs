//! Criterion benches of the per-record hot path, pure functions only: JSON reading, field
//! rules and extraction, a producer signature check, a window update per default
//! aggregation, and the checkpoint
//! encoding of changed windows. `cargo bench -p vigil-actors --bench hot_path`.
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use vigil_actors::analytics::engine::Aggregation;
use vigil_actors::analytics::spec::{Analytics, FieldTable, FieldVal};
use vigil_actors::generator::{EventGen, GenSpec};
use vigil_actors::validate::{Decoded, JsonFields, Rules};
use vigil_config::PipelineConfig;

/// 1,000 generated records (valid ones only) of the default embedded stream.
fn records() -> Vec<Vec<u8>> {
    let mut g = EventGen::new(GenSpec { seed: 7, users: 500, bad_ratio: 0.0, start_ms: 1_700_000_000_000, step_ms: 1 });
    (0..1000).map(|_| g.next_record().payload).collect()
}

fn hot_path(c: &mut Criterion) {
    let p = PipelineConfig::default();
    let (rules, an) = match Rules::compile(&p.fields) {
        Ok(r) => (r, Analytics::compile(&p)),
        Err(e) => panic!("default rules: {e:?}"),
    };
    let payloads = records();
    let mut g = c.benchmark_group("per_record");
    g.throughput(Throughput::Elements(payloads.len() as u64));
    g.bench_function("decode_json", |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(JsonFields::parse(p).is_ok());
            }
        })
    });
    g.bench_function("decode_validate_extract", |b| {
        b.iter_batched_ref(
            || FieldTable::new(an.fields.len()),
            |table| {
                for p in &payloads {
                    if let Ok(f) = JsonFields::parse(p) {
                        black_box(rules.apply_into(&Decoded::Fields(f), &an, table).is_ok());
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    // Producer authentication: the HMAC and the replay memory, per valid signed record
    // (fresh ids each iteration, so every record is new to the memory).
    let now = vigil_runtime::now_ms();
    let signed: Vec<(String, String)> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("e-7-{i}"), vigil_actors::signing::sign("bench", b"bench-key", format!("e-7-{i}").as_bytes(), b"user-001", p, now)))
        .collect();
    let mut round = 0u64;
    g.bench_function("verify_signature", |b| {
        b.iter_batched_ref(
            || {
                round += 1;
                vigil_actors::signing::Verifier::new([("bench".to_string(), b"bench-key".to_vec())].into(), 3_600_000, 3_600_000 + round as i64, 1_000_000)
            },
            |v| {
                for ((id, sig), p) in signed.iter().zip(&payloads) {
                    black_box(v.verify(Some(sig.as_bytes()), id.as_bytes(), b"user-001", p, now).is_ok());
                }
            },
            BatchSize::SmallInput,
        )
    });
    // The extracted rows every window benchmark reads.
    let mut table = FieldTable::new(an.fields.len());
    let mut times = Vec::new();
    for p in &payloads {
        if let Ok(f) = JsonFields::parse(p) {
            if let Ok(ts) = rules.apply_into(&Decoded::Fields(f), &an, &mut table) {
                times.push(ts);
            }
        }
    }
    g.throughput(Throughput::Elements(times.len() as u64));
    for spec in &an.aggs {
        g.bench_function(format!("window_update/{}", spec.name), |b| {
            b.iter_batched_ref(
                || Aggregation::new(spec.kind, spec.lateness_ms, spec.metrics.clone()),
                |agg| {
                    let (mut row, mut key, mut vals): (Vec<FieldVal<'_>>, String, Vec<_>) = (Vec::new(), String::new(), Vec::new());
                    for (i, ts) in times.iter().enumerate() {
                        table.row_into(i, &mut row);
                        if spec.accepts(&row) {
                            spec.key_into(&row, &mut key);
                            spec.values_into(&row, &mut vals);
                            black_box(agg.add(&key, *ts, &vals, |_| {}).is_ok());
                        }
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.bench_function("checkpoint_encode", |b| {
        b.iter_batched_ref(
            || {
                let mut aggs: Vec<Aggregation> = an.aggs.iter().map(|s| Aggregation::new(s.kind, s.lateness_ms, s.metrics.clone())).collect();
                let (mut row, mut key, mut vals): (Vec<FieldVal<'_>>, String, Vec<_>) = (Vec::new(), String::new(), Vec::new());
                for (i, ts) in times.iter().enumerate() {
                    table.row_into(i, &mut row);
                    for (agg, spec) in aggs.iter_mut().zip(&an.aggs) {
                        if spec.accepts(&row) {
                            spec.key_into(&row, &mut key);
                            spec.values_into(&row, &mut vals);
                            let _ = agg.add(&key, *ts, &vals, |_| {});
                        }
                    }
                }
                aggs
            },
            |aggs| {
                for a in aggs.iter_mut() {
                    black_box(a.take_changes().map(|c| c.len()).unwrap_or(0));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
