use super::*;

fn ev(source: Side, id: &str, key: &str) -> NewEvent {
    NewEvent {
        source,
        event_id: id.to_string(),
        via: "webhook",
        event_type: "contact.propertyChange".into(),
        object_type: "contact".into(),
        object_id: "1".into(),
        identity_object: "customer".into(),
        entity_key: key.to_string(),
        billing_id: None,
        payload: "{}".into(),
        received_at_ms: 1,
    }
}

async fn open() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).await.expect("open");
    (dir, l)
}

#[tokio::test]
async fn ingest_dedupes_within_and_across_batches_and_counts_duplicates() {
    let (_d, l) = open().await;
    let out = l
        .ingest(vec![
            ev(Side::Crm, "1", "customer:crm:1"),
            ev(Side::Crm, "1", "customer:crm:1"),
            ev(Side::Billing, "1", "customer:crm:1"),
        ])
        .await
        .unwrap();
    assert!(matches!(out[0], IngestOutcome::Inserted(_)));
    assert!(matches!(out[1], IngestOutcome::Duplicate(_)));
    assert!(matches!(out[2], IngestOutcome::Inserted(_)));
    let again = l.ingest(vec![ev(Side::Crm, "1", "customer:crm:1")]).await.unwrap();
    assert!(matches!(again[0], IngestOutcome::Duplicate(_)));
    let st = l.status().await.unwrap();
    assert_eq!(st.events["pending"], 2);
    assert_eq!(st.events["duplicate"], 2);
    assert_eq!(st.events_total, 4);
    assert_eq!(st.queue_depth, 1, "both events share one record queue");
}

#[tokio::test]
async fn billing_events_follow_the_identity_map() {
    let (_d, l) = open().await;
    l.apply(
        &ChangeSet {
            entity_key: "customer:crm:7".into(),
            identity: Some(("customer".into(), "7".into(), "cus_7".into())),
            ..Default::default()
        },
        1,
    )
    .await
    .unwrap();
    let mut e = ev(Side::Billing, "evt_1", "customer:billing:cus_7");
    e.billing_id = Some("cus_7".into());
    l.ingest(vec![e]).await.unwrap();
    let claims = l.claim("w", 10, 10, 1000).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].entity_key, "customer:crm:7");
}

#[tokio::test]
async fn a_claimed_record_is_not_claimed_twice_and_release_keeps_new_work() {
    let (_d, l) = open().await;
    l.ingest(vec![ev(Side::Crm, "1", "customer:crm:1")]).await.unwrap();
    let c = l.claim("a", 10, 100, 1000).await.unwrap();
    assert_eq!(c.len(), 1);
    assert!(l.claim("b", 10, 100, 1000).await.unwrap().is_empty());
    // A new event arrives while claimed: release must keep the record queued.
    l.ingest(vec![ev(Side::Crm, "2", "customer:crm:1")]).await.unwrap();
    l.release(&c[0], "a").await.unwrap();
    assert_eq!(l.claim("b", 10, 100, 1000).await.unwrap().len(), 1);
}

#[tokio::test]
async fn apply_settles_and_release_removes_finished_records() {
    let (_d, l) = open().await;
    let out = l.ingest(vec![ev(Side::Crm, "1", "customer:crm:1")]).await.unwrap();
    let IngestOutcome::Inserted(id) = out[0] else {
        panic!("inserted")
    };
    let c = l.claim("a", 1, 100, 1000).await.unwrap().remove(0);
    let ops = l
        .apply(
            &ChangeSet {
                entity_key: "customer:crm:1".into(),
                new_ops: vec![NewOp {
                    destination: Side::Billing,
                    op: crate::ledger::OpKind::UpdateCustomer,
                    target_id: Some("cus_1".into()),
                    idempotency_key: "k1".into(),
                    correlation_id: "c1".into(),
                    field_values: serde_json::Map::new(),
                    cause_inbox_id: Some(id),
                }],
                ..Default::default()
            },
            2,
        )
        .await
        .unwrap();
    assert_eq!(ops.len(), 1);
    // Replay's preview looks keys up: the one in use names its write and state.
    let used = l.writes_by_key(&["k1".into(), "k2".into()]).await.unwrap();
    assert_eq!(used.get("k1"), Some(&(ops[0], "pending".to_string())));
    assert!(!used.contains_key("k2"));
    assert!(
        l.unplanned_events("customer:crm:1").await.unwrap().is_empty(),
        "a planned event is not planned again"
    );
    // Release while the write is open keeps the record queued.
    l.release(&c, "a").await.unwrap();
    assert_eq!(l.status().await.unwrap().queue_depth, 1);
    let c = l.claim("a", 1, 100, 1000).await.unwrap().remove(0);
    l.apply(
        &ChangeSet {
            entity_key: "customer:crm:1".into(),
            op_outcomes: vec![OpOutcome {
                op_id: ops[0],
                state: "done",
                response_status: Some(200),
                response: None,
                result_id: Some("cus_1".into()),
                error: None,
            }],
            settle_causes: vec![id],
            ..Default::default()
        },
        3,
    )
    .await
    .unwrap();
    l.release(&c, "a").await.unwrap();
    let st = l.status().await.unwrap();
    assert_eq!(st.events["applied"], 1);
    assert_eq!(st.queue_depth, 0);
    assert_eq!(st.writes["billing"].done, 1);
    assert_eq!(st.lag_ms.samples, 1);
}

#[tokio::test]
async fn pause_is_persisted_audited_and_visible_to_a_second_handle() {
    let (d, l) = open().await;
    l.set_pause("billing", Some("incident 42"), "cli", 5).await.unwrap();
    let other = Ledger::open(&d.path().join("l.db")).await.unwrap();
    let p = other.pauses().await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].scope, "billing");
    assert_eq!(p[0].reason.as_deref(), Some("incident 42"));
    assert!(other.clear_pause("billing", None, "cli", 6).await.unwrap());
    assert!(l.pauses().await.unwrap().is_empty());
    assert_eq!(l.count(LedgerTable::Audit).await.unwrap(), 2);
}

#[test]
fn lag_percentiles() {
    let v: Vec<i64> = (1..=100).collect();
    let f = lag_figures(&v);
    assert_eq!((f.p50, f.p95, f.max, f.samples), (51, 95, 100, 100));
    assert_eq!(lag_figures(&[]), LagFigures::default());
}

#[tokio::test]
async fn a_gap_moves_its_cursor_only_when_expired_and_is_recorded_once() {
    let (_d, l) = open().await;
    let gap = |cursor| Gap {
        cursor,
        source: Side::Crm,
        from_ms: 1_000,
        to_ms: 5_000,
        reason: "test",
    };
    l.advance_watermark("poll:crm:a", 1_000, 1).await.expect("wm");
    l.advance_watermark("poll:crm:b", 1_000, 1).await.expect("wm");
    for _ in 0..2 {
        l.record_gap(&gap("poll:crm:a"), GapKind::Unreadable, 10)
            .await
            .expect("gap");
        l.record_gap(&gap("poll:crm:b"), GapKind::Expired, 10)
            .await
            .expect("gap");
    }
    assert_eq!(
        l.watermark("poll:crm:a").await.expect("wm"),
        Some(1_000),
        "unreadable: kept"
    );
    assert_eq!(
        l.watermark("poll:crm:b").await.expect("wm"),
        Some(5_000),
        "expired: moved"
    );
    let gaps = l.reconciliation_gaps(true).await.expect("gaps");
    assert_eq!(gaps.len(), 2);
    let audited: Vec<String> = sqlx::query_scalar("SELECT action FROM audit WHERE rule = 'provider_limit' ORDER BY id")
        .fetch_all(&l.reader)
        .await
        .expect("audit");
    assert_eq!(audited, vec!["poll_window_unreadable", "poll_cursor_expired"]);
}

/// Batches sent together share one multi-row insert in the group commit: each caller still
/// gets one outcome per event of its own batch, in order, and an event delivered to two
/// callers at once is inserted once, the other delivery counted as its duplicate.
#[tokio::test]
async fn concurrent_batches_merge_into_one_insert_and_each_gets_its_own_outcomes() {
    let (_d, l) = open().await;
    // 16 callers, 5 events each; caller c's events are c*3 .. c*3+4, so neighbours overlap
    // by two events (sent to both at the same moment).
    let batches: Vec<Vec<NewEvent>> = (0..16)
        .map(|c| {
            (c * 3..c * 3 + 5)
                .map(|i| ev(Side::Crm, &format!("e{i}"), &format!("customer:crm:{}", i % 7)))
                .collect()
        })
        .collect();
    let results = futures_util::future::join_all(batches.iter().map(|b| l.ingest(b.clone()))).await;
    let mut inserted: HashMap<String, i64> = HashMap::new();
    let mut dup_of: Vec<(String, i64)> = Vec::new();
    for (b, r) in batches.iter().zip(&results) {
        let out = r.as_ref().expect("ingest");
        assert_eq!(out.len(), b.len(), "one outcome per event of the caller's own batch");
        for (e, o) in b.iter().zip(out) {
            match *o {
                IngestOutcome::Inserted(id) => {
                    assert!(
                        inserted.insert(e.event_id.clone(), id).is_none(),
                        "{} inserted twice",
                        e.event_id
                    );
                }
                IngestOutcome::Duplicate(id) => dup_of.push((e.event_id.clone(), id)),
            }
        }
    }
    let distinct = 15 * 3 + 5;
    assert_eq!(inserted.len(), distinct, "every distinct event inserted exactly once");
    assert_eq!(dup_of.len(), 16 * 5 - distinct);
    for (event, id) in &dup_of {
        assert_eq!(
            inserted.get(event),
            Some(id),
            "a duplicate names the row its event holds"
        );
    }
    let (held, dups): (i64, i64) =
        sqlx::query_as("SELECT (SELECT COUNT(*) FROM inbox), (SELECT COUNT(*) FROM inbox_duplicates)")
            .fetch_one(&l.reader)
            .await
            .expect("counts");
    assert_eq!((held, dups), (distinct as i64, dup_of.len() as i64));
    let heads: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM work_queue")
        .fetch_one(&l.reader)
        .await
        .expect("queue");
    assert_eq!(heads, 7, "one queue head per record");
    // The per-state counts the status reads (kept by the insert path, migration 16).
    let st = l.status_at(0).await.expect("status");
    assert_eq!(st.distinct_events, distinct as i64);
    assert_eq!(st.events["pending"], distinct as i64);
    assert_eq!(st.events_total, 16 * 5);
}

/// Decisions sent together share one group commit; one that fails (here: its write names an
/// inbox event that does not exist) is answered with its error and changes nothing, while
/// the others still commit.
#[tokio::test]
async fn a_failing_decision_in_a_group_commit_fails_alone_and_the_others_commit() {
    let (_d, l) = open().await;
    let keys: Vec<String> = (0..6).map(|i| format!("customer:crm:{i}")).collect();
    let events: Vec<NewEvent> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| ev(Side::Crm, &i.to_string(), k))
        .collect();
    let ids: Vec<i64> = l
        .ingest(events.clone())
        .await
        .unwrap()
        .into_iter()
        .map(|o| match o {
            IngestOutcome::Inserted(id) => id,
            IngestOutcome::Duplicate(_) => panic!("inserted"),
        })
        .collect();
    let op = |i: usize, cause: i64| NewOp {
        destination: Side::Billing,
        op: crate::ledger::OpKind::UpdateCustomer,
        target_id: Some(format!("cus_{i}")),
        idempotency_key: format!("group-k{i}"),
        correlation_id: format!("c{i}"),
        field_values: serde_json::Map::new(),
        cause_inbox_id: Some(cause),
    };
    let sets: Vec<ChangeSet> = (0..6)
        .map(|i| ChangeSet {
            entity_key: keys[i].clone(),
            event_states: vec![(ids[i], crate::ledger::EventState::Applied, "decided".into())],
            // Decision 3's write names an event the inbox does not hold: a foreign-key error.
            new_ops: vec![op(i, if i == 3 { 999_999 } else { ids[i] })],
            ..Default::default()
        })
        .collect();
    let results = futures_util::future::join_all(sets.iter().map(|cs| l.apply(cs, 5))).await;
    for (i, r) in results.iter().enumerate() {
        if i == 3 {
            assert!(r.is_err(), "the failing decision is answered with its error: {r:?}");
        } else {
            assert_eq!(r.as_ref().map(Vec::len).ok(), Some(1), "decision {i} committed: {r:?}");
        }
    }
    let used = l
        .writes_by_key(&(0..6).map(|i| format!("group-k{i}")).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(
        used.len(),
        5,
        "five writes planned, none for the failed decision: {used:?}"
    );
    assert!(!used.contains_key("group-k3"));
    // The failed decision's event is still pending (nothing of it was written).
    assert_eq!(l.unplanned_events(&keys[3]).await.unwrap().len(), 1);
    assert!(l.unplanned_events(&keys[0]).await.unwrap().is_empty());
    // The group thread left no transaction open on the writer: sqlx's own transactions on
    // it still begin, and a flag set through them is what the group thread reads next.
    l.set_pause("billing", Some("test"), "test", 6)
        .await
        .expect("a write through the pool");
    assert!(
        l.write_hold("billing", None).await.unwrap().is_some(),
        "the pause is seen at once"
    );
}

/// Invariant 4's independent count: the per-state counters `status` reports agree with the
/// inbox's rows, and when an event is left uncounted — inserted past the insert path's count,
/// its state changed with the trigger bypassed, or a counter decremented — the census names
/// the state, while `status` alone still adds up (it sums the same counters it reports).
#[tokio::test]
async fn the_event_census_counts_rows_and_names_an_event_left_uncounted() {
    let (_d, l) = open().await;
    let out = l
        .ingest(vec![
            ev(Side::Crm, "1", "customer:crm:1"),
            ev(Side::Crm, "1", "customer:crm:1"),
            ev(Side::Crm, "2", "customer:crm:2"),
            ev(Side::Billing, "3", "customer:crm:3"),
        ])
        .await
        .unwrap();
    let IngestOutcome::Inserted(first) = out[0] else {
        panic!("inserted")
    };
    l.apply(
        &ChangeSet {
            entity_key: "customer:crm:1".into(),
            event_states: vec![(first, EventState::Applied, "records already agree".into())],
            ..Default::default()
        },
        2,
    )
    .await
    .unwrap();
    let census = l.event_census().await.unwrap();
    assert_eq!(census.mismatches(), Vec::<String>::new());
    let st = l.status().await.unwrap();
    assert_eq!(census.kept, st.events, "the census's counters are the status's");
    assert_eq!(census.counted, st.events);
    assert_eq!((census.distinct_events(), census.total()), (3, 4));
    assert_eq!((census.counted("pending"), census.counted("applied")), (2, 1));

    let sums = |st: &LedgerStatus| st.events.values().sum::<i64>() == st.events_total;
    // 1. A row inserted by a path that does not count it (the insert trigger is gone since
    // migration 16: `ingest_in` and the seeder count their own rows).
    sqlx::query(
        "INSERT INTO inbox (source, event_id, via, event_type, object_type, object_id, entity_key, payload, received_at_ms) \
         VALUES ('crm', 'uncounted', 'webhook', 'contact.creation', 'contact', '9', 'customer:crm:9', '{}', 3)",
    )
    .execute(&l.writer)
    .await
    .unwrap();
    assert_eq!(
        l.event_census().await.unwrap().mismatches(),
        ["pending: counter 2, 3 events"]
    );
    assert!(sums(&l.status().await.unwrap()), "the status's own sum cannot see it");
    sqlx::query("UPDATE ledger_counts SET n = n + 1 WHERE tbl = 'inbox' AND key = 'pending'")
        .execute(&l.writer)
        .await
        .unwrap();
    assert_eq!(l.event_census().await.unwrap().mismatches(), Vec::<String>::new());

    // 2. A state changed with the counting trigger bypassed.
    sqlx::query("DROP TRIGGER inbox_count_update")
        .execute(&l.writer)
        .await
        .unwrap();
    sqlx::query("UPDATE inbox SET state = 'echo' WHERE event_id = 'uncounted'")
        .execute(&l.writer)
        .await
        .unwrap();
    assert_eq!(
        l.event_census().await.unwrap().mismatches(),
        ["echo: counter 0, 1 events", "pending: counter 3, 2 events"]
    );
    assert!(sums(&l.status().await.unwrap()));
    sqlx::query("UPDATE inbox SET state = 'pending' WHERE event_id = 'uncounted'")
        .execute(&l.writer)
        .await
        .unwrap();

    // 3. A counter decremented.
    sqlx::query("UPDATE ledger_counts SET n = n - 1 WHERE tbl = 'inbox' AND key = 'applied'")
        .execute(&l.writer)
        .await
        .unwrap();
    let census = l.event_census().await.unwrap();
    assert_eq!(census.mismatches(), ["applied: counter 0, 1 events"]);
    let st = l.status().await.unwrap();
    assert!(sums(&st));
    assert_eq!(
        st.events_total,
        census.total() - 1,
        "status reports one delivery fewer than it holds"
    );
}

/// One migration file as sqlx reads it: version, file name and sqlx's checksum (SHA-384 of the
/// text, hex).
#[derive(Debug, Clone)]
struct MigrationFile {
    version: i64,
    file: String,
    checksum: String,
}

/// The migration files in `dir`, named and read as sqlx's `migrate!` does
/// (`<VERSION>_<DESCRIPTION>.sql`; anything else, such as `CHECKSUMS`, is not a migration).
fn migration_files(dir: &Path) -> Vec<MigrationFile> {
    use sha2::{Digest, Sha384};
    let mut out: Vec<MigrationFile> = std::fs::read_dir(dir)
        .expect("migrations/")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let file = p.file_name()?.to_string_lossy().to_string();
            let (version, rest) = file.split_once('_')?;
            if !rest.ends_with(".sql") {
                return None;
            }
            let version: i64 = version.parse().expect("a migration's name starts with its version");
            let text = std::fs::read_to_string(&p).expect("a migration file");
            let checksum = hex::encode(Sha384::digest(text.as_bytes()));
            Some(MigrationFile {
                version,
                file,
                checksum,
            })
        })
        .collect();
    out.sort_by_key(|m| m.version);
    out
}

/// What is wrong with `files` against the manifest (`migrations/CHECKSUMS`: `version checksum
/// file` lines, `#` comments): each message names the file and what to do.
fn migration_manifest_problems(manifest: &str, files: &[MigrationFile]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut landed: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for (n, line) in manifest.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            [v, sum, file] if v.parse::<i64>().is_ok() => {
                landed.insert(v.parse().unwrap_or_default(), (sum.to_string(), file.to_string()));
            }
            _ => problems.push(format!(
                "migrations/CHECKSUMS line {}: expected `version checksum file`, found `{line}`",
                n + 1
            )),
        }
    }
    for f in files {
        match landed.remove(&f.version) {
            None => problems.push(format!(
                "migrations/{} is not in migrations/CHECKSUMS: a new migration adds its line there once it is final: \
                 `{} {} {}`",
                f.file, f.version, f.checksum, f.file
            )),
            Some((sum, _)) if sum != f.checksum => problems.push(format!(
                "migrations/{} changed after it landed (its checksum is {}, recorded {}): never edit a landed \
                 migration: add a new one (sqlx refuses every ledger that applied the old text)",
                f.file, f.checksum, sum
            )),
            Some((_, file)) if file != f.file => problems.push(format!(
                "migrations/{} was landed as {file}: a landed migration keeps its name",
                f.file
            )),
            Some(_) => {}
        }
    }
    for (version, (_, file)) in landed {
        problems.push(format!(
            "migrations/{file} (version {version}) is in migrations/CHECKSUMS but gone: a landed migration is never \
             removed (sqlx refuses every ledger that applied it)"
        ));
    }
    problems
}

/// A landed migration is never edited: every file's checksum, computed as sqlx computes it, is
/// the one recorded in `migrations/CHECKSUMS` when it landed, and every migration is listed.
#[test]
fn landed_migrations_are_never_edited() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let files = migration_files(&dir);
    // The checksum computed here is sqlx's: the embedded migrator has the same versions and sums.
    let embedded: Vec<(i64, String)> = MIGRATOR.iter().map(|m| (m.version, hex::encode(&m.checksum))).collect();
    let on_disk: Vec<(i64, String)> = files.iter().map(|f| (f.version, f.checksum.clone())).collect();
    assert_eq!(
        embedded, on_disk,
        "the embedded migrations are the files in migrations/"
    );
    let manifest = std::fs::read_to_string(dir.join("CHECKSUMS")).expect("migrations/CHECKSUMS");
    let problems = migration_manifest_problems(&manifest, &files);
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_migration_manifest_check_names_an_edited_a_new_and_a_removed_file() {
    let file = |version: i64, name: &str, checksum: &str| MigrationFile {
        version,
        file: name.into(),
        checksum: checksum.into(),
    };
    let manifest = "# comment\n1 aaa 1_first.sql\n2 bbb 2_second.sql\n3 ccc 3_third.sql\n";
    let ok = [
        file(1, "1_first.sql", "aaa"),
        file(2, "2_second.sql", "bbb"),
        file(3, "3_third.sql", "ccc"),
    ];
    assert_eq!(migration_manifest_problems(manifest, &ok), Vec::<String>::new());
    let problems = migration_manifest_problems(
        manifest,
        &[
            file(1, "1_first.sql", "aaa"),
            file(2, "2_second.sql", "b2b"),
            file(4, "4_fourth.sql", "ddd"),
        ],
    );
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0].starts_with("migrations/2_second.sql changed after it landed")
            && problems[0].contains("never edit a landed migration: add a new one"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].starts_with("migrations/4_fourth.sql is not in migrations/CHECKSUMS")
            && problems[1].contains("`4 ddd 4_fourth.sql`"),
        "{}",
        problems[1]
    );
    assert!(problems[2].starts_with("migrations/3_third.sql (version 3) is in migrations/CHECKSUMS but gone"));
    assert_eq!(
        migration_manifest_problems("1 aaa 1_renamed.sql\nnot a line\n", &ok[..1]),
        [
            "migrations/CHECKSUMS line 2: expected `version checksum file`, found `not a line`",
            "migrations/1_first.sql was landed as 1_renamed.sql: a landed migration keeps its name",
        ]
    );
}
