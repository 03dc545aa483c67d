//! Console operations of issue 7's Replay, Audit log and Contract screens: following and
//! cancelling a replay run, listing and exporting the audit log, and the contract in force
//! with its file re-validated.

use super::dead_letters::csv_cell;
use super::{Engine, EngineError};
use crate::api::{
    AuditEntry, AuditFilter, AuditList, ContractField, ContractInfo, ContractIssue, ContractObject, ReplayRun,
};
use crate::contract::{self, ConflictRule, NonOwnerRule, Owner, DEFAULT_CONTRACT_LABEL};

/// Rows per page of the CSV export.
pub const AUDIT_CSV_PAGE: i64 = 500;
const AUDIT_PAGE_MAX: i64 = 1000;

impl Engine {
    /// A replay run with its progress; `None` asks for the latest (and answers `None` when
    /// nothing was ever replayed).
    pub async fn replay_run(&self, id: Option<i64>) -> Result<Option<ReplayRun>, EngineError> {
        let run = self.inner.ledger.replay_run(id, self.inner.now_ms()).await?;
        match (id, run) {
            (Some(id), None) => Err(EngineError::NotFound(format!("no replay run {id}"))),
            (_, run) => Ok(run),
        }
    }

    /// Cancel a replay run: its records no worker has claimed yet leave the queue (audited);
    /// records already being worked on, or whose replay joined live work, finish.
    pub async fn cancel_replay(&self, id: i64, by: &str) -> Result<ReplayRun, EngineError> {
        let now = self.inner.now_ms();
        self.inner
            .ledger
            .replay_cancel(id, by, now)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no replay run {id}")))?;
        self.inner
            .ledger
            .replay_run(Some(id), now)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("no replay run {id}")))
    }

    /// The record key an audit filter's `record` names (email, CRM id, billing id or key).
    async fn audit_record(&self, f: &AuditFilter) -> Result<Option<String>, EngineError> {
        let Some(q) = f.record.as_deref().map(str::trim).filter(|q| !q.is_empty()) else {
            return Ok(None);
        };
        Ok(Some(
            self.inner.ledger.find_record(q).await?.unwrap_or_else(|| q.to_string()),
        ))
    }

    /// Audit rows (engine decisions and operator actions) matching a filter, newest first,
    /// one page, with the total.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<AuditList, EngineError> {
        if let (Some(a), Some(b)) = (f.from_ms, f.to_ms) {
            if a > b {
                return Err(EngineError::BadRequest("the time range ends before it starts".into()));
            }
        }
        let record = self.audit_record(f).await?;
        let limit = f.limit.unwrap_or(100).clamp(1, AUDIT_PAGE_MAX);
        let offset = f.offset.unwrap_or(0).max(0);
        let (total, items) = self
            .inner
            .ledger
            .audit_list(f, record.as_deref(), None, limit, offset, true)
            .await?;
        Ok(AuditList { total, items, record })
    }

    /// One page of the audit log's CSV export (the operations' paging contract): rows before
    /// `before_id`, newest first, the header on the first page, and the cursor of the next.
    pub async fn audit_csv_page(
        &self,
        f: &AuditFilter,
        before_id: Option<i64>,
    ) -> Result<(String, Option<i64>), EngineError> {
        let record = self.audit_record(f).await?;
        let (_, items) = self
            .inner
            .ledger
            .audit_list(f, record.as_deref(), before_id, AUDIT_CSV_PAGE, 0, false)
            .await?;
        let mut out = String::new();
        if before_id.is_none() {
            out.push_str(AUDIT_CSV_HEADER);
        }
        for e in &items {
            out.push_str(&audit_csv_row(e));
        }
        let next = match items.last() {
            Some(last) if items.len() as i64 == AUDIT_CSV_PAGE => Some(last.id),
            _ => None,
        };
        Ok((out, next))
    }

    /// The contract in force (version, ownership matrix) and its file re-validated as it is
    /// on disk now; the embedded default contract (the demo) has no file.
    pub fn contract_info(&self) -> ContractInfo {
        let c = &self.inner.contract;
        let label = c.path.display().to_string();
        let embedded = label == DEFAULT_CONTRACT_LABEL;
        let mut info = ContractInfo {
            name: c.name.clone(),
            version: c.version.clone(),
            path: (!embedded).then(|| label.clone()),
            embedded,
            file_version: None,
            read_error: None,
            issues: Vec::new(),
            objects: c.objects.iter().map(contract_object).collect(),
        };
        if !embedded {
            match contract::load(&c.path) {
                Ok(now) => info.file_version = Some(now.version),
                Err(contract::ContractError::Read { path, source }) => {
                    info.read_error = Some(format!("cannot read {path}: {source}"));
                }
                Err(e @ contract::ContractError::TooLarge { .. }) => info.read_error = Some(e.to_string()),
                Err(contract::ContractError::Invalid(problems)) => {
                    if let Ok(bytes) = contract::read_file(&c.path) {
                        info.file_version = Some(contract::contract_version(&bytes));
                    }
                    info.issues = problems
                        .into_iter()
                        .map(|p| ContractIssue {
                            file: p.file,
                            line: p.line as i64,
                            column: p.column as i64,
                            field: p.field,
                            message: p.expected,
                        })
                        .collect();
                }
            }
        }
        info
    }
}

fn contract_object(o: &crate::contract::ObjectMapping) -> ContractObject {
    ContractObject {
        name: o.name.clone(),
        crm: o.crm.as_str().into(),
        billing: o.billing.as_str().into(),
        create_in: o.create_in.map(|s| s.as_str().into()),
        fields: o
            .fields
            .iter()
            .map(|f| {
                let (owner, rule) = match f.owner {
                    Owner::Crm => ("crm", None),
                    Owner::Billing => ("billing", None),
                    Owner::Shared(ConflictRule::Review) => ("shared", Some("review")),
                    Owner::Shared(ConflictRule::LatestSyncTimestamp) => ("shared", Some("latest_sync_timestamp")),
                };
                let non_owner = match (f.owner, f.on_non_owner_edit) {
                    (Owner::Shared(_), _) => None,
                    (_, NonOwnerRule::Revert) => Some("revert"),
                    (_, NonOwnerRule::Flag) => Some("flag"),
                };
                ContractField {
                    name: f.name.clone(),
                    crm: f.crm.clone(),
                    billing: f.billing.clone(),
                    owner: owner.into(),
                    conflict_rule: rule.map(Into::into),
                    on_non_owner_edit: non_owner.map(Into::into),
                }
            })
            .collect(),
    }
}

pub const AUDIT_CSV_HEADER: &str = "id,at,record,inbox_id,outbox_id,actor,action,rule,contract_version,detail\n";

/// One audit row as a CSV line (time as RFC 3339 UTC).
pub fn audit_csv_row(e: &AuditEntry) -> String {
    let at = chrono::DateTime::from_timestamp_millis(e.at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| e.at_ms.to_string());
    let opt = |v: &Option<String>| v.as_deref().map(csv_cell).unwrap_or_default();
    let num = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    format!(
        "{},{},{},{},{},{},{},{},{},{}\n",
        e.id,
        at,
        opt(&e.record),
        num(e.inbox_id),
        num(e.outbox_id),
        csv_cell(&e.actor),
        csv_cell(&e.action),
        opt(&e.rule),
        opt(&e.contract_version),
        opt(&e.detail),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_rows_use_the_one_csv_cell_rule() {
        let e = AuditEntry {
            id: 7,
            at_ms: 0,
            record: Some("customer:crm:1".into()),
            inbox_id: None,
            outbox_id: Some(3),
            actor: "operator:console".into(),
            action: "replay".into(),
            rule: Some("operator".into()),
            contract_version: None,
            detail: Some(r#"{"reason":"replay","run":1}"#.into()),
        };
        assert_eq!(
            audit_csv_row(&e),
            "7,1970-01-01T00:00:00.000Z,customer:crm:1,,3,operator:console,replay,operator,,\"{\"\"reason\"\":\"\"replay\"\",\"\"run\"\":1}\"\n"
        );
    }
}
