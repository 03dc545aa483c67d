//! Rate-quota efficiency (issue #8): to be written.
use crate::report::Report;

pub async fn backfill(_report: &mut Report) -> Result<(), String> {
    Err("not written yet".into())
}
