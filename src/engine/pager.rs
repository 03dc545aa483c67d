//! The one way the engine reads in bulk: the reconciler's pages and reads, a backfill's pages
//! and the migration validation's full listings all go through [`bulk_read`].
//!
//! Every attempt waits for the **bulk** lane of the destination's budget (live work goes
//! first). A 429 tells the budget (`Inner::note_rate_limited`, which holds every caller for
//! the provider's `Retry-After`) and the read is tried again after that wait; a timeout,
//! transport error or 5xx backs off (200 ms doubling, at most 5 s) and is tried again; other
//! errors, and the last of [`ATTEMPTS`], are returned (the callers stop resumably at their
//! checkpoint).

use std::time::Duration;

use super::Inner;
use crate::budget::Lane;
use crate::connectors::{ConnResult, ConnectorError, ListPage, RemoteRecord};
use crate::contract::{CrmObject, Side};

/// Attempts per read, the first included.
pub(crate) const ATTEMPTS: u32 = 8;
/// Bound on the pages [`all`] reads, so a misbehaving provider cannot page forever.
pub(crate) const MAX_PAGES: usize = 1_000_000;

/// A listing the engine pages through with cursor pagination.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listing<'a> {
    /// Every CRM record of a type, with these properties (`GET /crm/v3/objects/{type}`).
    Crm(CrmObject, &'a [String]),
    /// Every billing customer (`GET /v1/customers`).
    BillingCustomers,
}

impl Listing<'_> {
    pub(crate) fn side(self) -> Side {
        match self {
            Listing::Crm(..) => Side::Crm,
            Listing::BillingCustomers => Side::Billing,
        }
    }
}

/// The wait before attempt `attempt + 1` after a timeout or 5xx.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

/// One read in the bulk lane of `side`'s budget, retried as the module says.
pub(crate) async fn bulk_read<T, F, Fut>(inner: &Inner, side: Side, mut f: F) -> ConnResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ConnResult<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        inner.acquire(side, Lane::Bulk).await;
        let r = f().await;
        inner.note_outcome(side, r.as_ref().err());
        match r {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable() && attempt < ATTEMPTS => {
                let wait = if matches!(e, ConnectorError::RateLimited { .. }) || e.status() == Some(429) {
                    inner.note_rate_limited(side, e.retry_after())
                } else {
                    backoff(attempt)
                };
                tracing::debug!(side = side.as_str(), error = %e, attempt, "bulk read retried");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One page of `listing` after `cursor` (`None`: the first).
pub(crate) async fn page(inner: &Inner, listing: Listing<'_>, cursor: Option<&str>) -> ConnResult<ListPage> {
    bulk_read(inner, listing.side(), || async move {
        match listing {
            Listing::Crm(kind, props) => inner.crm.list_records(kind, props, cursor).await,
            Listing::BillingCustomers => inner.billing.list_customers(cursor).await,
        }
    })
    .await
}

/// Every record of `listing`, page by page (at most [`MAX_PAGES`]).
pub(crate) async fn all(inner: &Inner, listing: Listing<'_>) -> ConnResult<Vec<RemoteRecord>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let p = page(inner, listing, cursor.as_deref()).await?;
        out.extend(p.records);
        match p.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_200ms_up_to_5s() {
        let waits: Vec<u64> = (1..ATTEMPTS).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, vec![200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
