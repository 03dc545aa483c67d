//! Secrets are named by the contract (environment variable or OS keychain entry) and
//! resolved here, at start. They are never written to the ledger, the contract or logs.
//!
//! A keychain entry `{ keychain = "service/account" }` lives in the OS keychain (the
//! `keyring` crate: the kernel's keyutils on Linux, Keychain on macOS, Credential Manager on
//! Windows). Where no keychain can be used (a container whose seccomp profile blocks the
//! keyutils calls, an entry lost at reboot — keyutils is memory-only), the same reference
//! reads one environment variable instead, named by [`fallback_env_var`]; every error says
//! which.

use crate::contract::SecretRef;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (the contract names it as a secret)")]
    MissingEnv(String),
    #[error(
        "keychain entry {service}/{account} cannot be read ({why}) and its fallback environment \
         variable {env_var} is not set: run `driftless connect` again, or set {env_var}"
    )]
    KeychainUnavailable {
        service: String,
        account: String,
        why: String,
        env_var: String,
    },
    #[error("keychain entry {service}/{account}: {why}")]
    Keychain {
        service: String,
        account: String,
        why: String,
    },
}

/// A secret value. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The environment variable a keychain reference falls back to where no keychain can be used:
/// `DRIFTLESS_SECRET_` followed by `service_account`, upper-cased, every other character `_`.
/// `driftless/crm` -> `DRIFTLESS_SECRET_DRIFTLESS_CRM`.
pub fn fallback_env_var(service: &str, account: &str) -> String {
    let mut s = String::from("DRIFTLESS_SECRET_");
    for c in format!("{service}_{account}").chars() {
        s.push(if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        });
    }
    s
}

/// Where [`store`] put a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// In the OS keychain.
    Keychain,
    /// No keychain here: the engine reads this environment variable instead.
    EnvFallback { env_var: String, why: String },
}

fn entry(service: &str, account: &str) -> Result<keyring::Entry, keyring::Error> {
    keyring::Entry::new(service, account)
}

fn why(e: &keyring::Error) -> String {
    // keyring's messages describe the platform failure, never the credential.
    match e {
        keyring::Error::NoEntry => "no such entry".into(),
        other => other.to_string(),
    }
}

/// Store `secret` as keychain entry `service/account`, reading it back to prove the keychain
/// keeps it. Without a usable keychain: `Stored::EnvFallback` naming the variable to set.
pub fn store(service: &str, account: &str, secret: &Secret) -> Stored {
    let attempt = || -> Result<(), keyring::Error> {
        let e = entry(service, account)?;
        e.set_password(secret.expose())?;
        if entry(service, account)?.get_password()? != secret.expose() {
            return Err(keyring::Error::PlatformFailure(
                "the keychain did not return what was stored".into(),
            ));
        }
        Ok(())
    };
    match attempt() {
        Ok(()) => Stored::Keychain,
        Err(e) => Stored::EnvFallback {
            env_var: fallback_env_var(service, account),
            why: match e {
                // keyutils answers "access denied" (e.g. blocked by a container's seccomp
                // profile) as "no entry".
                keyring::Error::NoEntry => "the keychain refused to keep the entry (access denied)".into(),
                other => why(&other),
            },
        },
    }
}

/// Read keychain entry `service/account` only (no fallback).
pub fn read_keychain(service: &str, account: &str) -> Result<Secret, SecretError> {
    entry(service, account)
        .and_then(|e| e.get_password())
        .map(Secret)
        .map_err(|e| SecretError::Keychain {
            service: service.into(),
            account: account.into(),
            why: why(&e),
        })
}

/// Delete keychain entry `service/account`. `Ok(false)`: there was none.
pub fn delete(service: &str, account: &str) -> Result<bool, SecretError> {
    match entry(service, account).and_then(|e| e.delete_credential()) {
        Ok(()) => Ok(true),
        Err(keyring::Error::NoEntry) => Ok(false),
        Err(e) => Err(SecretError::Keychain {
            service: service.into(),
            account: account.into(),
            why: why(&e),
        }),
    }
}

fn env(var: &str) -> Option<Secret> {
    std::env::var(var).ok().filter(|v| !v.is_empty()).map(Secret)
}

pub fn resolve(r: &SecretRef) -> Result<Secret, SecretError> {
    match r {
        SecretRef::Env(var) => env(var).ok_or_else(|| SecretError::MissingEnv(var.clone())),
        SecretRef::Keychain { service, account } => match read_keychain(service, account) {
            Ok(s) => Ok(s),
            Err(e) => {
                let env_var = fallback_env_var(service, account);
                env(&env_var).ok_or_else(|| SecretError::KeychainUnavailable {
                    service: service.clone(),
                    account: account.clone(),
                    why: match e {
                        SecretError::Keychain { why, .. } => why,
                        other => other.to_string(),
                    },
                    env_var,
                })
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_env_names_the_variable_and_debug_redacts() {
        let e = resolve(&SecretRef::Env("DRIFTLESS_TEST_SURELY_UNSET".into())).unwrap_err();
        assert!(e.to_string().contains("DRIFTLESS_TEST_SURELY_UNSET"));
        assert_eq!(format!("{:?}", Secret("sk_live_x".into())), "Secret(<redacted>)");
    }

    #[test]
    fn fallback_variable_is_derived_from_the_reference() {
        assert_eq!(fallback_env_var("driftless", "crm"), "DRIFTLESS_SECRET_DRIFTLESS_CRM");
        assert_eq!(
            fallback_env_var("driftless", "billing:acme.test"),
            "DRIFTLESS_SECRET_DRIFTLESS_BILLING_ACME_TEST"
        );
    }

    /// Store, read, delete where this machine has a keychain; where it has none (a container
    /// blocking keyutils), `store` reports the fallback variable and `resolve` reads it.
    #[test]
    fn keychain_round_trip_or_env_fallback() {
        let service = "driftless-unit-test";
        let account = format!("k{}", uuid::Uuid::new_v4().simple());
        let value = Secret(format!("sk_test_{}", uuid::Uuid::new_v4().simple()));
        let r = SecretRef::Keychain {
            service: service.into(),
            account: account.clone(),
        };
        match store(service, &account, &value) {
            Stored::Keychain => {
                eprintln!("OS keychain available: store/read/delete exercised");
                assert_eq!(read_keychain(service, &account).unwrap().expose(), value.expose());
                assert_eq!(resolve(&r).unwrap().expose(), value.expose());
                assert!(delete(service, &account).unwrap());
                assert!(!delete(service, &account).unwrap());
                let e = resolve(&r).unwrap_err().to_string();
                assert!(e.contains(&fallback_env_var(service, &account)), "{e}");
                assert!(!e.contains(value.expose()), "{e}");
            }
            Stored::EnvFallback { env_var, why } => {
                eprintln!("no OS keychain here ({why}): env fallback {env_var} exercised");
                assert_eq!(env_var, fallback_env_var(service, &account));
                assert!(!why.contains(value.expose()));
                let e = resolve(&r).unwrap_err().to_string();
                assert!(e.contains(&env_var), "{e}");
                // Unique per run, so no other test reads or writes it.
                std::env::set_var(&env_var, value.expose());
                assert_eq!(resolve(&r).unwrap().expose(), value.expose());
                std::env::remove_var(&env_var);
            }
        }
    }
}
