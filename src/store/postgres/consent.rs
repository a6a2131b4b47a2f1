//! Consent records and their events on PostgreSQL, with the semantics of the
//! SQLite store (`store::sqlite`): a record is stored once and never changed,
//! a retry of the same record is answered as stored, events are appended in
//! time order.
//!
//! # Concurrency
//! - Two replicas storing the same record at once: the insert is `ON
//!   CONFLICT DO NOTHING`, which waits for the other insert to commit; the
//!   loser then reads the winner's record and answers a retry or a conflict.
//! - Two replicas appending to the same record at once: each locks the
//!   record's row first, so they append one after the other, each checking
//!   its event against the last one committed.

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{PgConnection, Row as _};

use crate::consent::record::check_next_event;
use crate::consent::{ConsentEvent, ConsentEventKind, ConsentRecord, RecordId};
use crate::error::Error;
use crate::model::ids::Siret;
use crate::store::{ConsentStore, Stored};

use super::{PgStore, storage};

impl ConsentStore for PgStore {
    async fn put_record(&self, record: ConsentRecord) -> Result<Stored, Error> {
        record.check()?;
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        let stored = put(&mut transaction, &record).await?;
        transaction
            .commit()
            .await
            .map_err(storage("committing a consent record"))?;
        Ok(stored)
    }

    async fn append_event(&self, record_id: RecordId, event: ConsentEvent) -> Result<(), Error> {
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        append(&mut transaction, record_id, &event).await?;
        transaction
            .commit()
            .await
            .map_err(storage("committing a consent event"))
    }

    async fn record(&self, record_id: RecordId) -> Result<Option<ConsentRecord>, Error> {
        let mut connection = self
            .pool()
            .acquire()
            .await
            .map_err(storage("taking a connection"))?;
        load(&mut connection, record_id).await
    }
}

/// Stores `record` unless a record with its id is stored: then a retry (same
/// header, stored events starting with the record's) is `AlreadyStored`,
/// anything else a conflict.
async fn put(connection: &mut PgConnection, record: &ConsentRecord) -> Result<Stored, Error> {
    let id = record.record_id.to_string();
    let header_json = serde_json::to_string(&header(record))
        .map_err(|error| Error::Internal(format!("store: encoding a consent record: {error}")))?;
    // Waits for a concurrent insert of the same id to end, then does nothing
    // if it committed.
    let inserted = sqlx::query(
        "INSERT INTO consent_records (record_id, header) VALUES ($1, $2) ON CONFLICT (record_id) DO NOTHING",
    )
    .bind(&id)
    .bind(&header_json)
    .execute(&mut *connection)
    .await
    .map_err(storage("inserting a consent record"))?
    .rows_affected();
    if inserted == 1 {
        for (seq, event) in (0_i32..).zip(&record.events) {
            insert_event(connection, &id, seq, event).await?;
        }
        return Ok(Stored::Inserted);
    }
    // A record and its first events commit together: the one found is whole.
    let Some(stored) = load(connection, record.record_id).await? else {
        return Err(Error::Internal(format!(
            "store: consent record {} is neither insertable nor readable",
            record.record_id
        )));
    };
    let retry = header(&stored) == header(record) && stored.events.starts_with(&record.events);
    if retry {
        Ok(Stored::AlreadyStored)
    } else {
        Err(Error::Conflict(format!(
            "consent record {} is already stored with other content; records are immutable, append events to change their state",
            record.record_id
        )))
    }
}

/// Appends `event` after the record's last event, once the record's row is
/// locked (so that appends to one record run one after the other).
async fn append(
    connection: &mut PgConnection,
    record_id: RecordId,
    event: &ConsentEvent,
) -> Result<(), Error> {
    let id = record_id.to_string();
    // A row lock, not an UPDATE: the append-only trigger does not fire.
    let exists =
        sqlx::query("SELECT 1 FROM consent_records WHERE record_id = $1 FOR NO KEY UPDATE")
            .bind(&id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(storage("looking a consent record up"))?
            .is_some();
    if !exists {
        return Err(Error::NotFound(format!("consent record {record_id}")));
    }
    let last = sqlx::query(
        "SELECT seq, at FROM consent_events WHERE record_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(&id)
    .fetch_optional(&mut *connection)
    .await
    .map_err(storage("reading the last consent event"))?;
    let (next, last_at) = match last {
        Some(row) => {
            let seq: i32 = row
                .try_get(0)
                .map_err(storage("reading the last consent event"))?;
            let at: String = row
                .try_get(1)
                .map_err(storage("reading the last consent event"))?;
            (seq + 1, Some(parse_time(&at, record_id)?))
        }
        None => (0, None),
    };
    check_next_event(last_at, event)?;
    insert_event(connection, &id, next, event).await
}

async fn insert_event(
    connection: &mut PgConnection,
    record_id: &str,
    seq: i32,
    event: &ConsentEvent,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO consent_events (record_id, seq, kind, at, recorded_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(record_id)
    .bind(seq)
    .bind(event.kind.wire_name())
    .bind(event.at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    .bind(event.recorded_by.as_str())
    .execute(&mut *connection)
    .await
    .map_err(storage("appending a consent event"))?;
    Ok(())
}

/// Reads a record and its events. The header never changes and the events
/// are read in one statement (one snapshot), so the record read is one the
/// store held at some moment.
pub(super) async fn load(
    connection: &mut PgConnection,
    record_id: RecordId,
) -> Result<Option<ConsentRecord>, Error> {
    let id = record_id.to_string();
    let header: Option<String> =
        sqlx::query_scalar("SELECT header FROM consent_records WHERE record_id = $1")
            .bind(&id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(storage("reading a consent record"))?;
    let Some(header) = header else {
        return Ok(None);
    };
    let mut record: ConsentRecord = serde_json::from_str(&header).map_err(|_| {
        Error::Internal(format!(
            "store: the stored consent record {record_id} no longer reads as a record"
        ))
    })?;
    let rows = sqlx::query(
        "SELECT kind, at, recorded_by FROM consent_events WHERE record_id = $1 ORDER BY seq",
    )
    .bind(&id)
    .fetch_all(&mut *connection)
    .await
    .map_err(storage("reading consent events"))?;
    for row in rows {
        let kind: String = row.try_get(0).map_err(storage("reading consent events"))?;
        let at: String = row.try_get(1).map_err(storage("reading consent events"))?;
        let recorded_by: String = row.try_get(2).map_err(storage("reading consent events"))?;
        let unreadable = || {
            Error::Internal(format!(
                "store: an event of consent record {record_id} no longer reads as an event"
            ))
        };
        record.events.push(ConsentEvent {
            kind: ConsentEventKind::from_wire_name(&kind).ok_or_else(unreadable)?,
            at: parse_time(&at, record_id)?,
            recorded_by: Siret::parse(&recorded_by).map_err(|_| unreadable())?,
        });
    }
    Ok(Some(record))
}

/// The record without its events, as stored in `consent_records.header`.
fn header(record: &ConsentRecord) -> ConsentRecord {
    ConsentRecord {
        events: Vec::new(),
        ..record.clone()
    }
}

fn parse_time(text: &str, record_id: RecordId) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| {
            Error::Internal(format!(
                "store: an event time of consent record {record_id} is unreadable"
            ))
        })
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;
    use crate::consent::ConsentState;
    use crate::store::postgres::ScratchDatabase;
    use crate::validate::Limits;

    const ASSOCIATION_SIRET: &str = "81234567800013";

    fn given_record() -> ConsentRecord {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/consent/consent-given.json"
        );
        let text = std::fs::read(path).expect("golden consent record");
        ConsentRecord::parse(&text, &Limits::default()).expect("valid fixture")
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

    async fn scratch_store() -> (ScratchDatabase, PgStore) {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = PgStore::connect(&scratch.url).await.expect("connect");
        (scratch, store)
    }

    #[tokio::test]
    async fn history_cannot_be_rewritten_even_with_sql() {
        let (_scratch, store) = scratch_store().await;
        let record = given_record();
        store.put_record(record.clone()).await.expect("put");
        let id = record.record_id.to_string();
        for sql in [
            "UPDATE consent_events SET kind = 'CONSENT_EVENT_KIND_GIVEN' WHERE record_id = $1",
            "DELETE FROM consent_events WHERE record_id = $1",
            "UPDATE consent_records SET header = '{}' WHERE record_id = $1",
            "DELETE FROM consent_records WHERE record_id = $1",
            // The first event's place is taken.
            "INSERT INTO consent_events (record_id, seq, kind, at, recorded_by) VALUES ($1, 0, 'CONSENT_EVENT_KIND_WITHDRAWN', '2026-01-01T00:00:00Z', '81234567800013')",
        ] {
            let refused = sqlx::query(sql).bind(&id).execute(store.pool()).await;
            assert!(refused.is_err(), "accepted: {sql}");
        }
        assert_eq!(
            store
                .record(record.record_id)
                .await
                .expect("read")
                .expect("present"),
            record,
            "nothing changed"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn the_state_is_shared_by_replicas() {
        let (scratch, store) = scratch_store().await;
        let record = given_record();
        store.put_record(record.clone()).await.expect("put");
        let other = PgStore::connect(&scratch.url)
            .await
            .expect("second replica");
        other
            .append_event(
                record.record_id,
                event(ConsentEventKind::Objected, january(2)),
            )
            .await
            .expect("append on the other replica");
        let stored = store
            .record(record.record_id)
            .await
            .expect("read")
            .expect("present");
        assert_eq!(stored.events.len(), 3);
        assert_eq!(stored.state_at(january(1)), ConsentState::Active);
        assert_eq!(stored.state_at(january(3)), ConsentState::Objected);
        other.close().await;
        store.close().await;
    }

    /// Two replicas storing the same records at once: each record is
    /// inserted by exactly one, the other answers a retry; a different record
    /// under a raced id is a conflict, never a second insert.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_racing_to_store_a_record_insert_it_once() {
        const RECORDS: u32 = 20;
        let (scratch, first) = scratch_store().await;
        let second = PgStore::connect(&scratch.url)
            .await
            .expect("second replica");
        let mut tasks = tokio::task::JoinSet::new();
        for number in 0..RECORDS {
            for store in [first.clone(), second.clone()] {
                tasks.spawn(
                    async move { (number, store.put_record(record_numbered(number)).await) },
                );
            }
        }
        let mut inserted = vec![0_u32; RECORDS as usize];
        while let Some(joined) = tasks.join_next().await {
            let (number, result) = joined.expect("task");
            match result.expect("put") {
                Stored::Inserted => inserted[number as usize] += 1,
                Stored::AlreadyStored => {}
            }
        }
        assert!(inserted.iter().all(|count| *count == 1), "{inserted:?}");

        let record = record_numbered(RECORDS);
        let mut changed = record.clone();
        changed.purposes.truncate(1);
        let (one, other) =
            tokio::join!(first.put_record(record.clone()), second.put_record(changed));
        let outcomes = [one.is_ok(), other.is_ok()];
        assert_eq!(
            outcomes.iter().filter(|ok| **ok).count(),
            1,
            "{one:?} / {other:?}"
        );
        for result in [one, other] {
            if let Err(error) = result {
                assert!(matches!(error, Error::Conflict(_)), "{error}");
            }
        }
        first.close().await;
        second.close().await;
    }

    /// Two replicas appending to one record at once: every event lands, at
    /// consecutive places, and events refused out of order are refused with
    /// their rule rather than lost or misplaced.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_appending_to_one_record_all_land_without_gaps() {
        const APPENDS: i64 = 40;
        let (scratch, first) = scratch_store().await;
        let second = PgStore::connect(&scratch.url)
            .await
            .expect("second replica");
        let record = given_record();
        first.put_record(record.clone()).await.expect("put");
        let at = january(10);
        let mut tasks = tokio::task::JoinSet::new();
        for (replica, store) in [first.clone(), second.clone()].into_iter().enumerate() {
            let record_id = record.record_id;
            tasks.spawn(async move {
                for step in 0..APPENDS {
                    let kind = if (step + replica as i64) % 2 == 0 {
                        ConsentEventKind::Renewed
                    } else {
                        ConsentEventKind::Given
                    };
                    store
                        .append_event(record_id, event(kind, at))
                        .await
                        .expect("append");
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("task");
        }
        let stored = first
            .record(record.record_id)
            .await
            .expect("read")
            .expect("present");
        assert_eq!(stored.events.len(), 2 + 2 * APPENDS as usize);
        let seqs: Vec<i32> =
            sqlx::query_scalar("SELECT seq FROM consent_events WHERE record_id = $1 ORDER BY seq")
                .bind(record.record_id.to_string())
                .fetch_all(first.pool())
                .await
                .expect("seqs");
        assert_eq!(seqs, (0..2 + 2 * APPENDS as i32).collect::<Vec<_>>());

        let late = first
            .append_event(
                record.record_id,
                event(ConsentEventKind::Withdrawn, at - TimeDelta::seconds(1)),
            )
            .await
            .expect_err("back-dated");
        assert_eq!(late.violations()[0].rule, "event-out-of-order");
        first.close().await;
        second.close().await;
    }
}
