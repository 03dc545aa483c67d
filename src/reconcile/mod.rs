//! Reconciliation's pure side: the rules and how values compare, what an operator asks of a
//! run (`ReconcileRequest`, `Repair`), the report's CSV rows, and what a page remembers of a
//! billing customer. The run itself — paging both systems, recording findings, repairing —
//! is the engine's (`engine/reconcile.rs`), which uses these.

pub use crate::api::ReconcileReport;
use crate::connectors::RemoteRecord;
use crate::contract::ObjectMapping;
use crate::ledger::reconcile::SeenCustomer;

/// Rule names (stable: scripts and the console branch on them).
pub mod rules {
    pub const BILLING_ID_MISSING: &str = "billing_id_missing";
    pub const INVOICE_PAID_CRM_BALANCE: &str = "invoice_paid_crm_shows_balance";
    pub const CUSTOMER_WITHOUT_SUBSCRIPTION: &str = "crm_customer_all_subscriptions_canceled";
    pub const DUPLICATE_ORIGIN: &str = "duplicate_origin_marker";
    pub const MISSING_COUNTERPART: &str = "missing_billing_counterpart";
    pub const UNLINKED_COUNTERPART: &str = "unlinked_billing_counterpart";
    pub const MISSING_CRM_COUNTERPART: &str = "missing_crm_counterpart";
}

/// What to do with the mismatched records after the comparison.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Repair {
    #[default]
    None,
    All,
    /// Record keys (`customer:crm:123`) or CRM ids.
    Records(Vec<String>),
}

impl Repair {
    /// From `--repair`: nothing, `all`, or record keys / CRM ids.
    pub fn from_args(args: &[String]) -> Repair {
        match args {
            [] => Repair::None,
            [a] if a == "all" => Repair::All,
            rs => Repair::Records(rs.to_vec()),
        }
    }
}

/// `7d` or `7`: a window in days (1 to 90).
pub fn parse_window(s: &str) -> Result<u32, String> {
    let digits = s.trim().strip_suffix('d').unwrap_or(s.trim());
    match digits.parse::<u32>() {
        Ok(n) if (1..=90).contains(&n) => Ok(n),
        _ => Err(format!("window {s:?}: expected days such as 7d (1d to 90d)")),
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReconcileRequest {
    /// Days back the cursor-gap detector looks (the contract's `window_days` when `None`).
    pub window_days: Option<u32>,
    /// Preview the repair writes (of `repair`, or of every mismatched record) without queueing.
    pub dry_run: bool,
    pub repair: Repair,
    /// Records (keys or CRM ids) to put in the review queue instead of repairing.
    pub review: Vec<String>,
    /// Stop (resumably) after reading this many pages: a cancel at a page boundary.
    pub max_pages: Option<u64>,
    /// `cli`, `console` or `schedule`.
    pub trigger: String,
}

pub(crate) fn norm(v: Option<&str>) -> Option<String> {
    v.map(str::trim).filter(|s| !s.is_empty()).map(str::to_string)
}

/// Money strings compare as numbers ("50" == "50.00").
pub(crate) fn same(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => {
            x == y || matches!((x.parse::<f64>(), y.parse::<f64>()), (Ok(p), Ok(q)) if (p - q).abs() < 0.005)
        }
        (None, None) => true,
        _ => false,
    }
}

/// Whether a CRM value and a billing value of one mapped field agree: trimmed, blank is
/// absent, money strings compare as numbers. The one rule reconciliation and the migration
/// validation report compare with.
pub(crate) fn values_agree(crm: Option<&str>, billing: Option<&str>) -> bool {
    same(&norm(crm), &norm(billing))
}

pub(crate) fn zero(v: &Option<String>) -> bool {
    v.as_deref()
        .is_none_or(|s| s.parse::<f64>().is_ok_and(|x| x.abs() < 0.005))
}

pub(crate) fn parse_time_ms(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().or_else(|| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis())
    })
}

/// Columns of a run's mismatch export.
pub const RECON_CSV_HEADER: &str = "run,record,kind,name,crm_value,billing_value,owner,first_seen,detail\n";
/// Mismatches per page of the export.
pub const RECON_CSV_PAGE: i64 = 500;

/// One mismatch as a CSV line (first seen as RFC 3339 UTC; fields quoted and formulas
/// defused as in the audit export).
pub fn recon_csv_row(run_id: i64, m: &crate::api::MismatchRow) -> String {
    let f = crate::csv::cell;
    let opt = |v: &Option<String>| v.as_deref().map(f).unwrap_or_default();
    let seen = chrono::DateTime::from_timestamp_millis(m.first_seen_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| m.first_seen_ms.to_string());
    format!(
        "{run_id},{},{},{},{},{},{},{seen},{}\n",
        f(&m.m.entity_key),
        f(&m.m.kind),
        f(&m.m.name),
        opt(&m.m.crm_value),
        opt(&m.m.billing_value),
        opt(&m.m.owner),
        opt(&m.m.detail),
    )
}

pub(crate) fn seen_customer(mappings: &[&ObjectMapping], r: &RemoteRecord) -> SeenCustomer {
    let origin = mappings.iter().find_map(|m| {
        let k = m.crm.origin_key();
        norm(r.get(&format!("metadata.{k}"))).map(|v| (k.to_string(), v))
    });
    let fields: serde_json::Map<String, serde_json::Value> = r
        .fields
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.clone().map_or(serde_json::Value::Null, serde_json::Value::String),
            )
        })
        .collect();
    SeenCustomer {
        billing_id: r.id.clone(),
        origin_key: origin.as_ref().map(|o| o.0.clone()),
        origin_value: origin.map(|o| o.1),
        fields: serde_json::Value::Object(fields),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_in_days_within_range() {
        assert_eq!(parse_window("7d").ok(), Some(7));
        assert_eq!(parse_window("30").ok(), Some(30));
        for bad in ["0d", "91d", "7h", "", "-1d"] {
            assert!(parse_window(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn values_compare_as_money_when_both_are_numbers() {
        let s = |v: &str| Some(v.to_string());
        assert!(same(&s("50"), &s("50.00")));
        assert!(!same(&s("50.00"), &s("50.01")));
        assert!(!same(&s("a"), &None));
        assert!(same(&None, &None));
        assert!(zero(&None) && zero(&s("0.00")) && !zero(&s("12.50")));
        assert_eq!(Repair::from_args(&[]), Repair::None);
        assert_eq!(Repair::from_args(&["all".into()]), Repair::All);
        assert_eq!(
            Repair::from_args(&["1".into(), "2".into()]),
            Repair::Records(vec!["1".into(), "2".into()])
        );
    }
}
