use std::path::Path;

use super::*;

const BROKEN_MANY: &str = include_str!("../../tests/contracts/broken_many.toml");
const SYNTAX_ERROR: &str = include_str!("../../tests/contracts/syntax_error.toml");
const LITERAL_SECRET: &str = include_str!("../../tests/contracts/literal_secret.toml");
const GOOD_MINIMAL: &str = include_str!("../../tests/contracts/good_minimal.toml");
const CONTRADICTORY: &str = include_str!("../../tests/contracts/contradictory_owners.toml");

/// The problems of a contract that must not compile.
fn problems(label: &str, text: &str) -> Vec<ContractProblem> {
    match compile(label, text) {
        Ok(_) => panic!("{label} compiled but should not have"),
        Err(ContractError::Invalid(p)) => p,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// The default contract with one substring replaced (which must occur exactly once).
fn default_with(from: &str, to: &str) -> String {
    assert_eq!(DEFAULT_CONTRACT.matches(from).count(), 1, "{from:?}");
    DEFAULT_CONTRACT.replacen(from, to, 1)
}

/// 1-based (line, column) of the first occurrence of `needle` in `text`.
fn pos(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).expect("needle in text");
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
    (line, col)
}

fn fixture_path(name: &str) -> std::path::PathBuf {
    // file!() is relative to the package root (the test's cwd) in the crate and absolute
    // when this module is compiled through a #[path] attribute; both resolve.
    Path::new(file!())
        .parent()
        .expect("tests.rs has a parent")
        .join("../../tests/contracts")
        .join(name)
}

#[test]
fn default_contract_compiles_and_encodes_the_shipped_ownership() {
    let c = default_contract();
    assert_eq!(c.name, "default");
    assert_eq!(c.path, Path::new(DEFAULT_CONTRACT_LABEL));
    assert_eq!(c.version, contract_version(DEFAULT_CONTRACT.as_bytes()));
    assert_eq!(c.version.len(), 16);
    assert!(c.version.chars().all(|ch| ch.is_ascii_hexdigit()));

    let crm = c.system(Side::Crm);
    assert_eq!(crm.kind, SystemKind::Hubspot);
    assert_eq!(crm.base_url, "https://api.hubapi.com");
    assert_eq!(crm.secret, SecretRef::Env("DRIFTLESS_CRM_TOKEN".into()));
    assert_eq!(
        crm.webhook_secret,
        Some(SecretRef::Env("DRIFTLESS_CRM_WEBHOOK_SECRET".into()))
    );
    assert_eq!(crm.request_timeout_ms, 10_000);
    let billing = c.system(Side::Billing);
    assert_eq!(billing.kind, SystemKind::Stripe);
    assert_eq!(billing.base_url, "https://api.stripe.com");
    assert_eq!(billing.secret, SecretRef::Env("DRIFTLESS_BILLING_KEY".into()));

    let names: Vec<&str> = c.objects.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["customer", "subscription", "plan_request", "invoice"]);
    let request = c.object("plan_request").expect("plan_request");
    assert_eq!(request.billing, BillingObject::Subscription);
    assert_eq!(request.fields.len(), 1);
    assert_eq!(
        (request.fields[0].crm.as_str(), request.fields[0].billing.as_str()),
        ("requested_plan", "plan")
    );
    assert_eq!(request.fields[0].owner, Owner::Shared(ConflictRule::Review));

    let customer = c.object("customer").expect("customer");
    assert_eq!(customer.crm, CrmObject::Contact);
    assert_eq!(customer.billing, BillingObject::Customer);
    assert_eq!(customer.match_on, [MatchRule::StoredId, MatchRule::Email]);
    assert_eq!(customer.create_in, Some(Side::Billing));
    assert_eq!(
        customer
            .idempotency_key
            .render(&[("crm_contact_id", "101"), ("event_id", "e1")]),
        "billing:create:101:e1"
    );
    let owned: Vec<(&str, &str, &str, Owner, NonOwnerRule)> = customer
        .fields
        .iter()
        .map(|f| {
            let (name, crm, billing) = (f.name.as_str(), f.crm.as_str(), f.billing.as_str());
            (name, crm, billing, f.owner, f.on_non_owner_edit)
        })
        .collect();
    assert_eq!(
        owned,
        [
            ("email", "email", "email", Owner::Crm, NonOwnerRule::Revert),
            (
                "lifecycle_stage",
                "lifecyclestage",
                "metadata.lifecycle_stage",
                Owner::Crm,
                NonOwnerRule::Revert
            ),
            (
                "billing_customer_id",
                "billing_customer_id",
                "id",
                Owner::Billing,
                NonOwnerRule::Revert
            ),
        ]
    );

    let sub = c.object("subscription").expect("subscription");
    assert_eq!(sub.billing, BillingObject::Subscription);
    assert_eq!(sub.match_on, [MatchRule::StoredId]);
    assert_eq!(sub.create_in, None);
    assert_eq!(
        sub.idempotency_key.raw,
        "billing:subscription:{crm_contact_id}:{event_id}"
    );
    let names: Vec<&str> = sub.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "subscription_status",
            "plan",
            "mrr",
            "next_invoice_date",
            "cancel_at_period_end"
        ]
    );
    assert!(sub.fields.iter().all(|f| f.owner == Owner::Billing));
    assert_eq!(sub.fields[0].name, "subscription_status");
    assert_eq!(sub.fields[0].billing, "status");
    assert_eq!(sub.fields[0].owner, Owner::Billing);

    let inv = c.object("invoice").expect("invoice");
    assert_eq!(inv.billing, BillingObject::Invoice);
    assert_eq!(
        inv.idempotency_key.parts,
        [
            KeyPart::Literal("crm:invoice:".into()),
            KeyPart::Var("billing_customer_id".into()),
            KeyPart::Literal(":".into()),
            KeyPart::Var("event_id".into()),
        ]
    );
    assert_eq!(inv.fields[0].name, "invoice_balance");
    assert_eq!(inv.fields[0].crm, "invoice_balance");
    assert_eq!(inv.fields[0].billing, "amount_remaining");
    assert_eq!(inv.fields[0].owner, Owner::Billing);

    assert_eq!(c.dedupe.retention_days, 30);
    assert_eq!(c.reconciliation.schedule, "nightly");
    assert_eq!(c.reconciliation.window_days, 7);
    assert_eq!(
        (c.retry.max_attempts, c.retry.base_backoff_ms, c.retry.max_backoff_ms),
        (8, 200, 30_000)
    );
    assert_eq!(c.rate_limits.crm.requests_per_second, 10.0);
    assert_eq!(c.rate_limits.crm.burst, 10);
    assert_eq!(c.rate_limits.crm.daily_cap, Some(250_000));
    assert_eq!(c.rate_limits.billing.requests_per_second, 25.0);
    assert_eq!(c.rate_limits.billing.burst, 25);
    assert_eq!(c.rate_limits.billing.daily_cap, None);
    assert_eq!(c.alerts.lag_p95_ms, 60_000);
    assert_eq!(c.alerts.dead_letters, 10);
    assert_eq!(c.alerts.review_depth, 25);
    assert_eq!(c.alerts.error_rate, 0.05);
    assert_eq!(c.alerts.mismatch_rate, 0.01);
}

#[test]
fn minimal_contract_takes_defaults_and_parses_every_form() {
    let c = compile("good_minimal.toml", GOOD_MINIMAL).expect("valid");
    assert_eq!(c.systems.crm.base_url, "http://127.0.0.1:8081", "slash trimmed");
    assert_eq!(
        c.systems.crm.secret,
        SecretRef::Keychain {
            service: "driftless".into(),
            account: "hubspot-token".into()
        }
    );
    assert_eq!(c.systems.crm.webhook_secret, None);
    let company = c.object("company").expect("company");
    assert_eq!(company.crm, CrmObject::Company);
    assert_eq!(
        company.fields[0].owner,
        Owner::Shared(ConflictRule::LatestSyncTimestamp)
    );
    assert_eq!(company.fields[1].owner, Owner::Billing);
    assert_eq!(company.fields[1].on_non_owner_edit, NonOwnerRule::Flag);
    assert_eq!(
        company
            .idempotency_key
            .render(&[("object", "company"), ("op", "update")]),
        "company:update:-:-"
    );
    // Defaults of the optional sections.
    assert_eq!(c.dedupe.retention_days, 30);
    assert_eq!(c.reconciliation.window_days, 7);
    assert_eq!(c.retry.max_attempts, 8);
    assert_eq!(c.rate_limits.crm.daily_cap, Some(250_000));
    assert_eq!(c.alerts.review_depth, 25);
}

#[test]
fn broken_file_reports_every_independent_problem_at_its_location() {
    let t = BROKEN_MANY;
    let got = problems("broken_many.toml", t);
    // (line:column, field, part of the expectation)
    let expected: Vec<((usize, usize), &str, &str)> = vec![
        (pos(t, "\"ftp://"), "systems.crm.base_url", "http:// or https://"),
        (pos(t, "\"pat-na1"), "systems.crm.secret", "secrets are referenced"),
        (
            pos(t, "region"),
            "systems.billing.region",
            "allowed keys: kind, base_url",
        ),
        (pos(t, "\"person\""), "objects.customer.crm", "one of: contact, company"),
        (
            pos(t, "\"phone\""),
            "objects.customer.match[1]",
            "one of: stored_id, email",
        ),
        (
            pos(t, "{contact}"),
            "objects.customer.idempotency_key",
            "unknown placeholder {contact}",
        ),
        (
            pos(t, "[[objects.customer.fields]]"),
            "objects.customer.fields[0].conflict",
            "conflict rule",
        ),
        (
            pos(t, "\"address.city\""),
            "objects.customer.fields[1].billing",
            "metadata.<key>",
        ),
        (
            pos(t, "\"both\""),
            "objects.customer.fields[1].owner",
            "one of: crm, billing, shared",
        ),
        (
            pos(t, "\"email\"\nowner = \"crm\""),
            "objects.customer.fields[2].billing",
            "already mapped by objects.customer.fields[0].billing",
        ),
        (
            pos(t, "[objects.subscription]"),
            "objects.subscription.billing",
            "missing required key `billing`",
        ),
        (
            pos(t, "\"review\""),
            "objects.subscription.fields[0].conflict",
            "only allowed when owner = \"shared\"",
        ),
        (pos(t, "0\n\n[reconciliation]"), "dedupe.retention_days", "1..=365"),
        (
            pos(t, "\"7\""),
            "reconciliation.window_days",
            "expected an integer, found a string",
        ),
    ];
    for ((line, column), field, part) in &expected {
        assert!(
            got.iter()
                .any(|p| p.line == *line && p.column == *column && p.field == *field && p.expected.contains(part)),
            "missing {line}:{column} {field} ~ {part:?}; got:\n{}",
            render_problems(&got)
        );
    }
    assert_eq!(got.len(), expected.len(), "{}", render_problems(&got));
    assert!(got.iter().all(|p| p.file == "broken_many.toml"));
    // In file order.
    assert!(got
        .windows(2)
        .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column)));
    assert!(!render_problems(&got).contains("SUPERSECRETVALUE"));
}

#[test]
fn syntax_error_is_one_problem_at_its_location() {
    let got = problems("syntax_error.toml", SYNTAX_ERROR);
    assert_eq!(got.len(), 1, "{}", render_problems(&got));
    assert_eq!((got[0].line, got[0].column), (5, 35));
    assert_eq!(got[0].field, "(toml syntax)");
    assert!(got[0].expected.contains("invalid TOML"), "{}", got[0].expected);
}

#[test]
fn literal_secret_is_rejected_without_echoing_it() {
    let err = compile("literal_secret.toml", LITERAL_SECRET).expect_err("literal secret");
    let text = err.to_string();
    assert_eq!(
        text,
        "literal_secret.toml:12:18: systems.billing.webhook_secret: secrets are referenced, \
         never written in the contract: use { env = \"VAR\" } or { keychain = \"service/account\" }"
    );
    assert!(!text.contains("whsec_DO_NOT_LEAK"));
    assert!(!format!("{err:?}").contains("whsec_DO_NOT_LEAK"));

    // Nor when the secret breaks the TOML syntax, nor when it is in a reference table.
    let unquoted = default_with("{ env = \"DRIFTLESS_BILLING_KEY\" }", "sk_live_DO_NOT_LEAK_9z");
    let bad_ref = default_with(
        "{ env = \"DRIFTLESS_BILLING_KEY\" }",
        "{ env = \"sk live DO NOT LEAK\" }",
    );
    let no_slash = default_with(
        "{ env = \"DRIFTLESS_BILLING_KEY\" }",
        "{ keychain = \"sk_live_DO_NOT_LEAK\" }",
    );
    for text in [unquoted, bad_ref, no_slash] {
        let rendered = compile("c.toml", &text).expect_err("invalid").to_string();
        assert!(!rendered.contains("DO_NOT_LEAK"), "{rendered}");
        assert!(!rendered.contains("DO NOT LEAK"), "{rendered}");
    }
}

#[test]
fn unknown_placeholder_and_unbalanced_braces_point_inside_the_template() {
    let text = default_with(
        "\"crm:invoice:{billing_customer_id}:{event_id}\"",
        "\"crm:invoice:{customer}:{event_id}\"",
    );
    let got = problems("c.toml", &text);
    assert_eq!(got.len(), 1, "{}", render_problems(&got));
    assert_eq!((got[0].line, got[0].column), pos(&text, "{customer}"));
    assert_eq!(got[0].field, "objects.invoice.idempotency_key");
    assert!(got[0].expected.contains("unknown placeholder {customer}"));
    assert!(got[0].expected.contains("{event_id}"), "lists the allowed ones");

    let text = default_with(
        "\"crm:invoice:{billing_customer_id}:{event_id}\"",
        "\"crm:invoice:{billing_customer_id:{event_id}}\"",
    );
    let got = problems("c.toml", &text);
    assert_eq!(got.len(), 2, "{}", render_problems(&got));
    assert!(got[0].expected.contains("unbalanced `{`"));
    assert_eq!((got[0].line, got[0].column), pos(&text, "{billing_customer_id:"));
    assert!(got[1].expected.contains("unbalanced `}`"));
}

#[test]
fn shared_field_needs_a_conflict_rule_and_owned_fields_may_not_have_one() {
    let text = default_with(
        "billing = \"status\"\nowner = \"billing\"",
        "billing = \"status\"\nowner = \"shared\"",
    );
    let got = problems("c.toml", &text);
    assert_eq!(got.len(), 1, "{}", render_problems(&got));
    assert_eq!(got[0].field, "objects.subscription.fields[0].conflict");
    assert_eq!(
        (got[0].line, got[0].column),
        pos(&text, "[[objects.subscription.fields]]")
    );
    assert!(got[0].expected.contains("\"review\" or \"latest_sync_timestamp\""));

    let text = default_with(
        "billing = \"status\"\nowner = \"billing\"",
        "billing = \"status\"\nowner = \"shared\"\nconflict = \"review\"\non_non_owner_edit = \"flag\"",
    );
    let got = problems("c.toml", &text);
    assert_eq!(got.len(), 1, "{}", render_problems(&got));
    assert_eq!(got[0].field, "objects.subscription.fields[0].on_non_owner_edit");
}

#[test]
fn numbers_out_of_range_are_reported() {
    let text = DEFAULT_CONTRACT
        .replacen("max_attempts = 8 ", "max_attempts = 101", 1)
        .replacen("window_days = 7 ", "window_days = 91", 1)
        .replacen("mode = \"test\"", "mode = \"test\"\nrequests_per_second = 0.0", 1)
        .replacen("max_backoff_ms = 30000", "max_backoff_ms = 100", 1)
        .replacen("request_timeout_ms = 10000", "request_timeout_ms = 99", 1)
        .replacen("error_rate = 0.05", "error_rate = 1.5", 1);
    let got = problems("c.toml", &text);
    let fields: Vec<&str> = got.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "systems.crm.request_timeout_ms",
            "reconciliation.window_days",
            "retry.max_attempts",
            "retry.max_backoff_ms",
            "rate_limits.billing.requests_per_second",
            "alerts.error_rate",
        ],
        "{}",
        render_problems(&got)
    );
}

#[test]
fn field_names_and_mappings_are_unique_within_an_object() {
    let text = default_with(
        "name = \"lifecycle_stage\"\ncrm = \"lifecyclestage\"",
        "name = \"email\"\ncrm = \"email\"",
    );
    let got = problems("c.toml", &text);
    let fields: Vec<&str> = got.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["objects.customer.fields[1].name", "objects.customer.fields[1].crm"],
        "{}",
        render_problems(&got)
    );
    assert!(got[0]
        .expected
        .contains("already mapped by objects.customer.fields[0].name"));
}

#[test]
fn missing_sections_point_at_the_enclosing_table() {
    let got = problems("empty.toml", "");
    let fields: Vec<(&str, usize, usize)> = got.iter().map(|p| (p.field.as_str(), p.line, p.column)).collect();
    assert_eq!(fields, [("name", 1, 1), ("systems", 1, 1), ("objects", 1, 1)]);

    let text = DEFAULT_CONTRACT.replace("\n[[objects.invoice.fields]]", "\n[[objects.invoice.unknown]]");
    let got = problems("c.toml", &text);
    let fields: Vec<&str> = got.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["objects.invoice.fields", "objects.invoice.unknown"]);
    assert_eq!((got[0].line, got[0].column), pos(&text, "[objects.invoice]"));
}

#[test]
fn schedules_accept_keywords_and_five_field_cron() {
    for ok in ["nightly", "hourly", "manual", "0 3 * * *", "*/15 0-6 1,15 * 1-5"] {
        assert!(is_schedule(ok), "{ok}");
    }
    for bad in [
        "daily",
        "0 3 * *",
        "60 3 * * *",
        "0 3 * * 8",
        "a b c d e",
        "*/0 * * * *",
    ] {
        assert!(!is_schedule(bad), "{bad}");
    }
    let text = default_with("schedule = \"nightly\"", "schedule = \"weekly\"");
    let got = problems("c.toml", &text);
    assert_eq!(got[0].field, "reconciliation.schedule");
}

#[test]
fn version_is_the_hash_of_the_file_bytes() {
    let a = compile("a", DEFAULT_CONTRACT).expect("valid").version;
    let b = compile("b", &format!("{DEFAULT_CONTRACT}\n# edited\n"))
        .expect("valid")
        .version;
    assert_ne!(a, b);
    assert_eq!(a, default_contract().version);
}

#[test]
fn load_reads_the_file_and_names_it() {
    let path = fixture_path("good_minimal.toml");
    let c = load(&path).expect("loads");
    assert_eq!(c.path, path);
    assert_eq!(c.version, contract_version(GOOD_MINIMAL.as_bytes()));

    let missing = fixture_path("does_not_exist.toml");
    let err = load(&missing).expect_err("missing file");
    assert!(matches!(err, ContractError::Read { .. }));
    assert!(err.to_string().starts_with("cannot read contract "));

    let err = load(&fixture_path("broken_many.toml")).expect_err("broken");
    let first = err.to_string().lines().next().unwrap_or_default().to_string();
    assert!(first.starts_with(&format!("{}:6:12: ", fixture_path("broken_many.toml").display())));
}

#[test]
fn ownership_matrix_lists_every_field_and_owner() {
    let c = default_contract();
    let m = ownership_matrix(&c);
    let header = m.lines().next().unwrap_or_default();
    assert!(header.contains("\"default\""));
    assert!(header.contains(&c.version));
    assert!(header.contains(DEFAULT_CONTRACT_LABEL));
    assert!(m.contains("crm property"));
    assert!(m.contains("non-owner edit"));
    for o in &c.objects {
        for f in &o.fields {
            let row = m
                .lines()
                .find(|l| l.split(" | ").nth(1).map(str::trim) == Some(f.name.as_str()))
                .unwrap_or_else(|| panic!("no row for {}:\n{m}", f.name));
            let cells: Vec<&str> = row.split(" | ").map(str::trim).collect();
            assert!(cells[0].starts_with(&o.name), "{row}");
            assert_eq!(cells[2], f.crm);
            assert_eq!(cells[3], f.billing);
            assert_eq!(cells[4], f.owner.label());
        }
    }

    let shared = compile("good_minimal.toml", GOOD_MINIMAL).expect("valid");
    let m = ownership_matrix(&shared);
    assert!(m.contains("shared (latest_sync_timestamp)"), "{m}");
    assert!(m.contains("flag"), "{m}");
}

#[test]
fn problems_display_one_per_line() {
    let p = ContractProblem {
        file: "c.toml".into(),
        line: 3,
        column: 7,
        field: "objects.customer.fields[2].owner".into(),
        expected: "expected one of: crm, billing, shared".into(),
    };
    assert_eq!(
        p.to_string(),
        "c.toml:3:7: objects.customer.fields[2].owner: expected one of: crm, billing, shared"
    );
    let err = ContractError::Invalid(vec![p.clone(), p]);
    assert_eq!(err.to_string().lines().count(), 2);
}

#[test]
fn ingest_mode_and_poll_settings_are_validated_at_their_location() {
    let c = compile("c.toml", DEFAULT_CONTRACT).expect("default compiles");
    assert_eq!(c.systems.crm.ingest, IngestMode::Webhooks);
    assert_eq!(c.systems.billing.poll_overlap_ms, 60_000);
    let text = default_with(
        "ingest = \"webhooks\"                                           # webhooks | poll | both",
        "ingest = \"poll\"",
    );
    let c = compile("c.toml", &text).expect("poll compiles");
    assert!(c.systems.billing.ingest.polls() && !c.systems.billing.ingest.webhooks());
    let text = DEFAULT_CONTRACT
        .replacen("ingest = \"webhooks\"\n", "ingest = \"sometimes\"\n", 1)
        .replacen("poll_interval_ms = 30000 ", "poll_interval_ms = 5      ", 1)
        .replacen("poll_overlap_ms = 60000", "poll_overlap_ms = 10", 1);
    let got = problems("c.toml", &text);
    let at: Vec<(&str, usize, usize)> = got.iter().map(|p| (p.field.as_str(), p.line, p.column)).collect();
    assert_eq!(
        at,
        [
            (
                "systems.crm.ingest",
                pos(&text, "\"sometimes\"").0,
                pos(&text, "\"sometimes\"").1
            ),
            (
                "systems.crm.poll_interval_ms",
                pos(&text, "5      ").0,
                pos(&text, "5      ").1
            ),
            (
                "systems.billing.poll_overlap_ms",
                pos(&text, "= 10\n").0,
                pos(&text, "= 10\n").1 + 2
            ),
        ],
        "{}",
        render_problems(&got)
    );
    assert!(got[0].expected.contains("webhooks, poll, both"), "{}", got[0].expected);
}

#[test]
fn rate_limits_come_from_provider_presets_and_explicit_keys_override() {
    let c = compile("c.toml", DEFAULT_CONTRACT).expect("default compiles");
    assert_eq!(c.rate_limits.crm.source, "hubspot free_starter tier default");
    assert_eq!(c.rate_limits.billing.source, "stripe test mode default");

    let text = default_with("tier = \"free_starter\"", "tier = \"enterprise\"").replacen(
        "mode = \"test\"",
        "mode = \"live\"",
        1,
    );
    let c = compile("c.toml", &text).expect("compiles");
    // HubSpot Professional/Enterprise: 190 requests per 10 s; Enterprise 1M a day.
    assert_eq!(c.rate_limits.crm.requests_per_second, 19.0);
    assert_eq!(c.rate_limits.crm.burst, 19);
    assert_eq!(c.rate_limits.crm.daily_cap, Some(1_000_000));
    // Stripe live mode: 100 requests per second.
    assert_eq!(c.rate_limits.billing.requests_per_second, 100.0);
    assert_eq!(c.rate_limits.billing.burst, 100);

    let text = default_with(
        "tier = \"free_starter\"",
        "tier = \"professional\"\nrequests_per_second = 5\ndaily_cap = 1000",
    );
    let c = compile("c.toml", &text).expect("compiles");
    assert_eq!(c.rate_limits.crm.requests_per_second, 5.0);
    assert_eq!(c.rate_limits.crm.burst, 19);
    assert_eq!(c.rate_limits.crm.daily_cap, Some(1_000));
    assert_eq!(
        c.rate_limits.crm.source,
        "hubspot professional tier; requests_per_second, daily_cap from the contract"
    );
}

#[test]
fn unknown_tier_and_mode_are_reported_with_their_place() {
    let text =
        default_with("tier = \"free_starter\"", "tier = \"gold\"").replacen("mode = \"test\"", "mode = \"prod\"", 1);
    let got = problems("c.toml", &text);
    let fields: Vec<&str> = got.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["rate_limits.crm.tier", "rate_limits.billing.mode"],
        "{}",
        render_problems(&got)
    );
    assert_eq!((got[0].line, got[0].column), pos(&text, "\"gold\""));
    assert!(
        got[0].expected.contains("free_starter, professional, enterprise"),
        "{}",
        got[0].expected
    );
    assert_eq!((got[1].line, got[1].column), pos(&text, "\"prod\""));
    assert!(got[1].expected.contains("test, live"), "{}", got[1].expected);
}

// --- one owner per physical field (issue 19 item 5) ------------------------------------

/// The default contract with `extra` (objects) appended.
fn default_plus(extra: &str) -> String {
    format!("{DEFAULT_CONTRACT}\n{extra}")
}

/// `file:line:column` of the first occurrence of `needle`, as problems name a second place.
fn place(file: &str, text: &str, needle: &str) -> String {
    let (line, column) = pos(text, needle);
    format!("{file}:{line}:{column}")
}

#[test]
fn contradictory_fixture_reports_each_contradiction_at_both_places() {
    let t = CONTRADICTORY;
    let got = problems("contradictory_owners.toml", t);
    let at = |needle: &str| pos(t, needle);
    let expected: Vec<((usize, usize), &str, Vec<String>)> = vec![
        (
            at("\"email\"\nbilling = \"email\"\nowner = \"billing\""),
            "objects.customer_mirror.fields[0].crm",
            vec![
                "crm contact `email` has two owners".into(),
                "owner = \"billing\" makes it a copy of billing customer `email`".into(),
                format!(
                    "but at objects.customer.fields[0] ({}) owner = \"crm\" makes it the source",
                    place(
                        "contradictory_owners.toml",
                        t,
                        "\"email\"\nbilling = \"email\"\nowner = \"crm\""
                    )
                ),
                "expected one owner".into(),
            ],
        ),
        (
            at("\"metadata.lifecycle_stage\"\nowner = \"crm\"\n\n# The same"),
            "objects.customer_mirror.fields[1].billing",
            vec![
                "billing customer `metadata.lifecycle_stage` is written from two sources".into(),
                "here from crm contact `hs_lead_status`".into(),
                format!(
                    "objects.customer.fields[1] ({}) writes it from crm contact `lifecyclestage`",
                    place("contradictory_owners.toml", t, "\"metadata.lifecycle_stage\"")
                ),
                "expected at most one source".into(),
            ],
        ),
        (
            at("\"phone\"\nbilling = \"phone\"\nowner = \"shared\"\nconflict = \"latest"),
            "objects.customer_mirror.fields[2].crm",
            vec![
                "crm contact `phone` and billing customer `phone` are mapped again with a different rule".into(),
                "here owner = \"shared\", conflict = \"latest_sync_timestamp\"".into(),
                "has owner = \"shared\", conflict = \"review\"".into(),
            ],
        ),
    ];
    for ((line, column), field, parts) in &expected {
        let p = got
            .iter()
            .find(|p| p.line == *line && p.column == *column && p.field == *field)
            .unwrap_or_else(|| panic!("missing {line}:{column} {field}; got:\n{}", render_problems(&got)));
        for part in parts {
            assert!(p.expected.contains(part.as_str()), "{part:?} not in {p}");
        }
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "one problem per contradiction:\n{}",
        render_problems(&got)
    );
}

#[test]
fn the_default_two_way_plan_is_one_owner_with_one_source() {
    // billing subscription `plan` feeds CRM `plan` (owned by billing) and is shared with CRM
    // `requested_plan`: one owner (billing's edits are the truth in both), one writer.
    assert!(compile("c.toml", DEFAULT_CONTRACT).is_ok());

    // Made crm-owned instead, `requested_plan` would overwrite a field billing owns.
    let text = default_with(
        "billing = \"plan\"\nowner = \"shared\"\nconflict = \"review\"",
        "billing = \"plan\"\nowner = \"crm\"",
    );
    let got = problems("c.toml", &text);
    assert_eq!(got.len(), 1, "{}", render_problems(&got));
    assert_eq!(got[0].field, "objects.plan_request.fields[0].billing");
    assert!(
        got[0].expected.contains("billing subscription `plan` has two owners"),
        "{}",
        got[0]
    );
    assert!(
        got[0].expected.contains(&format!(
            "objects.subscription.fields[1] ({})",
            place("c.toml", &text, "\"plan\"                  # the price's lookup key")
        )),
        "{}",
        got[0]
    );

    // A second shared writer into billing `plan` is a second source.
    let text = default_plus(
        "[objects.plan_wish]\ncrm = \"contact\"\nbilling = \"subscription\"\nmatch = [\"stored_id\"]\n\
         idempotency_key = \"billing:wish:{billing_customer_id}:{event_id}\"\n\n\
         [[objects.plan_wish.fields]]\nname = \"wished_plan\"\ncrm = \"wished_plan\"\nbilling = \"plan\"\n\
         owner = \"shared\"\nconflict = \"review\"\n",
    );
    let got = problems("c.toml", &text);
    assert_eq!(got.len(), 1, "{}", render_problems(&got));
    assert_eq!(got[0].field, "objects.plan_wish.fields[0].billing");
    assert!(
        got[0]
            .expected
            .contains("billing subscription `plan` is written from two sources: here from crm contact `wished_plan`"),
        "{}",
        got[0]
    );
    assert!(got[0].expected.contains("objects.plan_request.fields[0]"), "{}", got[0]);

    // A copy (CRM `plan`, written from billing) that is also a source is two owners.
    let text = default_plus(
        "[objects.plan_echo]\ncrm = \"contact\"\nbilling = \"customer\"\nmatch = [\"stored_id\"]\n\
         idempotency_key = \"billing:echo:{crm_contact_id}:{event_id}\"\n\n\
         [[objects.plan_echo.fields]]\nname = \"plan_copy\"\ncrm = \"plan\"\nbilling = \"metadata.plan\"\n\
         owner = \"crm\"\n",
    );
    let got = problems("c.toml", &text);
    assert_eq!(got.len(), 1, "{}", render_problems(&got));
    assert_eq!(got[0].field, "objects.plan_echo.fields[0].crm");
    assert!(
        got[0].expected.contains("crm contact `plan` has two owners"),
        "{}",
        got[0]
    );
}

#[test]
fn the_same_pair_mapped_twice_alike_is_no_contradiction_but_a_different_rule_is() {
    let mirror = |rule: &str| {
        default_plus(&format!(
            "[objects.customer_copy]\ncrm = \"contact\"\nbilling = \"customer\"\nmatch = [\"stored_id\"]\n\
             idempotency_key = \"billing:copy:{{crm_contact_id}}:{{event_id}}\"\n\n\
             [[objects.customer_copy.fields]]\nname = \"id_copy\"\ncrm = \"billing_customer_id\"\nbilling = \"id\"\n\
             owner = \"billing\"\n{rule}"
        ))
    };
    compile("c.toml", &mirror("")).expect("the same pair with the same rule");
    let text = mirror("on_non_owner_edit = \"flag\"\n");
    let got = problems("c.toml", &text);
    assert_eq!(got.len(), 1, "{}", render_problems(&got));
    assert_eq!(got[0].field, "objects.customer_copy.fields[0].crm");
    assert!(
        got[0]
            .expected
            .contains("here owner = \"billing\", on_non_owner_edit = \"flag\", but objects.customer.fields[2]"),
        "{}",
        got[0]
    );
    assert!(
        got[0]
            .expected
            .contains("has owner = \"billing\", on_non_owner_edit = \"revert\""),
        "{}",
        got[0]
    );

    // The same CRM property on another CRM object kind is another physical field.
    let text = default_plus(
        "[objects.account]\ncrm = \"company\"\nbilling = \"invoice\"\nmatch = [\"stored_id\"]\n\
         idempotency_key = \"x:{event_id}\"\n\n[[objects.account.fields]]\nname = \"email\"\ncrm = \"email\"\n\
         billing = \"metadata.email\"\nowner = \"billing\"\n",
    );
    compile("c.toml", &text).expect("company email is not contact email");
}

#[test]
fn contradictions_are_found_alongside_other_problems() {
    // A broken object elsewhere does not hide a contradiction between the valid ones.
    let text = format!(
        "{CONTRADICTORY}\n[objects.broken]\ncrm = \"person\"\nbilling = \"customer\"\nmatch = [\"stored_id\"]\n\
         idempotency_key = \"k\"\n[[objects.broken.fields]]\nname = \"n\"\ncrm = \"n\"\nbilling = \"n\"\nowner = \"crm\"\n"
    );
    let got = problems("c.toml", &text);
    assert_eq!(got.len(), 4, "{}", render_problems(&got));
    assert_eq!(got[3].field, "objects.broken.crm");
}

// --- encoding, syntax, size ---------------------------------------------------------------

#[test]
fn invalid_utf8_is_located_at_its_first_invalid_byte() {
    let mut bytes = DEFAULT_CONTRACT.as_bytes().to_vec();
    let at = DEFAULT_CONTRACT.find("\"default\"").expect("name") + 3;
    bytes[at] = 0xff;
    let err = compile_bytes("c.toml", &bytes).expect_err("not UTF-8");
    let ContractError::Invalid(got) = err else {
        panic!("expected problems, got {err}")
    };
    assert_eq!(got.len(), 1);
    let (line, column) = pos(DEFAULT_CONTRACT, "\"default\"");
    assert_eq!((got[0].line, got[0].column), (line, column + 3));
    assert_eq!(got[0].field, "(encoding)");
    assert!(got[0].expected.contains("invalid UTF-8 (byte 0xFF)"), "{}", got[0]);

    // Columns count characters, not bytes; an invalid byte on the first line is at 1:n.
    let got = match compile_bytes("c.toml", b"name = \"\xc3\xa9\xc3\" ") {
        Err(ContractError::Invalid(p)) => p,
        other => panic!("{other:?}"),
    };
    assert_eq!((got[0].line, got[0].column), (1, 10), "{}", got[0]);
    assert!(got[0].expected.contains("byte 0xC3"), "{}", got[0]);

    // Through the file path too.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"# caf\xe9\nname = \"x\"\n").expect("write");
    let err = load(&path).expect_err("not UTF-8");
    assert_eq!(
        err.to_string(),
        format!(
            "{}:1:6: (encoding): invalid UTF-8 (byte 0xE9): a contract must be UTF-8 text",
            path.display()
        )
    );
    assert_eq!(read_text(&path).expect_err("not UTF-8").to_string(), err.to_string());
}

#[test]
fn every_syntax_error_has_a_message_and_a_nul_byte_is_named() {
    let text = default_with("name = \"default\"", "name = \"def\0ault\"");
    let got = problems("c.toml", &text);
    assert_eq!(got.len(), 1, "{}", render_problems(&got));
    assert_eq!(got[0].field, "(toml syntax)");
    assert_eq!((got[0].line, got[0].column), pos(&text, "\0"));
    assert!(
        got[0].expected.contains("a NUL byte (0x00) is not allowed in TOML"),
        "{}",
        got[0]
    );

    for (text, needle) in [
        ("\0", "\0"),
        ("name = 1\n\0\n", "\0"),
        ("# a comment \0\n", "\0"),
        ("name = \"x\u{1}\"", "\u{1}"),
        ("# a comment \u{7f}\n", "\u{7f}"),
        ("a = 1\rb = 2\n", "\r"),
        ("a = [", "["),
        ("[", "["),
        ("= 1", "="),
    ] {
        let got = problems("c.toml", text);
        assert_eq!(got.len(), 1, "{text:?}: {}", render_problems(&got));
        let p = &got[0];
        let message = p.expected.strip_prefix("invalid TOML: ").unwrap_or_default();
        assert!(!message.trim().is_empty(), "{text:?}: empty message: {p}");
        assert!(p.line >= 1 && p.column >= 1, "{text:?}: {p}");
        let (line, _) = pos(text, needle);
        assert!(p.line >= line, "{text:?}: {p}");
    }
    // Without a description from toml_edit (a NUL in a comment), the byte is named.
    let got = problems("c.toml", "# a comment \0\n");
    assert_eq!(
        got[0].to_string(),
        "c.toml:1:13: (toml syntax): invalid TOML: a NUL byte (0x00) is not allowed in TOML"
    );
}

#[test]
fn files_over_the_cap_are_refused_without_reading_them_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = dir.path().join("big.toml");
    let mut text = DEFAULT_CONTRACT.to_string();
    while text.len() <= MAX_CONTRACT_BYTES {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, &text).expect("write");
    let err = load(&big).expect_err("too large");
    assert!(matches!(err, ContractError::TooLarge { limit, .. } if limit == MAX_CONTRACT_BYTES));
    assert_eq!(
        err.to_string(),
        format!(
            "contract {} is larger than 1 MiB (1048576 bytes), the most a contract file may hold: \
             is this the right file?",
            big.display()
        )
    );
    assert!(matches!(
        compile_bytes("big", text.as_bytes()),
        Err(ContractError::TooLarge { .. })
    ));

    // Exactly at the cap is read (and compiled: it is the default plus comments).
    let at_cap = dir.path().join("at_cap.toml");
    let mut exact = DEFAULT_CONTRACT.to_string();
    while exact.len() < MAX_CONTRACT_BYTES {
        exact.push('\n');
    }
    std::fs::write(&at_cap, &exact).expect("write");
    assert_eq!(read_file(&at_cap).expect("at the cap").len(), MAX_CONTRACT_BYTES);
    load(&at_cap).expect("valid at the cap");

    // An endless file: only cap + 1 bytes are read.
    let err = load(Path::new("/dev/zero")).expect_err("endless");
    assert!(matches!(err, ContractError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("/dev/zero"), "{err}");
}

// --- numeric bounds -----------------------------------------------------------------------

#[test]
fn every_numeric_setting_has_an_upper_bound() {
    let huge = "9223372036854775807";
    let text = DEFAULT_CONTRACT
        .replacen("request_timeout_ms = 10000", &format!("request_timeout_ms = {huge}"), 1)
        .replacen("poll_interval_ms = 30000 ", &format!("poll_interval_ms = {huge} "), 1)
        .replacen("poll_overlap_ms = 60000", &format!("poll_overlap_ms = {huge}"), 1)
        .replacen("retention_days = 30", &format!("retention_days = {huge}"), 1)
        .replacen("window_days = 7 ", &format!("window_days = {huge} "), 1)
        .replacen("max_attempts = 8 ", &format!("max_attempts = {huge} "), 1)
        .replacen("base_backoff_ms = 200", "base_backoff_ms = 3600001", 1)
        .replacen("max_backoff_ms = 30000", &format!("max_backoff_ms = {huge}"), 1)
        .replacen("# requests_per_second = 10.0", "requests_per_second = 10001", 1)
        .replacen("# burst = 10 ", "burst = 10001 ", 1)
        .replacen("# daily_cap = 250000", "daily_cap = 1000000001", 1)
        .replacen("# requests_per_second = 25.0", "requests_per_second = 0.0001", 1)
        .replacen("# burst = 25 ", &format!("burst = {huge} "), 1)
        .replacen("# daily_cap = 1000000 ", &format!("daily_cap = {huge} "), 1)
        .replacen("lag_p95_ms = 60000", "lag_p95_ms = 86400001", 1)
        .replacen("dead_letters = 10 ", "dead_letters = 1000001 ", 1)
        .replacen("review_depth = 25 ", &format!("review_depth = {huge} "), 1);
    let got = problems("c.toml", &text);
    let fields: Vec<&str> = got.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "systems.crm.request_timeout_ms",
            "systems.crm.poll_interval_ms",
            "systems.billing.poll_overlap_ms",
            "dedupe.retention_days",
            "reconciliation.window_days",
            "retry.max_attempts",
            "retry.base_backoff_ms",
            "retry.max_backoff_ms",
            "rate_limits.crm.requests_per_second",
            "rate_limits.crm.burst",
            "rate_limits.crm.daily_cap",
            "rate_limits.billing.requests_per_second",
            "rate_limits.billing.burst",
            "rate_limits.billing.daily_cap",
            "alerts.lag_p95_ms",
            "alerts.dead_letters",
            "alerts.review_depth",
        ],
        "{}",
        render_problems(&got)
    );
    let by_field = |f: &str| {
        got.iter()
            .find(|p| p.field == f)
            .map(|p| p.expected.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        by_field("retry.base_backoff_ms"),
        "expected an integer in 1..=3600000 (found 3600001)"
    );
    assert_eq!(
        by_field("retry.max_backoff_ms"),
        format!("expected an integer in 1..=3600000 (found {huge})")
    );
    assert_eq!(
        by_field("rate_limits.billing.requests_per_second"),
        "expected a number in 0.001..=10000 (found 0.0001)"
    );
    let (line, column) = pos(&text, &format!("max_backoff_ms = {huge}"));
    assert_eq!((got[7].line, got[7].column), (line, column + "max_backoff_ms = ".len()));
    assert_eq!((got[6].line, got[6].column), pos(&text, "3600001"));

    // The bounds themselves are accepted.
    let text = DEFAULT_CONTRACT
        .replacen("base_backoff_ms = 200", "base_backoff_ms = 3600000", 1)
        .replacen("max_backoff_ms = 30000", "max_backoff_ms = 3600000", 1)
        .replacen("# requests_per_second = 10.0", "requests_per_second = 10000", 1)
        .replacen("# burst = 10 ", "burst = 10000 ", 1)
        .replacen("# daily_cap = 250000", "daily_cap = 1000000000", 1)
        .replacen("# requests_per_second = 25.0", "requests_per_second = 0.001", 1)
        .replacen("lag_p95_ms = 60000", "lag_p95_ms = 86400000", 1)
        .replacen("dead_letters = 10 ", "dead_letters = 1000000 ", 1)
        .replacen("review_depth = 25 ", "review_depth = 0 ", 1);
    let c = compile("c.toml", &text).expect("bounds are inclusive");
    assert_eq!(c.retry.max_backoff_ms, 3_600_000);
    assert_eq!(c.rate_limits.crm.daily_cap, Some(MAX_DAILY_CAP as u64));
}

// --- clear-text base URLs ------------------------------------------------------------------

#[test]
fn http_base_urls_are_refused_except_to_loopback_or_when_allowed_with_a_warning() {
    let url = |u: &str| default_with("base_url = \"https://api.stripe.com\"", &format!("base_url = \"{u}\""));
    for ok in [
        "http://127.0.0.1:8082",
        "http://127.1.2.3",
        "http://localhost:12111/",
        "http://LOCALHOST",
        "http://[::1]:8082",
        "http://user@127.0.0.1:9",
        "https://billing.example.com",
    ] {
        let c = compile("c.toml", &url(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert!(c.warnings.is_empty(), "{ok}: {:?}", c.warnings);
    }
    for bad in [
        "http://api.stripe.com",
        "http://10.0.0.5:8082",
        "http://[::2]",
        "http://127.0.0.1.evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1@evil.example",
    ] {
        let text = url(bad);
        let got = problems("c.toml", &text);
        assert_eq!(got.len(), 1, "{bad}: {}", render_problems(&got));
        assert_eq!(got[0].field, "systems.billing.base_url", "{bad}");
        assert_eq!((got[0].line, got[0].column), pos(&text, &format!("\"{bad}\"")), "{bad}");
        assert!(got[0].expected.starts_with("expected https://"), "{}", got[0]);
        assert!(
            got[0]
                .expected
                .contains("allow_insecure_http = true in [systems.billing]"),
            "{}",
            got[0]
        );
    }

    let text = default_with(
        "base_url = \"https://api.stripe.com\"",
        "base_url = \"http://billing.internal:8080\"\nallow_insecure_http = true",
    );
    let c = compile("c.toml", &text).expect("allowed");
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert_eq!((w.line, w.column), pos(&text, "\"http://billing.internal:8080\""));
    assert_eq!(w.field, "systems.billing.base_url");
    assert!(w.to_string().contains("billing.internal"), "{w}");
    assert!(w.to_string().contains("clear text"), "{w}");
    assert!(compile("c.toml", DEFAULT_CONTRACT)
        .expect("default")
        .warnings
        .is_empty());

    let text = default_with(
        "base_url = \"https://api.stripe.com\"",
        "base_url = \"https://api.stripe.com\"\nallow_insecure_http = \"yes\"",
    );
    let got = problems("c.toml", &text);
    assert_eq!(got[0].field, "systems.billing.allow_insecure_http");
    assert!(got[0].expected.contains("expected true or false, found a string"));
}

// --- fuzz findings ---------------------------------------------------------------------------

#[test]
fn fuzz_an_empty_or_odd_key_is_named_as_toml_writes_it() {
    // Found by the contract_compiler fuzz target: `["".billing]` gave an empty field.
    let text = default_with("[systems.billing]", "[\"\".billing]");
    let got = problems("c.toml", &text);
    let p = got
        .iter()
        .find(|p| p.line == pos(&text, "[\"\"").0)
        .expect("the odd table");
    assert_eq!(p.field, "\"\"");
    assert!(p.expected.starts_with("unknown key"), "{p}");
    let text = default_with("retention_days = 30", "\"retention days\" = 30");
    let got = problems("c.toml", &text);
    assert_eq!(got.len(), 1, "{}", render_problems(&got));
    assert_eq!(got[0].field, "dedupe.\"retention days\"");
}
