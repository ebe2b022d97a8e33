//! Compatibility levels over schema histories, with Confluent's meaning: BACKWARD means
//! the new schema reads data written with the latest version, FORWARD that the latest
//! version reads data written with the new schema, FULL both; the `_TRANSITIVE` levels
//! check every previous version instead of only the latest.
use super::schema::{ParsedSchema, SchemaType};
use super::{avro_compat, json_compat};
use vigil_config::Compatibility;

/// Messages explaining why `reader` cannot read data written with `writer`; empty when it can.
pub fn can_read(reader: &ParsedSchema, writer: &ParsedSchema) -> Vec<String> {
    match (reader.kind(), reader.avro(), writer.avro()) {
        (SchemaType::Avro, Some(r), Some(w)) => avro_compat::check(r, w).into_iter().map(|i| format!("{} at {}: {}", i.kind, i.location, i.message)).collect(),
        (SchemaType::Json, None, None) if writer.kind() == SchemaType::Json => json_compat::check(reader.json(), writer.json()),
        _ => vec![format!("schema type changed from {} to {}", writer.kind(), reader.kind())],
    }
}

/// Check `new` against `previous` — `(version, schema)`, oldest first — at `level`.
/// Returns messages naming the version each problem is with; empty when compatible.
pub fn check(level: Compatibility, new: &ParsedSchema, previous: &[(u32, &ParsedSchema)]) -> Vec<String> {
    if level == Compatibility::None || previous.is_empty() {
        return Vec::new();
    }
    let against: &[(u32, &ParsedSchema)] = if level.transitive() { previous } else { &previous[previous.len() - 1..] };
    let mut out = Vec::new();
    for (version, old) in against.iter().rev() {
        if level.backward() {
            for m in can_read(new, old) {
                out.push(format!("new schema cannot read data written with version {version}: {m}"));
            }
        }
        if level.forward() {
            for m in can_read(old, new) {
                out.push(format!("version {version} cannot read data written with the new schema: {m}"));
            }
        }
    }
    out
}
