//! The Connect screen's operations (issue 7): thin wrappers over [`crate::connect`], the
//! functions `driftless connect` and `driftless writes` run, against the systems the
//! contract in force configures. A key arrives in a request body and is used for the calls
//! here only: it is never logged, returned or written to the ledger.

use super::{Engine, EngineError};
use crate::api::{ConnectProperties, ConnectProperty, ConnectSaved, ConnectStep, WritesAnswer, WritesRequest};
use crate::connect::{self, ConnectError, StepReport, KEYCHAIN_SERVICE};
use crate::contract::{Side, SystemConfig, DEFAULT_CONTRACT_LABEL};
use crate::secrets::{self, Secret, Stored};

/// The keychain service the demo stores keys under, so a demo never replaces a real
/// account's entry (`driftless/<system>`).
pub const DEMO_KEYCHAIN_SERVICE: &str = "driftless-demo";

/// A stable code for each way a connection fails.
pub fn connect_error_code(e: &ConnectError) -> &'static str {
    match e {
        ConnectError::EmptyKey => "empty_key",
        ConnectError::BadKey { .. } => "key_refused",
        ConnectError::Unreachable { .. } => "unreachable",
        ConnectError::Garbage { .. } => "not_the_api",
        ConnectError::Unexpected { .. } => "unexpected_answer",
        ConnectError::Contract(_) | ConnectError::ContractEdit { .. } => "contract",
        ConnectError::Properties(_) => "properties",
        ConnectError::Ledger(_) => "ledger_error",
        ConnectError::Io { .. } => "io",
    }
}

fn step(r: StepReport) -> ConnectStep {
    ConnectStep {
        step: r.step.into(),
        ok: r.ok,
        detail: r.detail,
        code: None,
    }
}

fn side(system: &str) -> Result<Side, EngineError> {
    match system {
        "crm" => Ok(Side::Crm),
        "billing" => Ok(Side::Billing),
        other => Err(EngineError::BadRequest(format!(
            "unknown system {other:?}: use crm or billing"
        ))),
    }
}

fn secret(key: &str) -> Result<Secret, EngineError> {
    let k = key.trim();
    if k.is_empty() {
        return Err(EngineError::BadRequest(ConnectError::EmptyKey.to_string()));
    }
    Ok(Secret::new(k.to_string()))
}

/// A connection failure as an engine error (the message is the specific reason; it never
/// holds the key).
fn refused(e: ConnectError) -> EngineError {
    match e {
        ConnectError::Ledger(l) => EngineError::Ledger(l),
        other => EngineError::BadRequest(other.to_string()),
    }
}

impl Engine {
    fn system_cfg(&self, system: Side) -> &SystemConfig {
        match system {
            Side::Crm => &self.inner.contract.systems.crm,
            Side::Billing => &self.inner.contract.systems.billing,
        }
    }

    fn embedded_contract(&self) -> bool {
        self.inner.contract.path.as_os_str() == DEFAULT_CONTRACT_LABEL
    }

    /// The keychain service keys are stored under: `DRIFTLESS_KEYCHAIN_SERVICE` when set,
    /// else `driftless` (`driftless-demo` for the demo).
    pub fn keychain_service(&self) -> String {
        match std::env::var("DRIFTLESS_KEYCHAIN_SERVICE") {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ if self.inner.demo => DEMO_KEYCHAIN_SERVICE.into(),
            _ => KEYCHAIN_SERVICE.into(),
        }
    }

    /// Test a key read-only against the system the contract configures: the CLI's `test`
    /// step, or `ok: false` with the specific reason and its code.
    pub async fn connect_test(&self, system: &str, key: &str) -> Result<ConnectStep, EngineError> {
        let system = side(system)?;
        // No key is a bad request (400), as for the other connect routes; a key the system
        // refuses is an answer (`ok: false` with the reason).
        let key = secret(key)?;
        match connect::test_connection(self.system_cfg(system), system, &key).await {
            Ok(r) => Ok(step(r)),
            Err(e) => Ok(ConnectStep {
                step: "error".into(),
                ok: false,
                code: Some(connect_error_code(&e).into()),
                detail: e.to_string(),
            }),
        }
    }

    /// The CRM properties the contract needs and whether the account has them; with
    /// `create` (the operator confirmed the preview), the missing ones are created first.
    pub async fn connect_properties(&self, key: &str, create: bool) -> Result<ConnectProperties, EngineError> {
        let key = secret(key)?;
        let cfg = self.system_cfg(Side::Crm);
        let contract = &self.inner.contract;
        let created = if create {
            connect::create_properties(cfg, contract, &key).await.map_err(refused)?
        } else {
            Vec::new()
        };
        let properties = connect::preview_properties(cfg, contract, &key)
            .await
            .map_err(refused)?
            .into_iter()
            .map(|p| ConnectProperty {
                object: p.object.into(),
                name: p.name,
                label: p.label,
                kind: p.kind.into(),
                field_type: p.field_type.into(),
                exists: p.exists,
            })
            .collect();
        Ok(ConnectProperties { properties, created })
    }

    /// Save a key as `driftless connect` does once it tested it: the OS keychain (or the
    /// environment variable to set where there is none), the contract file's `secret`
    /// reference (not for the embedded demo contract), observe mode on. A key that fails the
    /// test changes nothing.
    pub async fn connect_save_key(&self, system: &str, key: &str, by: &str) -> Result<ConnectSaved, EngineError> {
        let system = side(system)?;
        let key = secret(key)?;
        let mut steps = vec![step(
            connect::test_connection(self.system_cfg(system), system, &key)
                .await
                .map_err(refused)?,
        )];
        let service = self.keychain_service();
        let account = connect::keychain_account(system);
        let keychain = format!("{service}/{account}");
        let stored = secrets::store(&service, account, &key);
        let env_fallback = match stored {
            Stored::Keychain => {
                steps.push(ConnectStep {
                    step: "store".into(),
                    ok: true,
                    detail: format!("key stored in the OS keychain as {keychain}"),
                    code: None,
                });
                None
            }
            Stored::EnvFallback { env_var, why } => {
                steps.push(ConnectStep {
                    step: "store".into(),
                    ok: true,
                    detail: format!(
                        "no usable OS keychain here ({why}): set {env_var} to the key in the engine's \
                         environment (the contract's keychain reference reads it)"
                    ),
                    code: None,
                });
                Some(env_var)
            }
        };
        let (contract_path, contract_changed) = if self.embedded_contract() {
            steps.push(ConnectStep {
                step: "contract".into(),
                ok: true,
                detail: "does not apply: the engine runs on the embedded demo contract, there is no \
                         contract file to point at the keychain entry"
                    .into(),
                code: None,
            });
            (None, false)
        } else {
            let path = self.inner.contract.path.clone();
            let changed = connect::rewrite_secret_reference(&path, system, &service, account).map_err(refused)?;
            steps.push(ConnectStep {
                step: "contract".into(),
                ok: true,
                detail: format!(
                    "{} systems.{}.secret = {{ keychain = \"{keychain}\" }} in {} (read at the next start)",
                    if changed { "set" } else { "already" },
                    system.as_str(),
                    path.display()
                ),
                code: None,
            });
            (Some(path.display().to_string()), changed)
        };
        self.inner
            .ledger
            .set_observe(
                Some(&format!(
                    "connected {}; review the planned writes first",
                    system.as_str()
                )),
                by,
                self.inner.now_ms(),
            )
            .await?;
        steps.push(ConnectStep {
            step: "observe".into(),
            ok: true,
            detail: "observe mode: events are ingested and planned, nothing is written until writes \
                     are turned on"
                .into(),
            code: None,
        });
        Ok(ConnectSaved {
            steps,
            keychain,
            env_fallback,
            contract_path,
            contract_changed,
            observe: true,
        })
    }

    /// Observe mode: `on: false` holds every write; `on: true` previews the held writes and,
    /// with `confirm`, sends them — the path of `driftless writes off|on [--yes]`.
    pub async fn set_writes(&self, req: &WritesRequest, by: &str) -> Result<WritesAnswer, EngineError> {
        let now = self.inner.now_ms();
        let reason = req.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
        if !req.on {
            let was = self.inner.ledger.status().await?.observe.is_some();
            self.inner.ledger.set_observe(reason, by, now).await?;
            let st = self.inner.ledger.status().await?;
            return Ok(WritesAnswer {
                observe: true,
                held_writes: st.held_writes,
                sent: false,
                changed: !was,
            });
        }
        let (observing, held_writes, sent) =
            connect::writes_on(&self.inner.ledger, req.confirm, reason, by, now).await?;
        if sent {
            self.inner.work.notify_waiters();
        }
        Ok(WritesAnswer {
            observe: observing && !sent,
            held_writes,
            sent,
            changed: sent,
        })
    }
}
