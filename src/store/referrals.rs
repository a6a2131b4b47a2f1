//! Accepted referrals and their status events in the SQLite store. Each write
//! commits the row, its outbox message and its audit entry together.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use crate::audit::{self, AuditEntry};
use crate::consent::RecordId;
use crate::error::Error;

use super::sqlite::{SqliteStore, event_count, storage};
use super::{
    Accepted, NewReferral, NewStatusEvent, ReferralStore, Standing, StoredEvent, StoredReferral,
    Written,
};

impl ReferralStore for SqliteStore {
    async fn accept_referral(
        &self,
        referral: NewReferral,
        audit: AuditEntry,
        replay_audit: AuditEntry,
    ) -> Result<Accepted, Error> {
        // Rendered on the caller's task: the single writer only chains it.
        let audit = audit::render(referral.accepted_at, &audit)?;
        // The job borrows the referral (it may run twice, see `write`); the
        // writer lets go of it before answering, so it is moved, not copied,
        // into what is answered.
        let referral = Arc::new(referral);
        let borrowed = Arc::clone(&referral);
        let accepted = self
            .write(move |connection| accept(connection, &borrowed, &audit, &replay_audit))
            .await?;
        Ok(match accepted {
            Accept::Inserted { accepted_at } => {
                Accepted::New(Arc::unwrap_or_clone(referral).into_stored(accepted_at))
            }
            Accept::Other(accepted) => *accepted,
        })
    }

    async fn referral(&self, referral_id: String) -> Result<Option<StoredReferral>, Error> {
        self.read(|connection| load(connection, &referral_id))
    }

    async fn standing(
        &self,
        referral_id: String,
        consent_record_id: Option<String>,
    ) -> Result<Option<Standing>, Error> {
        self.read(|connection| {
            let Some(mut standing) = standing(connection, &referral_id, consent_record_id)? else {
                return Ok(None);
            };
            if let Some(Ok(record_id)) = standing.consent_record_id.as_deref().map(RecordId::parse)
            {
                standing.consent_record = self.record_in(connection, record_id)?;
            }
            Ok(Some(standing))
        })
    }

    async fn record_status_event(
        &self,
        event: NewStatusEvent,
        audit: AuditEntry,
    ) -> Result<Written, Error> {
        let audit = audit::render(event.recorded_at, &audit)?;
        self.write(move |connection| record_event(connection, &event, &audit))
            .await
    }

    async fn stale_referrals(
        &self,
        before: DateTime<Utc>,
        open_statuses: Vec<String>,
    ) -> Result<Vec<String>, Error> {
        let open = serde_json::to_string(&open_statuses)
            .map_err(|error| Error::Internal(format!("encoding statuses: {error}")))?;
        self.read(|connection| stale(connection, &time(before), &open))
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), Error> {
        self.write(move |connection| audit::append(connection, Utc::now(), &entry).map(|_| ()))
            .await
    }

    async fn record_recipient_read(
        &self,
        referral_id: String,
        audit: AuditEntry,
    ) -> Result<(), Error> {
        self.write(move |connection| {
            let now = Utc::now();
            connection
                .prepare_cached(
                    "INSERT INTO recipient_reads (referral_row, first_read_at)
                     SELECT referral_row, ?2 FROM referrals WHERE referral_id = ?1
                     ON CONFLICT (referral_row) DO NOTHING",
                )
                .and_then(|mut insert| insert.execute(params![referral_id, time(now)]))
                .map_err(storage("recording a read by the recipient"))?;
            audit::append(connection, now, &audit).map(|_| ())
        })
        .await
    }

    async fn queue_depth(&self) -> Result<u64, Error> {
        self.read(|connection| {
            connection
                .prepare_cached("SELECT COUNT(*) FROM outbox WHERE state = 'queued'")
                .and_then(|mut query| query.query_row([], |row| row.get::<_, i64>(0)))
                .map(|count| u64::try_from(count).unwrap_or(0))
                .map_err(storage("counting queued messages"))
        })
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What the accept job did: stored the referral at `accepted_at`, or not.
enum Accept {
    Inserted { accepted_at: String },
    Other(Box<Accepted>),
}

fn accept(
    connection: &Connection,
    referral: &NewReferral,
    audit: &audit::Rendered,
    replay_audit: &AuditEntry,
) -> Result<Accept, Error> {
    if let Some((record_id, events)) = referral.consent_seen
        && event_count(connection, record_id)? != Some(events)
    {
        return Ok(Accept::Other(Box::new(Accepted::ConsentChanged)));
    }
    let at = time(referral.accepted_at);
    // Inserted unless the id is taken: one lookup of the key, not two.
    let inserted = connection
        .prepare_cached(
            "INSERT INTO referrals (referral_id, sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, accepted_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (referral_id) DO NOTHING",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                referral.referral_id,
                referral.sender,
                referral.recipient,
                referral.fingerprint,
                referral.input_format,
                referral.referral,
                referral.minimised,
                referral.decision,
                referral.consent_record_id,
                at,
            ])
        })
        .map_err(storage("inserting a referral"))?;
    if inserted == 0 {
        let stored = load(connection, &referral.referral_id)?.ok_or_else(|| {
            Error::Internal("store: a referral id is taken but its row is missing".to_owned())
        })?;
        // The idempotency key is the referral id: the same sender sending the
        // same content is answered as the first time; anything else is refused
        // without saying whose referral holds the id.
        if stored.sender == referral.sender && stored.fingerprint == referral.fingerprint {
            audit::append(connection, referral.accepted_at, replay_audit)?;
            return Ok(Accept::Other(Box::new(Accepted::Replayed(stored))));
        }
        return Err(Error::IdempotencyKeyReused(format!(
            "referral id {} was already used with other content; a new referral needs a new id",
            referral.referral_id
        )));
    }
    // The message names its referral by the row just inserted, and its
    // payload is the referral's minimised copy, not written twice.
    let referral_row = connection.last_insert_rowid();
    connection
        .prepare_cached("INSERT INTO referral_states (referral_row, state) VALUES (?1, 'queued')")
        .and_then(|mut insert| insert.execute([referral_row]))
        .map_err(storage("inserting a referral's state"))?;
    enqueue(
        connection,
        Queued::Referral { referral_row },
        &referral.referral_id,
        &referral.referral_id,
        &referral.recipient,
        &at,
    )?;
    audit::append_rendered(connection, audit)?;
    // What was just written, without reading it back.
    Ok(Accept::Inserted { accepted_at: at })
}

fn record_event(
    connection: &Connection,
    event: &NewStatusEvent,
    audit: &audit::Rendered,
) -> Result<Written, Error> {
    let existing: Option<(String, String)> = connection
        .prepare_cached("SELECT referral_id, fingerprint FROM status_events WHERE event_id = ?1")
        .and_then(|mut query| {
            query
                .query_row([&event.event_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(storage("looking a status event up"))?;
    if let Some((referral_id, fingerprint)) = existing {
        if referral_id == event.referral_id && fingerprint == event.fingerprint {
            return Ok(Written::AlreadyWritten);
        }
        return Err(Error::IdempotencyKeyReused(format!(
            "event id {} was already used with other content; a new event needs a new id",
            event.event_id
        )));
    }
    // The caller checked the event against the history it read; an event
    // stored since (a concurrent post, an expiry) makes that check stale.
    let stored_events: i64 = connection
        .prepare_cached("SELECT COUNT(*) FROM status_events WHERE referral_id = ?1")
        .and_then(|mut query| query.query_row([&event.referral_id], |row| row.get(0)))
        .map_err(storage("counting status events"))?;
    if usize::try_from(stored_events).ok() != Some(event.preceding_events) {
        return Err(Error::Conflict(format!(
            "another status event about referral {} was recorded meanwhile; read the referral and post again",
            event.referral_id
        )));
    }
    let at = time(event.recorded_at);
    connection
        .prepare_cached(
            "INSERT INTO status_events (event_id, referral_id, author, status, occurred_at, fingerprint, event, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                event.event_id,
                event.referral_id,
                event.author,
                event.status,
                time(event.occurred_at),
                event.fingerprint,
                event.event,
                at,
            ])
        })
        .map_err(storage("inserting a status event"))?;
    for outgoing in &event.forward {
        enqueue(
            connection,
            Queued::StatusEvent {
                payload: &outgoing.payload,
            },
            &event.referral_id,
            &outgoing.message_id,
            &outgoing.destination,
            &at,
        )?;
    }
    audit::append_rendered(connection, audit)?;
    Ok(Written::Written)
}

fn standing(
    connection: &Connection,
    referral_id: &str,
    known_consent_record_id: Option<String>,
) -> Result<Option<Standing>, Error> {
    // The consent record id is at the end of a row of several kilobytes, on
    // its overflow page: read only when the caller does not know it.
    let consent_record_id = match known_consent_record_id {
        Some(record_id) => Some(record_id),
        None => {
            let stored: Option<Option<String>> = connection
                .prepare_cached("SELECT consent_record_id FROM referrals WHERE referral_id = ?1")
                .and_then(|mut query| query.query_row([referral_id], |row| row.get(0)).optional())
                .map_err(storage("reading a referral"))?;
            let Some(consent_record_id) = stored else {
                return Ok(None);
            };
            consent_record_id
        }
    };
    let mut query = connection
        .prepare_cached(
            "SELECT status FROM status_events WHERE referral_id = ?1 ORDER BY recorded_at, event_id",
        )
        .map_err(storage("reading status events"))?;
    let statuses = query
        .query_map([referral_id], |row| row.get(0))
        .and_then(Iterator::collect)
        .map_err(storage("reading status events"))?;
    Ok(Some(Standing {
        consent_record_id,
        consent_record: None,
        statuses,
    }))
}

/// What a queued message carries besides its ids.
enum Queued<'a> {
    /// A referral's message: its referral's key (migration 0007); the payload
    /// is the referral's minimised copy (migration 0006).
    Referral { referral_row: i64 },
    /// A status event's message, minimised for its destination.
    StatusEvent { payload: &'a str },
}

/// Queues a message for its destination, in the caller's transaction.
fn enqueue(
    connection: &Connection,
    queued: Queued<'_>,
    referral_id: &str,
    message_id: &str,
    destination: &str,
    at: &str,
) -> Result<(), Error> {
    let (kind, referral_row, payload) = match queued {
        Queued::Referral { referral_row } => ("referral", Some(referral_row), None),
        Queued::StatusEvent { payload } => ("status_event", None, Some(payload)),
    };
    connection
        .prepare_cached(
            "INSERT INTO outbox (message_id, kind, referral_id, referral_row, destination, payload, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7)",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                message_id,
                kind,
                referral_id,
                referral_row,
                destination,
                payload,
                at
            ])
        })
        .map_err(storage("queueing a message"))?;
    Ok(())
}

/// Referrals accepted before `before` with no status event since and only
/// statuses from the JSON array `open` (see [`ReferralStore::stale_referrals`]).
fn stale(connection: &Connection, before: &str, open: &str) -> Result<Vec<String>, Error> {
    let mut query = connection
        .prepare_cached(
            "SELECT referral_id FROM referrals AS referral
             WHERE accepted_at < ?1
               AND NOT EXISTS (
                   SELECT 1 FROM status_events AS event
                   WHERE event.referral_id = referral.referral_id
                     AND (event.recorded_at >= ?1
                          OR event.status NOT IN (SELECT value FROM json_each(?2))))
             ORDER BY accepted_at, referral_id",
        )
        .map_err(storage("looking for stale referrals"))?;
    let rows = query
        .query_map(params![before, open], |row| row.get(0))
        .map_err(storage("looking for stale referrals"))?;
    rows.collect::<Result<_, _>>()
        .map_err(storage("looking for stale referrals"))
}

fn load(connection: &Connection, referral_id: &str) -> Result<Option<StoredReferral>, Error> {
    let row = connection
        .prepare_cached(
            "SELECT sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, state, accepted_at
             FROM referrals JOIN referral_states USING (referral_row) WHERE referral_id = ?1",
        )
        .and_then(|mut query| {
            query
                .query_row([referral_id], |row| {
                    Ok(StoredReferral {
                        referral_id: referral_id.to_owned(),
                        sender: row.get(0)?,
                        recipient: row.get(1)?,
                        fingerprint: row.get(2)?,
                        input_format: row.get(3)?,
                        referral: row.get(4)?,
                        minimised: row.get(5)?,
                        decision: row.get(6)?,
                        consent_record_id: row.get(7)?,
                        state: row.get(8)?,
                        accepted_at: row.get(9)?,
                        events: Vec::new(),
                    })
                })
                .optional()
        })
        .map_err(storage("reading a referral"))?;
    let Some(mut referral) = row else {
        return Ok(None);
    };
    let mut query = connection
        .prepare_cached(
            "SELECT event_id, author, status, event, recorded_at FROM status_events
             WHERE referral_id = ?1 ORDER BY recorded_at, event_id",
        )
        .map_err(storage("reading status events"))?;
    let rows = query
        .query_map([referral_id], |row| {
            Ok(StoredEvent {
                event_id: row.get(0)?,
                author: row.get(1)?,
                status: row.get(2)?,
                event: row.get(3)?,
                recorded_at: row.get(4)?,
            })
        })
        .map_err(storage("reading status events"))?;
    for row in rows {
        referral
            .events
            .push(row.map_err(storage("reading status events"))?);
    }
    Ok(Some(referral))
}
