//! JSON Schema compatibility, modelled on Confluent Schema Registry's JSON Schema diff:
//! a reader schema can read a writer schema's data when every document valid under the
//! writer is valid under the reader. Changes are compared structurally and each is
//! compatible or not, with Confluent's content-model rules:
//!
//! - Open content model (`additionalProperties` absent or `true`): removing a property is
//!   compatible; adding one is not (old data may hold anything under that name), unless the
//!   new property accepts any value.
//! - Closed model (`additionalProperties: false`): adding an optional property is
//!   compatible, adding a required one (without a default) is not; removing one is not.
//! - Partially open (`additionalProperties` is a schema): an added or removed property is
//!   compatible when that schema and the property's schema agree.
//! - Types may widen (`integer → number`, a type added to a list), not narrow or change.
//!   Limits may loosen (`maxLength` up, `minimum` down, limit removed), not tighten or
//!   appear. `enum` may gain values, not lose them; `required` may lose names, not gain them.
//! - `anyOf`/`oneOf` may gain branches; `allOf` may lose them. Local `$ref`s are followed.
use serde_json::{Map, Value};

/// Keywords that do not constrain documents (annotations and containers).
const ANNOTATIONS: [&str; 16] = [
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "$schema",
    "$id",
    "id",
    "definitions",
    "$defs",
    "readOnly",
    "writeOnly",
    "deprecated",
    "format",
    "contentEncoding",
    "contentMediaType",
];

/// Keywords this module compares.
const HANDLED: [&str; 32] = [
    "dependencies",
    "dependentRequired",
    "dependentSchemas",
    "propertyNames",
    "type",
    "enum",
    "const",
    "maxLength",
    "minLength",
    "pattern",
    "maximum",
    "minimum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "multipleOf",
    "maxProperties",
    "minProperties",
    "maxItems",
    "minItems",
    "uniqueItems",
    "properties",
    "additionalProperties",
    "required",
    "patternProperties",
    "items",
    "additionalItems",
    "prefixItems",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "$ref",
];

const DEPTH_MAX: usize = 64;

/// Check whether `reader` accepts every document `writer` accepts; returns the
/// incompatible changes (`KIND at #/path`), empty when compatible.
pub fn check(reader: &Value, writer: &Value) -> Vec<String> {
    let mut c = Ctx { wroot: writer, rroot: reader, depth: 0, out: Vec::new() };
    c.compare(writer, reader, "#");
    c.out
}

struct Ctx<'a> {
    wroot: &'a Value,
    rroot: &'a Value,
    depth: usize,
    out: Vec<String>,
}

fn empty() -> &'static Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

/// Follow local `$ref`s (`#/definitions/x`, `#/$defs/x`, any JSON pointer) from `root`.
fn resolve<'a>(root: &'a Value, mut s: &'a Value) -> &'a Value {
    for _ in 0..32 {
        let Some(r) = s.get("$ref").and_then(Value::as_str) else { return s };
        let Some(ptr) = r.strip_prefix('#') else { return s };
        match root.pointer(ptr) {
            Some(t) => s = t,
            None => return s,
        }
    }
    s
}

/// Whether a schema accepts every document (`true`, `{}` or only annotations).
fn accepts_all(s: &Value) -> bool {
    match s {
        Value::Bool(b) => *b,
        Value::Object(m) => m.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

fn types(m: &Map<String, Value>) -> Option<Vec<String>> {
    match m.get("type")? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => Some(a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
        _ => None,
    }
}

fn num(m: &Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

/// Confluent's open content model: no `patternProperties`, `additionalProperties` absent
/// or `true`. (`additionalProperties: {}` is a schema: partially open.)
fn is_open(m: &Map<String, Value>) -> bool {
    m.get("patternProperties").and_then(Value::as_object).is_none_or(|p| p.is_empty())
        && matches!(m.get("additionalProperties"), None | Some(Value::Bool(true)))
}

/// The schema a partially open model gives an undeclared property: the first
/// `patternProperties` entry whose regex matches, else an `additionalProperties` schema.
fn partial_schema<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(pp) = m.get("patternProperties").and_then(Value::as_object) {
        for (pattern, schema) in pp {
            if regex::Regex::new(pattern).is_ok_and(|re| re.is_match(key)) {
                return Some(schema);
            }
        }
    }
    m.get("additionalProperties").filter(|v| v.is_object())
}

fn permits_additional(m: &Map<String, Value>) -> bool {
    m.get("additionalProperties") != Some(&Value::Bool(false))
}

fn string_set(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

impl Ctx<'_> {
    fn fail(&mut self, kind: &str, path: &str) {
        self.out.push(format!("{kind} at {path}"));
    }

    /// Whether `r` reads `w` without recording anything.
    fn silently(&mut self, w: &Value, r: &Value) -> bool {
        let saved = self.out.len();
        self.compare(w, r, "#");
        let ok = self.out.len() == saved;
        self.out.truncate(saved);
        ok
    }

    fn compare(&mut self, w: &Value, r: &Value, path: &str) {
        if self.depth >= DEPTH_MAX {
            return;
        }
        self.depth += 1;
        let (w, r) = (resolve(self.wroot, w), resolve(self.rroot, r));
        self.compare_resolved(w, r, path);
        self.depth -= 1;
    }

    fn compare_resolved(&mut self, w: &Value, r: &Value, path: &str) {
        if accepts_all(r) || w == &Value::Bool(false) {
            return;
        }
        if r == &Value::Bool(false) {
            return self.fail("SCHEMA_NARROWED_TO_FALSE", path);
        }
        let (Some(wm), Some(rm)) = (w.as_object().or(w.as_bool().map(|_| empty())), r.as_object()) else {
            return self.fail("SCHEMA_INVALID", path);
        };
        if self.combined(w, wm, rm, path) {
            return;
        }
        self.compare_type(wm, rm, path);
        for k in ["maxLength", "maximum", "exclusiveMaximum", "maxProperties", "maxItems"] {
            self.upper_bound(wm, rm, k, path);
        }
        for k in ["minLength", "minimum", "exclusiveMinimum", "minProperties", "minItems"] {
            self.lower_bound(wm, rm, k, path);
        }
        match (wm.get("pattern"), rm.get("pattern")) {
            (None, Some(_)) => self.fail("PATTERN_ADDED", path),
            (Some(a), Some(b)) if a != b => self.fail("PATTERN_CHANGED", path),
            _ => {}
        }
        match (num(wm, "multipleOf"), num(rm, "multipleOf")) {
            (None, Some(_)) => self.fail("MULTIPLE_OF_ADDED", path),
            (Some(a), Some(b)) if b != 0.0 && ((a / b).round() - a / b).abs() > 1e-9 => self.fail("MULTIPLE_OF_CHANGED", path),
            _ => {}
        }
        if rm.get("uniqueItems") == Some(&Value::Bool(true)) && wm.get("uniqueItems") != Some(&Value::Bool(true)) {
            self.fail("UNIQUE_ITEMS_ADDED", path);
        }
        self.compare_enum(wm, rm, path);
        if let Some(n) = rm.get("not") {
            if wm.get("not") != Some(n) {
                self.fail("NOT_TYPE_CHANGED", path);
            }
        }
        self.compare_object(wm, rm, path);
        self.compare_array(wm, rm, path);
        for (k, v) in rm {
            let known = HANDLED.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str());
            if !known && wm.get(k) != Some(v) {
                self.fail(&format!("KEYWORD_CHANGED({k})"), path);
            }
        }
    }

    /// `anyOf` / `oneOf` / `allOf`. Returns true when it decided the whole comparison.
    fn combined(&mut self, w: &Value, wm: &Map<String, Value>, rm: &Map<String, Value>, path: &str) -> bool {
        let sum = |m: &Map<String, Value>| -> Option<(&'static str, Vec<Value>)> {
            for k in ["anyOf", "oneOf"] {
                if let Some(Value::Array(a)) = m.get(k) {
                    return Some((k, a.clone()));
                }
            }
            None
        };
        let rest = |m: &Map<String, Value>| -> Value {
            Value::Object(m.iter().filter(|(k, _)| !matches!(k.as_str(), "anyOf" | "oneOf" | "allOf")).map(|(k, v)| (k.clone(), v.clone())).collect())
        };
        if let Some(Value::Array(rall)) = rm.get("allOf") {
            // Every reader conjunct must accept the writer's documents.
            for (i, rb) in rall.iter().enumerate() {
                if !self.silently(w, rb) {
                    self.fail("PRODUCT_TYPE_EXTENDED", &format!("{path}/allOf/{i}"));
                }
            }
            let rrest = rest(rm);
            self.compare(w, &rrest, path);
            return true;
        }
        if let Some(Value::Array(wall)) = wm.get("allOf") {
            // The writer's documents satisfy every conjunct: enough that the reader reads one.
            let r = Value::Object(rm.clone());
            let wrest = rest(wm);
            if !(wall.iter().any(|wb| self.silently(wb, &r)) || self.silently(&wrest, &r)) {
                self.fail("PRODUCT_TYPE_NARROWED", path);
            }
            return true;
        }
        match (sum(wm), sum(rm)) {
            (None, None) => false,
            (Some((wk, wb)), Some((rk, rb))) => {
                if wk == "anyOf" && rk == "oneOf" {
                    self.fail("COMBINED_TYPE_CHANGED", path);
                }
                for (i, w) in wb.iter().enumerate() {
                    if !rb.iter().any(|r| self.silently(w, r)) {
                        self.fail("SUM_TYPE_NARROWED", &format!("{path}/{wk}/{i}"));
                    }
                }
                let (wr, rr) = (rest(wm), rest(rm));
                self.compare(&wr, &rr, path);
                true
            }
            (None, Some((rk, rb))) => {
                let wv = w.clone();
                if !rb.iter().any(|r| self.silently(&wv, r)) {
                    self.fail("SUM_TYPE_NARROWED", &format!("{path}/{rk}"));
                }
                let rr = rest(rm);
                self.compare(&wv, &rr, path);
                true
            }
            (Some((wk, wb)), None) => {
                let r = Value::Object(rm.clone());
                for (i, w) in wb.iter().enumerate() {
                    if !self.silently(w, &r) {
                        self.fail("SUM_TYPE_NARROWED", &format!("{path}/{wk}/{i}"));
                    }
                }
                true
            }
        }
    }

    fn compare_type(&mut self, wm: &Map<String, Value>, rm: &Map<String, Value>, path: &str) {
        let Some(rt) = types(rm) else { return };
        let Some(wt) = types(wm) else { return self.fail("TYPE_NARROWED", path) };
        let covered = |t: &String| rt.contains(t) || (t == "integer" && rt.iter().any(|x| x == "number"));
        if wt.iter().all(covered) {
            return;
        }
        let narrowed = rt.iter().all(|t| wt.contains(t) || (t == "integer" && wt.iter().any(|x| x == "number")));
        self.fail(if narrowed { "TYPE_NARROWED" } else { "TYPE_CHANGED" }, path);
    }

    fn upper_bound(&mut self, wm: &Map<String, Value>, rm: &Map<String, Value>, k: &str, path: &str) {
        match (num(wm, k), num(rm, k)) {
            (None, Some(_)) => self.fail(&format!("{}_ADDED", screaming(k)), path),
            (Some(a), Some(b)) if b < a => self.fail(&format!("{}_DECREASED", screaming(k)), path),
            _ => {}
        }
    }

    fn lower_bound(&mut self, wm: &Map<String, Value>, rm: &Map<String, Value>, k: &str, path: &str) {
        match (num(wm, k), num(rm, k)) {
            (None, Some(_)) => self.fail(&format!("{}_ADDED", screaming(k)), path),
            (Some(a), Some(b)) if b > a => self.fail(&format!("{}_INCREASED", screaming(k)), path),
            _ => {}
        }
    }

    fn compare_enum(&mut self, wm: &Map<String, Value>, rm: &Map<String, Value>, path: &str) {
        let allowed = |m: &Map<String, Value>| -> Option<Vec<Value>> {
            match (m.get("enum"), m.get("const")) {
                (Some(Value::Array(a)), _) => Some(a.clone()),
                (_, Some(c)) => Some(vec![c.clone()]),
                _ => None,
            }
        };
        match (allowed(wm), allowed(rm)) {
            (None, Some(_)) => self.fail(if rm.contains_key("enum") { "ENUM_ADDED" } else { "CONST_ADDED" }, path),
            (Some(w), Some(r)) if !w.iter().all(|v| r.contains(v)) => self.fail("ENUM_ARRAY_NARROWED", path),
            _ => {}
        }
    }

    fn compare_object(&mut self, wm: &Map<String, Value>, rm: &Map<String, Value>, path: &str) {
        let wp = wm.get("properties").and_then(Value::as_object).unwrap_or(empty());
        let rp = rm.get("properties").and_then(Value::as_object).unwrap_or(empty());
        let wreq = wm.get("required").map(string_set).unwrap_or_default();
        let rreq = rm.get("required").map(string_set).unwrap_or_default();
        let has_default = |name: &str| rp.get(name).is_some_and(|s| s.get("default").is_some());
        // Required-ness of properties both declare.
        for name in wp.keys().filter(|k| rp.contains_key(*k)) {
            if rreq.contains(&name.as_str()) && !wreq.contains(&name.as_str()) && !has_default(name) {
                self.fail("REQUIRED_ATTRIBUTE_ADDED", &format!("{path}/required/{name}"));
            }
        }
        for (k, ws) in wp {
            let p = format!("{path}/properties/{k}");
            match rp.get(k) {
                Some(rs) => self.compare(ws, rs, &p),
                // Removing: only the reader's content model matters.
                None if is_open(rm) => {}
                None => match partial_schema(rm, k) {
                    Some(ap) => {
                        if !self.silently(ws, ap) {
                            self.fail("PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", &p);
                        }
                    }
                    None if ws == &Value::Bool(false) => {}
                    None => self.fail("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", &p),
                },
            }
        }
        for (k, rs) in rp {
            if wp.contains_key(k) {
                continue;
            }
            // Adding: only the writer's content model matters.
            let p = format!("{path}/properties/{k}");
            if is_open(wm) {
                if !accepts_all(rs) {
                    self.fail("PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL", &p);
                }
                continue;
            }
            if let Some(ap) = partial_schema(wm, k) {
                if !self.silently(ap, rs) {
                    self.fail("PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", &p);
                }
            }
            if rreq.contains(&k.as_str()) && !has_default(k) {
                self.fail("REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL", &p);
            }
        }
        let p = format!("{path}/additionalProperties");
        let (wa, ra) = (wm.get("additionalProperties").filter(|v| v.is_object()), rm.get("additionalProperties").filter(|v| v.is_object()));
        if permits_additional(wm) != permits_additional(rm) {
            if !permits_additional(rm) {
                self.fail("ADDITIONAL_PROPERTIES_REMOVED", &p);
            }
        } else {
            match (wa, ra) {
                (None, Some(r)) if permits_additional(wm) && !accepts_all(r) => self.fail("ADDITIONAL_PROPERTIES_NARROWED", &p),
                (Some(w), Some(r)) => {
                    let (w, r) = (w.clone(), r.clone());
                    self.compare(&w, &r, &p);
                }
                _ => {}
            }
        }
        let wpp = wm.get("patternProperties").and_then(Value::as_object).unwrap_or(empty());
        let rpp = rm.get("patternProperties").and_then(Value::as_object).unwrap_or(empty());
        for (k, rs) in rpp {
            if let Some(ws) = wpp.get(k) {
                self.compare(ws, rs, &format!("{path}/patternProperties/{k}"));
            }
        }
        // Dependencies: narrowing or removing is compatible, adding or extending is not.
        for k in ["dependencies", "dependentRequired", "dependentSchemas"] {
            let (wd, rd) = (wm.get(k).and_then(Value::as_object).unwrap_or(empty()), rm.get(k).and_then(Value::as_object).unwrap_or(empty()));
            for (prop, r) in rd {
                let p = format!("{path}/{k}/{prop}");
                match (wd.get(prop), r.is_array()) {
                    (None, true) => self.fail("DEPENDENCY_ARRAY_ADDED", &p),
                    (None, false) => self.fail("DEPENDENCY_SCHEMA_ADDED", &p),
                    (Some(w), true) => {
                        let (ws, rs) = (string_set(w), string_set(r));
                        if !rs.iter().all(|x| ws.contains(x)) {
                            self.fail("DEPENDENCY_ARRAY_EXTENDED", &p);
                        }
                    }
                    (Some(w), false) => {
                        let (w, r) = (w.clone(), r.clone());
                        self.compare(&w, &r, &p);
                    }
                }
            }
        }
        if let Some(v) = rm.get("propertyNames") {
            if wm.get("propertyNames") != Some(v) {
                self.fail("PROPERTY_NAMES_CHANGED", path);
            }
        }
    }

    fn compare_array(&mut self, wm: &Map<String, Value>, rm: &Map<String, Value>, path: &str) {
        let tuple = |m: &Map<String, Value>| -> Option<Vec<Value>> {
            match (m.get("prefixItems"), m.get("items")) {
                (Some(Value::Array(a)), _) | (None, Some(Value::Array(a))) => Some(a.clone()),
                _ => None,
            }
        };
        let single = |m: &Map<String, Value>| -> Option<Value> {
            match m.get("items") {
                Some(v @ (Value::Object(_) | Value::Bool(_))) => Some(v.clone()),
                _ => None,
            }
        };
        match (single(wm), single(rm)) {
            (Some(w), Some(r)) => self.compare(&w, &r, &format!("{path}/items")),
            (None, Some(r)) if tuple(wm).is_none() && !accepts_all(&r) => self.fail("ITEMS_NARROWED", &format!("{path}/items")),
            _ => {}
        }
        if let (Some(wt), Some(rt)) = (tuple(wm), tuple(rm)) {
            for (i, (w, r)) in wt.iter().zip(rt.iter()).enumerate() {
                self.compare(w, r, &format!("{path}/items/{i}"));
            }
            let w_extra_allowed = wm.get("additionalItems") != Some(&Value::Bool(false)) && wm.get("items") != Some(&Value::Bool(false));
            if rt.len() > wt.len() && w_extra_allowed {
                self.fail("ITEM_ADDED_TO_OPEN_CONTENT_MODEL", &format!("{path}/items"));
            }
            let r_extra_closed = rm.get("additionalItems") == Some(&Value::Bool(false)) || rm.get("items") == Some(&Value::Bool(false));
            if wt.len() > rt.len() && r_extra_closed {
                self.fail("ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL", &format!("{path}/items"));
            }
        }
    }
}

/// `maxLength` → `MAX_LENGTH`.
fn screaming(k: &str) -> String {
    let mut out = String::new();
    for c in k.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refs_are_followed() {
        let w = json!({"definitions": {"n": {"type": "integer"}}, "type": "object", "properties": {"a": {"$ref": "#/definitions/n"}}});
        let r = json!({"$defs": {"n": {"type": "number"}}, "type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}});
        assert!(check(&r, &w).is_empty());
        assert_eq!(check(&w, &r), vec!["TYPE_NARROWED at #/properties/a"]);
    }

    #[test]
    fn screaming_case() {
        assert_eq!(screaming("maxLength"), "MAX_LENGTH");
        assert_eq!(screaming("exclusiveMinimum"), "EXCLUSIVE_MINIMUM");
    }
}
