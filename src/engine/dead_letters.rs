//! The Dead letters screen's engine functions: one dead letter's detail (for the drawer) and
//! the filtered set as CSV, a page at a time (the HTTP route streams it; the desktop app
//! collects it). Listing, retry and discard are in ops.rs.

use super::{Engine, EngineError};
use crate::api::{DeadLetter, DeadLetterDetail, DeadLetterFilter};

/// Rows per CSV page (one keyset query each).
pub const CSV_PAGE: i64 = 2_000;

/// The CSV header, in column order.
pub const CSV_HEADER: &str = "id,created_at,created_at_ms,record,object,destination,op,error_class,error,attempts,\
idempotency_key,amount_cents,resolved_at_ms,resolution\n";

pub use crate::csv::cell as csv_cell;

fn csv_line(d: &DeadLetter) -> String {
    let created = chrono::DateTime::from_timestamp_millis(d.created_at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let opt = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    let cells = [
        d.id.to_string(),
        created,
        d.created_at_ms.to_string(),
        csv_cell(&d.record),
        csv_cell(&d.object),
        csv_cell(&d.destination),
        csv_cell(&d.op),
        csv_cell(&d.error_class),
        csv_cell(&d.error),
        d.attempts.to_string(),
        csv_cell(&d.idempotency_key),
        opt(d.amount_cents),
        opt(d.resolved_at_ms),
        csv_cell(d.resolution.as_deref().unwrap_or_default()),
    ];
    let mut line = cells.join(",");
    line.push('\n');
    line
}

impl Engine {
    /// One dead letter (open or resolved) with its request, response, history and the events
    /// behind it.
    pub async fn dead_letter_detail(&self, id: i64) -> Result<DeadLetterDetail, EngineError> {
        let l = &self.inner.ledger;
        let row = l
            .dead_letter_row(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no dead letter {id}")))?;
        let history = l.write_history(row.outbox_id, id).await?;
        let events = l.events_behind(&row.dead_letter.record, row.cause_inbox_id).await?;
        Ok(DeadLetterDetail {
            dead_letter: row.dead_letter,
            request: row.request,
            response: row.response,
            response_status: row.response_status,
            write_id: row.outbox_id,
            write_state: row.write_state,
            correlation_id: row.correlation_id,
            history,
            events,
        })
    }

    /// One page of the filtered dead letters as CSV lines (the header first when `before` is
    /// None), newest first, and the cursor for the next page (None at the end). `limit` and
    /// `offset` of the filter are ignored: the export is the whole filtered set.
    pub async fn dead_letters_csv_page(
        &self,
        f: &DeadLetterFilter,
        before: Option<i64>,
    ) -> Result<(String, Option<i64>), EngineError> {
        let items = self
            .inner
            .ledger
            .dead_letters_before(f, before, CSV_PAGE, self.inner.now_ms())
            .await?;
        let mut out = String::new();
        if before.is_none() {
            out.push_str(CSV_HEADER);
        }
        for d in &items {
            out.push_str(&csv_line(d));
        }
        let next = if (items.len() as i64) < CSV_PAGE {
            None
        } else {
            items.last().map(|d| d.id)
        };
        Ok((out, next))
    }
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_cell("-1,2"), "\"'-1,2\"");
    }
}
