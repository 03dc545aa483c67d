//! `driftless connect`: connect a real CRM or billing account. In order, stopping at the
//! first failure so a bad key changes nothing:
//!
//! 1. test the key **read-only** (Stripe `GET /v1/customers?limit=1`; HubSpot
//!    `GET /crm/v3/objects/contacts?limit=1`), with a specific error for a refused key, an
//!    unreachable host and an answer that is not the provider's API;
//! 2. CRM: preview the custom properties the contract needs (which exist, which would be
//!    created, with label and type), read one by one;
//! 3. store the key in the OS keychain (or report the environment variable to set where
//!    there is none, see [`crate::secrets`]);
//! 4. CRM: create the missing properties, only when the operator confirmed;
//! 5. rewrite the contract's `secret` reference to `{ keychain = "driftless/<system>" }`,
//!    keeping the file's comments and layout (toml_edit), and check it still compiles;
//! 6. put the ledger in observe mode: ingest and plan, write nothing until `driftless writes on`.
//!
//! The key is never printed, logged, written to the contract or the ledger.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::connectors::hubspot::HubspotClient;
use crate::connectors::{ConnectorError, CrmApi, PropertyDef};
use crate::contract::{self, Contract, ContractError, Side, SystemConfig};
use crate::ledger::{Ledger, LedgerError};
use crate::secrets::{self, Secret, Stored};

/// The keychain service `driftless connect` stores keys under by default.
pub const KEYCHAIN_SERVICE: &str = "driftless";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the key is empty")]
    EmptyKey,
    #[error("{system}: the key was refused ({status} from {url}); check it is {what}")]
    BadKey {
        system: &'static str,
        status: u16,
        url: String,
        what: &'static str,
    },
    #[error("{system}: cannot reach {url}: {detail}")]
    Unreachable {
        system: &'static str,
        url: String,
        detail: String,
    },
    #[error("{system}: {url} answered ({status}) with something that is not the {api} API: {detail}")]
    Garbage {
        system: &'static str,
        url: String,
        status: u16,
        api: &'static str,
        detail: String,
    },
    #[error("{system}: unexpected answer {status} from {url}")]
    Unexpected {
        system: &'static str,
        url: String,
        status: u16,
    },
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error("cannot update the contract {path}: {detail}")]
    ContractEdit { path: String, detail: String },
    #[error("creating CRM properties: {0}")]
    Properties(#[from] ConnectorError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// One step's outcome, as `--json` prints it (one object per line).
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: &'static str,
    pub ok: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

impl StepReport {
    fn ok(step: &'static str, detail: impl Into<String>, data: Value) -> StepReport {
        StepReport {
            step,
            ok: true,
            detail: detail.into(),
            data,
        }
    }
}

/// A CRM custom property the contract needs, and whether the account has it.
#[derive(Debug, Clone, Serialize)]
pub struct PropertyPreview {
    pub object: &'static str,
    pub name: String,
    pub label: String,
    /// HubSpot property type / field type driftless creates (`string` / `text`).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub field_type: &'static str,
    pub exists: bool,
}

pub struct ConnectOptions {
    pub system: Side,
    /// The contract to connect; created from the default contract when it does not exist.
    pub contract: PathBuf,
    pub ledger: PathBuf,
    /// The keychain service the key is stored under ([`KEYCHAIN_SERVICE`] unless several
    /// accounts share one machine).
    pub keychain_service: String,
}

/// The keychain account for a system's API key.
pub fn keychain_account(system: Side) -> &'static str {
    system.as_str()
}

fn system_cfg(c: &Contract, system: Side) -> &SystemConfig {
    match system {
        Side::Crm => &c.systems.crm,
        Side::Billing => &c.systems.billing,
    }
}

/// The contract at `path`, written from the default contract first when the file is new.
fn load_or_create(path: &Path) -> Result<(Contract, bool), ConnectError> {
    if path.exists() {
        return Ok((contract::load(path)?, false));
    }
    write_atomically(path, contract::DEFAULT_CONTRACT)?;
    Ok((contract::load(path)?, true))
}

fn write_atomically(path: &Path, text: &str) -> Result<(), ConnectError> {
    let tmp = path.with_extension("toml.connect-tmp");
    std::fs::write(&tmp, text).map_err(|source| ConnectError::Io {
        what: format!("writing {}", tmp.display()),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| ConnectError::Io {
        what: format!("replacing {}", path.display()),
        source,
    })
}

fn http(cfg: &SystemConfig, system: Side) -> Result<reqwest::Client, ConnectError> {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.request_timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.request_timeout_ms.min(5_000)))
        .build()
        .map_err(|e| ConnectError::Unreachable {
            system: system.as_str(),
            url: cfg.base_url.clone(),
            detail: e.to_string(),
        })
}

/// A read-only GET with the key; the JSON body of a 2xx answer.
async fn get_json(
    client: &reqwest::Client,
    system: Side,
    url: &str,
    key: &Secret,
) -> Result<(u16, Option<Value>), ConnectError> {
    let sys = system.as_str();
    let resp = client
        .get(url)
        .bearer_auth(key.expose())
        .send()
        .await
        .map_err(|e| ConnectError::Unreachable {
            system: sys,
            url: url.into(),
            detail: if e.is_timeout() {
                "no answer in time".into()
            } else if e.is_connect() {
                "connection failed".into()
            } else {
                e.to_string()
            },
        })?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| ConnectError::Unreachable {
        system: sys,
        url: url.into(),
        detail: format!("answer cut off: {e}"),
    })?;
    Ok((status, serde_json::from_str(&body).ok()))
}

/// Step 1: prove the key reads the account, changing nothing.
pub async fn test_connection(cfg: &SystemConfig, system: Side, key: &Secret) -> Result<StepReport, ConnectError> {
    let client = http(cfg, system)?;
    let (path, api, what, list_field) = match system {
        Side::Billing => (
            "/v1/customers?limit=1",
            "Stripe",
            "a Stripe secret or restricted key (sk_… / rk_…) that may read customers",
            "data",
        ),
        Side::Crm => (
            "/crm/v3/objects/contacts?limit=1",
            "HubSpot CRM",
            "a HubSpot private-app token with the crm.objects.contacts.read scope",
            "results",
        ),
    };
    let url = format!("{}{}", cfg.base_url, path);
    let (status, body) = get_json(&client, system, &url, key).await?;
    let sys = system.as_str();
    match status {
        200..=299 => {}
        401 | 403 => {
            return Err(ConnectError::BadKey {
                system: sys,
                status,
                url,
                what,
            })
        }
        _ if body.is_none() => {
            return Err(ConnectError::Garbage {
                system: sys,
                url,
                status,
                api,
                detail: "the answer is not JSON".into(),
            })
        }
        _ => {
            return Err(ConnectError::Unexpected {
                system: sys,
                url,
                status,
            })
        }
    }
    let Some(list) = body.as_ref().and_then(|b| b.get(list_field)).and_then(Value::as_array) else {
        return Err(ConnectError::Garbage {
            system: sys,
            url,
            status,
            api,
            detail: format!("no `{list_field}` list in the answer"),
        });
    };
    Ok(StepReport::ok(
        "test",
        format!("{api} key reads the account at {} (GET {path}: {status})", cfg.base_url),
        json!({ "url": url, "status": status, "sample_records": list.len() }),
    ))
}

/// Step 2 (CRM): which of the contract's custom properties the account has.
pub async fn preview_properties(
    cfg: &SystemConfig,
    contract: &Contract,
    key: &Secret,
) -> Result<Vec<PropertyPreview>, ConnectError> {
    let client = http(cfg, Side::Crm)?;
    let mut out = Vec::new();
    for def in crate::connectors::hubspot::required_properties(contract) {
        let url = format!(
            "{}/crm/v3/properties/{}/{}",
            cfg.base_url,
            def.object.plural(),
            def.name
        );
        let (status, body) = get_json(&client, Side::Crm, &url, key).await?;
        let exists = match status {
            200..=299 if body.is_some() => true,
            404 => false,
            401 | 403 => {
                return Err(ConnectError::BadKey {
                    system: "crm",
                    status,
                    url,
                    what: "a HubSpot private-app token with the crm.schemas.contacts.read scope",
                })
            }
            200..=299 => {
                return Err(ConnectError::Garbage {
                    system: "crm",
                    url,
                    status,
                    api: "HubSpot properties",
                    detail: "the answer is not JSON".into(),
                })
            }
            _ => {
                return Err(ConnectError::Unexpected {
                    system: "crm",
                    url,
                    status,
                })
            }
        };
        out.push(PropertyPreview {
            object: def.object.as_str(),
            name: def.name,
            label: def.label,
            kind: "string",
            field_type: "text",
            exists,
        });
    }
    Ok(out)
}

/// Step 4 (CRM): create the missing properties; returns the names created.
pub async fn create_properties(
    cfg: &SystemConfig,
    contract: &Contract,
    key: &Secret,
) -> Result<Vec<String>, ConnectError> {
    let crm = HubspotClient::new(&cfg.base_url, key.expose().to_string(), cfg.request_timeout_ms)?;
    let defs: Vec<PropertyDef> = crate::connectors::hubspot::required_properties(contract);
    Ok(crm.ensure_properties(&defs).await?)
}

/// Step 5: point `systems.<system>.secret` at the keychain entry, keeping comments and layout.
/// Returns whether the file changed. The result must still compile, or the file is left as
/// it was.
pub fn rewrite_secret_reference(path: &Path, system: Side, service: &str, account: &str) -> Result<bool, ConnectError> {
    let label = path.display().to_string();
    let edit_err = |detail: String| ConnectError::ContractEdit {
        path: label.clone(),
        detail,
    };
    let text = contract::read_text(path)?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| edit_err(e.message().to_string()))?;
    let table = doc
        .get_mut("systems")
        .and_then(|s| s.get_mut(system.as_str()))
        .and_then(toml_edit::Item::as_table_like_mut)
        .ok_or_else(|| edit_err(format!("no [systems.{}] table", system.as_str())))?;
    let mut reference = toml_edit::InlineTable::new();
    reference.insert("keychain", format!("{service}/{account}").into());
    let mut value = toml_edit::Value::InlineTable(reference);
    match table.get_mut("secret") {
        Some(item) => {
            if let Some(old) = item.as_value() {
                *value.decor_mut() = old.decor().clone();
            } else {
                value.decor_mut().set_prefix(" ");
            }
            *item = toml_edit::Item::Value(value);
        }
        None => {
            table.insert("secret", toml_edit::Item::Value(value));
        }
    }
    let new_text = doc.to_string();
    if new_text == text {
        return Ok(false);
    }
    contract::compile(&label, &new_text)?;
    write_atomically(path, &new_text)?;
    Ok(true)
}

/// The whole flow. `confirm` is asked before properties are created (the CLI answers from
/// `--yes` or a prompt); `emit` receives each step as it completes.
pub async fn run(
    opts: &ConnectOptions,
    key: &Secret,
    confirm: &mut dyn FnMut(&[PropertyPreview]) -> bool,
    emit: &mut dyn FnMut(StepReport),
) -> Result<(), ConnectError> {
    if key.expose().trim().is_empty() {
        return Err(ConnectError::EmptyKey);
    }
    let system = opts.system;
    let existed = opts.contract.exists();
    let contract = if existed {
        contract::load(&opts.contract)?
    } else {
        // Only written once the key has proved itself (below); compiled from the default now.
        contract::compile(&opts.contract.display().to_string(), contract::DEFAULT_CONTRACT)?
    };
    let cfg = system_cfg(&contract, system).clone();

    emit(test_connection(&cfg, system, key).await?);

    let preview = match system {
        Side::Crm => {
            let p = preview_properties(&cfg, &contract, key).await?;
            let missing = p.iter().filter(|p| !p.exists).count();
            emit(StepReport::ok(
                "properties_preview",
                format!(
                    "{} custom properties needed: {} exist, {missing} would be created",
                    p.len(),
                    p.len() - missing
                ),
                json!({ "properties": p }),
            ));
            Some(p)
        }
        Side::Billing => None,
    };

    let account = keychain_account(system);
    let service = opts.keychain_service.as_str();
    let stored = secrets::store(service, account, key);
    emit(match &stored {
        Stored::Keychain => StepReport::ok(
            "store",
            format!("key stored in the OS keychain as {service}/{account}"),
            json!({ "keychain": format!("{service}/{account}") }),
        ),
        Stored::EnvFallback { env_var, why } => StepReport::ok(
            "store",
            format!(
                "no usable OS keychain here ({why}): set {env_var} to the key in the engine's \
                 environment (the contract's keychain reference reads it)"
            ),
            json!({ "keychain": format!("{service}/{account}"), "env_fallback": env_var }),
        ),
    });

    if let Some(p) = &preview {
        let missing: Vec<&PropertyPreview> = p.iter().filter(|p| !p.exists).collect();
        if missing.is_empty() {
            emit(StepReport::ok(
                "properties",
                "all custom properties exist",
                json!({ "created": [] }),
            ));
        } else if confirm(p) {
            let created = create_properties(&cfg, &contract, key).await?;
            emit(StepReport::ok(
                "properties",
                format!("created {} custom properties: {}", created.len(), created.join(", ")),
                json!({ "created": created }),
            ));
        } else {
            emit(StepReport {
                step: "properties",
                ok: false,
                detail: format!(
                    "{} custom properties not created (preview only): run `driftless connect crm --yes` \
                     before turning writes on",
                    missing.len()
                ),
                data: json!({ "created": [], "missing": missing.iter().map(|p| &p.name).collect::<Vec<_>>() }),
            });
        }
    }

    if !existed {
        load_or_create(&opts.contract)?;
    }
    let changed = rewrite_secret_reference(&opts.contract, system, service, account)?;
    emit(StepReport::ok(
        "contract",
        format!(
            "{} systems.{}.secret = {{ keychain = \"{service}/{account}\" }} in {}",
            if !existed {
                "created from the default contract;"
            } else if changed {
                "set"
            } else {
                "already"
            },
            system.as_str(),
            opts.contract.display()
        ),
        json!({ "path": opts.contract, "created": !existed, "changed": changed || !existed }),
    ));

    let ledger = Ledger::open(&opts.ledger).await?;
    let now = chrono::Utc::now().timestamp_millis();
    ledger
        .set_observe(
            Some(&format!(
                "connected {}; review the planned writes first",
                system.as_str()
            )),
            "connect",
            now,
        )
        .await?;
    ledger.close().await;
    emit(StepReport::ok(
        "observe",
        format!(
            "ledger {} is in observe mode: events are ingested and planned, nothing is written \
             until `driftless writes on --yes`",
            opts.ledger.display()
        ),
        json!({ "ledger": opts.ledger, "observe": true }),
    ));
    Ok(())
}

/// `writes on`: the held writes per destination, and — only with `yes` — observe mode
/// cleared so the running engine sends them. One path for `driftless writes on` and the
/// console. Returns (was observing, held writes, sent).
pub async fn writes_on(
    ledger: &Ledger,
    yes: bool,
    reason: Option<&str>,
    by: &str,
    now_ms: i64,
) -> Result<(bool, std::collections::BTreeMap<String, i64>, bool), LedgerError> {
    let st = ledger.status().await?;
    let observing = st.observe.is_some();
    if !observing || !yes {
        return Ok((observing, st.held_writes, false));
    }
    let sent = ledger.clear_observe(reason, by, now_ms).await?;
    Ok((true, st.held_writes, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keeps_comments_and_layout_and_compiles() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, contract::DEFAULT_CONTRACT).unwrap();
        assert!(rewrite_secret_reference(&p, Side::Billing, "driftless", "billing").unwrap());
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("secret = { keychain = \"driftless/billing\" }"), "{text}");
        assert!(text.contains("# Stripe secret key (sk_...)"));
        assert!(text.contains("secret = { env = \"DRIFTLESS_CRM_TOKEN\" }"));
        // Every other line is unchanged.
        let before: Vec<&str> = contract::DEFAULT_CONTRACT.lines().collect();
        let after: Vec<&str> = text.lines().collect();
        assert_eq!(before.len(), after.len());
        let differing = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1);
        let c = contract::load(&p).unwrap();
        assert_eq!(
            c.systems.billing.secret,
            crate::contract::SecretRef::Keychain {
                service: "driftless".into(),
                account: "billing".into()
            }
        );
        assert!(!rewrite_secret_reference(&p, Side::Billing, "driftless", "billing").unwrap());
    }
}
