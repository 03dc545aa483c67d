//! Webhook and batch ingest (issue #8): to be written.
use crate::report::Report;

pub async fn webhook(_report: &mut Report) -> Result<(), String> {
    Err("not written yet".into())
}

pub async fn batch(_report: &mut Report) -> Result<(), String> {
    Err("not written yet".into())
}
