//! The outbox in the SQLite store: claiming due messages for push workers,
//! leasing them to pullers, recording each attempt's outcome with its audit
//! entry, dead letters, and the commands that inspect and replay them.
//!
//! A claim or a lease sets `lease_until`: the message is not offered again
//! before then. A worker that dies mid-attempt (kill -9) leaves the lease to
//! expire, and the message is attempted again under the same message id, so
//! receivers see one message however many attempts it took.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::audit::{self, AuditEntry};
use crate::error::Error;

use super::sqlite::{SqliteStore, storage};

/// A message of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxMessage {
    /// The cursor of pull inboxes: increasing in the order messages were queued.
    pub seq: i64,
    /// Stable across attempts (the `webhook-id`, the inbox's delivery id).
    pub message_id: String,
    /// `referral` or `status_event`.
    pub kind: String,
    /// The referral it belongs to.
    pub referral_id: String,
    /// The destination organisation's id.
    pub destination: String,
    /// Canonical JSON of the message, minimised for the destination.
    #[serde(skip)]
    pub payload: String,
    /// `queued`, `delivered`, `dead` or `cancelled`.
    pub state: String,
    /// Attempts started.
    pub attempts: u32,
    /// When the next attempt is due.
    pub next_attempt_at: String,
    /// Until when the current attempt holds it.
    pub lease_until: Option<String>,
    /// The last attempt's error (a status code or an error kind).
    pub last_error: Option<String>,
    /// When it was queued.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// For a referral's message, the consent record its referral was accepted
    /// under, read with the message: the check before each attempt then reads
    /// no referral row ([`ReferralStore::standing`](super::ReferralStore::standing)).
    #[serde(skip)]
    pub consent_record_id: Option<String>,
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered: done.
    Delivered,
    /// Failed for now: try again at this time.
    Retry {
        /// When.
        at: DateTime<Utc>,
        /// Why (a code).
        error: String,
    },
    /// Failed for good: a dead letter, kept with its last error.
    Dead {
        /// Why (a code).
        error: String,
    },
    /// Not to be delivered any more (consent withdrawn ...).
    Cancelled {
        /// Why (a code).
        reason: String,
    },
}

/// A referral's message has no payload of its own: it is the referral's
/// minimised copy (migration 0006).
const COLUMNS: &str = "seq, message_id, kind, referral_id, destination,
    COALESCE(payload, (SELECT minimised FROM referrals WHERE referrals.referral_row = outbox.referral_row)),
    state, attempts, next_attempt_at, lease_until, last_error, created_at, updated_at,
    (SELECT consent_record_id FROM referrals WHERE referrals.referral_row = outbox.referral_row)";

/// The seq of the message whose id is `?1`, as a subquery. No index holds
/// every message id (migration 0007): a referral's message is found through
/// its referral's key, a status event's through a partial index.
const MESSAGE_SEQ: &str = "(
    SELECT seq FROM outbox WHERE kind = 'status_event' AND message_id = ?1
    UNION ALL
    SELECT outbox.seq FROM referrals JOIN outbox ON outbox.referral_row = referrals.referral_row
    WHERE referrals.referral_id = ?1 AND outbox.kind = 'referral')";

fn message(row: &Row<'_>) -> rusqlite::Result<OutboxMessage> {
    Ok(OutboxMessage {
        seq: row.get(0)?,
        message_id: row.get(1)?,
        kind: row.get(2)?,
        referral_id: row.get(3)?,
        destination: row.get(4)?,
        payload: row.get(5)?,
        state: row.get(6)?,
        attempts: row.get(7)?,
        next_attempt_at: row.get(8)?,
        lease_until: row.get(9)?,
        last_error: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
        consent_record_id: row.get(13)?,
    })
}

/// Each destination's share of a claim of `limit` messages over `destinations`
/// destinations (at least one message each, so none is starved).
pub(crate) fn claim_share(limit: u32, destinations: usize) -> u32 {
    let destinations = u32::try_from(destinations).unwrap_or(u32::MAX).max(1);
    limit.div_ceil(destinations).max(1)
}

/// Claims one destination's due messages: ?1 lease end, ?2 now, ?3 the
/// destination, ?4 how many. The limits below are cast: SQLite plans a bare
/// `LIMIT ?N` with the value bound, so it parses and plans the statement again
/// whenever another value is bound, before every claim.
fn claim_sql() -> String {
    format!(
        "UPDATE outbox SET lease_until = ?1, attempts = attempts + 1, updated_at = ?2
         WHERE seq IN (
             SELECT seq FROM outbox INDEXED BY outbox_claimable
             WHERE state = 'queued' AND destination = ?3
               AND next_attempt_at <= ?2
               AND (lease_until IS NULL OR lease_until <= ?2)
               AND NOT EXISTS (SELECT 1 FROM disabled_destinations WHERE destination = ?3)
             ORDER BY next_attempt_at, seq LIMIT CAST(?4 AS INTEGER))
         RETURNING {COLUMNS}"
    )
}

/// Leases messages of a pull inbox: ?1 lease end, ?2 now, ?3 the
/// destination, ?4 the cursor, ?5 how many. Named index: without it SQLite
/// prefers `outbox_claimable` for the range on `next_attempt_at`, then sorts.
fn lease_inbox_sql() -> String {
    format!(
        "UPDATE outbox SET lease_until = ?1, attempts = attempts + 1, updated_at = ?2
         WHERE seq IN (
             SELECT seq FROM outbox INDEXED BY outbox_inbox
             WHERE state = 'queued' AND destination = ?3
               AND next_attempt_at <= ?2
               AND (seq > ?4 OR lease_until IS NOT NULL)
               AND (lease_until IS NULL OR lease_until <= ?2)
             ORDER BY seq LIMIT CAST(?5 AS INTEGER))
         RETURNING {COLUMNS}"
    )
}

/// The store's time format: RFC 3339 UTC with microseconds, which orders as text.
pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl SqliteStore {
    /// Claims due messages for the push `destinations`, up to an equal share
    /// of `limit` each ([`claim_share`]), earliest due first: each is leased
    /// until `lease_until` and its attempt counted, in one commit.
    pub async fn claim_due(
        &self,
        destinations: Vec<String>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, Error> {
        if destinations.is_empty() {
            return Ok(Vec::new());
        }
        let share = claim_share(limit, destinations.len());
        self.write(move |connection| {
            // One destination at a time, so that each claim walks the partial
            // index `outbox_claimable` in order and stops after `share` rows,
            // whatever the backlog (migration 0005).
            let mut query = connection
                .prepare_cached(&claim_sql())
                .map_err(storage("claiming messages"))?;
            let (lease_until, now) = (time(lease_until), time(now));
            let mut claimed = Vec::new();
            for destination in &destinations {
                let rows = query
                    .query_map(params![lease_until, now, destination, share], message)
                    .map_err(storage("claiming messages"))?;
                for row in rows {
                    claimed.push(row.map_err(storage("claiming messages"))?);
                }
            }
            claimed.sort_by_key(|message| message.seq);
            Ok(claimed)
        })
        .await
    }

    /// Leases up to `limit` messages of `destination`'s inbox: those queued
    /// after the cursor `after`, and those whose earlier lease ran out
    /// unacknowledged (offered again whatever the cursor).
    pub async fn lease_inbox(
        &self,
        destination: String,
        after: i64,
        limit: u32,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OutboxMessage>, Error> {
        self.write(move |connection| {
            let mut query = connection
                .prepare_cached(&lease_inbox_sql())
                .map_err(storage("leasing an inbox"))?;
            let rows = query
                .query_map(
                    params![time(lease_until), time(now), destination, after, limit],
                    message,
                )
                .map_err(storage("leasing an inbox"))?;
            let mut leased = rows
                .collect::<Result<Vec<_>, _>>()
                .map_err(storage("leasing an inbox"))?;
            leased.sort_by_key(|message| message.seq);
            Ok(leased)
        })
        .await
    }

    /// Records an attempt's outcome and its audit entry together; a message
    /// no longer queued (acknowledged meanwhile, purged) is left as it is.
    pub async fn complete(
        &self,
        message_id: String,
        outcome: Outcome,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<bool, Error> {
        // Rendered on the caller's task: the single writer only chains it.
        let audit = audit::render(now, &audit)?;
        self.write(move |connection| complete(connection, &message_id, &outcome, now, &audit))
            .await
    }

    /// Acknowledges a message pulled from `destination`'s inbox: delivered.
    /// [`Error::NotFound`] when the message is not in that inbox (another
    /// organisation's id included); acknowledging twice is a success.
    pub async fn acknowledge(
        &self,
        destination: String,
        message_id: String,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<(), Error> {
        let audit = audit::render(now, &audit)?;
        self.write(move |connection| {
            let found: Option<String> = connection
                .prepare_cached(&format!(
                    "SELECT state FROM outbox WHERE seq IN {MESSAGE_SEQ} AND destination = ?2"
                ))
                .and_then(|mut query| {
                    query
                        .query_row(params![message_id, destination], |row| row.get(0))
                        .optional()
                })
                .map_err(storage("reading a delivery"))?;
            match found.as_deref() {
                None => Err(Error::NotFound(format!("delivery {message_id}"))),
                Some("delivered") => Ok(()),
                Some("queued") => {
                    complete(connection, &message_id, &Outcome::Delivered, now, &audit).map(|_| ())
                }
                Some(_) => Err(Error::Conflict(format!(
                    "delivery {message_id} was cancelled or dead-lettered; it cannot be acknowledged"
                ))),
            }
        })
        .await
    }

    /// The referrals under a consent record that their recipient may hold:
    /// delivered, offered at least once (a pulled message not yet
    /// acknowledged, a push whose answer was lost), whatever became of the
    /// offer since, read by the recipient through the API, or one the
    /// recipient has posted a status event about.
    pub fn offered_under_consent(&self, record_id: &str) -> Result<Vec<String>, Error> {
        self.read(|connection| {
            let mut query = connection
                .prepare_cached(
                    "SELECT referral_id FROM referrals JOIN referral_states USING (referral_row)
                     WHERE consent_record_id = ?1 AND (
                         state = 'delivered' OR EXISTS (
                             SELECT 1 FROM outbox WHERE outbox.referral_row = referrals.referral_row
                             AND outbox.kind = 'referral' AND outbox.attempts > 0)
                         OR EXISTS (
                             SELECT 1 FROM status_events AS event
                             WHERE event.referral_id = referrals.referral_id
                             AND event.author = referrals.recipient)
                         OR EXISTS (
                             SELECT 1 FROM recipient_reads
                             WHERE recipient_reads.referral_row = referrals.referral_row))
                     ORDER BY accepted_at",
                )
                .map_err(storage("finding referrals under a consent record"))?;
            let rows = query
                .query_map([record_id], |row| row.get(0))
                .map_err(storage("finding referrals under a consent record"))?;
            rows.collect::<Result<_, _>>()
                .map_err(storage("finding referrals under a consent record"))
        })
    }

    /// Disables a destination (it answered 410 Gone): nothing is pushed to it
    /// until an operator enables it again. Audited.
    pub async fn disable_destination(
        &self,
        destination: String,
        reason: String,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<(), Error> {
        self.write(move |connection| {
            connection
                .prepare_cached(
                    "INSERT INTO disabled_destinations (destination, reason, disabled_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (destination) DO NOTHING",
                )
                .and_then(|mut insert| insert.execute(params![destination, reason, time(now)]))
                .map_err(storage("disabling a destination"))?;
            audit::append(connection, now, &audit).map(|_| ())
        })
        .await
    }

    /// Enables a disabled destination again (its receiver is back): its
    /// queued messages are pushed from now on. Audited. False when it was
    /// not disabled.
    pub async fn enable_destination(
        &self,
        destination: String,
        now: DateTime<Utc>,
        audit: AuditEntry,
    ) -> Result<bool, Error> {
        self.write(move |connection| {
            let removed = connection
                .prepare_cached("DELETE FROM disabled_destinations WHERE destination = ?1")
                .and_then(|mut delete| delete.execute([&destination]))
                .map_err(storage("enabling a destination"))?;
            if removed > 0 {
                audit::append(connection, now, &audit)?;
            }
            Ok(removed > 0)
        })
        .await
    }

    /// The disabled destinations with their reason.
    pub fn disabled_destinations(&self) -> Result<Vec<(String, String)>, Error> {
        self.read(|connection| {
            let mut query = connection
                .prepare_cached(
                    "SELECT destination, reason FROM disabled_destinations ORDER BY destination",
                )
                .map_err(storage("reading disabled destinations"))?;
            let rows = query
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(storage("reading disabled destinations"))?;
            rows.collect::<Result<_, _>>()
                .map_err(storage("reading disabled destinations"))
        })
    }

    /// Messages, newest first, optionally of one state and one destination.
    pub fn outbox_messages(
        &self,
        state: Option<&str>,
        destination: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, Error> {
        self.read(|connection| {
            let sql = format!(
                "SELECT {COLUMNS} FROM outbox
                 WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR destination = ?2)
                 ORDER BY seq DESC LIMIT ?3"
            );
            let mut query = connection
                .prepare_cached(&sql)
                .map_err(storage("listing the outbox"))?;
            let rows = query
                .query_map(params![state, destination, limit], message)
                .map_err(storage("listing the outbox"))?;
            rows.collect::<Result<_, _>>()
                .map_err(storage("listing the outbox"))
        })
    }

    /// One message by id.
    pub fn outbox_message(&self, message_id: &str) -> Result<Option<OutboxMessage>, Error> {
        self.read(|connection| {
            connection
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM outbox WHERE seq IN {MESSAGE_SEQ}"
                ))
                .and_then(|mut query| query.query_row([message_id], message).optional())
                .map_err(storage("reading the outbox"))
        })
    }

    /// Queues dead letters again (one, or all of a destination, or all):
    /// attempts start over. Returns how many. Audited per message.
    pub async fn retry_dead(
        &self,
        message_id: Option<String>,
        destination: Option<String>,
        now: DateTime<Utc>,
        actor: String,
    ) -> Result<u64, Error> {
        self.write(move |connection| {
            let ids: Vec<(i64, String, String, Option<i64>)> = {
                let mut query = connection
                    .prepare_cached(&format!(
                        "SELECT seq, message_id, referral_id, referral_row FROM outbox WHERE state = 'dead'
                         AND (?1 IS NULL OR seq IN {MESSAGE_SEQ}) AND (?2 IS NULL OR destination = ?2)"
                    ))
                    .map_err(storage("finding dead letters"))?;
                let rows = query
                    .query_map(params![message_id, destination], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .map_err(storage("finding dead letters"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(storage("finding dead letters"))?
            };
            for (seq, id, referral_id, referral_row) in &ids {
                connection
                    .prepare_cached(
                        "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = ?2,
                         lease_until = NULL, updated_at = ?2 WHERE seq = ?1",
                    )
                    .and_then(|mut update| update.execute(params![seq, time(now)]))
                    .map_err(storage("queueing a dead letter again"))?;
                // A status event requeued (it names no referral key) leaves
                // its referral's delivery state alone.
                if let Some(referral_row) = referral_row {
                    set_referral_state(connection, *referral_row, "queued")?;
                }
                let entry = AuditEntry::new(audit::AuditKind::DeliveryAttempted)
                    .actor(&actor)
                    .referral(referral_id)
                    .event(id)
                    .reason("retry-requested");
                audit::append(connection, now, &entry)?;
            }
            Ok(ids.len() as u64)
        })
        .await
    }

    /// Deletes finished messages (delivered, cancelled, and dead letters when
    /// `dead` is set) queued before `before`. Returns how many. The audit log
    /// keeps their history.
    pub async fn purge(
        &self,
        before: DateTime<Utc>,
        dead: bool,
        now: DateTime<Utc>,
        actor: String,
    ) -> Result<u64, Error> {
        self.write(move |connection| {
            let states = if dead {
                "('delivered', 'cancelled', 'dead')"
            } else {
                "('delivered', 'cancelled')"
            };
            let removed = connection
                .execute(
                    &format!("DELETE FROM outbox WHERE state IN {states} AND created_at < ?1"),
                    params![time(before)],
                )
                .map_err(storage("purging the outbox"))?;
            let entry = AuditEntry::new(audit::AuditKind::Erasure)
                .actor(&actor)
                .reason(if dead {
                    "outbox-purged-with-dead-letters"
                } else {
                    "outbox-purged"
                });
            audit::append(connection, now, &entry)?;
            Ok(removed as u64)
        })
        .await
    }
}

/// The seq and referral key of the queued message whose id is `?1`.
fn queued_message_sql() -> String {
    format!("SELECT seq, referral_row FROM outbox WHERE seq IN {MESSAGE_SEQ} AND state = 'queued'")
}

fn complete(
    connection: &Connection,
    message_id: &str,
    outcome: &Outcome,
    now: DateTime<Utc>,
    audit: &audit::Rendered,
) -> Result<bool, Error> {
    let queued: Option<(i64, Option<i64>)> = connection
        .prepare_cached(&queued_message_sql())
        .and_then(|mut query| {
            query
                .query_row([message_id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(storage("reading a message"))?;
    let Some((seq, referral_row)) = queued else {
        return Ok(false);
    };
    let at = time(now);
    let (state, next, error) = match outcome {
        Outcome::Delivered => ("delivered", at.clone(), None),
        Outcome::Retry { at: next, error } => ("queued", time(*next), Some(error.as_str())),
        Outcome::Dead { error } => ("dead", at.clone(), Some(error.as_str())),
        Outcome::Cancelled { reason } => ("cancelled", at.clone(), Some(reason.as_str())),
    };
    connection
        .prepare_cached(
            "UPDATE outbox SET state = ?2, next_attempt_at = ?3, lease_until = NULL,
             last_error = COALESCE(?4, last_error), updated_at = ?5 WHERE seq = ?1",
        )
        .and_then(|mut update| update.execute(params![seq, state, next, error, at]))
        .map_err(storage("recording an attempt"))?;
    // Only a referral's message names its referral's key.
    if let Some(referral_row) = referral_row {
        let referral_state = match outcome {
            Outcome::Delivered => Some("delivered"),
            Outcome::Dead { .. } => Some("dead_lettered"),
            Outcome::Cancelled { .. } => Some("withdrawn"),
            Outcome::Retry { .. } => None,
        };
        if let Some(referral_state) = referral_state {
            set_referral_state(connection, referral_row, referral_state)?;
        }
    }
    audit::append_rendered(connection, audit)?;
    Ok(true)
}

/// Sets the delivery state of the referral whose key is `referral_row`: a short
/// row of its own, not the referral's (migration 0008).
fn set_referral_state(
    connection: &Connection,
    referral_row: i64,
    state: &str,
) -> Result<(), Error> {
    connection
        .prepare_cached("UPDATE referral_states SET state = ?2 WHERE referral_row = ?1")
        .and_then(|mut update| update.execute(params![referral_row, state]))
        .map_err(storage("updating a referral's state"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for `sql`, one line per step.
    fn plan(store: &SqliteStore, sql: &str, parameters: &[&dyn rusqlite::ToSql]) -> String {
        store
            .read(|connection| {
                let mut query = connection
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .map_err(storage("explaining"))?;
                let steps = query
                    .query_map(parameters, |row| row.get::<_, String>(3))
                    .map_err(storage("explaining"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(storage("explaining"))?;
                Ok(steps.join("\n"))
            })
            .expect("plan")
    }

    /// Claims and inbox leases walk a partial index in the order they take
    /// messages and stop at their limit: no sort of every due message, whose
    /// cost would grow with the backlog.
    #[test]
    fn claims_and_leases_read_in_index_order_whatever_the_backlog() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(directory.path().join("store.db")).expect("open");
        let now = time(Utc::now());
        let claim = plan(&store, &claim_sql(), params![now, now, "destination", 64]);
        assert!(claim.contains("USING INDEX outbox_claimable"), "{claim}");
        assert!(!claim.contains("TEMP B-TREE"), "{claim}");
        let lease = plan(
            &store,
            &lease_inbox_sql(),
            params![now, now, "destination", 0, 64],
        );
        assert!(lease.contains("USING INDEX outbox_inbox"), "{lease}");
        assert!(!lease.contains("TEMP B-TREE"), "{lease}");
    }

    /// A message is found by its id through an index whatever its kind: no
    /// read of the whole outbox.
    #[test]
    fn messages_are_found_by_id_through_indexes() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(directory.path().join("store.db")).expect("open");
        let lookup = plan(
            &store,
            &format!("SELECT {COLUMNS} FROM outbox WHERE seq IN {MESSAGE_SEQ}"),
            params!["message"],
        );
        assert!(lookup.contains("outbox_status_event_messages"), "{lookup}");
        assert!(lookup.contains("outbox_referral_messages"), "{lookup}");
        assert!(!lookup.contains("SCAN"), "{lookup}");
    }

    /// The statements the writer runs for every delivery are prepared once:
    /// binding new values (another time, another destination, another id)
    /// does not make SQLite parse and plan them again.
    #[tokio::test]
    async fn delivery_statements_are_not_prepared_again_for_new_values() {
        use rusqlite::StatementStatus;

        let directory = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(directory.path().join("store.db")).expect("open");
        let statements = [
            (claim_sql(), 4),
            (lease_inbox_sql(), 5),
            (queued_message_sql(), 1),
        ];
        for (sql, parameters) in statements {
            let reprepared = store
                .write(move |connection| {
                    let mut statement = connection.prepare(&sql).map_err(storage("preparing"))?;
                    for round in 0..3_i64 {
                        let at = time(Utc::now() + chrono::Duration::seconds(round));
                        let destination = format!("destination-{round}");
                        let values: [&dyn rusqlite::ToSql; 5] =
                            [&at, &at, &destination, &round, &round];
                        let values = if parameters == 1 {
                            &[&destination as &dyn rusqlite::ToSql][..]
                        } else {
                            &values[..parameters]
                        };
                        let mut rows = statement.query(values).map_err(storage("running"))?;
                        while rows.next().map_err(storage("running"))?.is_some() {}
                    }
                    Ok((
                        statement.get_status(StatementStatus::RePrepare),
                        sql.clone(),
                    ))
                })
                .await
                .expect("statement runs");
            assert_eq!(
                reprepared.0, 0,
                "prepared again for new values: {}",
                reprepared.1
            );
        }
    }

    /// A referral's message is claimed, or leased to a pulling inbox, with
    /// the consent record its referral was accepted under: the check before
    /// each attempt reads no referral row.
    #[tokio::test]
    async fn a_referral_message_comes_with_its_consent_record_id() {
        use crate::audit::{AuditEntry, AuditKind};
        use crate::store::{NewReferral, ReferralStore};

        let directory = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(directory.path().join("store.db")).expect("open");
        let accepted_at = Utc::now() - chrono::Duration::seconds(1);
        for (referral_id, destination) in [("r-pushed", "pushed"), ("r-pulled", "pulled")] {
            let referral = NewReferral {
                referral_id: referral_id.to_owned(),
                sender: "konexio".to_owned(),
                recipient: destination.to_owned(),
                fingerprint: "f".to_owned(),
                input_format: "passerelle-v2".to_owned(),
                referral: "{}".to_owned(),
                minimised: "{}".to_owned(),
                decision: "{}".to_owned(),
                consent_record_id: Some(format!("record-of-{referral_id}")),
                consent_seen: None,
                accepted_at,
            };
            let audit = AuditEntry::new(AuditKind::ReferralAccepted).referral(referral_id);
            let replay = AuditEntry::new(AuditKind::ReferralReplayed).referral(referral_id);
            store
                .accept_referral(referral, audit, replay)
                .await
                .expect("accepted");
        }
        let now = Utc::now();
        let claimed = store
            .claim_due(vec!["pushed".to_owned()], now, now, 10)
            .await
            .expect("claim");
        let leased = store
            .lease_inbox("pulled".to_owned(), 0, 10, now, now)
            .await
            .expect("lease");
        let consent = |messages: &[OutboxMessage]| {
            messages
                .iter()
                .map(|message| message.consent_record_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(consent(&claimed), [Some("record-of-r-pushed".to_owned())]);
        assert_eq!(consent(&leased), [Some("record-of-r-pulled".to_owned())]);
    }

    #[test]
    fn each_destination_gets_an_equal_share_of_a_claim() {
        assert_eq!(claim_share(64, 1), 64);
        assert_eq!(claim_share(64, 3), 22);
        assert_eq!(claim_share(2, 5), 1);
        assert_eq!(claim_share(64, 0), 64);
    }
}
