//! Accepted referrals and their status events on PostgreSQL, with the
//! semantics of the SQLite store (`store::referrals`). Each write commits the
//! row, its outbox messages and its audit entry in one transaction, the audit
//! entry last.
//!
//! # Concurrency
//! - Two replicas accepting the same referral id at once: the insert is `ON
//!   CONFLICT DO NOTHING`, which waits for the other insert to end; the loser
//!   then reads the winner's referral and answers a replay (same sender, same
//!   fingerprint) or refuses the reused id.
//! - Status events about one referral: each write locks the referral's row
//!   first, so that writes about it run one after the other and the count of
//!   events the caller checked its event against (`preceding_events`) is
//!   compared with the events committed. The same event id raced about two
//!   referrals is settled by its primary key, as above.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

use crate::audit::AuditEntry;
use crate::consent::RecordId;
use crate::error::Error;
use crate::store::{
    Accepted, NewReferral, NewStatusEvent, Outgoing, ReferralStore, Standing, StoredEvent,
    StoredReferral, Written,
};

use super::{PgStore, audit, consent, storage, time};

impl ReferralStore for PgStore {
    async fn accept_referral(
        &self,
        referral: NewReferral,
        audit: AuditEntry,
        replay_audit: AuditEntry,
    ) -> Result<Accepted, Error> {
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        let accepted = accept(&mut transaction, referral, &audit, &replay_audit).await?;
        transaction
            .commit()
            .await
            .map_err(storage("committing a referral"))?;
        Ok(accepted)
    }

    async fn referral(&self, referral_id: String) -> Result<Option<StoredReferral>, Error> {
        let mut connection = self
            .pool()
            .acquire()
            .await
            .map_err(storage("taking a connection"))?;
        load(&mut connection, &referral_id).await
    }

    async fn standing(
        &self,
        referral_id: String,
        consent_record_id: Option<String>,
    ) -> Result<Option<Standing>, Error> {
        let mut connection = self
            .pool()
            .acquire()
            .await
            .map_err(storage("taking a connection"))?;
        let consent_record_id = match consent_record_id {
            Some(record_id) => Some(record_id),
            None => {
                let stored: Option<Option<String>> = sqlx::query_scalar(
                    "SELECT consent_record_id FROM referrals WHERE referral_id = $1",
                )
                .bind(&referral_id)
                .fetch_optional(&mut *connection)
                .await
                .map_err(storage("reading a referral"))?;
                let Some(consent_record_id) = stored else {
                    return Ok(None);
                };
                consent_record_id
            }
        };
        let statuses = sqlx::query_scalar(
            r#"SELECT status FROM status_events
             WHERE referral_id = $1 ORDER BY recorded_at, event_id COLLATE "C""#,
        )
        .bind(&referral_id)
        .fetch_all(&mut *connection)
        .await
        .map_err(storage("reading status events"))?;
        let consent_record = match consent_record_id.as_deref().map(RecordId::parse) {
            Some(Ok(record_id)) => consent::load(&mut connection, record_id).await?,
            _ => None,
        };
        Ok(Some(Standing {
            consent_record_id,
            consent_record,
            statuses,
        }))
    }

    async fn record_status_event(
        &self,
        event: NewStatusEvent,
        audit: AuditEntry,
    ) -> Result<Written, Error> {
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        let written = record_event(&mut transaction, &event, &audit).await?;
        transaction
            .commit()
            .await
            .map_err(storage("committing a status event"))?;
        Ok(written)
    }

    async fn stale_referrals(
        &self,
        before: DateTime<Utc>,
        open_statuses: Vec<String>,
    ) -> Result<Vec<String>, Error> {
        // Ties ordered by the ids' bytes, as SQLite orders text.
        sqlx::query_scalar(
            r#"SELECT referral_id FROM referrals AS referral
             WHERE accepted_at < $1
               AND NOT EXISTS (
                   SELECT 1 FROM status_events AS event
                   WHERE event.referral_id = referral.referral_id
                     AND (event.recorded_at >= $1
                          OR event.status <> ALL ($2::text[])))
             ORDER BY accepted_at, referral_id COLLATE "C""#,
        )
        .bind(before)
        .bind(open_statuses)
        .fetch_all(self.pool())
        .await
        .map_err(storage("looking for stale referrals"))
    }

    async fn record_recipient_read(
        &self,
        referral_id: String,
        audit: AuditEntry,
    ) -> Result<(), Error> {
        let now = Utc::now();
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        sqlx::query(
            "INSERT INTO recipient_reads (referral_id, first_read_at) VALUES ($1, $2)
             ON CONFLICT (referral_id) DO NOTHING",
        )
        .bind(&referral_id)
        .bind(time(now))
        .execute(&mut *transaction)
        .await
        .map_err(storage("recording a read by the recipient"))?;
        audit::append(&mut transaction, now, &audit).await?;
        transaction
            .commit()
            .await
            .map_err(storage("committing a read by the recipient"))
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), Error> {
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        audit::append(&mut transaction, Utc::now(), &entry).await?;
        transaction
            .commit()
            .await
            .map_err(storage("committing an audit entry"))
    }

    async fn queue_depth(&self) -> Result<u64, Error> {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE state = 'queued'")
            .fetch_one(self.pool())
            .await
            .map_err(storage("counting queued messages"))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

async fn accept(
    connection: &mut PgConnection,
    referral: NewReferral,
    audit: &AuditEntry,
    replay_audit: &AuditEntry,
) -> Result<Accepted, Error> {
    // Waits for a concurrent insert of the same id to end, then does nothing
    // if it committed.
    let inserted = sqlx::query(
        "INSERT INTO referrals (referral_id, sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, state, accepted_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10)
         ON CONFLICT (referral_id) DO NOTHING",
    )
    .bind(&referral.referral_id)
    .bind(&referral.sender)
    .bind(&referral.recipient)
    .bind(&referral.fingerprint)
    .bind(&referral.input_format)
    .bind(&referral.referral)
    .bind(&referral.minimised)
    .bind(&referral.decision)
    .bind(&referral.consent_record_id)
    .bind(referral.accepted_at)
    .execute(&mut *connection)
    .await
    .map_err(storage("inserting a referral"))?
    .rows_affected();
    if inserted == 0 {
        let Some(stored) = load(connection, &referral.referral_id).await? else {
            return Err(Error::Internal(format!(
                "store: referral {} is neither insertable nor readable",
                referral.referral_id
            )));
        };
        // The idempotency key is the referral id: the same sender sending the
        // same content is answered as the first time; anything else is refused
        // without saying whose referral holds the id.
        if stored.sender == referral.sender && stored.fingerprint == referral.fingerprint {
            audit::append(connection, referral.accepted_at, replay_audit).await?;
            return Ok(Accepted::Replayed(stored));
        }
        return Err(Error::IdempotencyKeyReused(format!(
            "referral id {} was already used with other content; a new referral needs a new id",
            referral.referral_id
        )));
    }
    enqueue(
        connection,
        "referral",
        &referral.referral_id,
        &Outgoing {
            message_id: referral.referral_id.clone(),
            destination: referral.recipient.clone(),
            payload: referral.minimised.clone(),
        },
        referral.accepted_at,
    )
    .await?;
    audit::append(connection, referral.accepted_at, audit).await?;
    // What was just written, without reading it back.
    let accepted_at = time(referral.accepted_at);
    Ok(Accepted::New(referral.into_stored(accepted_at)))
}

async fn record_event(
    connection: &mut PgConnection,
    event: &NewStatusEvent,
    audit: &AuditEntry,
) -> Result<Written, Error> {
    // Writes about one referral run one after the other from here on (a row
    // lock that leaves foreign keys to the referral free). An unknown
    // referral locks nothing, and its event fails on the foreign key below.
    sqlx::query("SELECT 1 FROM referrals WHERE referral_id = $1 FOR NO KEY UPDATE")
        .bind(&event.referral_id)
        .fetch_optional(&mut *connection)
        .await
        .map_err(storage("locking a referral"))?;
    if let Some(written) = already_stored(connection, event).await? {
        return Ok(written);
    }
    // The caller checked the event against the history it read; an event
    // stored since (a concurrent post, an expiry) makes that check stale.
    let stored_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM status_events WHERE referral_id = $1")
            .bind(&event.referral_id)
            .fetch_one(&mut *connection)
            .await
            .map_err(storage("counting status events"))?;
    if usize::try_from(stored_events).ok() != Some(event.preceding_events) {
        return Err(Error::Conflict(format!(
            "another status event about referral {} was recorded meanwhile; read the referral and post again",
            event.referral_id
        )));
    }
    let inserted = sqlx::query(
        "INSERT INTO status_events (event_id, referral_id, author, status, occurred_at, fingerprint, event, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.event_id)
    .bind(&event.referral_id)
    .bind(&event.author)
    .bind(&event.status)
    .bind(event.occurred_at)
    .bind(&event.fingerprint)
    .bind(&event.event)
    .bind(event.recorded_at)
    .execute(&mut *connection)
    .await
    .map_err(storage("inserting a status event"))?
    .rows_affected();
    if inserted == 0 {
        // The same event id, committed meanwhile about another referral's lock.
        return already_stored(connection, event).await?.ok_or_else(|| {
            Error::Internal(format!(
                "store: status event {} is neither insertable nor readable",
                event.event_id
            ))
        });
    }
    for outgoing in &event.forward {
        enqueue(
            connection,
            "status_event",
            &event.referral_id,
            outgoing,
            event.recorded_at,
        )
        .await?;
    }
    audit::append(connection, event.recorded_at, audit).await?;
    Ok(Written::Written)
}

/// What a stored event of the same id makes of `event`: a replay, a reused
/// id, or nothing (no such event stored).
async fn already_stored(
    connection: &mut PgConnection,
    event: &NewStatusEvent,
) -> Result<Option<Written>, Error> {
    let existing =
        sqlx::query("SELECT referral_id, fingerprint FROM status_events WHERE event_id = $1")
            .bind(&event.event_id)
            .fetch_optional(&mut *connection)
            .await
            .map_err(storage("looking a status event up"))?;
    let Some(row) = existing else {
        return Ok(None);
    };
    let referral_id: String = row
        .try_get(0)
        .map_err(storage("looking a status event up"))?;
    let fingerprint: String = row
        .try_get(1)
        .map_err(storage("looking a status event up"))?;
    if referral_id == event.referral_id && fingerprint == event.fingerprint {
        return Ok(Some(Written::AlreadyWritten));
    }
    Err(Error::IdempotencyKeyReused(format!(
        "event id {} was already used with other content; a new event needs a new id",
        event.event_id
    )))
}

/// Queues a message for its destination, in the caller's transaction.
async fn enqueue(
    connection: &mut PgConnection,
    kind: &str,
    referral_id: &str,
    outgoing: &Outgoing,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO outbox (message_id, kind, referral_id, destination, payload, next_attempt_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $6)",
    )
    .bind(&outgoing.message_id)
    .bind(kind)
    .bind(referral_id)
    .bind(&outgoing.destination)
    .bind(&outgoing.payload)
    .bind(at)
    .execute(&mut *connection)
    .await
    .map_err(storage("queueing a message"))?;
    Ok(())
}

fn referral_row(referral_id: &str, row: &PgRow) -> Result<StoredReferral, sqlx::Error> {
    Ok(StoredReferral {
        referral_id: referral_id.to_owned(),
        sender: row.try_get(0)?,
        recipient: row.try_get(1)?,
        fingerprint: row.try_get(2)?,
        input_format: row.try_get(3)?,
        referral: row.try_get(4)?,
        minimised: row.try_get(5)?,
        decision: row.try_get(6)?,
        consent_record_id: row.try_get(7)?,
        state: row.try_get(8)?,
        accepted_at: time(row.try_get(9)?),
        events: Vec::new(),
    })
}

fn event_row(row: &PgRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        event_id: row.try_get(0)?,
        author: row.try_get(1)?,
        status: row.try_get(2)?,
        event: row.try_get(3)?,
        recorded_at: time(row.try_get(4)?),
    })
}

async fn load(
    connection: &mut PgConnection,
    referral_id: &str,
) -> Result<Option<StoredReferral>, Error> {
    let row = sqlx::query(
        "SELECT sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, state, accepted_at
         FROM referrals WHERE referral_id = $1",
    )
    .bind(referral_id)
    .fetch_optional(&mut *connection)
    .await
    .map_err(storage("reading a referral"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut referral = referral_row(referral_id, &row).map_err(storage("reading a referral"))?;
    // Ties ordered by the ids' bytes, as SQLite orders text.
    let rows = sqlx::query(
        r#"SELECT event_id, author, status, event, recorded_at FROM status_events
         WHERE referral_id = $1 ORDER BY recorded_at, event_id COLLATE "C""#,
    )
    .bind(referral_id)
    .fetch_all(&mut *connection)
    .await
    .map_err(storage("reading status events"))?;
    referral.events = rows
        .iter()
        .map(event_row)
        .collect::<Result<_, _>>()
        .map_err(storage("reading status events"))?;
    Ok(Some(referral))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone};

    use super::*;
    use crate::audit::{AuditKind, verify_rows};
    use crate::store::postgres::{ScratchDatabase, audit_entries};

    const SENDER: &str = "asso-konexio";
    const RECIPIENT: &str = "france-travail";

    fn january(day: u32) -> DateTime<Utc> {
        // Nanoseconds too: the store keeps microseconds, as SQLite's text does.
        Utc.with_ymd_and_hms(2027, 1, day, 9, 0, 0)
            .single()
            .expect("valid time")
            + TimeDelta::nanoseconds(123_456_789)
    }

    fn new_referral(referral_id: &str, accepted_at: DateTime<Utc>) -> NewReferral {
        NewReferral {
            referral_id: referral_id.to_owned(),
            sender: SENDER.to_owned(),
            recipient: RECIPIENT.to_owned(),
            fingerprint: "a".repeat(64),
            input_format: "canonical".to_owned(),
            referral: format!(
                r#"{{"referral_id":"{referral_id}","person":{{"first_name":"Camille"}}}}"#
            ),
            minimised: format!(r#"{{"referral_id":"{referral_id}"}}"#),
            decision: r#"{"policy":"france-travail-orientation@2026-11-1"}"#.to_owned(),
            consent_record_id: Some("0b7a2c1e-5d4f-4a3b-8c9d-0e1f2a3b4c5d".to_owned()),
            consent_seen: None,
            accepted_at,
        }
    }

    fn accepted_audit(referral_id: &str) -> AuditEntry {
        AuditEntry::new(AuditKind::ReferralAccepted)
            .actor(SENDER)
            .referral(referral_id)
    }

    fn replayed_audit(referral_id: &str) -> AuditEntry {
        AuditEntry::new(AuditKind::ReferralReplayed)
            .actor(SENDER)
            .referral(referral_id)
    }

    fn status_event(
        event_id: &str,
        referral_id: &str,
        status: &str,
        recorded_at: DateTime<Utc>,
        preceding_events: usize,
    ) -> NewStatusEvent {
        NewStatusEvent {
            event_id: event_id.to_owned(),
            referral_id: referral_id.to_owned(),
            author: RECIPIENT.to_owned(),
            status: status.to_owned(),
            occurred_at: recorded_at - TimeDelta::minutes(5),
            fingerprint: format!("{status}-{event_id}"),
            event: format!(r#"{{"event_id":"{event_id}","status":"{status}"}}"#),
            recorded_at,
            preceding_events,
            forward: vec![Outgoing {
                message_id: format!("{event_id}-{SENDER}"),
                destination: SENDER.to_owned(),
                payload: format!(r#"{{"event_id":"{event_id}"}}"#),
            }],
        }
    }

    fn event_audit(event_id: &str, referral_id: &str) -> AuditEntry {
        AuditEntry::new(AuditKind::StatusEventRecorded)
            .actor(RECIPIENT)
            .referral(referral_id)
            .event(event_id)
    }

    async fn scratch_store() -> (ScratchDatabase, PgStore) {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = PgStore::connect(&scratch.url).await.expect("connect");
        (scratch, store)
    }

    async fn audit_kinds(store: &PgStore) -> Vec<AuditKind> {
        audit_entries(store)
            .await
            .expect("entries")
            .into_iter()
            .map(|chained| chained.entry.kind)
            .collect()
    }

    /// The outbox rows of a referral: message id, kind, destination, payload,
    /// state, attempts, and whether next_attempt_at = created_at = updated_at = `at`.
    async fn queued(
        store: &PgStore,
        referral_id: &str,
    ) -> Vec<(String, String, String, String, String, i32, DateTime<Utc>)> {
        let rows = sqlx::query(
            "SELECT message_id, kind, destination, payload, state, attempts, created_at, next_attempt_at, updated_at, lease_until IS NULL
             FROM outbox WHERE referral_id = $1 ORDER BY seq",
        )
        .bind(referral_id)
        .fetch_all(store.pool())
        .await
        .expect("outbox");
        rows.iter()
            .map(|row| {
                let created: DateTime<Utc> = row.try_get(6).expect("created_at");
                let due: DateTime<Utc> = row.try_get(7).expect("next_attempt_at");
                let updated: DateTime<Utc> = row.try_get(8).expect("updated_at");
                assert_eq!((due, updated), (created, created));
                assert!(row.try_get::<bool, _>(9).expect("lease"));
                (
                    row.try_get(0).expect("message_id"),
                    row.try_get(1).expect("kind"),
                    row.try_get(2).expect("destination"),
                    row.try_get(3).expect("payload"),
                    row.try_get(4).expect("state"),
                    row.try_get(5).expect("attempts"),
                    created,
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_referral_is_stored_queued_and_audited_together_and_replayed_after() {
        let (_scratch, store) = scratch_store().await;
        let id = "7d1f6a52-3f0e-4c4b-9a55-1c2e3f4a5b6c";
        let referral = new_referral(id, january(4));
        let Accepted::New(stored) = store
            .accept_referral(referral.clone(), accepted_audit(id), replayed_audit(id))
            .await
            .expect("accept")
        else {
            panic!("a new referral");
        };
        assert_eq!(stored.accepted_at, "2027-01-04T09:00:00.123456Z");
        assert_eq!(stored.state, "queued");
        assert_eq!(
            store.referral(id.to_owned()).await.expect("read"),
            Some(stored.clone()),
            "read back as answered"
        );
        let at = DateTime::parse_from_rfc3339(&stored.accepted_at)
            .expect("RFC 3339")
            .with_timezone(&Utc);
        assert_eq!(
            queued(&store, id).await,
            vec![(
                id.to_owned(),
                "referral".to_owned(),
                RECIPIENT.to_owned(),
                referral.minimised.clone(),
                "queued".to_owned(),
                0,
                at
            )]
        );
        assert_eq!(store.queue_depth().await.expect("depth"), 1);

        // The same referral again: answered as stored, audited as a replay, nothing queued.
        let mut again = referral.clone();
        again.accepted_at = january(5);
        assert_eq!(
            store
                .accept_referral(again, accepted_audit(id), replayed_audit(id))
                .await
                .expect("replay"),
            Accepted::Replayed(stored.clone())
        );
        assert_eq!(queued(&store, id).await.len(), 1);
        let entries = audit_entries(&store).await.expect("entries");
        assert_eq!(
            entries
                .iter()
                .map(|chained| (chained.entry.kind, chained.at))
                .collect::<Vec<_>>(),
            vec![
                // Audit times keep their nanoseconds, as in SQLite.
                (AuditKind::ReferralAccepted, january(4)),
                (AuditKind::ReferralReplayed, january(5)),
            ]
        );

        // The id reused with other content, or by another sender: refused, not audited here.
        let mut other_content = referral.clone();
        other_content.fingerprint = "b".repeat(64);
        let mut other_sender = referral.clone();
        other_sender.sender = "asso-exemple".to_owned();
        for reused in [other_content, other_sender] {
            let error = store
                .accept_referral(reused, accepted_audit(id), replayed_audit(id))
                .await
                .expect_err("reused id");
            assert!(matches!(error, Error::IdempotencyKeyReused(_)), "{error}");
        }
        assert_eq!(audit_kinds(&store).await.len(), 2);
        assert_eq!(
            store.referral(id.to_owned()).await.expect("read"),
            Some(stored)
        );
        assert_eq!(
            store.referral("absent".to_owned()).await.expect("read"),
            None
        );
        store.close().await;
    }

    #[tokio::test]
    async fn status_events_are_idempotent_ordered_and_checked_against_the_history() {
        let (_scratch, store) = scratch_store().await;
        let id = "8e2a7b63-4a1f-4d5c-8b66-2d3f4a5b6c7d";
        store
            .accept_referral(
                new_referral(id, january(4)),
                accepted_audit(id),
                replayed_audit(id),
            )
            .await
            .expect("accept");
        let first = status_event("event-1", id, "STATUS_ACCEPTED", january(6), 0);
        assert_eq!(
            store
                .record_status_event(first.clone(), event_audit("event-1", id))
                .await
                .expect("record"),
            Written::Written
        );
        // A retry: nothing new, not audited again.
        assert_eq!(
            store
                .record_status_event(first.clone(), event_audit("event-1", id))
                .await
                .expect("replay"),
            Written::AlreadyWritten
        );
        // An event checked against the history before `first`: refused.
        let stale = status_event("event-2", id, "STATUS_REFUSED", january(7), 0);
        let error = store
            .record_status_event(stale, event_audit("event-2", id))
            .await
            .expect_err("outdated history");
        assert!(matches!(error, Error::Conflict(_)), "{error}");
        // The same id with other content: refused.
        let mut reused = first.clone();
        reused.fingerprint = "other".to_owned();
        let error = store
            .record_status_event(reused, event_audit("event-1", id))
            .await
            .expect_err("reused id");
        assert!(matches!(error, Error::IdempotencyKeyReused(_)), "{error}");
        // Two events recorded at the same time are read in event id order.
        for (event_id, preceding) in [("event-3b", 1), ("event-3a", 2)] {
            store
                .record_status_event(
                    status_event(
                        event_id,
                        id,
                        "STATUS_APPOINTMENT_HELD",
                        january(8),
                        preceding,
                    ),
                    event_audit(event_id, id),
                )
                .await
                .expect("record");
        }
        // A retry after the history moved on is still a retry.
        assert_eq!(
            store
                .record_status_event(first, event_audit("event-1", id))
                .await
                .expect("replay"),
            Written::AlreadyWritten
        );
        let stored = store
            .referral(id.to_owned())
            .await
            .expect("read")
            .expect("present");
        let events: Vec<(&str, &str)> = stored
            .events
            .iter()
            .map(|event| (event.event_id.as_str(), event.recorded_at.as_str()))
            .collect();
        assert_eq!(
            events,
            vec![
                ("event-1", "2027-01-06T09:00:00.123456Z"),
                ("event-3a", "2027-01-08T09:00:00.123456Z"),
                ("event-3b", "2027-01-08T09:00:00.123456Z"),
            ]
        );
        assert_eq!(stored.events[0].author, RECIPIENT);
        assert_eq!(stored.events[0].status, "STATUS_ACCEPTED");
        // What delivery checks: the same consent record and statuses, in order.
        let standing = store
            .standing(id.to_owned(), None)
            .await
            .expect("standing")
            .expect("present");
        assert_eq!(standing.consent_record_id, stored.consent_record_id);
        // The same when the consent record id comes with the outbox message.
        assert_eq!(
            store
                .standing(id.to_owned(), stored.consent_record_id.clone())
                .await
                .expect("standing"),
            Some(standing.clone())
        );
        // The id names no stored record here: delivery reads that as no consent.
        assert_eq!(standing.consent_record, None);
        let statuses: Vec<String> = stored
            .events
            .iter()
            .map(|event| event.status.clone())
            .collect();
        assert_eq!(standing.statuses, statuses);
        assert_eq!(
            store
                .standing("absent".to_owned(), None)
                .await
                .expect("standing"),
            None
        );
        let forwarded: Vec<(String, String)> = queued(&store, id)
            .await
            .into_iter()
            .map(|(message_id, kind, ..)| (message_id, kind))
            .collect();
        assert_eq!(
            forwarded,
            vec![
                (id.to_owned(), "referral".to_owned()),
                (format!("event-1-{SENDER}"), "status_event".to_owned()),
                (format!("event-3b-{SENDER}"), "status_event".to_owned()),
                (format!("event-3a-{SENDER}"), "status_event".to_owned()),
            ]
        );
        assert_eq!(store.queue_depth().await.expect("depth"), 4);
        assert_eq!(
            audit_kinds(&store).await,
            vec![
                AuditKind::ReferralAccepted,
                AuditKind::StatusEventRecorded,
                AuditKind::StatusEventRecorded,
                AuditKind::StatusEventRecorded,
            ]
        );
        // About an unknown referral: refused, nothing stored.
        assert!(
            store
                .record_status_event(
                    status_event("event-9", "absent", "STATUS_ACCEPTED", january(9), 0),
                    event_audit("event-9", "absent"),
                )
                .await
                .is_err()
        );
        assert_eq!(audit_kinds(&store).await.len(), 4);
        store.close().await;
    }

    #[tokio::test]
    async fn stale_referrals_are_the_old_undecided_ones_oldest_first() {
        let (_scratch, store) = scratch_store().await;
        let accept = |id: &'static str, day: u32| {
            let store = store.clone();
            async move {
                store
                    .accept_referral(
                        new_referral(id, january(day)),
                        accepted_audit(id),
                        replayed_audit(id),
                    )
                    .await
                    .expect("accept");
            }
        };
        accept("r-forgotten", 2).await;
        accept("r-received-b", 3).await;
        accept("r-received-a", 3).await;
        accept("r-accepted", 1).await;
        accept("r-recent-event", 1).await;
        accept("r-young", 20).await;
        for (event_id, referral_id, status, day) in [
            ("e1", "r-received-b", "STATUS_RECEIVED", 4),
            ("e2", "r-accepted", "STATUS_ACCEPTED", 4),
            ("e3", "r-recent-event", "STATUS_RECEIVED", 25),
        ] {
            store
                .record_status_event(
                    status_event(event_id, referral_id, status, january(day), 0),
                    event_audit(event_id, referral_id),
                )
                .await
                .expect("record");
        }
        let open = vec!["STATUS_RECEIVED".to_owned()];
        // An event recorded after `before` keeps its referral out.
        assert_eq!(
            store
                .stale_referrals(january(15), open.clone())
                .await
                .expect("stale"),
            vec!["r-forgotten", "r-received-a", "r-received-b"]
        );
        assert_eq!(
            store
                .stale_referrals(january(30), open.clone())
                .await
                .expect("stale"),
            vec![
                "r-recent-event",
                "r-forgotten",
                "r-received-a",
                "r-received-b",
                "r-young"
            ]
        );
        // No status is open: any event keeps its referral out.
        assert_eq!(
            store
                .stale_referrals(january(30), Vec::new())
                .await
                .expect("stale"),
            vec!["r-forgotten", "r-received-a", "r-young"]
        );
        // Accepted exactly at `before`: not yet; a microsecond later: stale.
        assert!(
            store
                .stale_referrals(january(2), open.clone())
                .await
                .expect("stale")
                .is_empty()
        );
        assert_eq!(
            store
                .stale_referrals(january(2) + TimeDelta::microseconds(1), open)
                .await
                .expect("stale"),
            vec!["r-forgotten"]
        );
        store.close().await;
    }

    /// Two replicas accepting the same referrals at once: each is stored and
    /// queued by exactly one (`New`), the other answers a replay; two replicas
    /// posting events checked against the same history: one is stored, the
    /// other asked to check again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_racing_on_one_referral_store_it_once() {
        const REFERRALS: usize = 12;
        let (scratch, first) = scratch_store().await;
        let second = PgStore::connect(&scratch.url)
            .await
            .expect("second replica");
        let mut tasks = tokio::task::JoinSet::new();
        for number in 0..REFERRALS {
            for store in [first.clone(), second.clone()] {
                tasks.spawn(async move {
                    let id = format!("race-{number}");
                    let accepted = store
                        .accept_referral(
                            new_referral(&id, january(4)),
                            accepted_audit(&id),
                            replayed_audit(&id),
                        )
                        .await
                        .expect("accept");
                    (number, accepted)
                });
            }
        }
        let mut new = [0_u32; REFERRALS];
        let mut answers: Vec<Vec<StoredReferral>> = vec![Vec::new(); REFERRALS];
        while let Some(joined) = tasks.join_next().await {
            let (number, accepted) = joined.expect("task");
            match accepted {
                Accepted::New(stored) => {
                    new[number] += 1;
                    answers[number].push(stored);
                }
                Accepted::Replayed(stored) => answers[number].push(stored),
                Accepted::ConsentChanged => panic!("no consent record is checked here"),
            }
        }
        assert_eq!(new, [1; REFERRALS]);
        assert!(answers.iter().all(|pair| pair[0] == pair[1]));
        assert_eq!(first.queue_depth().await.expect("depth"), REFERRALS as u64);
        let kinds = audit_kinds(&first).await;
        let count = |kind| kinds.iter().filter(|found| **found == kind).count();
        assert_eq!(count(AuditKind::ReferralAccepted), REFERRALS);
        assert_eq!(count(AuditKind::ReferralReplayed), REFERRALS);

        for number in 0..REFERRALS {
            let id = format!("race-{number}");
            let one = status_event(&format!("{id}-a"), &id, "STATUS_ACCEPTED", january(6), 0);
            let other = status_event(&format!("{id}-b"), &id, "STATUS_REFUSED", january(6), 0);
            let (one, other) = tokio::join!(
                first.record_status_event(one, event_audit("a", &id)),
                second.record_status_event(other, event_audit("b", &id))
            );
            let results = [one, other];
            assert_eq!(
                results
                    .iter()
                    .filter(|result| matches!(result, Ok(Written::Written)))
                    .count(),
                1,
                "{results:?}"
            );
            assert!(
                results
                    .iter()
                    .any(|result| matches!(result, Err(Error::Conflict(_)))),
                "{results:?}"
            );
            let stored = second.referral(id).await.expect("read").expect("present");
            assert_eq!(stored.events.len(), 1);
        }
        let report = verify_rows(first.audit_rows().await.expect("rows"), None).expect("verify");
        assert!(report.intact, "{report:?}");
        first.close().await;
        second.close().await;
    }

    /// Many audit appends from two replicas at once, mixed with accepted
    /// referrals: one chain, seq 1..n without gaps, each entry linked to the
    /// one before, as `passerelle audit verify` checks it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_audits_from_two_replicas_stay_one_chain() {
        const TASKS: u32 = 8;
        const APPENDS: u32 = 25;
        let (scratch, first) = scratch_store().await;
        let second = PgStore::connect(&scratch.url)
            .await
            .expect("second replica");
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..TASKS {
            let store = if task % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tasks.spawn(async move {
                for number in 0..APPENDS {
                    let id = format!("chain-{task}-{number}");
                    if number % 5 == 0 {
                        store
                            .accept_referral(
                                new_referral(&id, january(4)),
                                accepted_audit(&id),
                                replayed_audit(&id),
                            )
                            .await
                            .expect("accept");
                    } else {
                        store
                            .audit(
                                AuditEntry::new(AuditKind::ReferralRead)
                                    .actor(RECIPIENT)
                                    .referral(&id),
                            )
                            .await
                            .expect("audit");
                    }
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("task");
        }
        let entries = audit_entries(&second).await.expect("entries");
        let total = u64::from(TASKS * APPENDS);
        assert_eq!(
            entries
                .iter()
                .map(|chained| chained.seq)
                .collect::<Vec<_>>(),
            (1..=total).collect::<Vec<_>>()
        );
        assert!(
            entries
                .windows(2)
                .all(|pair| pair[1].previous_hash == pair[0].hash)
        );
        let report = verify_rows(first.audit_rows().await.expect("rows"), None).expect("verify");
        assert!(report.intact, "{report:?}");
        assert_eq!(report.entries, total);
        first.close().await;
        second.close().await;
    }
}
