//! The audit chain on PostgreSQL: appending inside a write transaction, and
//! reading the chain back.
//!
//! Every append locks the single row of `audit_head` (`FOR UPDATE`), so that
//! transactions of every replica append one after another: the next one waits
//! for the lock, then reads the head the previous one committed. The lock is
//! held until the transaction ends, so an append is the last statement of its
//! transaction: whatever the transaction does after it would lengthen the
//! time every other writer waits. Entries are encoded and hashed with the same
//! functions as the SQLite store's (`crate::audit`), so both chains verify
//! with the same tool.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row as _};

use crate::audit::{self, AuditEntry, ChainedEntry};
use crate::error::Error;

use super::{PgStore, storage};

/// Appends `entry` at `at` to the chain, on a connection inside the caller's
/// transaction (callers pass `&mut *transaction`), and returns its `seq`. Call
/// it last, just before committing: it locks the head of the chain until the
/// transaction ends.
pub(super) async fn append(
    connection: &mut PgConnection,
    at: DateTime<Utc>,
    entry: &AuditEntry,
) -> Result<u64, Error> {
    // Rendered before the head is locked: the lock is held for the insert only.
    let entry = audit::render(at, entry)?;
    let head = sqlx::query("SELECT seq, hash FROM audit_head FOR UPDATE")
        .fetch_one(&mut *connection)
        .await
        .map_err(storage("locking the head of the audit log"))?;
    let last: i64 = head
        .try_get(0)
        .map_err(storage("reading the head of the audit log"))?;
    let previous_hash: String = head
        .try_get(1)
        .map_err(storage("reading the head of the audit log"))?;
    let seq = last + 1;
    let text = entry.text(audit::position(seq));
    let hash = audit::chain_hash(&previous_hash, &text);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, entry, previous_hash, hash) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(seq)
    .bind(&entry.at)
    .bind(&text)
    .bind(&previous_hash)
    .bind(&hash)
    .execute(&mut *connection)
    .await
    .map_err(storage("appending to the audit log"))?;
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2")
        .bind(seq)
        .bind(&hash)
        .execute(&mut *connection)
        .await
        .map_err(storage("moving the head of the audit log"))?;
    Ok(audit::position(seq))
}

/// Appends `entry`, stamped with the time of the write, in a transaction of
/// its own (for entries that go with no other change: reads, deliveries);
/// returns its `seq` once committed.
pub async fn append_entry(store: &PgStore, entry: AuditEntry) -> Result<u64, Error> {
    // Checked before a connection is taken, as the SQLite store does.
    entry.check()?;
    let mut transaction = store
        .pool()
        .begin()
        .await
        .map_err(storage("starting a transaction"))?;
    let seq = append(&mut transaction, Utc::now(), &entry).await?;
    transaction
        .commit()
        .await
        .map_err(storage("committing an audit entry"))?;
    Ok(seq)
}

/// Every entry of the store's audit log, in order (for tests and tools; the
/// log is read whole, so not for large logs).
pub async fn audit_entries(store: &PgStore) -> Result<Vec<ChainedEntry>, Error> {
    store
        .audit_rows()
        .await?
        .into_iter()
        .map(|row| {
            let unreadable = || {
                Error::Internal(format!(
                    "audit: entry {} does not read as an entry",
                    row.seq
                ))
            };
            let at = DateTime::parse_from_rfc3339(&row.at)
                .map_err(|_| unreadable())?
                .with_timezone(&Utc);
            let entry = serde_json::from_str(&row.entry).map_err(|_| unreadable())?;
            Ok(ChainedEntry {
                seq: u64::try_from(row.seq).map_err(|_| unreadable())?,
                at,
                entry,
                previous_hash: row.previous_hash,
                hash: row.hash,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::audit::{AuditKind, ChainHead, verify_rows};
    use crate::store::postgres::ScratchDatabase;

    const REFERRAL: &str = "7d1f6a52-3f0e-4c4b-9a55-1c2e3f4a5b6c";

    fn minute(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 4, 9, minute, 0)
            .single()
            .expect("valid time")
    }

    fn sample(number: u32) -> AuditEntry {
        match number % 3 {
            0 => AuditEntry::new(AuditKind::ReferralAccepted)
                .actor("asso-konexio")
                .referral(REFERRAL)
                .policy("france-travail-orientation", "2026-11-1")
                .paths(["person.birth_date", "identifiers.nir"]),
            1 => AuditEntry::new(AuditKind::ReferralRead)
                .actor("france-travail")
                .referral(REFERRAL),
            _ => AuditEntry::new(AuditKind::DeliveryFailed)
                .referral(REFERRAL)
                .recipient("france-travail")
                .attempt(number)
                .reason("http-503"),
        }
    }

    async fn scratch_store() -> (ScratchDatabase, PgStore) {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        let store = PgStore::connect(&scratch.url).await.expect("connect");
        (scratch, store)
    }

    async fn append_at(store: &PgStore, at: DateTime<Utc>, entry: &AuditEntry) -> u64 {
        let mut transaction = store.pool().begin().await.expect("begin");
        let seq = append(&mut transaction, at, entry).await.expect("append");
        transaction.commit().await.expect("commit");
        seq
    }

    /// The same text and hashes as the SQLite store writes (the documented
    /// format, computed here without the module's helpers), and a chain that
    /// `audit verify` finds intact, with the head it reports.
    #[tokio::test]
    async fn entries_are_stored_as_the_sqlite_store_stores_them_and_verify() {
        let (_scratch, store) = scratch_store().await;
        for number in 0..4 {
            let seq = append_at(&store, minute(number), &sample(number)).await;
            assert_eq!(seq, u64::from(number) + 1);
        }
        let rows = store.audit_rows().await.expect("rows");
        assert_eq!(
            rows[0].entry,
            format!(
                r#"{{"actor":"asso-konexio","at":"2027-01-04T09:00:00Z","kind":"referral_accepted","paths":["person.birth_date","identifiers.nir"],"policy":"france-travail-orientation@2026-11-1","referral_id":"{REFERRAL}","seq":1}}"#
            )
        );
        assert_eq!(rows[0].previous_hash, "0".repeat(64));
        assert_eq!(
            rows[0].hash,
            hex::encode(Sha256::digest(
                format!("{}{}", rows[0].previous_hash, rows[0].entry).as_bytes()
            ))
        );
        let last = rows.last().expect("rows").clone();
        let head: (i64, String) = sqlx::query_as("SELECT seq, hash FROM audit_head")
            .fetch_one(store.pool())
            .await
            .expect("head");
        assert_eq!(head, (last.seq, last.hash.clone()));
        let report = verify_rows(rows, None).expect("verify");
        assert!(report.intact, "{report:?}");
        assert_eq!(report.entries, 4);
        assert_eq!(
            report.head,
            Some(ChainHead {
                seq: 4,
                hash: last.hash
            })
        );

        let read: Vec<(u64, DateTime<Utc>, AuditEntry)> = audit_entries(&store)
            .await
            .expect("entries")
            .into_iter()
            .map(|chained| (chained.seq, chained.at, chained.entry))
            .collect();
        let expected: Vec<_> = (0..4)
            .map(|number| (u64::from(number) + 1, minute(number), sample(number)))
            .collect();
        assert_eq!(read, expected);
        store.close().await;
    }

    /// A transaction that appends and rolls back takes its entry with it,
    /// head included; the next entry takes the free seq.
    #[tokio::test]
    async fn an_entry_commits_with_its_transaction_or_not_at_all() {
        let (_scratch, store) = scratch_store().await;
        append_entry(&store, sample(0)).await.expect("append");
        let mut transaction = store.pool().begin().await.expect("begin");
        append(&mut transaction, minute(1), &sample(1))
            .await
            .expect("append");
        transaction.rollback().await.expect("rollback");
        assert_eq!(append_entry(&store, sample(2)).await.expect("append"), 2);
        let kinds: Vec<AuditKind> = audit_entries(&store)
            .await
            .expect("entries")
            .into_iter()
            .map(|chained| chained.entry.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![AuditKind::ReferralAccepted, AuditKind::DeliveryFailed]
        );
        let rows = store.audit_rows().await.expect("rows");
        assert!(verify_rows(rows, None).expect("verify").intact);
        store.close().await;
    }

    #[tokio::test]
    async fn free_text_is_refused_and_nothing_is_appended() {
        let (_scratch, store) = scratch_store().await;
        let sentence =
            AuditEntry::new(AuditKind::ReferralRefused).reason("Camille Exemple refused");
        let Err(Error::Internal(message)) = append_entry(&store, sentence).await else {
            panic!("free text must be refused");
        };
        assert!(
            message.contains("reason") && !message.contains("Exemple"),
            "{message}"
        );
        let blank_path = AuditEntry::new(AuditKind::Erasure).paths(["person.first_name", ""]);
        let mut transaction = store.pool().begin().await.expect("begin");
        assert!(
            append(&mut transaction, minute(0), &blank_path)
                .await
                .is_err()
        );
        transaction.commit().await.expect("commit");
        assert!(audit_entries(&store).await.expect("entries").is_empty());
        store.close().await;
    }

    /// Many appends from two replicas at once, each in its own transaction:
    /// every seq taken once, one chain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_from_two_replicas_give_one_valid_chain() {
        let (scratch, first) = scratch_store().await;
        let second = PgStore::connect(&scratch.url)
            .await
            .expect("second replica");
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..16_u32 {
            let store = if task % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tasks.spawn(async move {
                let mut seqs = Vec::new();
                for number in 0..15 {
                    let entry = sample(task * 15 + number);
                    seqs.push(append_entry(&store, entry).await.expect("append"));
                }
                seqs
            });
        }
        let mut seqs = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            seqs.extend(joined.expect("task"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=240).collect::<Vec<u64>>());
        let report = verify_rows(first.audit_rows().await.expect("rows"), None).expect("verify");
        assert!(report.intact, "{report:?}");
        assert_eq!(report.entries, 240);
        first.close().await;
        second.close().await;
    }
}
