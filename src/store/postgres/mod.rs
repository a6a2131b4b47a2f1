//! The store on PostgreSQL, for several gateway replicas sharing one
//! database. It satisfies the same traits and methods as the SQLite store and
//! passes the same tests.
//!
//! # Concurrency
//! - Every write is one transaction, committed before the method answers
//!   (PostgreSQL's own group commit shares the WAL flushes of concurrent
//!   transactions).
//! - Outbox workers of every replica claim messages with `FOR UPDATE SKIP
//!   LOCKED` and a lease: a message is attempted by one worker at a time, and
//!   a replica killed mid-delivery leaves leases that expire, after which
//!   another replica takes the message.
//! - Idempotency rests on primary keys: two replicas accepting the same id
//!   at once cannot both insert it; the loser reads the winner's row and
//!   answers a replay or a conflict.
//! - The audit log stays one chain: every transaction that appends to it
//!   locks its head row (`audit_head`), last, just before it commits.
//!
//! # Layout
//! - [`consent`]: consent records and their events.
//! - [`referrals`]: referrals, status events, expiry candidates.
//! - [`outbox`]: claims, leases, outcomes, the inbox, destinations.
//! - [`audit`]: appending to the chain inside a transaction; reading it.

mod audit;
mod consent;
mod outbox;
mod referrals;

use std::borrow::Cow;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, SqlStr};

use crate::error::Error;

pub use audit::{append_entry, audit_entries};

/// The migrations, applied in order at start (`sqlx migrate` keeps track of
/// them in `_sqlx_migrations`).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "outbox claim index",
        include_str!("../../../migrations/postgres/0002_outbox_claim_index.sql"),
    ),
    (
        3,
        "drop unused indexes",
        include_str!("../../../migrations/postgres/0003_drop_unused_indexes.sql"),
    ),
    (
        4,
        "recipient reads",
        include_str!("../../../migrations/postgres/0004_recipient_reads.sql"),
    ),
];

/// The most connections a replica opens.
const MAX_CONNECTIONS: u32 = 16;

/// A store in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`) and
    /// applies the migrations not yet applied. Errors name the server, never
    /// a password.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let (store, server) = Self::connect_only(url).await?;
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations)
            .run(&store.pool)
            .await
            .map_err(|error| {
                Error::Internal(format!("store: migrating PostgreSQL at {server}: {error}"))
            })?;
        Ok(store)
    }

    /// Connects without migrating, for tools that only read (`audit verify`).
    pub async fn connect_existing(url: &str) -> Result<Self, Error> {
        Self::connect_only(url).await.map(|(store, _)| store)
    }

    async fn connect_only(url: &str) -> Result<(Self, String), Error> {
        let options: PgConnectOptions = url.parse().map_err(|error| Error::Config {
            file: "store".to_owned(),
            key: "store.postgres".to_owned(),
            detail: format!("not a PostgreSQL URL: {error}"),
        })?;
        let options = options.disable_statement_logging();
        let server = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("(default)")
        );
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|error| {
                Error::Internal(format!(
                    "store: cannot connect to PostgreSQL at {server}: {error}"
                ))
            })?;
        Ok((Self { pool }, server))
    }

    /// The connection pool.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The audit log's rows as stored, in order (one statement: one snapshot),
    /// for `passerelle audit verify` and `export`.
    pub async fn audit_rows(&self) -> Result<Vec<crate::audit::Row>, Error> {
        use sqlx::Row as _;
        let rows =
            sqlx::query("SELECT seq, at, entry, previous_hash, hash FROM audit_log ORDER BY seq")
                .fetch_all(&self.pool)
                .await
                .map_err(storage("reading the audit log"))?;
        rows.iter()
            .map(|row| {
                Ok(crate::audit::Row {
                    seq: row.try_get(0)?,
                    at: row.try_get(1)?,
                    entry: row.try_get(2)?,
                    previous_hash: row.try_get(3)?,
                    hash: row.try_get(4)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(storage("reading the audit log"))
    }

    /// Closes every connection once the queries in flight are done.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A store error, with what the store was doing; never a value.
pub(crate) fn storage(context: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |error| Error::Internal(format!("store: {context}: {error}"))
}

/// A time as the SQLite store writes it (RFC 3339, UTC, microseconds), for
/// the fields the store types carry as text.
pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The server tests create their scratch databases on, unless
/// `PASSERELLE_TEST_POSTGRES` names another (a URL to an existing database
/// whose user may create databases).
pub const TEST_SERVER: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of its own for one test, created empty and dropped (with its
/// connections) when the value is dropped, so that tests run side by side
/// and leave nothing behind.
#[derive(Debug)]
pub struct ScratchDatabase {
    /// The URL of the scratch database.
    pub url: String,
    name: String,
    server: String,
}

impl ScratchDatabase {
    /// Creates a database named `passerelle_test_<random>` on the test
    /// server. Fails, naming the server and what to do, when it cannot be
    /// reached: tests never skip silently.
    pub async fn create() -> Result<Self, Error> {
        let server =
            std::env::var("PASSERELLE_TEST_POSTGRES").unwrap_or_else(|_| TEST_SERVER.to_owned());
        let name = format!("passerelle_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&server).await.map_err(|error| {
            Error::Internal(format!(
                "the tests need PostgreSQL at {server} (set PASSERELLE_TEST_POSTGRES to another; see the README): {error}"
            ))
        })?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .map_err(storage("creating a scratch database"))?;
        let options: PgConnectOptions = server
            .parse()
            .map_err(storage("reading the test server URL"))?;
        let url = options.database(&name).to_url_lossy().to_string();
        Ok(Self { url, name, server })
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop runs outside any runtime (or inside one that must not block):
        // a thread of its own with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let mut admin = sqlx::PgConnection::connect(&server).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .ok()
            })
        });
        let _ = dropped.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_apply_once_and_replicas_connecting_together_agree() {
        let scratch = ScratchDatabase::create()
            .await
            .expect("PostgreSQL for tests");
        // Three replicas starting at once: sqlx's advisory lock serialises the migration.
        let (first, second, third) = tokio::join!(
            PgStore::connect(&scratch.url),
            PgStore::connect(&scratch.url),
            PgStore::connect(&scratch.url)
        );
        let store = first.expect("first replica");
        second.expect("second replica");
        third.expect("third replica");
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(store.pool())
            .await
            .expect("migrations table");
        assert_eq!(applied, MIGRATIONS.len() as i64);
        assert!(store.audit_rows().await.expect("audit rows").is_empty());
        sqlx::query("INSERT INTO audit_log (seq, at, entry, previous_hash, hash) VALUES (1, 'at', '{}', 'p', 'h')")
            .execute(store.pool())
            .await
            .expect("a raw row");
        for change in ["DELETE FROM audit_log", "UPDATE audit_log SET hash = 'x'"] {
            let refused = sqlx::query(change).execute(store.pool()).await;
            assert!(refused.is_err(), "the audit log accepted {change}");
        }
        store.close().await;
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named_without_its_password() {
        let error = PgStore::connect("postgres://gateway:s3cret@127.0.0.1:1/passerelle")
            .await
            .expect_err("nothing listens on port 1");
        let text = error.to_string();
        assert!(text.contains("127.0.0.1:1/passerelle"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }
}
