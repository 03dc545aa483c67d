//! Reading a record for a decision: both records as they are now (never an old payload), the
//! billing objects' summaries when the decision needs them, and replay's preview, which reads
//! and decides without writing.

use super::worker::lane;
use super::{EngineError, Inner};
use crate::connectors::{ConnectorError, RemoteRecord};
use crate::contract::{CrmObject, ObjectMapping, Side};
use crate::decide::{self, Summaries};
use crate::ingest::parse_entity_key;
use crate::ledger::{NewOp, OpKind, ShadowValue};
use crate::plan::{self, Sequencing, Shadow};

/// A read the worker needed failed: what was read, from which system, and the error.
pub(super) struct ReadFailure {
    pub(super) error: ConnectorError,
    pub(super) side: Side,
    /// The dead-lettered operation if the read is given up.
    pub(super) op: OpKind,
    /// The id read, when there was one.
    pub(super) target: Option<String>,
    /// What was read, for a person: `billing customer "cus_1" (contact 42's billing_customer_id)`.
    pub(super) what: String,
}

impl ReadFailure {
    fn new(error: ConnectorError, side: Side, op: OpKind, target: Option<&str>, what: String) -> ReadFailure {
        ReadFailure {
            error,
            side,
            op,
            target: target.map(str::to_string),
            what,
        }
    }
}

impl From<ReadFailure> for EngineError {
    fn from(f: ReadFailure) -> EngineError {
        EngineError::Connector(f.error)
    }
}

/// Reads spend the destination's rate budget too, in the record's lane.
pub(super) async fn read<T>(
    inner: &Inner,
    side: Side,
    f: impl std::future::Future<Output = Result<T, ConnectorError>>,
) -> Result<T, ConnectorError> {
    inner.acquire(side, lane()).await;
    f.await
}

pub(super) fn shadow_map(rows: Vec<ShadowValue>) -> Shadow {
    rows.into_iter().map(|s| ((s.side, s.field), s.value)).collect()
}

/// A customer an earlier (lost) create made for this CRM record, found by its origin marker:
/// through the customers with the record's email (a consistent list) when it has one, else
/// through Stripe's metadata search.
pub(super) async fn find_by_origin(
    inner: &Inner,
    kind: CrmObject,
    crm_id: &str,
    email: Option<&str>,
) -> Result<Option<RemoteRecord>, ConnectorError> {
    let marker = format!("metadata.{}", kind.origin_key());
    let found = match email {
        Some(email) => inner.billing.customers_by_email(email).await?,
        None => inner.billing.customers_by_metadata(kind.origin_key(), crm_id).await?,
    };
    Ok(found.into_iter().rev().find(|r| r.get(&marker) == Some(crm_id)))
}

/// Both records as they are now.
pub(super) struct Loaded {
    pub(super) crm: Option<RemoteRecord>,
    pub(super) billing: Option<RemoteRecord>,
    /// The billing id the identity map links to the CRM record.
    pub(super) known_billing_id: Option<String>,
    /// A lookup by origin marker just found no customer for the CRM record.
    pub(super) origin_checked: bool,
}

/// The dead-lettered operation's name when a read of a CRM record is given up.
fn crm_read_op(kind: CrmObject) -> OpKind {
    match kind {
        CrmObject::Contact => OpKind::ReadContact,
        CrmObject::Company => OpKind::ReadCompany,
    }
}

/// Read both records as they are now. A connector failure is returned inside `Ok(Err(..))`
/// so callers can park.
pub(super) async fn load(
    inner: &Inner,
    m: &ObjectMapping,
    crm_id: Option<&str>,
    side_id: (Side, &str),
) -> Result<Result<Loaded, ReadFailure>, EngineError> {
    let mut props: Vec<String> = inner.contract.contact_fields(m).map(|f| f.crm.clone()).collect();
    let extra: &[&str] = match m.crm {
        CrmObject::Contact => &["email", "driftless_correlation_id"],
        CrmObject::Company => &["driftless_correlation_id"],
    };
    for p in extra.iter().copied() {
        if !props.iter().any(|x| x == p) {
            props.push(p.to_string());
        }
    }
    let kind = m.crm.as_str();
    let crm = match crm_id {
        // Through the object type's read lane: reads waiting together go as one batch/read.
        Some(id) => match super::crm_reads::get(inner, m.crm, id, std::sync::Arc::new(props), lane()).await? {
            Ok(r) => r,
            Err(e) => {
                let what = format!("CRM {kind} {id:?}");
                return Ok(Err(ReadFailure::new(e, Side::Crm, crm_read_op(m.crm), Some(id), what)));
            }
        },
        None => None,
    };
    let known_billing_id = match crm_id {
        Some(id) => inner.ledger.billing_id_for(&m.name, id).await?,
        None => None,
    };
    // Where the billing id came from, for a person reading why a read failed.
    let from_crm = |prop: &str| match crm_id {
        Some(id) => format!("{kind} {id}'s {prop}"),
        None => format!("the CRM's {prop}"),
    };
    let billing_id: Option<(String, String)> = known_billing_id
        .clone()
        .map(|b| (b, "linked in the identity map".to_string()))
        .or_else(|| {
            let prop = m.billing_id_property()?;
            let v = crm.as_ref()?.get(prop)?;
            Some((v.to_string(), from_crm(prop)))
        })
        .or_else(|| (side_id.0 == Side::Billing).then(|| (side_id.1.to_string(), "the record's billing event".into())));
    let mut origin_checked = false;
    let billing = match &billing_id {
        Some((bid, source)) => match read(inner, Side::Billing, inner.billing.get_customer(bid)).await {
            Ok(r) => r,
            Err(e) => {
                let what = format!("billing customer {bid:?} ({source})");
                return Ok(Err(ReadFailure::new(
                    e,
                    Side::Billing,
                    OpKind::ReadCustomer,
                    Some(bid),
                    what,
                )));
            }
        },
        None => match (crm_id, &crm) {
            (Some(cid), Some(c)) if m.create_in == Some(Side::Billing) => {
                match read(inner, Side::Billing, find_by_origin(inner, m.crm, cid, c.get("email"))).await {
                    Ok(r) => {
                        origin_checked = r.is_none();
                        r
                    }
                    Err(e) => {
                        let what = format!("billing customers created for {kind} {cid} (lookup by origin marker)");
                        return Ok(Err(ReadFailure::new(
                            e,
                            Side::Billing,
                            OpKind::ReadCustomer,
                            None,
                            what,
                        )));
                    }
                }
            }
            _ => None,
        },
    };
    Ok(Ok(Loaded {
        crm,
        billing,
        known_billing_id,
        origin_checked,
    }))
}

/// The billing objects' summaries the contract mirrors onto the record, read for `billing`.
pub(super) async fn summaries(
    inner: &Inner,
    m: &ObjectMapping,
    billing: &RemoteRecord,
) -> Result<Summaries, ReadFailure> {
    let (sub, inv) = decide::summaries_mapped(&inner.contract, m);
    let failed = |e| {
        ReadFailure::new(
            e,
            Side::Billing,
            OpKind::ReadBillingSummary,
            Some(&billing.id),
            format!("the subscriptions and invoices of billing customer {:?}", billing.id),
        )
    };
    let mut out = Summaries::default();
    if sub {
        out.subscription = Some(
            read(inner, Side::Billing, inner.billing.subscription_summary(&billing.id))
                .await
                .map_err(failed)?,
        );
    }
    if inv {
        out.invoices = Some(
            read(inner, Side::Billing, inner.billing.invoice_summary(&billing.id))
                .await
                .map_err(failed)?,
        );
    }
    Ok(out)
}

/// Plan a record from both systems' current state without writing anything (replay's dry
/// run). `None` when the record is not one this version syncs. The writes hang off `cause`
/// (inbox id, tag) when given — the event a repair is about to deliver — else off the
/// record's last cause, as the run will.
pub(super) async fn preview(
    inner: &Inner,
    key: &str,
    cause: Option<(i64, String)>,
) -> Result<Option<(plan::Plan, Vec<NewOp>)>, EngineError> {
    let Some((object, side, id)) = parse_entity_key(key) else {
        return Ok(None);
    };
    let Some(m) = inner.contract.object(object).filter(|m| m.syncs_customers()) else {
        return Ok(None);
    };
    let crm_id = (side == Side::Crm).then_some(id);
    let loaded = load(inner, m, crm_id, (side, id)).await??;
    let shadow = shadow_map(inner.ledger.shadow(key).await?);
    let migration = inner.ledger.migration_authority().await?;
    let summaries = match &loaded.billing {
        Some(b) if loaded.crm.is_some() => Some(summaries(inner, m, b).await?),
        _ => None,
    };
    let state = decide::PairState {
        crm: loaded.crm.as_ref(),
        billing: loaded.billing.as_ref(),
        shadow: &shadow,
        summaries: summaries.as_ref(),
        migration: migration.as_ref(),
    };
    let p = decide::plan_pair(&inner.contract, m, &state, Sequencing::default());
    // A replay plans without a new event: its writes hang off the record's last cause, as
    // the run will.
    let (cause_id, cause_tag) = match cause {
        Some(c) => c,
        None => inner.ledger.last_cause(key).await?.unwrap_or((0, "none".into())),
    };
    let billing_id = loaded.billing.as_ref().map(|b| b.id.as_str());
    let ops = p
        .writes
        .iter()
        .map(|w| {
            decide::writes::new_op(
                &inner.contract,
                m,
                w,
                crm_id,
                billing_id,
                &cause_tag,
                cause_id,
                uuid::Uuid::new_v4().to_string(),
            )
        })
        .collect();
    Ok(Some((p, ops)))
}
