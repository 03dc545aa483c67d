//! CSV for every export (dead letters, audit log, reconciliation reports): one cell rule. A
//! leaf: it knows nothing of the rest of the crate.

/// One CSV cell — the one rule every CSV export uses (dead letters, audit log): quoted when it
/// holds a separator, quote or line break; a leading `=`, `+`, `-` or `@` gets an apostrophe so
/// a spreadsheet shows it as text instead of running it.
pub fn cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}
