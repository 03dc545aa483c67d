//! Secrets are named by the contract (environment variable or OS keychain entry) and
//! resolved here, at start. They are never written to the ledger, the contract or logs.

use crate::contract::SecretRef;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (the contract names it as a secret)")]
    MissingEnv(String),
    #[error("keychain entry {service}/{account} cannot be read: OS keychain support arrives with `driftless connect`; use {{ env = \"VAR\" }} for now")]
    KeychainUnavailable { service: String, account: String },
}

/// A secret value. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

pub fn resolve(r: &SecretRef) -> Result<Secret, SecretError> {
    match r {
        SecretRef::Env(var) => std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Secret)
            .ok_or_else(|| SecretError::MissingEnv(var.clone())),
        SecretRef::Keychain { service, account } => Err(SecretError::KeychainUnavailable {
            service: service.clone(),
            account: account.clone(),
        }),
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
}
