//! `[pipeline.event_time]` and `[[pipeline.aggregations]]`: named windowed aggregations,
//! their metrics (parsed from `"sum(amount)"`-style strings) and filters (a small expression
//! language over record fields, [`FilterExpr`]).
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// `[pipeline.event_time]`: where event time comes from and how watermarks advance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventTimeConfig {
    /// Integer field holding event time, ms since epoch. Default `ts`.
    pub field: String,
    /// How far event time may run backwards within a partition: a partition's watermark is
    /// its largest event time minus this. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub out_of_orderness: Duration,
    /// A partition that delivers nothing for this long stops holding back the watermark.
    /// Default `10s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Watermark alignment: Ingest pauses a partition whose event time runs more than this
    /// ahead of the slowest partition that still has records to read, so a backlog read
    /// unevenly does not hold windows open without bound. `0s` turns it off. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub max_drift: Duration,
    /// Alignment applies while the node's resident size is above this percentage of
    /// `node.memory_limit` (until 10 points under it): holding partitions costs throughput,
    /// and what it saves is memory. `0`: always. Default `50`.
    pub align_above_memory_percent: u8,
}

impl Default for EventTimeConfig {
    fn default() -> Self {
        Self {
            field: "ts".into(),
            out_of_orderness: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            max_drift: Duration::from_secs(30),
            align_above_memory_percent: 50,
        }
    }
}

/// How an aggregation groups records in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowSpec {
    /// Fixed, non-overlapping windows.
    Tumbling {
        /// Window length.
        #[serde(with = "humantime_serde")]
        size: Duration,
    },
    /// Windows of `size` starting every `slide`; a record is in `size / slide` of them.
    Hopping {
        /// Window length.
        #[serde(with = "humantime_serde")]
        size: Duration,
        /// Distance between window starts; must divide `size`.
        #[serde(with = "humantime_serde")]
        slide: Duration,
    },
    /// Activity periods of a key, closed by `gap` without records.
    Session {
        /// Inactivity that ends a session.
        #[serde(with = "humantime_serde")]
        gap: Duration,
    },
}

/// Where and how an aggregation's results are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AggregationOutput {
    /// Topic. Default `pipeline.sink_topic`.
    pub topic: Option<String>,
    /// `json` or `avro`. Default `pipeline.sink_format`.
    pub format: Option<crate::SinkFormat>,
}

/// `[[pipeline.aggregations]]`: one named question asked of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationConfig {
    /// Name: letters, digits, `_` and `-`; part of every output key (`<name>/<key>@<start>`).
    pub name: String,
    /// Fields whose values, joined by `|`, form the group key. Empty: one global group.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Only records for which this holds are aggregated, e.g.
    /// `kind = 'payment' and amount >= 10 and country in ('DE', 'FR')`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Window kind and size.
    pub window: WindowSpec,
    /// How long after its end a window still takes records (re-emitted with a higher
    /// revision). Default `0s`.
    #[serde(default, with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Metrics: `count`, `sum(f)`, `min(f)`, `max(f)`, `avg(f)`, `distinct(f)`, `p99(f)` /
    /// `percentile(f, 0.99)`, `first(f)`, `last(f)`.
    pub metrics: Vec<Metric>,
    /// Output topic and format.
    #[serde(default)]
    pub output: AggregationOutput,
}

impl AggregationConfig {
    /// Every record field this aggregation reads (group, metrics, filter), without duplicates.
    pub fn fields(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |f: &str| {
            if !out.iter().any(|x| x == f) {
                out.push(f.to_string());
            }
        };
        self.group_by.iter().for_each(|f| push(f));
        self.metrics.iter().filter_map(Metric::field).for_each(&mut push);
        if let Some(f) = &self.filter {
            f.expr.fields(&mut push);
        }
        out
    }
}

/// One metric of an aggregation, written in configuration as `count`, `sum(amount)`,
/// `p99(amount)`, `percentile(amount, 0.999)`, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Metric {
    /// Records.
    Count,
    /// Sum of a numeric field.
    Sum {
        /// Field.
        field: String,
    },
    /// Smallest value.
    Min {
        /// Field.
        field: String,
    },
    /// Largest value.
    Max {
        /// Field.
        field: String,
    },
    /// Mean.
    Avg {
        /// Field.
        field: String,
    },
    /// Approximate distinct values of a field (any type).
    Distinct {
        /// Field.
        field: String,
    },
    /// Approximate percentile `q` (0..1) of a numeric field.
    Percentile {
        /// Field.
        field: String,
        /// Quantile, e.g. 0.99.
        q: f64,
    },
    /// Value of the record with the smallest event time.
    First {
        /// Field.
        field: String,
    },
    /// Value of the record with the largest event time.
    Last {
        /// Field.
        field: String,
    },
}

impl Metric {
    /// The field it reads, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Metric::Count => None,
            Metric::Sum { field }
            | Metric::Min { field }
            | Metric::Max { field }
            | Metric::Avg { field }
            | Metric::Distinct { field }
            | Metric::Percentile { field, .. }
            | Metric::First { field }
            | Metric::Last { field } => Some(field),
        }
    }

    /// Its name in outputs: `count`, `sum_amount`, `p99_amount`, `distinct_user`, ...
    pub fn name(&self) -> String {
        match self {
            Metric::Count => "count".into(),
            Metric::Percentile { field, q } => format!("p{}_{field}", format_q(*q)),
            Metric::Sum { field } => format!("sum_{field}"),
            Metric::Min { field } => format!("min_{field}"),
            Metric::Max { field } => format!("max_{field}"),
            Metric::Avg { field } => format!("avg_{field}"),
            Metric::Distinct { field } => format!("distinct_{field}"),
            Metric::First { field } => format!("first_{field}"),
            Metric::Last { field } => format!("last_{field}"),
        }
    }
}

fn format_q(q: f64) -> String {
    let s = format!("{}", (q * 1000.0).round() / 10.0);
    s.replace('.', "_")
}

crate::serde_via_string!(Metric);

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Count => f.write_str("count"),
            Metric::Percentile { field, q } => {
                let pct = (q * 1000.0).round() / 10.0;
                if (pct / 100.0 - q).abs() < 1e-12 {
                    write!(f, "p{pct}({field})")
                } else {
                    write!(f, "percentile({field}, {q})")
                }
            }
            m => {
                let name = m.name();
                let (func, _) = name.split_once('_').unwrap_or((&name, ""));
                write!(f, "{func}({})", m.field().unwrap_or_default())
            }
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "count" || s == "count()" {
            return Ok(Metric::Count);
        }
        let usage = "expected count, sum(f), min(f), max(f), avg(f), distinct(f), first(f), last(f), p<NN>(f) or percentile(f, q)";
        let (func, rest) = s.split_once('(').ok_or_else(|| format!("`{s}`: {usage}"))?;
        let args = rest.strip_suffix(')').ok_or_else(|| format!("`{s}`: missing `)`"))?;
        let args: Vec<&str> = args.split(',').map(str::trim).collect();
        let field = args[0].to_string();
        if !is_ident(&field) {
            return Err(format!("`{s}`: `{field}` is not a field name"));
        }
        let one = |m: Metric| if args.len() == 1 { Ok(m) } else { Err(format!("`{s}`: takes one field")) };
        match func.trim() {
            "sum" => one(Metric::Sum { field }),
            "min" => one(Metric::Min { field }),
            "max" => one(Metric::Max { field }),
            "avg" => one(Metric::Avg { field }),
            "distinct" | "count_distinct" => one(Metric::Distinct { field }),
            "first" => one(Metric::First { field }),
            "last" => one(Metric::Last { field }),
            "percentile" => {
                let q = args.get(1).and_then(|q| q.parse::<f64>().ok()).ok_or_else(|| format!("`{s}`: percentile(field, q) needs q, e.g. 0.99"))?;
                if args.len() != 2 || !(q > 0.0 && q < 1.0) {
                    return Err(format!("`{s}`: q must be between 0 and 1 (exclusive)"));
                }
                Ok(Metric::Percentile { field, q })
            }
            p if p.starts_with('p') => {
                let digits = &p[1..];
                let q = digits.parse::<f64>().ok().filter(|x| *x > 0.0 && *x < 100.0).ok_or_else(|| format!("`{s}`: `{p}` is not p<percent>, e.g. p99"))?;
                one(Metric::Percentile { field, q: q / 100.0 })
            }
            other => Err(format!("`{s}`: unknown metric `{other}`; {usage}")),
        }
    }
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|c| c.is_alphabetic() || c == '_') && c.all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// A filter as written (`text`) and parsed (`expr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Filter {
    /// The text from the configuration.
    pub text: String,
    /// Parsed.
    pub expr: FilterExpr,
}

impl TryFrom<String> for Filter {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let expr = FilterExpr::parse(&text)?;
        Ok(Filter { text, expr })
    }
}

impl From<Filter> for String {
    fn from(f: Filter) -> String {
        f.text
    }
}

/// A literal in a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// Number.
    Num(f64),
    /// Text.
    Str(String),
    /// Boolean.
    Bool(bool),
    /// `null`: equal only to an absent or null field.
    Null,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=` or `==`.
    Eq,
    /// `!=` or `<>`.
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
}

/// A filter expression. Comparisons involving an absent field are false (as SQL's unknown,
/// so `not` of them is true), except `field = null` / `field != null`.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterExpr {
    /// `field op literal`.
    Cmp(String, CmpOp, Lit),
    /// `field in (a, b, ...)`.
    In(String, Vec<Lit>),
    /// A boolean field on its own.
    Field(String),
    /// `a and b`.
    And(Box<FilterExpr>, Box<FilterExpr>),
    /// `a or b`.
    Or(Box<FilterExpr>, Box<FilterExpr>),
    /// `not a`.
    Not(Box<FilterExpr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Lit(Lit),
    Op(CmpOp),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '\'' | '"' => {
                let end = b[i + 1..].iter().position(|x| *x == c).ok_or_else(|| format!("unterminated string starting at character {}", i + 1))?;
                out.push(Tok::Lit(Lit::Str(b[i + 1..i + 1 + end].iter().collect())));
                i += end + 2;
            }
            '=' | '!' | '<' | '>' => {
                let next = b.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('=', Some('=')) => (CmpOp::Eq, 2),
                    ('=', _) => (CmpOp::Eq, 1),
                    ('!', Some('=')) => (CmpOp::Ne, 2),
                    ('<', Some('>')) => (CmpOp::Ne, 2),
                    ('<', Some('=')) => (CmpOp::Le, 2),
                    ('<', _) => (CmpOp::Lt, 1),
                    ('>', Some('=')) => (CmpOp::Ge, 2),
                    ('>', _) => (CmpOp::Gt, 1),
                    _ => return Err(format!("unexpected `{c}` at character {}", i + 1)),
                };
                out.push(Tok::Op(op));
                i += len;
            }
            c if c.is_ascii_digit() || (c == '-' && b.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_digit() || matches!(b[i], '.' | 'e' | 'E' | '_')) {
                    i += 1;
                }
                let text: String = b[start..i].iter().filter(|c| **c != '_').collect();
                out.push(Tok::Lit(Lit::Num(text.parse().map_err(|_| format!("`{text}` is not a number"))?)));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < b.len() && (b[i].is_alphanumeric() || matches!(b[i], '_' | '.' | '-')) {
                    i += 1;
                }
                let word: String = b[start..i].iter().collect();
                out.push(match word.as_str() {
                    "true" => Tok::Lit(Lit::Bool(true)),
                    "false" => Tok::Lit(Lit::Bool(false)),
                    "null" => Tok::Lit(Lit::Null),
                    _ => Tok::Ident(word),
                });
            }
            c => return Err(format!("unexpected `{c}` at character {}", i + 1)),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(k))
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<FilterExpr, String> {
        let mut e = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            e = FilterExpr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<FilterExpr, String> {
        let mut e = self.not()?;
        while self.keyword("and") {
            self.pos += 1;
            e = FilterExpr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<FilterExpr, String> {
        if self.keyword("not") {
            self.pos += 1;
            return Ok(FilterExpr::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn literal(&mut self) -> Result<Lit, String> {
        match self.next() {
            Some(Tok::Lit(l)) => Ok(l),
            other => Err(format!("expected a literal (number, 'text', true, false, null), found {}", describe(other.as_ref()))),
        }
    }

    fn atom(&mut self) -> Result<FilterExpr, String> {
        match self.next() {
            Some(Tok::LParen) => {
                let e = self.or()?;
                match self.next() {
                    Some(Tok::RParen) => Ok(e),
                    other => Err(format!("expected `)`, found {}", describe(other.as_ref()))),
                }
            }
            Some(Tok::Ident(field)) => {
                let negated_in = self.keyword("not") && matches!(self.toks.get(self.pos + 1), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("in"));
                if negated_in {
                    self.pos += 1;
                }
                if self.keyword("in") {
                    self.pos += 1;
                    if self.next() != Some(Tok::LParen) {
                        return Err(format!("`{field} in` needs a list: {field} in ('a', 'b')"));
                    }
                    let mut items = vec![self.literal()?];
                    loop {
                        match self.next() {
                            Some(Tok::Comma) => items.push(self.literal()?),
                            Some(Tok::RParen) => break,
                            other => return Err(format!("expected `,` or `)` in the list of `{field} in`, found {}", describe(other.as_ref()))),
                        }
                    }
                    let e = FilterExpr::In(field, items);
                    return Ok(if negated_in { FilterExpr::Not(Box::new(e)) } else { e });
                }
                match self.peek() {
                    Some(Tok::Op(op)) => {
                        let op = *op;
                        self.pos += 1;
                        Ok(FilterExpr::Cmp(field, op, self.literal()?))
                    }
                    _ => Ok(FilterExpr::Field(field)),
                }
            }
            other => Err(format!("expected a field, `not` or `(`, found {}", describe(other.as_ref()))),
        }
    }
}

fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "the end".into(),
        Some(Tok::Ident(w)) => format!("`{w}`"),
        Some(Tok::Lit(l)) => format!("literal {l:?}"),
        Some(Tok::Op(o)) => format!("operator {o:?}"),
        Some(Tok::LParen) => "`(`".into(),
        Some(Tok::RParen) => "`)`".into(),
        Some(Tok::Comma) => "`,`".into(),
    }
}

impl FilterExpr {
    /// Parse a filter: comparisons (`= != < <= > >=`) of a field with a literal, `in`
    /// lists, `and`, `or`, `not` and parentheses.
    ///
    /// # Errors
    /// What is wrong and where.
    pub fn parse(s: &str) -> Result<FilterExpr, String> {
        let mut p = Parser { toks: tokenize(s)?, pos: 0 };
        if p.toks.is_empty() {
            return Err("the filter is empty".into());
        }
        let e = p.or()?;
        match p.peek() {
            None => Ok(e),
            Some(t) => Err(format!("unexpected {} after a complete expression", describe(Some(t)))),
        }
    }

    /// Call `f` with every field the expression reads.
    pub fn fields(&self, f: &mut impl FnMut(&str)) {
        match self {
            FilterExpr::Cmp(x, ..) | FilterExpr::In(x, _) | FilterExpr::Field(x) => f(x),
            FilterExpr::And(a, b) | FilterExpr::Or(a, b) => {
                a.fields(f);
                b.fields(f);
            }
            FilterExpr::Not(a) => a.fields(f),
        }
    }
}

/// The embedded default's aggregations: spend per user (tumbling), amount percentiles per
/// country (hopping) and sessions per user (session windows).
pub(crate) fn default_aggregations() -> Vec<AggregationConfig> {
    let metrics = |m: &[&str]| m.iter().filter_map(|s| s.parse().ok()).collect::<Vec<Metric>>();
    let payments = Filter::try_from("kind = 'payment'".to_string()).ok();
    vec![
        AggregationConfig {
            name: "spend_per_user".into(),
            group_by: vec!["user".into()],
            filter: payments.clone(),
            window: WindowSpec::Tumbling { size: Duration::from_secs(10) },
            allowed_lateness: Duration::from_secs(5),
            metrics: metrics(&["count", "sum(amount)", "avg(amount)", "max(amount)"]),
            output: AggregationOutput::default(),
        },
        AggregationConfig {
            name: "amount_per_country".into(),
            group_by: vec!["country".into()],
            filter: payments,
            window: WindowSpec::Hopping { size: Duration::from_secs(60), slide: Duration::from_secs(10) },
            allowed_lateness: Duration::ZERO,
            metrics: metrics(&["count", "p50(amount)", "p99(amount)", "distinct(user)"]),
            output: AggregationOutput::default(),
        },
        AggregationConfig {
            name: "sessions_per_user".into(),
            group_by: vec!["user".into()],
            filter: None,
            window: WindowSpec::Session { gap: Duration::from_secs(5) },
            allowed_lateness: Duration::ZERO,
            metrics: metrics(&["count", "distinct(page)", "first(ts)", "last(ts)"]),
            output: AggregationOutput::default(),
        },
    ]
}

/// Where the replaced `[pipeline.window]` went.
pub(crate) const WINDOW_MIGRATION: &str = "replaced by [pipeline.event_time] (field = time_field, out_of_orderness = allowed_lateness, idle_timeout) and \
[[pipeline.aggregations]] (name, group_by = [key_field], window = { kind = \"tumbling\", size = size }, metrics = [\"count\", \"sum(<value_field>)\", \
\"min(<value_field>)\", \"max(<value_field>)\"]); see docs/analytics.md#migrating-from-pipelinewindow";

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

impl crate::PipelineConfig {
    /// Check event time and aggregations; `err(path, message)` per problem.
    pub(crate) fn validate_analytics(&self, err: &mut impl FnMut(&str, &str)) {
        if self.window.is_some() {
            err("pipeline.window", WINDOW_MIGRATION);
        }
        let e = &self.event_time;
        if e.field.trim().is_empty() {
            err("pipeline.event_time.field", "must not be empty");
        }
        if e.idle_timeout.is_zero() {
            err("pipeline.event_time.idle_timeout", "must be greater than 0");
        }
        if e.align_above_memory_percent > 100 {
            err("pipeline.event_time.align_above_memory_percent", "must be between 0 (always) and 100");
        }
        if self.aggregations.is_empty() {
            err("pipeline.aggregations", "at least one aggregation is needed");
        }
        if self.late_topic.as_deref().is_some_and(|t| t.trim().is_empty()) {
            err("pipeline.late_topic", "must not be empty when set");
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, a) in self.aggregations.iter().enumerate() {
            let path = |f: &str| format!("pipeline.aggregations[{i}].{f}");
            if a.name.is_empty() || !a.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                err(&path("name"), "must be non-empty letters, digits, `_` or `-`");
            }
            if names.contains(&a.name.as_str()) {
                err(&path("name"), &format!("`{}` is used by an earlier aggregation", a.name));
            }
            names.push(&a.name);
            if a.group_by.iter().any(|f| f.trim().is_empty()) {
                err(&path("group_by"), "field names must not be empty");
            }
            if a.metrics.is_empty() {
                err(&path("metrics"), "must list at least one metric, e.g. [\"count\"]");
            }
            let mut seen: Vec<String> = Vec::new();
            for m in &a.metrics {
                let n = m.name();
                if seen.contains(&n) {
                    err(&path("metrics"), &format!("`{m}` is listed twice"));
                }
                seen.push(n);
            }
            match a.window {
                WindowSpec::Tumbling { size } if ms(size) == 0 => err(&path("window.size"), "must be at least 1ms"),
                WindowSpec::Hopping { size, slide } => {
                    if ms(slide) == 0 || ms(size) == 0 {
                        err(&path("window"), "size and slide must be at least 1ms");
                    } else if ms(size) % ms(slide) != 0 {
                        err(&path("window.slide"), "must divide size (e.g. size 1m, slide 10s)");
                    } else if ms(size) / ms(slide) > 1000 {
                        err(&path("window.slide"), "size / slide must be at most 1000 (a window merges that many panes when it is emitted)");
                    }
                }
                WindowSpec::Session { gap } if ms(gap) == 0 => err(&path("window.gap"), "must be at least 1ms"),
                _ => {}
            }
            if let Some(t) = &a.output.topic {
                if t.trim().is_empty() {
                    err(&path("output.topic"), "must not be empty when set");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_parse_and_print() {
        for (s, name) in [
            ("count", "count"),
            ("sum(amount)", "sum_amount"),
            ("p99(amount)", "p99_amount"),
            ("p99.9(amount)", "p99_9_amount"),
            ("percentile(amount, 0.5)", "p50_amount"),
            ("distinct(user)", "distinct_user"),
            ("last(amount)", "last_amount"),
        ] {
            let m: Metric = s.parse().unwrap();
            assert_eq!(m.name(), name);
            assert_eq!(m.to_string().parse::<Metric>().unwrap(), m);
        }
        for bad in ["sum", "sum(a", "median(x)", "p100(x)", "percentile(x)", "sum(a, b)", "sum(1x)"] {
            assert!(bad.parse::<Metric>().is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_parse_with_precedence() {
        let e = FilterExpr::parse("kind = 'payment' and not amount < 10 or country in ('DE', \"FR\")").unwrap();
        let want = FilterExpr::Or(
            Box::new(FilterExpr::And(
                Box::new(FilterExpr::Cmp("kind".into(), CmpOp::Eq, Lit::Str("payment".into()))),
                Box::new(FilterExpr::Not(Box::new(FilterExpr::Cmp("amount".into(), CmpOp::Lt, Lit::Num(10.0))))),
            )),
            Box::new(FilterExpr::In("country".into(), vec![Lit::Str("DE".into()), Lit::Str("FR".into())])),
        );
        assert_eq!(e, want);
        assert_eq!(FilterExpr::parse("x not in (1, 2)").unwrap(), FilterExpr::Not(Box::new(FilterExpr::In("x".into(), vec![Lit::Num(1.0), Lit::Num(2.0)]))));
        assert_eq!(FilterExpr::parse("(a >= -1.5)").unwrap(), FilterExpr::Cmp("a".into(), CmpOp::Ge, Lit::Num(-1.5)));
        for (bad, says) in [("", "empty"), ("a = ", "literal"), ("a in 1", "list"), ("(a = 1", "`)`"), ("a = 1 b", "unexpected"), ("a = 'x", "unterminated")] {
            let e = FilterExpr::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
