//! The consent store against a real SQLite file in a temporary directory:
//! idempotent puts, conflicts, append-only history (down to the SQL
//! triggers), out-of-order events, state after reopening, concurrent writers,
//! group commit, and a record surviving a store that was never shut down.
//! The first three tests run on PostgreSQL too (`PASSERELLE_TEST_STORE=postgres`);
//! the others are about the SQLite file itself.

mod common;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::{ASSOCIATION_SIRET, golden_bytes};
use passerelle::Error;
use passerelle::consent::{ConsentEvent, ConsentEventKind, ConsentRecord, ConsentState, RecordId};
use passerelle::model::ids::Siret;
use passerelle::store::postgres::ScratchDatabase;
use passerelle::store::{ConsentStore, SqliteStore, Store, StoreLocation, Stored};
use passerelle::validate::Limits;

fn given_record() -> ConsentRecord {
    ConsentRecord::parse(
        &golden_bytes("consent/consent-given.json"),
        &Limits::default(),
    )
    .expect("valid fixture")
}

/// The fixture under another id, so that tests can store many records.
fn record_numbered(number: u32) -> ConsentRecord {
    let mut record = given_record();
    record.record_id =
        RecordId::parse(&format!("00000000-0000-4000-8000-{number:012}")).expect("UUID");
    record
}

fn event(kind: ConsentEventKind, at: DateTime<Utc>) -> ConsentEvent {
    ConsentEvent {
        kind,
        at,
        recorded_by: Siret::parse(ASSOCIATION_SIRET).expect("valid SIRET"),
    }
}

fn january(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, day, 9, 0, 0)
        .single()
        .expect("valid time")
}

fn open(directory: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(directory.path().join("passerelle.db")).expect("the store opens")
}

/// The store the tests run on: an SQLite file in `directory`, or a scratch
/// PostgreSQL database when `PASSERELLE_TEST_STORE=postgres` (`.ci/test` runs
/// this file both ways); the database is dropped with the returned guard.
async fn open_either(directory: &tempfile::TempDir) -> (Store, Option<ScratchDatabase>) {
    if std::env::var("PASSERELLE_TEST_STORE").is_ok_and(|store| store == "postgres") {
        let database = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = Store::open(&StoreLocation::Postgres(database.url.clone()))
            .await
            .expect("the store opens");
        (store, Some(database))
    } else {
        (Store::Sqlite(open(directory)), None)
    }
}

#[tokio::test]
async fn putting_the_same_record_again_is_idempotent_even_after_appends() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (store, _database) = open_either(&directory).await;
    let record = given_record();
    assert_eq!(
        store.put_record(record.clone()).await.expect("put"),
        Stored::Inserted
    );
    assert_eq!(
        store.put_record(record.clone()).await.expect("put again"),
        Stored::AlreadyStored
    );
    store
        .append_event(
            record.record_id,
            event(ConsentEventKind::Withdrawn, january(5)),
        )
        .await
        .expect("append");
    // A retry of the first put, arriving late, changes nothing.
    assert_eq!(
        store.put_record(record.clone()).await.expect("retry"),
        Stored::AlreadyStored
    );
    let stored = store
        .record(record.record_id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(stored.events.len(), 3);
    assert_eq!(stored.events[..2], record.events[..]);
    assert_eq!(stored.state_at(january(6)), ConsentState::Withdrawn);
    assert_eq!(
        store
            .record(record_numbered(7).record_id)
            .await
            .expect("read"),
        None
    );
}

#[tokio::test]
async fn the_same_id_with_other_content_is_a_conflict() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (store, _database) = open_either(&directory).await;
    let record = given_record();
    store.put_record(record.clone()).await.expect("put");

    let mut other_scope = record.clone();
    other_scope.purposes.truncate(1);
    let mut other_history = record.clone();
    other_history.events[1].kind = ConsentEventKind::Refused;
    for changed in [other_scope, other_history] {
        let error = store.put_record(changed).await.expect_err("conflict");
        assert!(matches!(error, Error::Conflict(_)), "{error}");
    }
    let stored = store
        .record(record.record_id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(stored, record, "the first record stands");
}

#[tokio::test]
async fn events_are_refused_out_of_order_and_for_unknown_records() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let (store, _database) = open_either(&directory).await;
    let record = given_record();
    store.put_record(record.clone()).await.expect("put");
    let last = record.events.last().expect("events").at;

    let error = store
        .append_event(
            record.record_id,
            event(ConsentEventKind::Withdrawn, last - TimeDelta::minutes(1)),
        )
        .await
        .expect_err("back-dated");
    assert_eq!(error.violations()[0].rule, "event-out-of-order");
    store
        .append_event(record.record_id, event(ConsentEventKind::Objected, last))
        .await
        .expect("the same time as the last event is in order");

    let unknown = record_numbered(99).record_id;
    let error = store
        .append_event(unknown, event(ConsentEventKind::Given, january(1)))
        .await
        .expect_err("unknown");
    assert!(matches!(error, Error::NotFound(_)), "{error}");

    let mut invalid = record_numbered(3);
    invalid.events.swap(0, 1);
    let error = store
        .put_record(invalid)
        .await
        .expect_err("events out of order");
    assert_eq!(error.violations()[0].rule, "event-out-of-order");

    let stored = store
        .record(record.record_id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(stored.events.len(), 3);
    assert_eq!(stored.events[2].kind, ConsentEventKind::Objected);
}

#[tokio::test]
async fn history_cannot_be_rewritten_even_with_sql() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = open(&directory);
    let record = given_record();
    store.put_record(record.clone()).await.expect("put");
    let path = store.path().to_path_buf();
    store.close().expect("closes");

    let connection = rusqlite::Connection::open(&path).expect("raw connection");
    let id = record.record_id.to_string();
    for (sql, message) in [
        (
            "UPDATE consent_events SET kind = 'CONSENT_EVENT_KIND_GIVEN' WHERE record_id = ?1",
            "append-only",
        ),
        (
            "DELETE FROM consent_events WHERE record_id = ?1",
            "append-only",
        ),
        (
            "UPDATE consent_records SET header = '{}' WHERE record_id = ?1",
            "immutable",
        ),
        (
            "INSERT INTO consent_events (record_id, seq, kind, at, recorded_by) VALUES (?1, 0, 'CONSENT_EVENT_KIND_WITHDRAWN', '2026-01-01T00:00:00Z', '81234567800013')",
            "",
        ),
        (
            "INSERT INTO consent_events (record_id, seq, kind, at, recorded_by) VALUES (?1, 7, 'CONSENT_EVENT_KIND_WITHDRAWN', '2027-01-01T00:00:00Z', '81234567800013')",
            "in sequence",
        ),
    ] {
        let error = connection.execute(sql, [&id]).expect_err(sql);
        assert!(error.to_string().contains(message), "{sql}: {error}");
    }
    drop(connection);

    let store = SqliteStore::open(&path).expect("reopens");
    assert_eq!(
        store
            .record(record.record_id)
            .await
            .expect("read")
            .expect("present"),
        record,
        "nothing changed"
    );
}

#[tokio::test]
async fn the_state_survives_reopening() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let record = given_record();
    {
        let store = open(&directory);
        store.put_record(record.clone()).await.expect("put");
        store
            .append_event(
                record.record_id,
                event(ConsentEventKind::Objected, january(2)),
            )
            .await
            .expect("append");
        store.close().expect("closes");
    }
    let store = open(&directory);
    let stored = store
        .record(record.record_id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(stored.events.len(), 3);
    assert_eq!(stored.state_at(january(1)), ConsentState::Active);
    assert_eq!(stored.state_at(january(3)), ConsentState::Objected);
}

/// The store keeps the records it has read decoded in memory: an event
/// appended by another process on the same file (here another store, as
/// `passerelle consent` would be) must still be seen at the next read.
#[tokio::test]
async fn a_record_read_again_sees_events_appended_by_another_process() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let record = given_record();
    let gateway = open(&directory);
    gateway.put_record(record.clone()).await.expect("put");
    let first = gateway
        .record(record.record_id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(first.state_at(january(3)), ConsentState::Active);

    let other_process = open(&directory);
    other_process
        .append_event(
            record.record_id,
            event(ConsentEventKind::Withdrawn, january(2)),
        )
        .await
        .expect("append from another store");
    other_process.close().expect("closes");

    let again = gateway
        .record(record.record_id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(again.events.len(), first.events.len() + 1);
    assert_eq!(again.state_at(january(3)), ConsentState::Withdrawn);
    // A record never stored is still absent, however often it is asked for.
    let unknown = record_numbered(7).record_id;
    assert!(gateway.record(unknown).await.expect("read").is_none());
}

#[tokio::test]
async fn an_acknowledged_record_survives_a_store_never_shut_down() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let dropped = record_numbered(1);
    let abandoned = record_numbered(2);
    {
        let store = open(&directory);
        store.put_record(dropped.clone()).await.expect("put");
        // Dropped without close: the writer is not waited for.
    }
    {
        let store = open(&directory);
        store.put_record(abandoned.clone()).await.expect("put");
        store
            .append_event(
                abandoned.record_id,
                event(ConsentEventKind::Withdrawn, january(4)),
            )
            .await
            .expect("append");
        // Never dropped: the writer thread keeps its connection open and the
        // WAL is never checkpointed, as after a crash of the process.
        std::mem::forget(store);
    }
    let store = open(&directory);
    assert_eq!(
        store
            .record(dropped.record_id)
            .await
            .expect("read")
            .expect("present"),
        dropped
    );
    let stored = store
        .record(abandoned.record_id)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(stored.events.len(), 3);
    assert_eq!(stored.state_at(january(5)), ConsentState::Withdrawn);
}

/// 8 tasks × 200 appends: every event present, in each record's order; the
/// writers share fsyncs (fewer commits than writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_all_land_in_order_and_share_commits() {
    const TASKS: u32 = 8;
    const APPENDS: i64 = 200;
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(open(&directory));
    let start = january(1);
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let record = record_numbered(100 + task);
            store.put_record(record.clone()).await.expect("put");
            for step in 0..APPENDS {
                let kind = if step % 2 == 0 {
                    ConsentEventKind::Renewed
                } else {
                    ConsentEventKind::Given
                };
                store
                    .append_event(
                        record.record_id,
                        event(kind, start + TimeDelta::minutes(step)),
                    )
                    .await
                    .expect("append");
            }
            record.record_id
        });
    }
    let before = store.commits();
    let mut ids = Vec::new();
    while let Some(id) = tasks.join_next().await {
        ids.push(id.expect("task"));
    }
    let writes = u64::from(TASKS) * (APPENDS as u64 + 1);
    let commits = store.commits() - before;
    for id in ids {
        let stored = store.record(id).await.expect("read").expect("present");
        assert_eq!(stored.events.len(), 2 + APPENDS as usize);
        let appended = &stored.events[2..];
        assert!(
            appended
                .iter()
                .zip(0..)
                .all(|(event, step)| event.at == start + TimeDelta::minutes(step)),
            "each record's events in its writer's order"
        );
    }
    assert!(
        commits < writes,
        "{commits} commits for {writes} writes: no write shared a commit"
    );
    eprintln!("{writes} writes in {commits} commits");
}

/// Writes arriving together are committed together: far fewer transactions
/// (so fsyncs) than writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_writes_that_arrive_together() {
    const WRITES: u32 = 400;
    let directory = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(open(&directory));
    let before = store.commits();
    let mut tasks = tokio::task::JoinSet::new();
    for number in 0..WRITES {
        let store = Arc::clone(&store);
        tasks.spawn(async move { store.put_record(record_numbered(number)).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("task").expect("put"), Stored::Inserted);
    }
    let commits = store.commits() - before;
    eprintln!("{WRITES} concurrent writes in {commits} commits");
    assert!(
        commits * 4 <= u64::from(WRITES),
        "{commits} commits for {WRITES} concurrent writes: group commit is not batching"
    );
    for number in [0, WRITES / 2, WRITES - 1] {
        assert!(
            store
                .record(record_numbered(number).record_id)
                .await
                .expect("read")
                .is_some()
        );
    }
}
