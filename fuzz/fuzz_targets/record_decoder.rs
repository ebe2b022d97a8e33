//! The record decoder of every source format (plain JSON read in place, Avro and JSON Schema
//! behind Confluent framing): any bytes give a record or a reject, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vigil_actors::registry::{wire, Registry};
use vigil_actors::validate::SourceDecoder;
use vigil_config::{SourceConfig, SourceFormat};

const AVRO: &str = r#"{"type":"record","name":"Event","fields":[{"name":"user","type":"string"},{"name":"amount","type":"double"},{"name":"ts","type":"long"},{"name":"tags","type":{"type":"array","items":"string"}},{"name":"note","type":["null","string"],"default":null}]}"#;
const JSON_SCHEMA: &str = r#"{"type":"object","properties":{"user":{"type":"string"},"amount":{"type":"number"},"ts":{"type":"integer"}},"required":["user","amount","ts"]}"#;

fn registry() -> &'static (Registry, u32, u32) {
    static REG: OnceLock<(Registry, u32, u32)> = OnceLock::new();
    REG.get_or_init(|| {
        let reg = Registry::in_memory();
        let avro = reg.register_text("fuzz", "events-value", None, AVRO).map(|r| r.id).unwrap_or(1);
        let json = reg.register_text("fuzz", "json-value", Some("JSON"), JSON_SCHEMA).map(|r| r.id).unwrap_or(2);
        (reg, avro, json)
    })
}

fuzz_target!(|data: &[u8]| {
    let (reg, avro, json) = registry();
    let mut plain = SourceDecoder::new(&SourceConfig::new("events", SourceFormat::Json));
    let _ = plain.decode(data, reg);
    let mut a = SourceDecoder::new(&SourceConfig::new("events", SourceFormat::Avro));
    let _ = a.decode(data, reg);
    let _ = a.decode(&wire::frame(*avro, data), reg);
    let mut j = SourceDecoder::new(&SourceConfig::new("json", SourceFormat::JsonSchema));
    let _ = j.decode(&wire::frame(*json, data), reg);
});
