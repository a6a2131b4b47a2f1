//! The outbox on PostgreSQL: claiming due messages for the push workers of
//! every replica, leasing them to pullers, recording each attempt's outcome
//! with its audit entry, dead letters, and the commands that inspect and
//! replay them. Same rules as the SQLite store (`store/outbox.rs`).
//!
//! Claims and leases lock the rows they take with `FOR UPDATE SKIP LOCKED`:
//! workers of several replicas claiming at once each take other messages,
//! never the same one, and none waits for another. A claim sets `lease_until`;
//! a replica killed mid-attempt leaves the lease to expire, and the message is
//! attempted again (by any replica) under the same message id.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

use crate::audit::{AuditEntry, AuditKind};
use crate::error::Error;
use crate::store::{OutboxMessage, Outcome, claim_share};

use super::{PgStore, storage, time};

/// The columns [`message`] reads, in its order.
macro_rules! columns {
    () => {
        "seq, message_id, kind, referral_id, destination, payload, state, attempts, \
         next_attempt_at, lease_until, last_error, created_at, updated_at, \
         (SELECT consent_record_id FROM referrals \
          WHERE referrals.referral_id = outbox.referral_id AND outbox.kind = 'referral')"
    };
}

/// A message from a row of [`columns!`], times as the SQLite store writes them.
fn message(row: &PgRow) -> Result<OutboxMessage, sqlx::Error> {
    let attempts: i32 = row.try_get(7)?;
    let next_attempt_at: DateTime<Utc> = row.try_get(8)?;
    let lease_until: Option<DateTime<Utc>> = row.try_get(9)?;
    let created_at: DateTime<Utc> = row.try_get(11)?;
    let updated_at: DateTime<Utc> = row.try_get(12)?;
    Ok(OutboxMessage {
        seq: row.try_get(0)?,
        message_id: row.try_get(1)?,
        kind: row.try_get(2)?,
        referral_id: row.try_get(3)?,
        destination: row.try_get(4)?,
        payload: row.try_get(5)?,
        state: row.try_get(6)?,
        attempts: u32::try_from(attempts).map_err(|error| sqlx::Error::Decode(Box::new(error)))?,
        next_attempt_at: time(next_attempt_at),
        lease_until: lease_until.map(time),
        last_error: row.try_get(10)?,
        created_at: time(created_at),
        updated_at: time(updated_at),
        consent_record_id: row.try_get(13)?,
    })
}

/// Messages from rows, in `seq` order (`RETURNING` keeps no order).
fn messages(rows: &[PgRow], context: &'static str) -> Result<Vec<OutboxMessage>, Error> {
    let mut messages = rows
        .iter()
        .map(message)
        .collect::<Result<Vec<_>, _>>()
        .map_err(storage(context))?;
    messages.sort_by_key(|message| message.seq);
    Ok(messages)
}

impl PgStore {
    /// Claims due messages for the push `destinations`, up to an equal share
    /// of `limit` each ([`claim_share`]), earliest due first: each is leased
    /// until `lease_until` and its attempt counted. Workers of several
    /// replicas claiming at once never get the same message.
    pub async fn claim_due(
        &self,
        destinations: Vec<String>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, Error> {
        let share = i64::from(claim_share(limit, destinations.len()));
        let mut claimed = Vec::new();
        // One destination at a time, so that each claim walks the partial
        // index `outbox_claimable` in order and stops after `share` rows,
        // whatever the backlog (migration 0002). Each statement is its own
        // transaction: a row another worker is claiming is skipped, not
        // waited for; one it claimed after this statement's snapshot is
        // checked again once its lock is taken (READ COMMITTED), and then
        // fails the lease condition.
        for destination in &destinations {
            let rows = sqlx::query(concat!(
                "UPDATE outbox SET lease_until = $1, attempts = attempts + 1, updated_at = $2
                 WHERE seq IN (
                     SELECT seq FROM outbox
                     WHERE state = 'queued' AND destination = $3
                       AND next_attempt_at <= $2
                       AND (lease_until IS NULL OR lease_until <= $2)
                       AND NOT EXISTS (SELECT 1 FROM disabled_destinations WHERE destination = $3)
                     ORDER BY next_attempt_at, seq LIMIT $4
                     FOR UPDATE SKIP LOCKED)
                 RETURNING ",
                columns!()
            ))
            .bind(lease_until)
            .bind(now)
            .bind(destination)
            .bind(share)
            .fetch_all(self.pool())
            .await
            .map_err(storage("claiming messages"))?;
            claimed.extend(messages(&rows, "claiming messages")?);
        }
        claimed.sort_by_key(|message| message.seq);
        Ok(claimed)
    }

    /// Leases up to `limit` messages of `destination`'s inbox: those queued
    /// after the cursor `after`, those never offered yet whatever the cursor,
    /// and those whose earlier lease ran out unacknowledged (offered again
    /// whatever the cursor).
    pub async fn lease_inbox(
        &self,
        destination: String,
        after: i64,
        limit: u32,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OutboxMessage>, Error> {
        // Unlike SQLite's single writer, `seq` is taken from the identity
        // sequence when a message is inserted, but transactions commit in
        // any order: a message with seq 10 can commit after one with seq 11,
        // which a puller may already have leased, moving its cursor to 11.
        // `seq > after` alone would then hide message 10 forever. A message
        // never offered (`attempts = 0`) is therefore offered whatever the
        // cursor; the cursor only spares the rows already offered once.
        let rows = sqlx::query(concat!(
            "UPDATE outbox SET lease_until = $1, attempts = attempts + 1, updated_at = $2
             WHERE seq IN (
                 SELECT seq FROM outbox
                 WHERE state = 'queued' AND destination = $3
                   AND next_attempt_at <= $2
                   AND (seq > $4 OR attempts = 0 OR lease_until IS NOT NULL)
                   AND (lease_until IS NULL OR lease_until <= $2)
                 ORDER BY seq LIMIT $5
                 FOR UPDATE SKIP LOCKED)
             RETURNING ",
            columns!()
        ))
        .bind(lease_until)
        .bind(now)
        .bind(&destination)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(storage("leasing an inbox"))?;
        messages(&rows, "leasing an inbox")
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
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        let completed = complete(&mut transaction, &message_id, &outcome, now, &audit).await?;
        if completed {
            transaction
                .commit()
                .await
                .map_err(storage("committing an attempt"))?;
        }
        Ok(completed)
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
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        // Locked, so that a concurrent acknowledgement or outcome waits and
        // then sees this one's result.
        let found: Option<String> = sqlx::query_scalar(
            "SELECT state FROM outbox WHERE message_id = $1 AND destination = $2 FOR UPDATE",
        )
        .bind(&message_id)
        .bind(&destination)
        .fetch_optional(&mut *transaction)
        .await
        .map_err(storage("reading a delivery"))?;
        match found.as_deref() {
            None => Err(Error::NotFound(format!("delivery {message_id}"))),
            Some("delivered") => Ok(()),
            Some("queued") => {
                complete(
                    &mut transaction,
                    &message_id,
                    &Outcome::Delivered,
                    now,
                    &audit,
                )
                .await?;
                transaction
                    .commit()
                    .await
                    .map_err(storage("committing an acknowledgement"))
            }
            Some(_) => Err(Error::Conflict(format!(
                "delivery {message_id} was cancelled or dead-lettered; it cannot be acknowledged"
            ))),
        }
    }

    /// The referrals under a consent record that their recipient may hold:
    /// delivered, offered at least once (a pulled message not yet
    /// acknowledged, a push whose answer was lost), whatever became of the
    /// offer since, read by the recipient through the API, or one the
    /// recipient has posted a status event about.
    pub async fn offered_under_consent(&self, record_id: &str) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT referral_id FROM referrals WHERE consent_record_id = $1 AND (
                 state = 'delivered' OR EXISTS (
                     SELECT 1 FROM outbox WHERE outbox.message_id = referrals.referral_id
                     AND outbox.attempts > 0)
                 OR EXISTS (
                     SELECT 1 FROM status_events AS event
                     WHERE event.referral_id = referrals.referral_id
                     AND event.author = referrals.recipient)
                 OR EXISTS (
                     SELECT 1 FROM recipient_reads
                     WHERE recipient_reads.referral_id = referrals.referral_id))
             ORDER BY accepted_at",
        )
        .bind(record_id)
        .fetch_all(self.pool())
        .await
        .map_err(storage("finding referrals under a consent record"))
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
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        sqlx::query(
            "INSERT INTO disabled_destinations (destination, reason, disabled_at) VALUES ($1, $2, $3)
             ON CONFLICT (destination) DO NOTHING",
        )
        .bind(&destination)
        .bind(&reason)
        .bind(now)
        .execute(&mut *transaction)
        .await
        .map_err(storage("disabling a destination"))?;
        super::audit::append(&mut transaction, now, &audit).await?;
        transaction
            .commit()
            .await
            .map_err(storage("committing a disabled destination"))
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
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        let removed = sqlx::query("DELETE FROM disabled_destinations WHERE destination = $1")
            .bind(&destination)
            .execute(&mut *transaction)
            .await
            .map_err(storage("enabling a destination"))?
            .rows_affected();
        if removed == 0 {
            return Ok(false);
        }
        super::audit::append(&mut transaction, now, &audit).await?;
        transaction
            .commit()
            .await
            .map_err(storage("committing an enabled destination"))?;
        Ok(true)
    }

    /// The disabled destinations with their reason.
    pub async fn disabled_destinations(&self) -> Result<Vec<(String, String)>, Error> {
        sqlx::query_as("SELECT destination, reason FROM disabled_destinations ORDER BY destination")
            .fetch_all(self.pool())
            .await
            .map_err(storage("reading disabled destinations"))
    }

    /// Messages, newest first, optionally of one state and one destination.
    pub async fn outbox_messages(
        &self,
        state: Option<&str>,
        destination: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, Error> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM outbox
             WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR destination = $2)
             ORDER BY seq DESC LIMIT $3"
        ))
        .bind(state)
        .bind(destination)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(storage("listing the outbox"))?;
        rows.iter()
            .map(message)
            .collect::<Result<_, _>>()
            .map_err(storage("listing the outbox"))
    }

    /// One message by id.
    pub async fn outbox_message(&self, message_id: &str) -> Result<Option<OutboxMessage>, Error> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM outbox WHERE message_id = $1"
        ))
        .bind(message_id)
        .fetch_optional(self.pool())
        .await
        .map_err(storage("reading the outbox"))?;
        row.as_ref()
            .map(message)
            .transpose()
            .map_err(storage("reading the outbox"))
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
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        // One statement finds and requeues them: a dead letter another
        // operator requeues at the same time is requeued (and audited) once.
        let rows = sqlx::query(
            "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_at = $3,
             lease_until = NULL, updated_at = $3
             WHERE state = 'dead'
               AND ($1::text IS NULL OR message_id = $1) AND ($2::text IS NULL OR destination = $2)
             RETURNING seq, message_id, referral_id, kind",
        )
        .bind(message_id.as_deref())
        .bind(destination.as_deref())
        .bind(now)
        .fetch_all(&mut *transaction)
        .await
        .map_err(storage("queueing dead letters again"))?;
        let mut requeued = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get::<i64, _>(0)?,
                    row.try_get::<String, _>(1)?,
                    row.try_get::<String, _>(2)?,
                    row.try_get::<String, _>(3)?,
                ))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(storage("queueing dead letters again"))?;
        requeued.sort();
        // A referral requeued is queued again; a status event requeued leaves
        // its referral's delivery state alone. Referrals are locked in id
        // order, so that two transactions never wait on each other.
        let mut referral_ids: Vec<&str> = requeued
            .iter()
            .filter(|(_, _, _, kind)| kind == "referral")
            .map(|(_, _, referral_id, _)| referral_id.as_str())
            .collect();
        referral_ids.sort_unstable();
        referral_ids.dedup();
        for referral_id in referral_ids {
            set_referral_state(&mut transaction, referral_id, "queued").await?;
        }
        // The audit entries last: the first one locks the head of the chain.
        for (_, id, referral_id, _) in &requeued {
            let entry = AuditEntry::new(AuditKind::DeliveryAttempted)
                .actor(&actor)
                .referral(referral_id)
                .event(id)
                .reason("retry-requested");
            super::audit::append(&mut transaction, now, &entry).await?;
        }
        transaction
            .commit()
            .await
            .map_err(storage("committing dead letters queued again"))?;
        Ok(requeued.len() as u64)
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
        let mut transaction = self
            .pool()
            .begin()
            .await
            .map_err(storage("starting a transaction"))?;
        let removed = sqlx::query(
            "DELETE FROM outbox
             WHERE (state IN ('delivered', 'cancelled') OR ($2 AND state = 'dead'))
               AND created_at < $1",
        )
        .bind(before)
        .bind(dead)
        .execute(&mut *transaction)
        .await
        .map_err(storage("purging the outbox"))?
        .rows_affected();
        let entry = AuditEntry::new(AuditKind::Erasure)
            .actor(&actor)
            .reason(if dead {
                "outbox-purged-with-dead-letters"
            } else {
                "outbox-purged"
            });
        super::audit::append(&mut transaction, now, &entry).await?;
        transaction
            .commit()
            .await
            .map_err(storage("committing a purge"))?;
        Ok(removed)
    }
}

/// Records an outcome in the caller's transaction, its audit entry last.
/// False, with nothing written, when the message is no longer queued.
async fn complete(
    connection: &mut PgConnection,
    message_id: &str,
    outcome: &Outcome,
    now: DateTime<Utc>,
    audit: &AuditEntry,
) -> Result<bool, Error> {
    let (state, next, error) = match outcome {
        Outcome::Delivered => ("delivered", now, None),
        Outcome::Retry { at, error } => ("queued", *at, Some(error.as_str())),
        Outcome::Dead { error } => ("dead", now, Some(error.as_str())),
        Outcome::Cancelled { reason } => ("cancelled", now, Some(reason.as_str())),
    };
    // Found and updated in one statement. A concurrent outcome for the same
    // message (an acknowledgement racing a lease's end) holds the row's lock:
    // this one waits, then finds it no longer queued and changes nothing.
    let found: Option<(String, String)> = sqlx::query_as(
        "UPDATE outbox SET state = $2, next_attempt_at = $3, lease_until = NULL,
         last_error = COALESCE($4, last_error), updated_at = $5
         WHERE message_id = $1 AND state = 'queued'
         RETURNING referral_id, kind",
    )
    .bind(message_id)
    .bind(state)
    .bind(next)
    .bind(error)
    .bind(now)
    .fetch_optional(&mut *connection)
    .await
    .map_err(storage("recording an attempt"))?;
    let Some((referral_id, kind)) = found else {
        return Ok(false);
    };
    if kind == "referral" {
        let referral_state = match outcome {
            Outcome::Delivered => Some("delivered"),
            Outcome::Dead { .. } => Some("dead_lettered"),
            Outcome::Cancelled { .. } => Some("withdrawn"),
            Outcome::Retry { .. } => None,
        };
        if let Some(referral_state) = referral_state {
            set_referral_state(connection, &referral_id, referral_state).await?;
        }
    }
    super::audit::append(connection, now, audit).await?;
    Ok(true)
}

async fn set_referral_state(
    connection: &mut PgConnection,
    referral_id: &str,
    state: &str,
) -> Result<(), Error> {
    sqlx::query("UPDATE referrals SET state = $2 WHERE referral_id = $1")
        .bind(referral_id)
        .bind(state)
        .execute(&mut *connection)
        .await
        .map_err(storage("updating a referral's state"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use chrono::{Duration, TimeZone as _};
    use tokio::sync::Barrier;

    use super::super::{ScratchDatabase, audit_entries};
    use super::*;

    const PUSHED: &str = "france-travail-saint-denis";
    const PULLING: &str = "mission-locale-exemple";

    fn january(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, day, 9, 0, 0)
            .single()
            .expect("a valid date")
    }

    fn delivered(referral_id: &str) -> AuditEntry {
        AuditEntry::new(AuditKind::Delivered)
            .actor(PUSHED)
            .referral(referral_id)
    }

    async fn connect(scratch: &ScratchDatabase) -> PgStore {
        PgStore::connect(&scratch.url).await.expect("connect")
    }

    /// Queues a referral for `destination`, as accepting it does: its row,
    /// then its message (whose id is the referral's).
    async fn queue_on(
        connection: &mut PgConnection,
        destination: &str,
        consent_record_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> String {
        let referral_id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO referrals (referral_id, sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, state, accepted_at)
             VALUES ($1, 'konexio-saint-denis', $2, 'f', 'passerelle-v2', '{}', '{}', '{}', $3, 'queued', $4)",
        )
        .bind(&referral_id)
        .bind(destination)
        .bind(consent_record_id)
        .bind(at)
        .execute(&mut *connection)
        .await
        .expect("a referral");
        sqlx::query(
            "INSERT INTO outbox (message_id, kind, referral_id, destination, payload, next_attempt_at, created_at, updated_at)
             VALUES ($1, 'referral', $1, $2, '{}', $3, $3, $3)",
        )
        .bind(&referral_id)
        .bind(destination)
        .bind(at)
        .execute(&mut *connection)
        .await
        .expect("a message");
        referral_id
    }

    async fn queue(store: &PgStore, destination: &str, at: DateTime<Utc>) -> String {
        let mut connection = store.pool().acquire().await.expect("a connection");
        queue_on(&mut connection, destination, None, at).await
    }

    async fn referral_state(store: &PgStore, referral_id: &str) -> String {
        sqlx::query_scalar("SELECT state FROM referrals WHERE referral_id = $1")
            .bind(referral_id)
            .fetch_one(store.pool())
            .await
            .expect("a referral")
    }

    async fn message_of(store: &PgStore, message_id: &str) -> OutboxMessage {
        store
            .outbox_message(message_id)
            .await
            .expect("read")
            .expect("the message")
    }

    fn ids(messages: &[OutboxMessage]) -> Vec<&str> {
        messages
            .iter()
            .map(|message| message.message_id.as_str())
            .collect()
    }

    /// A referral's message is claimed with the consent record its referral
    /// was accepted under: the check before each attempt reads no referral.
    #[tokio::test]
    async fn a_claimed_referral_message_comes_with_its_consent_record_id() {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = connect(&scratch).await;
        let mut connection = store.pool().acquire().await.expect("a connection");
        queue_on(&mut connection, PUSHED, Some("record-1"), january(1)).await;
        drop(connection);
        let now = january(5);
        let claimed = store
            .claim_due(vec![PUSHED.to_owned()], now, now, 10)
            .await
            .expect("claim");
        let consent: Vec<Option<&str>> = claimed
            .iter()
            .map(|message| message.consent_record_id.as_deref())
            .collect();
        assert_eq!(consent, [Some("record-1")]);
    }

    #[tokio::test]
    async fn claimed_messages_are_leased_counted_and_completed() {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = connect(&scratch).await;
        let now = january(5);
        let first = queue(&store, PUSHED, january(1)).await;
        let second = queue(&store, PUSHED, january(1)).await;
        let third = queue(&store, PUSHED, january(1)).await;
        let elsewhere = queue(&store, "another-organisation", january(1)).await;
        let not_yet = queue(&store, PUSHED, january(6)).await;

        assert!(
            store
                .claim_due(Vec::new(), now, now, 10)
                .await
                .expect("claim")
                .is_empty()
        );
        let lease = now + Duration::seconds(30);
        let claimed = store
            .claim_due(vec![PUSHED.to_owned()], now, lease, 2)
            .await
            .expect("claim");
        assert_eq!(ids(&claimed), [first.as_str(), second.as_str()]);
        for message in &claimed {
            assert_eq!(message.attempts, 1);
            assert_eq!(message.state, "queued");
            assert_eq!(message.kind, "referral");
            assert_eq!(message.lease_until.as_deref(), Some(time(lease).as_str()));
            assert_eq!(message.updated_at, time(now));
            assert_eq!(message.created_at, time(january(1)));
        }
        assert_eq!(claimed[0].created_at, "2026-01-01T09:00:00.000000Z");
        // Leased messages are not claimed again; a message not yet due nor
        // one of another destination is not claimed at all.
        let rest = store
            .claim_due(vec![PUSHED.to_owned()], now, lease, 10)
            .await
            .expect("claim");
        assert_eq!(ids(&rest), [third.as_str()]);

        assert!(
            store
                .complete(first.clone(), Outcome::Delivered, now, delivered(&first))
                .await
                .expect("complete")
        );
        let done = message_of(&store, &first).await;
        assert_eq!(done.state, "delivered");
        assert_eq!(done.lease_until, None);
        assert_eq!(referral_state(&store, &first).await, "delivered");
        // Completing a message no longer queued changes nothing, audits nothing.
        assert!(
            !store
                .complete(first.clone(), Outcome::Delivered, now, delivered(&first))
                .await
                .expect("complete again")
        );
        assert_eq!(audit_entries(&store).await.expect("audit").len(), 1);

        // A retry releases the lease until its time; the referral stays queued.
        let later = now + Duration::minutes(5);
        let retry = Outcome::Retry {
            at: later,
            error: "http-503".to_owned(),
        };
        let failed = AuditEntry::new(AuditKind::DeliveryFailed)
            .referral(&second)
            .reason("http-503");
        assert!(
            store
                .complete(second.clone(), retry, now, failed)
                .await
                .expect("retry")
        );
        let waiting = message_of(&store, &second).await;
        assert_eq!(
            (waiting.state.as_str(), waiting.lease_until.as_deref()),
            ("queued", None)
        );
        assert_eq!(waiting.next_attempt_at, time(later));
        assert_eq!(waiting.last_error.as_deref(), Some("http-503"));
        assert_eq!(referral_state(&store, &second).await, "queued");
        // Before the retry is due (and while the third message is still leased).
        let early = now + Duration::seconds(20);
        assert!(
            store
                .claim_due(
                    vec![PUSHED.to_owned()],
                    early,
                    early + Duration::seconds(30),
                    10
                )
                .await
                .expect("claim")
                .is_empty()
        );
        let again = store
            .claim_due(
                vec![PUSHED.to_owned()],
                later,
                later + Duration::seconds(30),
                10,
            )
            .await
            .expect("claim");
        assert_eq!(ids(&again), [second.as_str(), third.as_str()]);
        assert_eq!(again[0].attempts, 2);

        // Cancelled: the referral is withdrawn; the last error is kept.
        let cancel = Outcome::Cancelled {
            reason: "consent-withdrawn".to_owned(),
        };
        assert!(
            store
                .complete(third.clone(), cancel, later, delivered(&third))
                .await
                .expect("cancel")
        );
        assert_eq!(message_of(&store, &third).await.state, "cancelled");
        assert_eq!(referral_state(&store, &third).await, "withdrawn");

        let entries = audit_entries(&store).await.expect("audit");
        let kinds: Vec<AuditKind> = entries.iter().map(|entry| entry.entry.kind).collect();
        assert_eq!(
            kinds,
            [
                AuditKind::Delivered,
                AuditKind::DeliveryFailed,
                AuditKind::Delivered
            ]
        );
        assert_eq!(message_of(&store, &elsewhere).await.attempts, 0);
        assert_eq!(message_of(&store, &not_yet).await.attempts, 0);
        store.close().await;
    }

    #[tokio::test]
    async fn a_lease_that_runs_out_lets_the_message_be_claimed_again() {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = connect(&scratch).await;
        let now = january(5);
        let queued = queue(&store, PUSHED, january(1)).await;
        let destinations = vec![PUSHED.to_owned()];
        let first = store
            .claim_due(destinations.clone(), now, now + Duration::seconds(30), 10)
            .await
            .expect("claim");
        assert_eq!(ids(&first), [queued.as_str()]);
        // The worker died: nothing is claimed while the lease holds...
        let during = now + Duration::seconds(10);
        assert!(
            store
                .claim_due(
                    destinations.clone(),
                    during,
                    during + Duration::seconds(30),
                    10
                )
                .await
                .expect("claim")
                .is_empty()
        );
        // ... and the same message, same id, once it has run out.
        let after = now + Duration::seconds(30);
        let second = store
            .claim_due(destinations, after, after + Duration::seconds(30), 10)
            .await
            .expect("claim");
        assert_eq!(ids(&second), [queued.as_str()]);
        assert_eq!(second[0].attempts, 2);
        assert_eq!(
            second[0].lease_until.as_deref(),
            Some(time(after + Duration::seconds(30)).as_str())
        );
        store.close().await;
    }

    /// Two replicas' workers claiming from one queue at once: no message is
    /// claimed twice, and together they claim them all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_claiming_at_once_never_share_a_message() {
        const MESSAGES: usize = 200;
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let first = connect(&scratch).await;
        let second = connect(&scratch).await;
        let mut queued = BTreeSet::new();
        {
            let mut transaction = first.pool().begin().await.expect("a transaction");
            for _ in 0..MESSAGES {
                queued.insert(queue_on(&mut transaction, PUSHED, None, january(1)).await);
            }
            transaction.commit().await.expect("queued");
        }
        let now = january(5);
        // Each row a claim updates takes a little time, so that claims
        // overlap for certain: without its row locks, a claim would take
        // rows another claim is taking.
        sqlx::raw_sql(
            "CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END; $$;
             CREATE TRIGGER slow_claim BEFORE UPDATE ON outbox
                 FOR EACH ROW EXECUTE FUNCTION slow_claim();",
        )
        .execute(first.pool())
        .await
        .expect("a slow trigger");
        let start = Arc::new(Barrier::new(4));
        let workers: Vec<_> = [first.clone(), first.clone(), second.clone(), second.clone()]
            .into_iter()
            .map(|store| {
                let start = Arc::clone(&start);
                tokio::spawn(async move {
                    start.wait().await;
                    let mut claimed = Vec::new();
                    loop {
                        let batch = store
                            .claim_due(vec![PUSHED.to_owned()], now, now + Duration::minutes(1), 7)
                            .await
                            .expect("claim");
                        if batch.is_empty() {
                            return claimed;
                        }
                        claimed.extend(batch.into_iter().map(|message| message.message_id));
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut workers_that_claimed = 0;
        for worker in workers {
            let claimed = worker.await.expect("joined");
            if !claimed.is_empty() {
                workers_that_claimed += 1;
            }
            all.extend(claimed);
        }
        let distinct: BTreeSet<String> = all.iter().cloned().collect();
        assert_eq!(all.len(), distinct.len(), "a message was claimed twice");
        assert_eq!(distinct, queued, "every message is claimed");
        assert!(workers_that_claimed >= 2, "the workers raced");
        let attempts: Vec<i32> = sqlx::query_scalar("SELECT DISTINCT attempts FROM outbox")
            .fetch_all(second.pool())
            .await
            .expect("attempts");
        assert_eq!(attempts, [1]);
        first.close().await;
        second.close().await;
    }

    #[tokio::test]
    async fn an_inbox_offers_after_its_cursor_again_when_leases_run_out_and_takes_acks() {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = connect(&scratch).await;
        let now = january(5);
        let lease = now + Duration::seconds(60);
        let first = queue(&store, PULLING, january(1)).await;
        let second = queue(&store, PULLING, january(1)).await;
        let third = queue(&store, PULLING, january(1)).await;
        queue(&store, PUSHED, january(1)).await;

        let page = store
            .lease_inbox(PULLING.to_owned(), 0, 2, now, lease)
            .await
            .expect("lease");
        assert_eq!(ids(&page), [first.as_str(), second.as_str()]);
        assert_eq!(page[0].attempts, 1);
        let cursor = page[1].seq;
        let next = store
            .lease_inbox(PULLING.to_owned(), cursor, 10, now, lease)
            .await
            .expect("lease");
        assert_eq!(ids(&next), [third.as_str()]);
        let cursor = next[0].seq;
        assert!(
            store
                .lease_inbox(PULLING.to_owned(), cursor, 10, now, lease)
                .await
                .expect("lease")
                .is_empty()
        );

        let ack = || {
            AuditEntry::new(AuditKind::Delivered)
                .actor(PULLING)
                .recipient(PULLING)
        };
        store
            .acknowledge(PULLING.to_owned(), first.clone(), now, ack().event(&first))
            .await
            .expect("acknowledged");
        assert_eq!(message_of(&store, &first).await.state, "delivered");
        assert_eq!(referral_state(&store, &first).await, "delivered");
        // Twice is a success, audited once.
        store
            .acknowledge(PULLING.to_owned(), first.clone(), now, ack().event(&first))
            .await
            .expect("acknowledged twice");
        assert_eq!(audit_entries(&store).await.expect("audit").len(), 1);
        // Another inbox's message, or no message at all, is not found.
        let theirs = store
            .acknowledge(PUSHED.to_owned(), second.clone(), now, ack().event(&second))
            .await;
        assert!(matches!(theirs, Err(Error::NotFound(_))), "{theirs:?}");
        let unknown = uuid::Uuid::new_v4().to_string();
        let missing = store
            .acknowledge(
                PULLING.to_owned(),
                unknown.clone(),
                now,
                ack().event(&unknown),
            )
            .await;
        assert!(matches!(missing, Err(Error::NotFound(_))), "{missing:?}");

        // Unacknowledged leases run out: offered again whatever the cursor.
        let expired = lease + Duration::seconds(1);
        let again = store
            .lease_inbox(
                PULLING.to_owned(),
                cursor,
                10,
                expired,
                expired + Duration::seconds(60),
            )
            .await
            .expect("lease");
        assert_eq!(ids(&again), [second.as_str(), third.as_str()]);
        assert_eq!(again[0].attempts, 2);

        // A cancelled delivery cannot be acknowledged.
        let cancel = Outcome::Cancelled {
            reason: "consent-withdrawn".to_owned(),
        };
        assert!(
            store
                .complete(third.clone(), cancel, expired, ack().event(&third))
                .await
                .expect("cancel")
        );
        let refused = store
            .acknowledge(
                PULLING.to_owned(),
                third.clone(),
                expired,
                ack().event(&third),
            )
            .await;
        assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
        store.close().await;
    }

    /// A message whose transaction took `seq` first but committed last is
    /// offered to a puller whose cursor already passed it.
    #[tokio::test]
    async fn a_message_committed_late_is_offered_behind_the_cursor() {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = connect(&scratch).await;
        let now = january(5);
        let lease = now + Duration::seconds(60);
        let mut slow = store.pool().begin().await.expect("a transaction");
        let late = queue_on(&mut slow, PULLING, None, january(1)).await;
        let early = queue(&store, PULLING, january(1)).await;
        let page = store
            .lease_inbox(PULLING.to_owned(), 0, 10, now, lease)
            .await
            .expect("lease");
        assert_eq!(ids(&page), [early.as_str()]);
        let cursor = page[0].seq;
        slow.commit().await.expect("the slow transaction commits");
        let next = store
            .lease_inbox(PULLING.to_owned(), cursor, 10, now, lease)
            .await
            .expect("lease");
        assert_eq!(ids(&next), [late.as_str()]);
        assert!(next[0].seq < cursor);
        // Offered once, it is then behind the cursor like the others.
        assert!(
            store
                .lease_inbox(PULLING.to_owned(), cursor, 10, now, lease)
                .await
                .expect("lease")
                .is_empty()
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_dead_letter_is_listed_and_queued_again_on_request() {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = connect(&scratch).await;
        let now = january(5);
        let first = queue(&store, PUSHED, january(1)).await;
        let second = queue(&store, PUSHED, january(1)).await;
        let elsewhere = queue(&store, "another-organisation", january(1)).await;
        let claimed = store
            .claim_due(
                vec![PUSHED.to_owned(), "another-organisation".to_owned()],
                now,
                now + Duration::seconds(30),
                10,
            )
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 3);
        for id in [&first, &second, &elsewhere] {
            let dead = Outcome::Dead {
                error: "http-500".to_owned(),
            };
            let entry = AuditEntry::new(AuditKind::DeadLettered)
                .referral(id)
                .reason("http-500");
            assert!(
                store
                    .complete(id.clone(), dead, now, entry)
                    .await
                    .expect("dead")
            );
        }
        let letter = message_of(&store, &first).await;
        assert_eq!(letter.state, "dead");
        assert_eq!(letter.last_error.as_deref(), Some("http-500"));
        assert_eq!(referral_state(&store, &first).await, "dead_lettered");
        let listed = store
            .outbox_messages(Some("dead"), Some(PUSHED), 10)
            .await
            .expect("list");
        assert_eq!(
            ids(&listed),
            [second.as_str(), first.as_str()],
            "newest first"
        );
        assert_eq!(
            store
                .outbox_messages(None, None, 2)
                .await
                .expect("list")
                .len(),
            2
        );
        assert!(
            store
                .outbox_messages(Some("queued"), None, 10)
                .await
                .expect("list")
                .is_empty()
        );
        assert_eq!(store.outbox_message("unknown").await.expect("read"), None);

        let later = now + Duration::hours(1);
        let one = store
            .retry_dead(Some(first.clone()), None, later, "operator".to_owned())
            .await
            .expect("retry");
        assert_eq!(one, 1);
        let requeued = message_of(&store, &first).await;
        assert_eq!(
            (
                requeued.state.as_str(),
                requeued.attempts,
                requeued.lease_until
            ),
            ("queued", 0, None)
        );
        assert_eq!(requeued.next_attempt_at, time(later));
        assert_eq!(referral_state(&store, &first).await, "queued");
        let entries = audit_entries(&store).await.expect("audit");
        let last = &entries.last().expect("an entry").entry;
        assert_eq!(last.kind, AuditKind::DeliveryAttempted);
        assert_eq!(last.reason.as_deref(), Some("retry-requested"));
        assert_eq!(last.event_id.as_deref(), Some(first.as_str()));
        assert_eq!(last.actor.as_deref(), Some("operator"));
        // Not dead any more: not queued again.
        let none = store
            .retry_dead(Some(first.clone()), None, later, "operator".to_owned())
            .await
            .expect("retry");
        assert_eq!(none, 0);
        // By destination, then all.
        let by_destination = store
            .retry_dead(None, Some(PUSHED.to_owned()), later, "operator".to_owned())
            .await
            .expect("retry");
        assert_eq!(by_destination, 1);
        assert_eq!(message_of(&store, &elsewhere).await.state, "dead");
        let all = store
            .retry_dead(None, None, later, "operator".to_owned())
            .await
            .expect("retry");
        assert_eq!(all, 1);
        assert_eq!(audit_entries(&store).await.expect("audit").len(), 3 + 3);
        let claimed = store
            .claim_due(
                vec![PUSHED.to_owned()],
                later,
                later + Duration::seconds(30),
                10,
            )
            .await
            .expect("claim");
        assert_eq!(ids(&claimed), [first.as_str(), second.as_str()]);
        assert_eq!(claimed[0].attempts, 1);
        store.close().await;
    }

    #[tokio::test]
    async fn a_disabled_destination_gets_nothing_until_enabled() {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = connect(&scratch).await;
        let now = january(5);
        let queued = queue(&store, PUSHED, january(1)).await;
        let gone = || {
            AuditEntry::new(AuditKind::DeliveryFailed)
                .recipient(PUSHED)
                .reason("http-410")
        };
        store
            .disable_destination(PUSHED.to_owned(), "http-410".to_owned(), now, gone())
            .await
            .expect("disabled");
        // Twice keeps one row (and the first reason).
        store
            .disable_destination(PUSHED.to_owned(), "http-404".to_owned(), now, gone())
            .await
            .expect("disabled again");
        assert_eq!(
            store.disabled_destinations().await.expect("list"),
            [(PUSHED.to_owned(), "http-410".to_owned())]
        );
        let destinations = vec![PUSHED.to_owned()];
        let lease = now + Duration::seconds(30);
        assert!(
            store
                .claim_due(destinations.clone(), now, lease, 10)
                .await
                .expect("claim")
                .is_empty()
        );
        let enabled = || {
            AuditEntry::new(AuditKind::DeliveryAttempted)
                .actor("operator")
                .recipient(PUSHED)
        };
        assert!(
            store
                .enable_destination(PUSHED.to_owned(), now, enabled())
                .await
                .expect("enabled")
        );
        assert!(
            store
                .disabled_destinations()
                .await
                .expect("list")
                .is_empty()
        );
        // Enabling what is not disabled is false, unaudited.
        assert!(
            !store
                .enable_destination(PUSHED.to_owned(), now, enabled())
                .await
                .expect("enabled again")
        );
        assert_eq!(audit_entries(&store).await.expect("audit").len(), 3);
        let claimed = store
            .claim_due(destinations, now, lease, 10)
            .await
            .expect("claim");
        assert_eq!(ids(&claimed), [queued.as_str()]);
        store.close().await;
    }

    #[tokio::test]
    async fn purging_removes_finished_messages_queued_before_a_time() {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = connect(&scratch).await;
        let now = january(5);
        let delivered_id = queue(&store, PUSHED, january(1)).await;
        let cancelled_id = queue(&store, PUSHED, january(1)).await;
        let dead_id = queue(&store, PUSHED, january(1)).await;
        let queued_id = queue(&store, PUSHED, january(1)).await;
        let recent_id = queue(&store, PUSHED, january(4)).await;
        let outcomes = [
            (&delivered_id, Outcome::Delivered),
            (
                &cancelled_id,
                Outcome::Cancelled {
                    reason: "consent-withdrawn".to_owned(),
                },
            ),
            (
                &dead_id,
                Outcome::Dead {
                    error: "http-500".to_owned(),
                },
            ),
            (&recent_id, Outcome::Delivered),
        ];
        for (id, outcome) in outcomes {
            assert!(
                store
                    .complete(id.clone(), outcome, now, delivered(id))
                    .await
                    .expect("complete")
            );
        }
        let before = january(2);
        let removed = store
            .purge(before, false, now, "operator".to_owned())
            .await
            .expect("purge");
        assert_eq!(removed, 2);
        assert_eq!(
            store.outbox_message(&delivered_id).await.expect("read"),
            None
        );
        assert_eq!(
            store.outbox_message(&cancelled_id).await.expect("read"),
            None
        );
        assert_eq!(message_of(&store, &dead_id).await.state, "dead");
        let removed = store
            .purge(before, true, now, "operator".to_owned())
            .await
            .expect("purge");
        assert_eq!(removed, 1);
        let left: Vec<String> = store
            .outbox_messages(None, None, 10)
            .await
            .expect("list")
            .into_iter()
            .map(|message| message.message_id)
            .collect();
        assert_eq!(left, [recent_id, queued_id]);
        let entries = audit_entries(&store).await.expect("audit");
        let reasons: Vec<Option<&str>> = entries[4..]
            .iter()
            .map(|entry| {
                assert_eq!(entry.entry.kind, AuditKind::Erasure);
                entry.entry.reason.as_deref()
            })
            .collect();
        assert_eq!(
            reasons,
            [
                Some("outbox-purged"),
                Some("outbox-purged-with-dead-letters")
            ]
        );
        store.close().await;
    }

    #[tokio::test]
    async fn referrals_offered_under_a_consent_record_are_the_delivered_and_the_attempted() {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = connect(&scratch).await;
        let now = january(5);
        let record = "consent-record-exemple";
        let mut connection = store.pool().acquire().await.expect("a connection");
        let delivered_id = queue_on(&mut connection, PUSHED, Some(record), january(1)).await;
        let attempted = queue_on(&mut connection, PULLING, Some(record), january(2)).await;
        let never = queue_on(&mut connection, PUSHED, Some(record), january(3)).await;
        let other = queue_on(&mut connection, PULLING, Some("another-record"), january(1)).await;
        drop(connection);
        store
            .claim_due(vec![PUSHED.to_owned()], now, now + Duration::seconds(30), 1)
            .await
            .expect("claim");
        assert!(
            store
                .complete(
                    delivered_id.clone(),
                    Outcome::Delivered,
                    now,
                    delivered(&delivered_id)
                )
                .await
                .expect("delivered")
        );
        let leased = store
            .lease_inbox(PULLING.to_owned(), 0, 10, now, now + Duration::seconds(30))
            .await
            .expect("lease");
        assert_eq!(leased.len(), 2);
        let offered = store.offered_under_consent(record).await.expect("offered");
        assert_eq!(offered, [delivered_id, attempted]);
        assert!(!offered.contains(&never) && !offered.contains(&other));
        store.close().await;
    }
}
