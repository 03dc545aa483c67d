//! Ledger at scale (issue #8): to be written.
use crate::report::Report;

pub async fn ledger_at_scale(_report: &mut Report) -> Result<(), String> {
    Err("not written yet".into())
}
