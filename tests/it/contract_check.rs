//! `driftless contract check` on files a person gets wrong: what it prints and its exit code.

use std::process::{Command, Output};

fn check(path: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["contract", "check", path])
        .output()
        .expect("run driftless")
}

fn fixture(name: &str) -> String {
    format!("{}/tests/contracts/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn default_text() -> String {
    std::fs::read_to_string(format!("{}/contracts/default.toml", env!("CARGO_MANIFEST_DIR"))).expect("default")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_contradictory_contract_fails_naming_both_places() {
    let path = fixture("contradictory_owners.toml");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "no matrix for an invalid contract");
    let text = stderr(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with(&format!(
            "{path}:49:7: objects.customer_mirror.fields[0].crm: crm contact `email` has two owners"
        )),
        "{text}"
    );
    assert!(
        lines[0].contains(&format!("objects.customer.fields[0] ({path}:23:7)")),
        "{text}"
    );
    assert!(lines[1].contains("written from two sources"), "{text}");
    assert!(lines[2].contains("mapped again with a different rule"), "{text}");
}

#[test]
fn the_default_contract_with_its_two_way_plan_passes() {
    let out = check(&format!("{}/contracts/default.toml", env!("CARGO_MANIFEST_DIR")));
    assert!(out.status.success(), "{}", stderr(&out));
    let matrix = String::from_utf8_lossy(&out.stdout);
    assert!(matrix.contains("requested_plan"), "{matrix}");
    assert!(stderr(&out).is_empty(), "no warning: {}", stderr(&out));
}

#[test]
fn a_nul_byte_is_named_with_its_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nul.toml");
    let text = default_text().replacen("# One owner per field", "# One owner\0 per field", 1);
    std::fs::write(&path, &text).expect("write");
    let out = check(&path.display().to_string());
    assert_eq!(out.status.code(), Some(1));
    let at = text.find('\0').expect("nul");
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "{}:{line}:{column}: (toml syntax): invalid TOML: a NUL byte (0x00) is not allowed in TOML",
            path.display()
        )
    );
}

#[test]
fn invalid_utf8_is_named_with_its_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latin1.toml");
    let mut bytes = default_text().into_bytes();
    bytes.extend_from_slice(b"# caf\xe9\n");
    let line = bytes.iter().filter(|b| **b == b'\n').count();
    std::fs::write(&path, &bytes).expect("write");
    let out = check(&path.display().to_string());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim_end(),
        format!(
            "{}:{line}:6: (encoding): invalid UTF-8 (byte 0xE9): a contract must be UTF-8 text",
            path.display()
        )
    );
}

#[test]
fn an_endless_file_is_refused_at_the_size_cap() {
    let started = std::time::Instant::now();
    let out = check("/dev/zero");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim_end(),
        "contract /dev/zero is larger than 1 MiB (1048576 bytes), the most a contract file may hold: \
         is this the right file?"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn clear_text_urls_are_refused_or_warned_about_when_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("http.toml");
    let text = default_text().replacen("https://api.stripe.com", "http://billing.example.com", 1);
    std::fs::write(&path, &text).expect("write");
    let out = check(&path.display().to_string());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("systems.billing.base_url: expected https://"), "{err}");

    let allowed = text.replacen(
        "\"http://billing.example.com\"",
        "\"http://billing.example.com\"\nallow_insecure_http = true",
        1,
    );
    std::fs::write(&path, &allowed).expect("write");
    let out = check(&path.display().to_string());
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("warning: {}:", path.display())),
        "the warning is printed: {err}"
    );
    assert!(err.contains("clear text"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("billing_customer_id"));
}

/// The console re-reads the contract file through the same capped reader: a file grown past
/// the cap is a read error naming the limit, not a stall; a file gone non-UTF-8 is an issue
/// at its line and column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_revalidates_the_file_through_the_capped_reader() {
    use driftless::sim::FaultProfile;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("contract.toml");
    std::fs::write(&path, default_text()).expect("write");
    let c = driftless::contract::load(&path).expect("valid");
    let d = crate::support::demo_with(c, FaultProfile::none()).await;

    let mut big = default_text();
    while big.len() <= driftless::contract::MAX_CONTRACT_BYTES {
        big.push_str("# grown past the cap ...........................................\n");
    }
    std::fs::write(&path, &big).expect("write");
    let info = d.running.engine.contract_info();
    let err = info.read_error.unwrap_or_default();
    assert!(err.contains("larger than 1 MiB (1048576 bytes)"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");

    let mut bytes = default_text().into_bytes();
    bytes.extend_from_slice(b"# caf\xe9\n");
    std::fs::write(&path, &bytes).expect("write");
    let info = d.running.engine.contract_info();
    assert_eq!(info.read_error, None);
    assert_eq!(info.issues.len(), 1, "{:?}", info.issues);
    let line = bytes.iter().filter(|b| **b == b'\n').count() as i64;
    assert_eq!((info.issues[0].line, info.issues[0].column), (line, 6));
    assert_eq!(
        info.file_version.as_deref(),
        Some(driftless::contract::contract_version(&bytes).as_str())
    );
    d.running.shutdown().await;
}

/// The connect flow's rewrite of a secret reference reads the file through the capped reader.
#[test]
fn the_connect_rewrite_refuses_a_file_past_the_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("contract.toml");
    let mut big = default_text();
    while big.len() <= driftless::contract::MAX_CONTRACT_BYTES {
        big.push_str("# grown past the cap ...........................................\n");
    }
    std::fs::write(&path, &big).expect("write");
    let err =
        driftless::connect::rewrite_secret_reference(&path, driftless::contract::Side::Billing, "driftless", "billing")
            .expect_err("too large");
    assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read").len(),
        big.len(),
        "left as it was"
    );
}
