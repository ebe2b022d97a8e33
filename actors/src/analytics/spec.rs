//! Aggregations compiled from configuration: the record fields the pipeline extracts (one
//! table for all aggregations), filters evaluated over them, group keys and metric inputs.
//! Pure.
use super::engine::WindowKind;
use super::metrics::{Metric, Val};
use std::collections::BTreeMap;
use std::sync::Arc;
use vigil_config::{AggregationConfig, CmpOp, FilterExpr, Lit, PipelineConfig, SinkFormat, WindowSpec};

/// A field value extracted from a validated record, borrowed from its [`FieldTable`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldVal<'a> {
    /// Absent or null.
    Missing,
    /// A number.
    Num(f64),
    /// Text.
    Str(&'a str),
    /// A boolean.
    Bool(bool),
}

impl<'a> FieldVal<'a> {
    /// As a metric input (booleans count as missing for numeric metrics, as text for distinct).
    pub fn val(self) -> Val<'a> {
        match self {
            FieldVal::Missing => Val::Missing,
            FieldVal::Num(x) => Val::Num(x),
            FieldVal::Str(s) => Val::Str(s),
            FieldVal::Bool(true) => Val::Str("true"),
            FieldVal::Bool(false) => Val::Str("false"),
        }
    }

    /// Text form in group keys (`null` when missing; integers without `.0`).
    pub fn push_text(&self, out: &mut String) {
        use std::fmt::Write;
        match self {
            FieldVal::Missing => out.push_str("null"),
            FieldVal::Num(x) if x.fract() == 0.0 && x.abs() < 1e15 => {
                let _ = write!(out, "{}", *x as i64);
            }
            FieldVal::Num(x) => {
                let _ = write!(out, "{x}");
            }
            FieldVal::Str(s) => out.push_str(s),
            FieldVal::Bool(b) => {
                let _ = write!(out, "{b}");
            }
        }
    }

    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        match self {
            FieldVal::Missing => serde_json::Value::Null,
            FieldVal::Num(x) => serde_json::json!(x),
            FieldVal::Str(s) => serde_json::json!(s),
            FieldVal::Bool(b) => serde_json::json!(b),
        }
    }
}

/// One stored field value: text lives in the table's shared buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Missing,
    Num(f64),
    Str(u32, u32),
    Bool(bool),
}

/// The extracted fields of a batch of records, row by row ([`Analytics::fields`] order), with
/// all their text in one buffer: extracting a record's fields allocates nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTable {
    width: usize,
    rows: usize,
    slots: Vec<Slot>,
    text: String,
}

impl FieldTable {
    /// An empty table of rows of `width` fields.
    pub fn new(width: usize) -> Self {
        Self { width, ..Self::default() }
    }

    /// An empty table of rows of `width` fields, with room for `rows` rows holding
    /// `text_bytes` of text.
    pub fn with_capacity(width: usize, rows: usize, text_bytes: usize) -> Self {
        Self { width, rows: 0, slots: Vec::with_capacity(rows.saturating_mul(width)), text: String::with_capacity(text_bytes) }
    }

    /// Bytes of text the rows hold.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Append a row; values beyond the width are ignored, missing ones are [`FieldVal::Missing`].
    pub fn push_row<'v>(&mut self, vals: impl IntoIterator<Item = FieldVal<'v>>) {
        let before = self.slots.len();
        for v in vals.into_iter().take(self.width) {
            let slot = match v {
                FieldVal::Missing => Slot::Missing,
                FieldVal::Num(x) => Slot::Num(x),
                FieldVal::Bool(b) => Slot::Bool(b),
                FieldVal::Str(s) => {
                    let start = self.text.len();
                    self.text.push_str(s);
                    Slot::Str(start as u32, self.text.len() as u32)
                }
            };
            self.slots.push(slot);
        }
        self.slots.resize(before + self.width, Slot::Missing);
        self.rows += 1;
    }

    /// Rows in the table.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `i` into `out` (cleared first; empty for a row that does not exist).
    pub fn row_into<'a>(&'a self, i: usize, out: &mut Vec<FieldVal<'a>>) {
        out.clear();
        let Some(row) = self.slots.get(i * self.width..(i + 1) * self.width) else { return };
        out.extend(row.iter().map(|s| match *s {
            Slot::Missing => FieldVal::Missing,
            Slot::Num(x) => FieldVal::Num(x),
            Slot::Bool(b) => FieldVal::Bool(b),
            Slot::Str(a, b) => FieldVal::Str(self.text.get(a as usize..b as usize).unwrap_or_default()),
        }));
    }

    /// Row `i` as a vector (tests and tools; the hot path reuses one with [`Self::row_into`]).
    pub fn row(&self, i: usize) -> Vec<FieldVal<'_>> {
        let mut out = Vec::new();
        self.row_into(i, &mut out);
        out
    }
}

/// A filter over field indices.
#[derive(Debug, Clone)]
enum Pred {
    Cmp(usize, CmpOp, Lit),
    In(usize, Vec<Lit>),
    Field(usize),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
}

fn compare(v: &FieldVal, op: CmpOp, lit: &Lit) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (v, lit) {
        (FieldVal::Missing, Lit::Null) => Some(Ordering::Equal),
        (_, Lit::Null) => return op == CmpOp::Ne,
        (FieldVal::Missing, _) => return false,
        (FieldVal::Num(a), Lit::Num(b)) => a.partial_cmp(b),
        (FieldVal::Str(a), Lit::Str(b)) => Some((*a).cmp(b.as_str())),
        (FieldVal::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        // Different types: only `!=` holds.
        _ => return op == CmpOp::Ne,
    };
    let Some(o) = ord else { return false };
    match op {
        CmpOp::Eq => o.is_eq(),
        CmpOp::Ne => o.is_ne(),
        CmpOp::Lt => o.is_lt(),
        CmpOp::Le => o.is_le(),
        CmpOp::Gt => o.is_gt(),
        CmpOp::Ge => o.is_ge(),
    }
}

impl Pred {
    fn compile(e: &FilterExpr, index: &impl Fn(&str) -> usize) -> Pred {
        match e {
            FilterExpr::Cmp(f, op, l) => Pred::Cmp(index(f), *op, l.clone()),
            FilterExpr::In(f, ls) => Pred::In(index(f), ls.clone()),
            FilterExpr::Field(f) => Pred::Field(index(f)),
            FilterExpr::And(a, b) => Pred::And(Box::new(Pred::compile(a, index)), Box::new(Pred::compile(b, index))),
            FilterExpr::Or(a, b) => Pred::Or(Box::new(Pred::compile(a, index)), Box::new(Pred::compile(b, index))),
            FilterExpr::Not(a) => Pred::Not(Box::new(Pred::compile(a, index))),
        }
    }

    fn eval(&self, f: &[FieldVal<'_>]) -> bool {
        let get = |i: &usize| f.get(*i).unwrap_or(&FieldVal::Missing);
        match self {
            Pred::Cmp(i, op, l) => compare(get(i), *op, l),
            Pred::In(i, ls) => ls.iter().any(|l| compare(get(i), CmpOp::Eq, l)),
            Pred::Field(i) => matches!(get(i), FieldVal::Bool(true)),
            Pred::And(a, b) => a.eval(f) && b.eval(f),
            Pred::Or(a, b) => a.eval(f) || b.eval(f),
            Pred::Not(a) => !a.eval(f),
        }
    }
}

/// One aggregation, compiled against the pipeline's field table.
#[derive(Debug, Clone)]
pub struct AggSpec {
    /// Name.
    pub name: Arc<str>,
    /// Window kind.
    pub kind: WindowKind,
    /// Allowed lateness, ms.
    pub lateness_ms: i64,
    /// Metrics.
    pub metrics: Vec<Metric>,
    /// Output names of the metrics in name order, each with the index of its value in an
    /// emission (of metrics sharing a name, the last: as a JSON object keeps it).
    pub metric_order: Vec<(String, usize)>,
    /// Group-by field names.
    pub group_names: Vec<String>,
    /// Group-by fields (indices into the field table).
    group: Vec<usize>,
    /// Field index per metric (`None` for `count`).
    inputs: Vec<Option<usize>>,
    filter: Option<Pred>,
    /// Output topic.
    pub topic: String,
    /// Output format.
    pub format: SinkFormat,
    /// Fingerprint of everything that shapes its state (kind, lateness, metrics, group,
    /// filter): a checkpoint of a different definition is not restored into it.
    pub fingerprint: String,
}

impl AggSpec {
    /// Whether a record passes the filter.
    pub fn accepts(&self, f: &[FieldVal<'_>]) -> bool {
        self.filter.as_ref().is_none_or(|p| p.eval(f))
    }

    /// Group key of a record into `out` (cleared first): group values joined by `|`.
    pub fn key_into(&self, f: &[FieldVal<'_>], out: &mut String) {
        out.clear();
        for (n, i) in self.group.iter().enumerate() {
            if n > 0 {
                out.push('|');
            }
            f.get(*i).unwrap_or(&FieldVal::Missing).push_text(out);
        }
    }

    /// The group fields of an output, from its key: field name → value text, by name.
    /// Values that themselves contain `|` make the split ambiguous; then `None` (only the
    /// key is given).
    pub fn group_parts<'k>(&'k self, key: &'k str) -> Option<BTreeMap<&'k str, &'k str>> {
        if self.group_names.is_empty() {
            return Some(Default::default());
        }
        let parts = key.split('|');
        (parts.clone().count() == self.group_names.len()).then(|| self.group_names.iter().map(String::as_str).zip(parts).collect())
    }

    /// Metric inputs of a record into `out` (cleared first).
    pub fn values_into<'a>(&self, f: &[FieldVal<'a>], out: &mut Vec<Val<'a>>) {
        out.clear();
        out.extend(self.inputs.iter().map(|i| i.and_then(|i| f.get(i)).map_or(Val::Missing, |v| v.val())));
    }
}

/// What the pipeline extracts from every validated record, and the aggregations over it.
#[derive(Debug, Clone)]
pub struct Analytics {
    /// Field names, in the order of a record's extracted values.
    pub fields: Vec<String>,
    /// Event-time field.
    pub time_field: String,
    /// The aggregations, in configuration order.
    pub aggs: Vec<AggSpec>,
}

fn window_kind(w: &WindowSpec) -> WindowKind {
    let ms = |d: std::time::Duration| (d.as_millis() as i64).max(1);
    match *w {
        WindowSpec::Tumbling { size } => WindowKind::Tumbling { size_ms: ms(size) },
        WindowSpec::Hopping { size, slide } => WindowKind::Hopping { size_ms: ms(size), slide_ms: ms(slide) },
        WindowSpec::Session { gap } => WindowKind::Session { gap_ms: ms(gap) },
    }
}

fn fingerprint(a: &AggregationConfig) -> String {
    let metrics: Vec<String> = a.metrics.iter().map(ToString::to_string).collect();
    format!(
        "{:?}|lateness={}|group={}|filter={}|metrics={}",
        window_kind(&a.window),
        a.allowed_lateness.as_millis(),
        a.group_by.join(","),
        a.filter.as_ref().map_or("", |f| f.text.as_str()),
        metrics.join(",")
    )
}

impl Analytics {
    /// Compile `[pipeline]`'s aggregations.
    pub fn compile(p: &PipelineConfig) -> Self {
        let mut fields: Vec<String> = Vec::new();
        for a in &p.aggregations {
            for f in a.fields() {
                if !fields.contains(&f) {
                    fields.push(f);
                }
            }
        }
        let index = |f: &str| fields.iter().position(|x| x == f).unwrap_or(usize::MAX);
        let aggs = p
            .aggregations
            .iter()
            .map(|a| AggSpec {
                name: a.name.as_str().into(),
                kind: window_kind(&a.window),
                lateness_ms: a.allowed_lateness.as_millis() as i64,
                metrics: a.metrics.clone(),
                metric_order: a.metrics.iter().enumerate().map(|(i, m)| (m.name(), i)).collect::<BTreeMap<_, _>>().into_iter().collect(),
                group_names: a.group_by.clone(),
                group: a.group_by.iter().map(|f| index(f)).collect(),
                inputs: a.metrics.iter().map(|m| m.field().map(index)).collect(),
                filter: a.filter.as_ref().map(|f| Pred::compile(&f.expr, &index)),
                topic: a.output.topic.clone().unwrap_or_else(|| p.sink_topic.clone()),
                format: a.output.format.unwrap_or(p.sink_format),
                fingerprint: fingerprint(a),
            })
            .collect();
        Self { time_field: p.event_time.field.clone(), fields, aggs }
    }

    /// Output topics, each once, in order of first use.
    pub fn topics(&self) -> Vec<(&str, SinkFormat)> {
        let mut out: Vec<(&str, SinkFormat)> = Vec::new();
        for a in &self.aggs {
            if !out.iter().any(|(t, f)| *t == a.topic && *f == a.format) {
                out.push((&a.topic, a.format));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(toml: &str) -> PipelineConfig {
        vigil_config::Config::from_toml_str(toml, Vec::new()).unwrap().pipeline
    }

    #[test]
    fn filters_keys_and_values() {
        let p = pipeline(
            r#"
[[pipeline.aggregations]]
name = "a"
group_by = ["country", "n"]
filter = "kind = 'payment' and (amount >= 10 or vip) and country not in ('XX') and not missing = 1"
window = { kind = "tumbling", size = "1s" }
metrics = ["count", "sum(amount)", "distinct(user)"]
"#,
        );
        let an = Analytics::compile(&p);
        assert_eq!(an.fields, ["country", "n", "amount", "user", "kind", "vip", "missing"]);
        let a = &an.aggs[0];
        fn rec<'a>(kind: &'a str, amount: f64, vip: bool, country: &'a str) -> Vec<FieldVal<'a>> {
            vec![
                FieldVal::Str(country),
                FieldVal::Num(3.0),
                FieldVal::Num(amount),
                FieldVal::Str("u1"),
                FieldVal::Str(kind),
                FieldVal::Bool(vip),
                FieldVal::Missing,
            ]
        }
        assert!(a.accepts(&rec("payment", 10.0, false, "DE")));
        assert!(a.accepts(&rec("payment", 1.0, true, "DE")));
        assert!(!a.accepts(&rec("payment", 1.0, false, "DE")));
        assert!(!a.accepts(&rec("view", 10.0, false, "DE")));
        assert!(!a.accepts(&rec("payment", 10.0, false, "XX")));
        let mut key = String::new();
        a.key_into(&rec("payment", 10.0, false, "DE"), &mut key);
        assert_eq!(key, "DE|3");
        let r = rec("payment", 2.5, false, "DE");
        let mut vals = Vec::new();
        a.values_into(&r, &mut vals);
        assert_eq!(vals, vec![Val::Missing, Val::Num(2.5), Val::Str("u1")]);
    }

    #[test]
    fn field_table_keeps_rows_apart() {
        let mut t = FieldTable::new(3);
        t.push_row([FieldVal::Str("de"), FieldVal::Num(2.0), FieldVal::Bool(true)]);
        t.push_row([FieldVal::Missing]);
        t.push_row([FieldVal::Str(""), FieldVal::Str("ü"), FieldVal::Str("x"), FieldVal::Str("ignored")]);
        assert_eq!(t.rows(), 3);
        assert_eq!(t.row(0), [FieldVal::Str("de"), FieldVal::Num(2.0), FieldVal::Bool(true)]);
        assert_eq!(t.row(1), [FieldVal::Missing; 3]);
        assert_eq!(t.row(2), [FieldVal::Str(""), FieldVal::Str("ü"), FieldVal::Str("x")]);
        assert!(t.row(3).is_empty());
        let mut empty = FieldTable::new(0);
        empty.push_row([FieldVal::Num(1.0)]);
        assert_eq!((empty.rows(), empty.row(0).len()), (1, 0));
    }

    #[test]
    fn missing_fields_compare_as_unknown() {
        let m = FieldVal::Missing;
        assert!(!compare(&m, CmpOp::Eq, &Lit::Num(1.0)));
        assert!(!compare(&m, CmpOp::Ne, &Lit::Num(1.0)));
        assert!(compare(&m, CmpOp::Eq, &Lit::Null));
        assert!(compare(&FieldVal::Num(1.0), CmpOp::Ne, &Lit::Null));
        assert!(compare(&FieldVal::Str("1"), CmpOp::Ne, &Lit::Num(1.0)));
    }
}
