//! The sync contract: a TOML file compiled into the checked [`Contract`] the engine reads.
//!
//! Compilation goes raw -> checked in one walk over the parsed document, collecting every
//! problem (file, line, column, field, what was expected) instead of stopping at the first,
//! so an operator fixes a broken contract in one pass.

pub mod model;
pub mod schedule;
pub use model::*;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml_edit::{ArrayOfTables, ImDocument, Item, Table, TableLike, Value};

/// The contract that ships with the product.
pub const DEFAULT_CONTRACT: &str = include_str!("../../contracts/default.toml");

/// The label used for the embedded default contract.
pub const DEFAULT_CONTRACT_LABEL: &str = "<embedded default>";

/// One problem in a contract file. Display: `{file}:{line}:{column}: {field}: {expected}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractProblem {
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Dotted path of the offending field, e.g. `objects.customer.fields[2].owner`.
    pub field: String,
    /// What was expected (never echoes a secret).
    pub expected: String,
}

impl fmt::Display for ContractProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.field, self.expected
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("cannot read contract {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A whole-file failure with no line to point at: the file holds more than `limit`
    /// bytes (only `limit + 1` were read).
    #[error(
        "contract {path} is larger than {} ({limit} bytes), the most a contract file may hold: \
         is this the right file?",
        human_size(*.limit)
    )]
    TooLarge { path: String, limit: usize },
    /// Every problem found, in file order. Each one has a location inside the file.
    #[error("{}", render_problems(.0))]
    Invalid(Vec<ContractProblem>),
}

/// Every problem, one per line.
pub fn render_problems(problems: &[ContractProblem]) -> String {
    problems
        .iter()
        .map(ContractProblem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The most a contract file may hold: 1 MiB. The shipped default is under 10 KiB; anything
/// near the limit is the wrong file (or `/dev/zero`), and is refused before it is parsed.
pub const MAX_CONTRACT_BYTES: usize = 1024 * 1024;

fn human_size(bytes: usize) -> String {
    if bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

/// Read a contract file: the one way contract files are read (the CLI, `serve`, the connect
/// flow's rewrite, the console's re-validation). Never reads more than
/// [`MAX_CONTRACT_BYTES`] + 1 bytes, so `/dev/zero`, a FIFO or a huge file is refused with
/// [`ContractError::TooLarge`] instead of filling memory.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ContractError> {
    use std::io::Read;
    let label = path.display().to_string();
    let read_error = |source| ContractError::Read {
        path: label.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONTRACT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() > MAX_CONTRACT_BYTES {
        return Err(ContractError::TooLarge {
            path: label,
            limit: MAX_CONTRACT_BYTES,
        });
    }
    Ok(bytes)
}

/// Read a contract file as text ([`read_file`]'s cap; invalid UTF-8 is a problem located at
/// the first invalid byte).
pub fn read_text(path: &Path) -> Result<String, ContractError> {
    let bytes = read_file(path)?;
    let label = path.display().to_string();
    String::from_utf8(bytes)
        .map_err(|e| ContractError::Invalid(vec![utf8_problem(&label, e.as_bytes(), &e.utf8_error())]))
}

/// The problem for bytes that are not UTF-8: at the line and column (in characters) of the
/// first invalid byte.
fn utf8_problem(file: &str, bytes: &[u8], e: &std::str::Utf8Error) -> ContractProblem {
    let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
    let before = std::str::from_utf8(valid).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    let byte = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
    ContractProblem {
        file: file.to_string(),
        line,
        column,
        field: "(encoding)".to_string(),
        expected: format!("invalid UTF-8 (byte 0x{byte:02X}): a contract must be UTF-8 text"),
    }
}

/// Read and compile a contract file (through [`read_file`]).
pub fn load(path: &Path) -> Result<Contract, ContractError> {
    let bytes = read_file(path)?;
    compile_bytes_at(&path.display().to_string(), path.to_path_buf(), &bytes)
}

/// Compile contract text; `file_label` names it in problems and becomes `Contract.path`.
/// Reports all problems at once.
pub fn compile(file_label: &str, text: &str) -> Result<Contract, ContractError> {
    compile_bytes_at(file_label, PathBuf::from(file_label), text.as_bytes())
}

/// Compile a contract file's bytes: what [`load`] does after reading. Whole-file failures
/// (more than [`MAX_CONTRACT_BYTES`]) are [`ContractError::TooLarge`]; everything else,
/// invalid UTF-8 included, is a [`ContractProblem`] at a line and column inside the bytes.
pub fn compile_bytes(file_label: &str, bytes: &[u8]) -> Result<Contract, ContractError> {
    compile_bytes_at(file_label, PathBuf::from(file_label), bytes)
}

/// The shipped default contract (tested to compile).
pub fn default_contract() -> Contract {
    compile(DEFAULT_CONTRACT_LABEL, DEFAULT_CONTRACT)
        .expect("the embedded default contract is valid (covered by contract tests)")
}

/// First 16 hex digits of SHA-256 over the file's bytes.
pub fn contract_version(bytes: &[u8]) -> String {
    let mut hex = hex::encode(Sha256::digest(bytes));
    hex.truncate(16);
    hex
}

fn compile_bytes_at(file: &str, path: PathBuf, bytes: &[u8]) -> Result<Contract, ContractError> {
    if bytes.len() > MAX_CONTRACT_BYTES {
        return Err(ContractError::TooLarge {
            path: file.to_string(),
            limit: MAX_CONTRACT_BYTES,
        });
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => compile_at(file, path, text),
        Err(e) => Err(ContractError::Invalid(vec![utf8_problem(file, bytes, &e)])),
    }
}

/// The description of a TOML syntax error. toml_edit leaves some failures without one (a
/// NUL byte where a key or value starts, for one), and names others only by what it was
/// parsing: a control character at the error is named in either case.
fn syntax_message(e: &toml_edit::TomlError, text: &str) -> String {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let at = e.span().map_or(0, |s| s.start);
    let found = text.get(at..).and_then(|rest| rest.chars().next());
    let hint = match found {
        Some('\0') => Some("a NUL byte (0x00) is not allowed in TOML".to_string()),
        Some(c) if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => Some(format!(
            "control character U+{:04X} is not allowed in TOML (only tab, and line breaks between lines)",
            u32::from(c)
        )),
        _ => None,
    };
    match (message.is_empty(), hint) {
        (false, Some(hint)) => format!("{message}; {hint}"),
        (false, None) => message,
        (true, Some(hint)) => hint,
        (true, None) => match found {
            None => "unexpected end of file".to_string(),
            Some(c) => format!("unexpected character `{}` (U+{:04X})", c.escape_default(), u32::from(c)),
        },
    }
}

fn compile_at(file: &str, path: PathBuf, text: &str) -> Result<Contract, ContractError> {
    let mut w = Walker {
        file,
        text,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let doc = match text.parse::<ImDocument<String>>() {
        Ok(doc) => doc,
        Err(e) => {
            let message = syntax_message(&e, text);
            w.report(&e.span(), "(toml syntax)", format!("invalid TOML: {message}"));
            return Err(ContractError::Invalid(w.problems));
        }
    };
    let root = Tbl {
        t: doc.as_table(),
        path: String::new(),
        span: Some(0..0),
    };
    let body = w.contract(&root);
    let mut problems = w.problems;
    match body {
        Some(b) if problems.is_empty() => {
            let mut warnings = w.warnings;
            warnings.sort_by_key(|p| (p.line, p.column));
            Ok(Contract {
                path,
                version: contract_version(text.as_bytes()),
                name: b.name,
                systems: b.systems,
                objects: b.objects,
                dedupe: b.dedupe,
                reconciliation: b.reconciliation,
                retry: b.retry,
                rate_limits: b.rate_limits,
                alerts: b.alerts,
                warnings,
            })
        }
        _ => {
            if problems.is_empty() {
                // Unreachable if every failed check reports; never return an empty list.
                problems.push(ContractProblem {
                    file: file.to_string(),
                    line: 1,
                    column: 1,
                    field: "(contract)".to_string(),
                    expected: "a valid contract".to_string(),
                });
            }
            problems.sort_by_key(|p| (p.line, p.column));
            Err(ContractError::Invalid(problems))
        }
    }
}

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

const ROOT_KEYS: &[&str] = &[
    "name",
    "systems",
    "objects",
    "dedupe",
    "reconciliation",
    "retry",
    "rate_limits",
    "alerts",
];
const SIDE_KEYS: &[&str] = &["crm", "billing"];
const SYSTEM_KEYS: &[&str] = &[
    "kind",
    "base_url",
    "secret",
    "webhook_secret",
    "request_timeout_ms",
    "ingest",
    "poll_interval_ms",
    "poll_overlap_ms",
    "allow_insecure_http",
];
const INGEST_MODES: &[(&str, IngestMode)] = &[
    ("webhooks", IngestMode::Webhooks),
    ("poll", IngestMode::Poll),
    ("both", IngestMode::Both),
];
const SECRET_KEYS: &[&str] = &["env", "keychain"];
const OBJECT_KEYS: &[&str] = &["crm", "billing", "match", "create_in", "idempotency_key", "fields"];
const FIELD_KEYS: &[&str] = &["name", "crm", "billing", "owner", "on_non_owner_edit", "conflict"];
const DEDUPE_KEYS: &[&str] = &["retention_days"];
const RECONCILIATION_KEYS: &[&str] = &["schedule", "window_days"];
const RETRY_KEYS: &[&str] = &["max_attempts", "base_backoff_ms", "max_backoff_ms"];
const CRM_RATE_KEYS: &[&str] = &["tier", "requests_per_second", "burst", "daily_cap"];
const BILLING_RATE_KEYS: &[&str] = &["mode", "requests_per_second", "burst", "daily_cap"];

/// A HubSpot tier's limits: (requests per 10 s, requests per day).
type TierLimits = (u32, u64);
/// HubSpot's published limits per private app by account tier.
const HUBSPOT_TIERS: &[(&str, TierLimits)] = &[
    ("free_starter", (100, 250_000)),
    ("professional", (190, 625_000)),
    ("enterprise", (190, 1_000_000)),
];
/// Stripe's basic rate limiter: requests per second by mode.
const STRIPE_MODES: &[(&str, u32)] = &[("test", 25), ("live", 100)];
const ALERT_KEYS: &[&str] = &[
    "lag_p95_ms",
    "dead_letters",
    "review_depth",
    "error_rate",
    "mismatch_rate",
];

const CRM_KINDS: &[(&str, SystemKind)] = &[("hubspot", SystemKind::Hubspot)];
const BILLING_KINDS: &[(&str, SystemKind)] = &[("stripe", SystemKind::Stripe)];
const CRM_OBJECTS: &[(&str, CrmObject)] = &[("contact", CrmObject::Contact), ("company", CrmObject::Company)];
const BILLING_OBJECTS: &[(&str, BillingObject)] = &[
    ("customer", BillingObject::Customer),
    ("subscription", BillingObject::Subscription),
    ("invoice", BillingObject::Invoice),
    ("credit_note", BillingObject::CreditNote),
];
const MATCH_RULES: &[(&str, MatchRule)] = &[("stored_id", MatchRule::StoredId), ("email", MatchRule::Email)];
const SIDES: &[(&str, Side)] = &[("crm", Side::Crm), ("billing", Side::Billing)];
const CONFLICT_RULES: &[(&str, ConflictRule)] = &[
    ("review", ConflictRule::Review),
    ("latest_sync_timestamp", ConflictRule::LatestSyncTimestamp),
];
const NON_OWNER_RULES: &[(&str, NonOwnerRule)] = &[("revert", NonOwnerRule::Revert), ("flag", NonOwnerRule::Flag)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnerKind {
    Crm,
    Billing,
    Shared,
}
const OWNERS: &[(&str, OwnerKind)] = &[
    ("crm", OwnerKind::Crm),
    ("billing", OwnerKind::Billing),
    ("shared", OwnerKind::Shared),
];

/// The name of `value` in a vocabulary table.
fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> &'static str {
    table.iter().find(|(_, v)| *v == value).map_or("?", |(n, _)| n)
}

const SECRET_LITERAL: &str = "secrets are referenced, never written in the contract: \
use { env = \"VAR\" } or { keychain = \"service/account\" }";

// Upper bounds of the numeric settings. Each is far past any sensible value and small enough
// that the engine's arithmetic on it (milliseconds added to a Unix-ms clock, days times a
// day's milliseconds, counts compared as i64) cannot overflow.

/// One hour: the longest wait between two tries of a write.
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// One day: a p95 lag past that is an outage, not a threshold.
const MAX_LAG_ALERT_MS: i64 = 86_400_000;
/// A queue depth past a million is an alert already.
const MAX_DEPTH_ALERT: i64 = 1_000_000;
/// Requests per second to one destination (Stripe's live limit is 100, HubSpot's 19).
const MAX_REQUESTS_PER_SECOND: f64 = 10_000.0;
/// The slowest budget the engine paces (one request per 1000 s).
const MIN_REQUESTS_PER_SECOND: f64 = 0.001;
/// A token bucket's capacity.
const MAX_BURST: i64 = 10_000;
/// Requests per UTC day (HubSpot Enterprise allows 1,000,000).
pub const MAX_DAILY_CAP: i64 = 1_000_000_000;

// ---------------------------------------------------------------------------
// The walker
// ---------------------------------------------------------------------------

type Span = Option<Range<usize>>;

/// A node of the parsed document.
#[derive(Clone, Copy)]
enum Node<'a> {
    Value(&'a Value),
    Table(&'a Table),
    Tables(&'a ArrayOfTables),
}

impl<'a> Node<'a> {
    fn of(item: &'a Item) -> Option<Node<'a>> {
        match item {
            Item::None => None,
            Item::Value(v) => Some(Node::Value(v)),
            Item::Table(t) => Some(Node::Table(t)),
            Item::ArrayOfTables(a) => Some(Node::Tables(a)),
        }
    }
    fn span(self) -> Span {
        match self {
            Node::Value(v) => v.span(),
            Node::Table(t) => t.span(),
            Node::Tables(a) => a.span(),
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Node::Value(Value::String(_)) => "a string",
            Node::Value(Value::Integer(_)) => "an integer",
            Node::Value(Value::Float(_)) => "a float",
            Node::Value(Value::Boolean(_)) => "a boolean",
            Node::Value(Value::Datetime(_)) => "a date-time",
            Node::Value(Value::Array(_)) => "an array",
            Node::Value(Value::InlineTable(_)) => "an inline table",
            Node::Table(_) => "a table",
            Node::Tables(_) => "an array of tables",
        }
    }
    fn value(self) -> Option<&'a Value> {
        match self {
            Node::Value(v) => Some(v),
            _ => None,
        }
    }
    fn table_like(self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Value(Value::InlineTable(t)) => Some(t),
            Node::Table(t) => Some(t),
            _ => None,
        }
    }
}

/// A value found under a key (or at an array index), with its dotted path and location.
struct Entry<'a> {
    node: Node<'a>,
    path: String,
    span: Span,
}

/// A table being read: its dotted path and the best location to blame for it.
struct Tbl<'a> {
    t: &'a dyn TableLike,
    path: String,
    span: Span,
}

/// `parent.key`, the key written as TOML writes it: bare when it can be, else quoted (an
/// empty key is `""`, never an empty path).
fn child_path(parent: &str, key: &str) -> String {
    let key = toml_edit::Key::new(key);
    let key = key.display_repr();
    if parent.is_empty() {
        key.into_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Parts of the contract other than its identity (path, version).
struct Body {
    name: String,
    systems: Systems,
    objects: Vec<ObjectMapping>,
    dedupe: Dedupe,
    reconciliation: Reconciliation,
    retry: Retry,
    rate_limits: RateLimits,
    alerts: Alerts,
}

/// Carries the file label, the text and every problem found so far.
///
/// Readers return `None` when a value is missing or invalid, having recorded why; a
/// section is built only after all its readers ran, so one walk reports everything.
struct Walker<'t> {
    file: &'t str,
    text: &'t str,
    problems: Vec<ContractProblem>,
    /// Accepted but risky settings (an allowed clear-text URL), located like problems.
    warnings: Vec<ContractProblem>,
}

impl<'t> Walker<'t> {
    fn report(&mut self, span: &Span, field: &str, expected: impl Into<String>) {
        let (line, column) = self.line_col(span.as_ref().map_or(0, |s| s.start));
        self.problems.push(ContractProblem {
            file: self.file.to_string(),
            line,
            column,
            field: field.to_string(),
            expected: expected.into(),
        });
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    // --- tables and keys --------------------------------------------------

    /// View `e` as a table whose keys must all be in `allowed` (`None`: any key).
    fn table<'a>(&mut self, e: &Entry<'a>, allowed: Option<&[&str]>) -> Option<Tbl<'a>> {
        let Some(t) = e.node.table_like() else {
            self.report(&e.span, &e.path, format!("expected a table, found {}", e.node.kind()));
            return None;
        };
        let tbl = Tbl {
            t,
            path: e.path.clone(),
            span: e.span.clone(),
        };
        if let Some(allowed) = allowed {
            self.unknown_keys(&tbl, allowed);
        }
        Some(tbl)
    }

    fn unknown_keys(&mut self, t: &Tbl<'_>, allowed: &[&str]) {
        for (key, item) in t.t.iter() {
            if allowed.contains(&key) {
                continue;
            }
            let span =
                t.t.get_key_value(key)
                    .and_then(|(k, _)| k.span())
                    .or_else(|| item.span())
                    .or_else(|| t.span.clone());
            self.report(
                &span,
                &child_path(&t.path, key),
                format!("unknown key; allowed keys: {}", allowed.join(", ")),
            );
        }
    }

    fn lookup<'a>(&self, t: &Tbl<'a>, key: &str) -> Option<Entry<'a>> {
        let (k, item) = t.t.get_key_value(key)?;
        let node = Node::of(item)?;
        let span = node.span().or_else(|| k.span()).or_else(|| t.span.clone());
        Some(Entry {
            node,
            path: child_path(&t.path, key),
            span,
        })
    }

    fn missing(&mut self, t: &Tbl<'_>, key: &str) {
        let within = if t.path.is_empty() {
            "at the top level".to_string()
        } else {
            format!("in [{}]", t.path)
        };
        self.report(
            &t.span,
            &child_path(&t.path, key),
            format!("missing required key `{key}` {within}"),
        );
    }

    /// A required key, converted by `conv`.
    fn required<'a, T>(
        &mut self,
        t: &Tbl<'a>,
        key: &str,
        conv: impl FnOnce(&mut Self, &Entry<'a>) -> Option<T>,
    ) -> Option<T> {
        match self.lookup(t, key) {
            Some(e) => conv(self, &e),
            None => {
                self.missing(t, key);
                None
            }
        }
    }

    /// An optional key: `Some(None)` when absent, `None` when present but invalid.
    fn optional<'a, T>(
        &mut self,
        t: &Tbl<'a>,
        key: &str,
        conv: impl FnOnce(&mut Self, &Entry<'a>) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.lookup(t, key) {
            Some(e) => conv(self, &e).map(Some),
            None => Some(None),
        }
    }

    /// A key of an optional section: the default when the section or the key is absent.
    fn defaulted<'a, T>(
        &mut self,
        t: Option<&Tbl<'a>>,
        key: &str,
        default: T,
        conv: impl FnOnce(&mut Self, &Entry<'a>) -> Option<T>,
    ) -> Option<T> {
        match t {
            Some(t) => self.optional(t, key, conv).map(|v| v.unwrap_or(default)),
            None => Some(default),
        }
    }

    /// An optional section (table); `None` when absent or not a table (reported).
    fn section<'a>(&mut self, t: &Tbl<'a>, key: &str, allowed: &[&str]) -> Option<Tbl<'a>> {
        let e = self.lookup(t, key)?;
        self.table(&e, Some(allowed))
    }

    // --- scalar conversions ----------------------------------------------

    fn string<'a>(&mut self, e: &Entry<'a>) -> Option<&'a str> {
        match e.node.value() {
            Some(Value::String(s)) => Some(s.value()),
            _ => {
                self.report(&e.span, &e.path, format!("expected a string, found {}", e.node.kind()));
                None
            }
        }
    }

    /// A non-empty string made of `[A-Za-z0-9_]`.
    fn ident<'a>(&mut self, e: &Entry<'a>, what: &str) -> Option<&'a str> {
        let s = self.string(e)?;
        if is_ident(s) {
            Some(s)
        } else {
            self.report(
                &e.span,
                &e.path,
                format!("expected {what}: letters, digits and `_` only, not empty (found {s:?})"),
            );
            None
        }
    }

    fn choice<T: Clone>(&mut self, e: &Entry<'_>, options: &[(&str, T)]) -> Option<T> {
        let s = self.string(e)?;
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == s) {
            return Some(v.clone());
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        self.report(
            &e.span,
            &e.path,
            format!("expected one of: {} (found {s:?})", names.join(", ")),
        );
        None
    }

    fn int<T: TryFrom<i64>>(&mut self, e: &Entry<'_>, range: RangeInclusive<i64>) -> Option<T> {
        let Some(Value::Integer(i)) = e.node.value() else {
            self.report(
                &e.span,
                &e.path,
                format!("expected an integer, found {}", e.node.kind()),
            );
            return None;
        };
        let v = *i.value();
        match T::try_from(v) {
            Ok(t) if range.contains(&v) => Some(t),
            _ => {
                let (lo, hi) = (range.start(), range.end());
                self.report(
                    &e.span,
                    &e.path,
                    format!("expected an integer in {lo}..={hi} (found {v})"),
                );
                None
            }
        }
    }

    /// A finite number (integers accepted) satisfying `ok`, described by `what`.
    fn number(&mut self, e: &Entry<'_>, ok: fn(f64) -> bool, what: &str) -> Option<f64> {
        let v = match e.node.value() {
            Some(Value::Float(f)) => *f.value(),
            // TOML integers are exact in f64 for any sensible rate.
            Some(Value::Integer(i)) => *i.value() as f64,
            _ => {
                self.report(&e.span, &e.path, format!("expected a number, found {}", e.node.kind()));
                return None;
            }
        };
        if v.is_finite() && ok(v) {
            Some(v)
        } else {
            self.report(&e.span, &e.path, format!("expected a number {what} (found {v})"));
            None
        }
    }

    // --- the contract -----------------------------------------------------

    fn contract(&mut self, root: &Tbl<'_>) -> Option<Body> {
        self.unknown_keys(root, ROOT_KEYS);
        let name = self.required(root, "name", |w, e| {
            let s = w.string(e)?;
            if s.trim().is_empty() {
                w.report(&e.span, &e.path, "expected a non-empty name");
                return None;
            }
            Some(s.to_string())
        });
        let systems = self.systems(root);
        let objects = self.objects(root);
        let dedupe = self.dedupe(root);
        let reconciliation = self.reconciliation(root);
        let retry = self.retry(root);
        let rate_limits = self.rate_limits(root);
        let alerts = self.alerts(root);
        Some(Body {
            name: name?,
            systems: systems?,
            objects: objects?,
            dedupe: dedupe?,
            reconciliation: reconciliation?,
            retry: retry?,
            rate_limits: rate_limits?,
            alerts: alerts?,
        })
    }

    fn systems(&mut self, root: &Tbl<'_>) -> Option<Systems> {
        let t = self.required(root, "systems", |w, e| w.table(e, Some(SIDE_KEYS)))?;
        let crm = self.required(&t, "crm", |w, e| w.system(e, CRM_KINDS));
        let billing = self.required(&t, "billing", |w, e| w.system(e, BILLING_KINDS));
        Some(Systems {
            crm: crm?,
            billing: billing?,
        })
    }

    fn system(&mut self, e: &Entry<'_>, kinds: &[(&str, SystemKind)]) -> Option<SystemConfig> {
        let t = self.table(e, Some(SYSTEM_KEYS))?;
        let kind = self.required(&t, "kind", |w, e| w.choice(e, kinds));
        let base_url = self.required(&t, "base_url", Self::url);
        let allow_insecure_http = self.defaulted(Some(&t), "allow_insecure_http", false, Self::boolean);
        if let (Some(url), Some(allow)) = (&base_url, allow_insecure_http) {
            self.clear_text_check(&t, url, allow);
        }
        let secret = self.required(&t, "secret", Self::secret);
        let webhook_secret = self.optional(&t, "webhook_secret", Self::secret);
        let request_timeout_ms = self.defaulted(Some(&t), "request_timeout_ms", 10_000, |w, e| w.int(e, 100..=120_000));
        let ingest = self.defaulted(Some(&t), "ingest", IngestMode::Webhooks, |w, e| {
            w.choice(e, INGEST_MODES)
        });
        let poll_interval_ms = self.defaulted(Some(&t), "poll_interval_ms", 30_000, |w, e| w.int(e, 100..=3_600_000));
        // Stripe's `created` has whole seconds and HubSpot's search index lags: at least 1 s.
        let poll_overlap_ms = self.defaulted(Some(&t), "poll_overlap_ms", 300_000, |w, e| {
            w.int(e, 1_000..=86_400_000)
        });
        Some(SystemConfig {
            kind: kind?,
            base_url: base_url?,
            secret: secret?,
            webhook_secret: webhook_secret?,
            request_timeout_ms: request_timeout_ms?,
            ingest: ingest?,
            poll_interval_ms: poll_interval_ms?,
            poll_overlap_ms: poll_overlap_ms?,
        })
    }

    /// `http://` sends the API key in clear text: only to a loopback host (a local
    /// simulator), or anywhere when the section says `allow_insecure_http = true` (then the
    /// compiled contract carries a warning).
    fn clear_text_check(&mut self, t: &Tbl<'_>, url: &str, allow: bool) {
        let Some(rest) = url.strip_prefix("http://") else {
            return;
        };
        let host = url_host(rest);
        if is_loopback_host(host) {
            return;
        }
        let Some(e) = self.lookup(t, "base_url") else {
            return;
        };
        if allow {
            let warning = format!(
                "http:// to {host}, which is not a loopback host: the API key and every record are \
                 sent in clear text (allowed by allow_insecure_http = true in [{}])",
                t.path
            );
            let (line, column) = self.line_col(e.span.as_ref().map_or(0, |s| s.start));
            self.warnings.push(ContractProblem {
                file: self.file.to_string(),
                line,
                column,
                field: e.path,
                expected: warning,
            });
        } else {
            self.report(
                &e.span,
                &e.path,
                format!(
                    "expected https:// (http:// would send the API key to {host} in clear text); \
                     http:// is accepted only for a loopback host (127.0.0.1, ::1, localhost), \
                     or with allow_insecure_http = true in [{}]",
                    t.path
                ),
            );
        }
    }

    fn boolean(&mut self, e: &Entry<'_>) -> Option<bool> {
        match e.node.value() {
            Some(Value::Boolean(b)) => Some(*b.value()),
            _ => {
                self.report(
                    &e.span,
                    &e.path,
                    format!("expected true or false, found {}", e.node.kind()),
                );
                None
            }
        }
    }

    fn url(&mut self, e: &Entry<'_>) -> Option<String> {
        let s = self.string(e)?;
        let trimmed = s.trim_end_matches('/');
        let rest = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"));
        match rest {
            Some(host)
                if !host.is_empty()
                    && !host.starts_with('/')
                    && !trimmed.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') =>
            {
                Some(trimmed.to_string())
            }
            _ => {
                self.report(
                    &e.span,
                    &e.path,
                    format!(
                        "expected a URL starting with http:// or https:// followed by a host, \
                         without query or fragment (found {s:?})"
                    ),
                );
                None
            }
        }
    }

    /// `{ env = "NAME" }` or `{ keychain = "service/account" }`. Never echoes the value:
    /// whatever is written here may be a pasted credential.
    fn secret(&mut self, e: &Entry<'_>) -> Option<SecretRef> {
        let Some(t) = e.node.table_like() else {
            self.report(&e.span, &e.path, SECRET_LITERAL);
            return None;
        };
        let t = Tbl {
            t,
            path: e.path.clone(),
            span: e.span.clone(),
        };
        self.unknown_keys(&t, SECRET_KEYS);
        let env = self.lookup(&t, "env");
        let keychain = self.lookup(&t, "keychain");
        match (env, keychain) {
            (Some(env), None) => {
                let name = self.string(&env)?;
                if is_env_name(name) {
                    Some(SecretRef::Env(name.to_string()))
                } else {
                    self.report(
                        &env.span,
                        &env.path,
                        "expected an environment variable name: letters, digits and `_`, \
                         not starting with a digit",
                    );
                    None
                }
            }
            (None, Some(kc)) => {
                let s = self.string(&kc)?;
                match s.split_once('/') {
                    Some((service, account)) if !service.is_empty() && !account.is_empty() => {
                        Some(SecretRef::Keychain {
                            service: service.to_string(),
                            account: account.to_string(),
                        })
                    }
                    _ => {
                        self.report(
                            &kc.span,
                            &kc.path,
                            "expected \"service/account\" (both parts non-empty)",
                        );
                        None
                    }
                }
            }
            (Some(_), Some(kc)) => {
                self.report(
                    &kc.span,
                    &e.path,
                    "expected exactly one of `env` or `keychain`, not both",
                );
                None
            }
            (None, None) => {
                self.report(
                    &e.span,
                    &e.path,
                    "expected { env = \"VAR\" } or { keychain = \"service/account\" }",
                );
                None
            }
        }
    }

    fn objects(&mut self, root: &Tbl<'_>) -> Option<Vec<ObjectMapping>> {
        let t = self.required(root, "objects", |w, e| w.table(e, None))?;
        if t.t.is_empty() {
            self.report(
                &t.span,
                &t.path,
                "expected at least one object, e.g. [objects.customer]",
            );
            return None;
        }
        let mut compiled = Vec::new();
        let mut all_valid = true;
        let names: Vec<&str> = t.t.iter().map(|(k, _)| k).collect();
        for name in names {
            let Some(e) = self.lookup(&t, name) else {
                continue;
            };
            // Keep walking after a bad object so later ones are checked too.
            match self.object(name, &e) {
                Some(o) => compiled.push(o),
                None => all_valid = false,
            }
        }
        // Across the objects that compiled, so a contradiction shows with the other problems.
        self.one_owner_per_field(&compiled);
        all_valid.then(|| compiled.into_iter().map(|(o, _)| o).collect())
    }

    /// Enforce the contract-wide ownership rule (see [`Role`]): every physical field —
    /// (system, object kind, path), e.g. (crm, contact, `email`) or (billing, customer,
    /// `metadata.lifecycle_stage`) — has one owner and at most one source.
    ///
    /// A mapping gives each of its two fields a role: the owner's field is the source of the
    /// other (`Owns`), the other is a copy written from it (`CopyOf`, its edits reverted or
    /// flagged), and a shared pair makes each field both (`Shared`: either side's edits
    /// propagate). The field's *owner* is its own side for `Owns` and `Shared` (its edits are
    /// the truth) and the counterpart for `CopyOf`; its *source* is the counterpart for
    /// `CopyOf` and `Shared`. Across all mappings of one physical field:
    ///
    /// - the owner is the same: a field that is a copy in one mapping is no one's source or
    ///   shared partner in another (its edits would be reverted by one and propagated by the
    ///   other);
    /// - there is at most one source (one counterpart field writes into it), mapped with one
    ///   rule (owner, `on_non_owner_edit`, `conflict`) wherever the pair appears.
    ///
    /// A field its own side owns may feed any number of copies and share with one partner:
    /// the default's billing subscription `plan` feeds CRM `plan` and is shared with CRM
    /// `requested_plan`, its one writer. Each contradiction is reported once per field
    /// mapping, at its value, naming the first mapping it contradicts (file:line:column).
    fn one_owner_per_field(&mut self, objects: &[(ObjectMapping, Vec<FieldSite>)]) {
        let mut uses: Vec<Use<'_>> = Vec::new();
        for (o, sites) in objects {
            for (f, site) in o.fields.iter().zip(sites) {
                let crm = Physical {
                    side: Side::Crm,
                    kind: o.crm.as_str(),
                    path: &f.crm,
                };
                let billing = Physical {
                    side: Side::Billing,
                    kind: o.billing.as_str(),
                    path: &f.billing,
                };
                let (crm_role, billing_role) = match f.owner {
                    Owner::Crm => (Role::Owns, Role::CopyOf(f.on_non_owner_edit)),
                    Owner::Billing => (Role::CopyOf(f.on_non_owner_edit), Role::Owns),
                    Owner::Shared(rule) => (Role::Shared(rule), Role::Shared(rule)),
                };
                let mapping = uses.len();
                uses.push(Use {
                    field: crm,
                    partner: billing,
                    role: crm_role,
                    mapping,
                    at: site.crm.clone(),
                    path: format!("{}.crm", site.path),
                    mapping_path: site.path.clone(),
                });
                uses.push(Use {
                    field: billing,
                    partner: crm,
                    role: billing_role,
                    mapping,
                    at: site.billing.clone(),
                    path: format!("{}.billing", site.path),
                    mapping_path: site.path.clone(),
                });
            }
        }
        uses.sort_by_key(|u| u.at.as_ref().map_or(0, |s| s.start));
        // Per physical field: its first use (the owner to agree with) and its first use with a
        // source (the source to agree with).
        let mut first: HashMap<Physical<'_>, (usize, Option<usize>)> = HashMap::new();
        let mut reported: HashSet<usize> = HashSet::new();
        for (i, u) in uses.iter().enumerate() {
            let entry = first.entry(u.field).or_insert((i, None));
            let (owner_ref, source_ref) = *entry;
            if source_ref.is_none() && u.source().is_some() {
                entry.1 = Some(i);
            }
            if reported.contains(&u.mapping) {
                continue;
            }
            let earlier = |j: usize| uses.get(j).filter(|_| j != i);
            let problem = earlier(owner_ref)
                .and_then(|e| self.owner_conflict(e, u))
                .or_else(|| source_ref.and_then(earlier).and_then(|e| self.source_conflict(e, u)));
            if let Some(message) = problem {
                reported.insert(u.mapping);
                self.report(&u.at, &u.path, message);
            }
        }
    }

    /// `file:line:column` of a location, for naming a second place in a message.
    fn place(&self, span: &Span) -> String {
        let (line, column) = self.line_col(span.as_ref().map_or(0, |s| s.start));
        format!("{}:{line}:{column}", self.file)
    }

    fn owner_conflict(&self, first: &Use<'_>, u: &Use<'_>) -> Option<String> {
        if first.owner() == u.owner() {
            return None;
        }
        Some(format!(
            "{} has two owners: here {}, but at {} ({}) {}; expected one owner for each field \
             across the contract (a copy of one field is nobody's source or shared partner)",
            u.field,
            u.describe(),
            first.mapping_path,
            self.place(&first.at),
            first.describe()
        ))
    }

    fn source_conflict(&self, first: &Use<'_>, u: &Use<'_>) -> Option<String> {
        let (theirs, mine) = (first.source()?, u.source()?);
        if theirs.0 != mine.0 {
            return Some(format!(
                "{} is written from two sources: here from {}, but {} ({}) writes it from {}; \
                 expected at most one source for each field across the contract",
                u.field,
                mine.0,
                first.mapping_path,
                self.place(&first.at),
                theirs.0
            ));
        }
        if theirs.1 != mine.1 {
            return Some(format!(
                "{} and {} are mapped again with a different rule: here {}, but {} ({}) has {}; \
                 expected the same owner and rule wherever a pair is mapped",
                u.field,
                u.partner,
                u.rule(),
                first.mapping_path,
                self.place(&first.at),
                first.rule()
            ));
        }
        None
    }

    fn object(&mut self, name: &str, e: &Entry<'_>) -> Option<(ObjectMapping, Vec<FieldSite>)> {
        let t = self.table(e, Some(OBJECT_KEYS))?;
        let valid_name = if is_ident(name) {
            Some(())
        } else {
            self.report(
                &e.span,
                &e.path,
                "expected an object name of letters, digits and `_` only",
            );
            None
        };
        let crm = self.required(&t, "crm", |w, e| w.choice(e, CRM_OBJECTS));
        let billing = self.required(&t, "billing", |w, e| w.choice(e, BILLING_OBJECTS));
        let match_on = self.required(&t, "match", Self::match_rules);
        let create_in = self.optional(&t, "create_in", |w, e| w.choice(e, SIDES));
        let idempotency_key = self.required(&t, "idempotency_key", Self::key_template);
        let fields = self.required(&t, "fields", Self::fields);
        valid_name?;
        let (fields, sites) = fields?.into_iter().unzip();
        let object = ObjectMapping {
            name: name.to_string(),
            crm: crm?,
            billing: billing?,
            match_on: match_on?,
            create_in: create_in?,
            idempotency_key: idempotency_key?,
            fields,
        };
        Some((object, sites))
    }

    fn match_rules(&mut self, e: &Entry<'_>) -> Option<Vec<MatchRule>> {
        let Some(Value::Array(items)) = e.node.value() else {
            self.report(
                &e.span,
                &e.path,
                format!(
                    "expected an array such as [\"stored_id\", \"email\"], found {}",
                    e.node.kind()
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.report(&e.span, &e.path, "expected at least one match rule: stored_id, email");
            return None;
        }
        let mut out = Some(Vec::new());
        for (i, v) in items.iter().enumerate() {
            let item = Entry {
                node: Node::Value(v),
                path: format!("{}[{i}]", e.path),
                span: v.span().or_else(|| e.span.clone()),
            };
            let rule = self.choice(&item, MATCH_RULES);
            if let (Some(rule), Some(list)) = (rule, out.as_ref()) {
                if list.contains(&rule) {
                    self.report(&item.span, &item.path, "each match rule at most once");
                }
            }
            match (rule, out.as_mut()) {
                (Some(r), Some(list)) => list.push(r),
                _ => out = None,
            }
        }
        out
    }

    fn key_template(&mut self, e: &Entry<'_>) -> Option<KeyTemplate> {
        let raw = self.string(e)?;
        if raw.is_empty() {
            self.report(
                &e.span,
                &e.path,
                "expected a non-empty template such as \"billing:create:{crm_contact_id}:{event_id}\"",
            );
            return None;
        }
        match parse_template(raw) {
            Ok(parts) => Some(KeyTemplate {
                raw: raw.to_string(),
                parts,
            }),
            Err(errors) => {
                for (offset, message) in errors {
                    let span = self.inside_string(&e.span, raw, offset);
                    self.report(&span, &e.path, message);
                }
                None
            }
        }
    }

    /// The location of byte `offset` of a string value, when the source writes the value
    /// verbatim between quotes (no escapes); otherwise the value's own location.
    fn inside_string(&self, span: &Span, value: &str, offset: usize) -> Span {
        let s = span.as_ref()?;
        let source = self.text.get(s.clone())?;
        let verbatim = ["\"", "'"].iter().any(|q| {
            source
                .strip_prefix(q)
                .and_then(|r| r.strip_suffix(q))
                .is_some_and(|inner| inner == value)
        });
        if verbatim {
            let at = s.start + 1 + offset;
            Some(at..at)
        } else {
            Some(s.clone())
        }
    }

    fn fields(&mut self, e: &Entry<'_>) -> Option<Vec<(FieldMapping, FieldSite)>> {
        let tables: Vec<(&dyn TableLike, Span)> = match e.node {
            Node::Tables(a) => a
                .iter()
                .map(|t| (t as &dyn TableLike, t.span().or_else(|| e.span.clone())))
                .collect(),
            Node::Value(Value::Array(a)) if a.iter().all(Value::is_inline_table) => a
                .iter()
                .filter_map(|v| {
                    let span = v.span().or_else(|| e.span.clone());
                    v.as_inline_table().map(|t| (t as &dyn TableLike, span))
                })
                .collect(),
            other => {
                self.report(
                    &e.span,
                    &e.path,
                    format!("expected an array of tables ([[{}]]), found {}", e.path, other.kind()),
                );
                return None;
            }
        };
        if tables.is_empty() {
            self.report(
                &e.span,
                &e.path,
                format!("expected at least one field ([[{}]])", e.path),
            );
            return None;
        }
        let mut seen = Seen::default();
        let mut out = Some(Vec::new());
        for (i, (t, span)) in tables.into_iter().enumerate() {
            let t = Tbl {
                t,
                path: format!("{}[{i}]", e.path),
                span,
            };
            let field = self.field(&t, &mut seen).map(|f| {
                let at = |key: &str| self.lookup(&t, key).and_then(|e| e.span);
                let site = FieldSite {
                    crm: at("crm"),
                    billing: at("billing"),
                    path: t.path.clone(),
                };
                (f, site)
            });
            match (field, out.as_mut()) {
                (Some(f), Some(v)) => v.push(f),
                _ => out = None,
            }
        }
        out
    }

    fn field(&mut self, t: &Tbl<'_>, seen: &mut Seen) -> Option<FieldMapping> {
        self.unknown_keys(t, FIELD_KEYS);
        let name = self.required(t, "name", |w, e| {
            let s = w.ident(e, "a field name")?;
            w.once(&mut seen.names, s, e).then(|| s.to_string())
        });
        let crm = self.required(t, "crm", |w, e| {
            let s = w.ident(e, "a CRM property name")?;
            w.once(&mut seen.crm, s, e).then(|| s.to_string())
        });
        let billing = self.required(t, "billing", |w, e| {
            let s = w.billing_path(e)?;
            w.once(&mut seen.billing, s, e).then(|| s.to_string())
        });
        let owner = self.required(t, "owner", |w, e| w.choice(e, OWNERS));
        let non_owner = self.optional(t, "on_non_owner_edit", |w, e| {
            w.choice(e, NON_OWNER_RULES).map(|r| (r, e.span.clone()))
        });
        let conflict = self.optional(t, "conflict", |w, e| {
            w.choice(e, CONFLICT_RULES).map(|r| (r, e.span.clone()))
        });

        let owner = match (owner?, conflict?) {
            (OwnerKind::Shared, Some((rule, _))) => Some(Owner::Shared(rule)),
            (OwnerKind::Shared, None) => {
                self.report(
                    &t.span,
                    &child_path(&t.path, "conflict"),
                    "a shared field needs a conflict rule: conflict = \"review\" or \
                     \"latest_sync_timestamp\"",
                );
                None
            }
            (kind, Some((_, span))) => {
                self.report(
                    &span,
                    &child_path(&t.path, "conflict"),
                    format!(
                        "conflict is only allowed when owner = \"shared\" (owner is {:?})",
                        name_of(OWNERS, kind)
                    ),
                );
                None
            }
            (OwnerKind::Crm, None) => Some(Owner::Crm),
            (OwnerKind::Billing, None) => Some(Owner::Billing),
        };
        let on_non_owner_edit = match (owner, non_owner?) {
            (Some(Owner::Shared(_)), Some((_, span))) => {
                self.report(
                    &span,
                    &child_path(&t.path, "on_non_owner_edit"),
                    "on_non_owner_edit is only allowed when owner is \"crm\" or \"billing\"; \
                     shared fields use their conflict rule",
                );
                None
            }
            (_, rule) => Some(rule.map_or(NonOwnerRule::Revert, |(r, _)| r)),
        };
        let owner = owner?;
        let billing = billing?;
        if billing == "id" && owner != Owner::Billing {
            if let Some(e) = self.lookup(t, "owner") {
                self.report(
                    &e.span,
                    &e.path,
                    "billing path `id` is assigned by the billing system: owner must be \"billing\"",
                );
            }
            return None;
        }
        Some(FieldMapping {
            name: name?,
            crm: crm?,
            billing,
            owner,
            on_non_owner_edit: on_non_owner_edit?,
        })
    }

    /// Record `value` in `seen`; report and return false if it was already there.
    fn once(&mut self, seen: &mut Vec<(String, String, Span)>, value: &str, e: &Entry<'_>) -> bool {
        if let Some((_, first, first_span)) = seen.iter().find(|(v, _, _)| v == value) {
            let (line, _) = self.line_col(first_span.as_ref().map_or(0, |s| s.start));
            let message = format!("{value:?} is already mapped by {first} (line {line})");
            self.report(&e.span, &e.path, message);
            return false;
        }
        seen.push((value.to_string(), e.path.clone(), e.span.clone()));
        true
    }

    /// A top-level attribute name (`email`, `id`) or `metadata.<key>`.
    fn billing_path<'a>(&mut self, e: &Entry<'a>) -> Option<&'a str> {
        let s = self.string(e)?;
        let ok = match s.split_once('.') {
            None => is_ident(s),
            Some(("metadata", key)) => is_metadata_key(key),
            Some(_) => false,
        };
        if ok {
            Some(s)
        } else {
            self.report(
                &e.span,
                &e.path,
                format!(
                    "expected a top-level billing attribute (e.g. \"email\", \"id\") or \
                     \"metadata.<key>\" (key: up to 40 of letters, digits, `_`, `-`) (found {s:?})"
                ),
            );
            None
        }
    }

    // --- optional sections -------------------------------------------------

    fn dedupe(&mut self, root: &Tbl<'_>) -> Option<Dedupe> {
        let t = self.section(root, "dedupe", DEDUPE_KEYS);
        let retention_days = self.defaulted(t.as_ref(), "retention_days", 30, |w, e| w.int(e, 1..=365));
        Some(Dedupe {
            retention_days: retention_days?,
        })
    }

    fn reconciliation(&mut self, root: &Tbl<'_>) -> Option<Reconciliation> {
        let t = self.section(root, "reconciliation", RECONCILIATION_KEYS);
        let schedule = self.defaulted(t.as_ref(), "schedule", "nightly".to_string(), |w, e| {
            let s = w.string(e)?;
            if is_schedule(s) {
                Some(s.to_string())
            } else {
                w.report(
                    &e.span,
                    &e.path,
                    format!(
                        "expected nightly, hourly, manual or a 5-field cron expression \
                         such as \"0 3 * * *\" (found {s:?})"
                    ),
                );
                None
            }
        });
        let window_days = self.defaulted(t.as_ref(), "window_days", 7, |w, e| w.int(e, 1..=90));
        Some(Reconciliation {
            schedule: schedule?,
            window_days: window_days?,
        })
    }

    fn retry(&mut self, root: &Tbl<'_>) -> Option<Retry> {
        let t = self.section(root, "retry", RETRY_KEYS);
        let t = t.as_ref();
        let max_attempts = self.defaulted(t, "max_attempts", 8, |w, e| w.int(e, 1..=100));
        let base_backoff_ms = self.defaulted(t, "base_backoff_ms", 200, |w, e| w.int(e, 1..=MAX_BACKOFF_MS));
        let max_backoff_ms = self.defaulted(t, "max_backoff_ms", 30_000, |w, e| w.int(e, 1..=MAX_BACKOFF_MS));
        if let (Some(base), Some(max)) = (base_backoff_ms, max_backoff_ms) {
            if max < base {
                let e = t.and_then(|t| {
                    self.lookup(t, "max_backoff_ms")
                        .or_else(|| self.lookup(t, "base_backoff_ms"))
                });
                let (span, path) = e.map_or((Some(0..0), "retry.max_backoff_ms".to_string()), |e| (e.span, e.path));
                self.report(
                    &span,
                    &path,
                    format!("expected max_backoff_ms >= base_backoff_ms ({max} < {base})"),
                );
                return None;
            }
        }
        Some(Retry {
            max_attempts: max_attempts?,
            base_backoff_ms: base_backoff_ms?,
            max_backoff_ms: max_backoff_ms?,
        })
    }

    fn rate_limits(&mut self, root: &Tbl<'_>) -> Option<RateLimits> {
        let t = self.section(root, "rate_limits", SIDE_KEYS);
        // HubSpot: a tier gives the 10-second quota (paced evenly, a 10th of it as burst) and
        // the daily cap. Stripe: the mode gives the per-second limit (a second's worth of
        // burst). Explicit keys override either.
        let crm_t = t.as_ref().and_then(|p| self.section(p, "crm", CRM_RATE_KEYS));
        let tier = self.defaulted(crm_t.as_ref(), "tier", ("free_starter", (100, 250_000)), |w, e| {
            let options: Vec<(&str, (&str, TierLimits))> = HUBSPOT_TIERS.iter().map(|(n, v)| (*n, (*n, *v))).collect();
            w.choice(e, &options)
        });
        let crm = tier.and_then(|(name, (per_10s, daily))| {
            let per_sec = f64::from(per_10s) / 10.0;
            let burst = (per_10s / 10).max(1);
            self.rate_limit(
                crm_t.as_ref(),
                per_sec,
                burst,
                Some(daily),
                format!("hubspot {name} tier"),
            )
        });
        let billing_t = t.as_ref().and_then(|p| self.section(p, "billing", BILLING_RATE_KEYS));
        let mode = self.defaulted(billing_t.as_ref(), "mode", ("test", 25), |w, e| {
            let options: Vec<(&str, (&str, u32))> = STRIPE_MODES.iter().map(|(n, v)| (*n, (*n, *v))).collect();
            w.choice(e, &options)
        });
        let billing = mode.and_then(|(name, per_sec)| {
            self.rate_limit(
                billing_t.as_ref(),
                f64::from(per_sec),
                per_sec,
                None,
                format!("stripe {name} mode"),
            )
        });
        Some(RateLimits {
            crm: crm?,
            billing: billing?,
        })
    }

    fn rate_limit(
        &mut self,
        t: Option<&Tbl<'_>>,
        rps: f64,
        burst: u32,
        daily_cap: Option<u64>,
        preset: String,
    ) -> Option<RateLimit> {
        let overridden: Vec<&str> = ["requests_per_second", "burst", "daily_cap"]
            .into_iter()
            .filter(|k| t.is_some_and(|t| t.t.contains_key(k)))
            .collect();
        let requests_per_second = self.defaulted(t, "requests_per_second", rps, |w, e| {
            w.number(
                e,
                |v| (MIN_REQUESTS_PER_SECOND..=MAX_REQUESTS_PER_SECOND).contains(&v),
                "in 0.001..=10000",
            )
        });
        let burst = self.defaulted(t, "burst", burst, |w, e| w.int(e, 1..=MAX_BURST));
        let daily_cap = self.defaulted(t, "daily_cap", daily_cap, |w, e| w.int(e, 1..=MAX_DAILY_CAP).map(Some));
        let source = if overridden.is_empty() {
            format!("{preset} default")
        } else {
            format!("{preset}; {} from the contract", overridden.join(", "))
        };
        Some(RateLimit {
            requests_per_second: requests_per_second?,
            burst: burst?,
            daily_cap: daily_cap?,
            source,
        })
    }

    fn alerts(&mut self, root: &Tbl<'_>) -> Option<Alerts> {
        let t = self.section(root, "alerts", ALERT_KEYS);
        let t = t.as_ref();
        let fraction = |w: &mut Self, e: &Entry<'_>| w.number(e, |v| v > 0.0 && v <= 1.0, "in (0, 1]");
        let lag_p95_ms = self.defaulted(t, "lag_p95_ms", 60_000, |w, e| w.int(e, 1..=MAX_LAG_ALERT_MS));
        let dead_letters = self.defaulted(t, "dead_letters", 10, |w, e| w.int(e, 0..=MAX_DEPTH_ALERT));
        let review_depth = self.defaulted(t, "review_depth", 25, |w, e| w.int(e, 0..=MAX_DEPTH_ALERT));
        let error_rate = self.defaulted(t, "error_rate", 0.05, fraction);
        let mismatch_rate = self.defaulted(t, "mismatch_rate", 0.01, fraction);
        Some(Alerts {
            lag_p95_ms: lag_p95_ms?,
            dead_letters: dead_letters?,
            review_depth: review_depth?,
            error_rate: error_rate?,
            mismatch_rate: mismatch_rate?,
        })
    }
}

/// Where a compiled field mapping was written: `objects.<name>.fields[i]` and the locations
/// of its `crm` and `billing` values.
struct FieldSite {
    path: String,
    crm: Span,
    billing: Span,
}

/// A physical field: (system, object kind, path), e.g. (crm, contact, `email`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Physical<'a> {
    side: Side,
    kind: &'static str,
    path: &'a str,
}

impl fmt::Display for Physical<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} `{}`", self.side.as_str(), self.kind, self.path)
    }
}

/// What one field mapping makes of one of its two physical fields.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Its own side owns the pair: its edits are the truth, copied to the counterpart, and
    /// the mapping never writes it.
    Owns,
    /// The counterpart owns the pair: it is written from the counterpart, and its own edits
    /// are reverted or flagged by the rule.
    CopyOf(NonOwnerRule),
    /// Shared: either side's edits propagate; concurrent ones are settled by the rule.
    Shared(ConflictRule),
}

/// One physical field as one field mapping uses it.
struct Use<'a> {
    field: Physical<'a>,
    partner: Physical<'a>,
    role: Role,
    /// Which field mapping (both of its uses share the number).
    mapping: usize,
    /// The location of the field's value (`crm = "..."` or `billing = "..."`).
    at: Span,
    /// `objects.<name>.fields[i].crm` or `.billing`.
    path: String,
    /// `objects.<name>.fields[i]`.
    mapping_path: String,
}

impl Use<'_> {
    /// The side whose edits of this field are the truth.
    fn owner(&self) -> Side {
        match self.role {
            Role::Owns | Role::Shared(_) => self.field.side,
            Role::CopyOf(_) => self.partner.side,
        }
    }

    /// The field written into this one, with the rule it is written by.
    fn source(&self) -> Option<(Physical<'_>, Role)> {
        match self.role {
            Role::Owns => None,
            Role::CopyOf(_) | Role::Shared(_) => Some((self.partner, self.role)),
        }
    }

    /// The mapping's rule as written in the contract.
    fn rule(&self) -> String {
        match self.role {
            Role::Owns => format!("owner = \"{}\"", self.field.side.as_str()),
            Role::CopyOf(rule) => format!(
                "owner = \"{}\", on_non_owner_edit = \"{}\"",
                self.partner.side.as_str(),
                name_of(NON_OWNER_RULES, rule)
            ),
            Role::Shared(rule) => format!("owner = \"shared\", conflict = \"{}\"", name_of(CONFLICT_RULES, rule)),
        }
    }

    /// What the mapping makes of the field, for a person.
    fn describe(&self) -> String {
        match self.role {
            Role::Owns => format!(
                "owner = \"{}\" makes it the source of {}",
                self.field.side.as_str(),
                self.partner
            ),
            Role::CopyOf(rule) => format!(
                "owner = \"{}\" makes it a copy of {} (its own edits {})",
                self.partner.side.as_str(),
                self.partner,
                match rule {
                    NonOwnerRule::Revert => "reverted",
                    NonOwnerRule::Flag => "flagged",
                }
            ),
            Role::Shared(rule) => format!(
                "owner = \"shared\" shares it with {} (conflict = \"{}\")",
                self.partner,
                name_of(CONFLICT_RULES, rule)
            ),
        }
    }
}

/// Values already used within one object: (value, path of first use, its location).
#[derive(Default)]
struct Seen {
    names: Vec<(String, String, Span)>,
    crm: Vec<(String, String, Span)>,
    billing: Vec<(String, String, Span)>,
}

// ---------------------------------------------------------------------------
// Small grammars
// ---------------------------------------------------------------------------

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_env_name(s: &str) -> bool {
    is_ident(s) && !s.starts_with(|c: char| c.is_ascii_digit())
}

fn is_metadata_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 40 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parse `a:{b}:c` into literal and placeholder parts, or every problem as
/// (byte offset in the template, message).
fn parse_template(raw: &str) -> Result<Vec<KeyPart>, Vec<(usize, String)>> {
    let mut parts = Vec::new();
    let mut errors = Vec::new();
    let mut literal = String::new();
    let mut rest = raw.char_indices().peekable();
    while let Some((i, c)) = rest.next() {
        match c {
            '{' => {
                let close = raw[i + 1..].find(['{', '}']).map(|j| i + 1 + j);
                match close.filter(|&j| raw[j..].starts_with('}')) {
                    Some(j) => {
                        let name = &raw[i + 1..j];
                        if !KeyTemplate::PLACEHOLDERS.contains(&name) {
                            let allowed: Vec<String> =
                                KeyTemplate::PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect();
                            errors.push((
                                i,
                                format!("unknown placeholder {{{name}}}; allowed: {}", allowed.join(", ")),
                            ));
                        }
                        if !literal.is_empty() {
                            parts.push(KeyPart::Literal(std::mem::take(&mut literal)));
                        }
                        parts.push(KeyPart::Var(name.to_string()));
                        while rest.next_if(|&(k, _)| k <= j).is_some() {}
                    }
                    None => errors.push((i, "unbalanced `{`: placeholders are written {name}".to_string())),
                }
            }
            '}' => errors.push((i, "unbalanced `}`: placeholders are written {name}".to_string())),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(KeyPart::Literal(literal));
    }
    if errors.is_empty() {
        Ok(parts)
    } else {
        Err(errors)
    }
}

/// The host of a URL's remainder after `scheme://`: without userinfo, port or path; an IPv6
/// literal without its brackets.
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    host_port.split(':').next().unwrap_or_default()
}

/// 127.0.0.0/8, ::1 or `localhost`: traffic that never leaves the machine.
fn is_loopback_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `nightly`, `hourly`, `manual`, or a 5-field cron expression (the scheduler's own parser).
fn is_schedule(s: &str) -> bool {
    schedule::Schedule::parse(s).is_ok()
}

// ---------------------------------------------------------------------------
// Ownership matrix
// ---------------------------------------------------------------------------

/// A human-readable table of every mapped field and who owns it, with a header line
/// naming the contract, its version and where it was loaded from.
pub fn ownership_matrix(c: &Contract) -> String {
    let header = [
        "object",
        "field",
        "crm property",
        "billing path",
        "owner",
        "non-owner edit",
    ];
    let mut rows: Vec<[String; 6]> = vec![header.map(String::from)];
    for o in &c.objects {
        let object = format!(
            "{} ({} <-> {})",
            o.name,
            name_of(CRM_OBJECTS, o.crm),
            name_of(BILLING_OBJECTS, o.billing)
        );
        for f in &o.fields {
            let non_owner = match f.owner {
                Owner::Shared(_) => "- (conflict rule)".to_string(),
                _ => name_of(NON_OWNER_RULES, f.on_non_owner_edit).to_string(),
            };
            rows.push([
                object.clone(),
                f.name.clone(),
                f.crm.clone(),
                f.billing.clone(),
                f.owner.label().to_string(),
                non_owner,
            ]);
        }
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 6]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        padded.join(" | ").trim_end().to_string()
    };
    let mut out = format!(
        "contract {:?}  version {}  path {}\n",
        c.name,
        c.version,
        c.path.display()
    );
    for (i, row) in rows.iter().enumerate() {
        out.push_str(&line(row));
        out.push('\n');
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("-+-"));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests;
