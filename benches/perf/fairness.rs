//! Claim fairness (issue #8): to be written.
use crate::report::Report;

pub async fn claims(_report: &mut Report) -> Result<(), String> {
    Err("not written yet".into())
}
