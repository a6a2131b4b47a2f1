//! The SQLite store: one database file in WAL mode with `synchronous=FULL`,
//! so that a write acknowledged is a write on disk.
//!
//! # Write path: one writer, group commit
//! One thread owns the only write connection. Writers send it jobs over a
//! channel and await a oneshot reply. The thread takes every job queued at
//! that moment (up to [`MAX_BATCH`]), runs each inside its own savepoint of
//! one transaction, commits once and only then answers them all: N concurrent
//! writers cost about one fsync instead of N, and a job that fails rolls back
//! its savepoint without spoiling the others. Under load it starts a commit
//! at most every `COMMIT_INTERVAL` (1 ms), so that each gathers more jobs;
//! a job that comes after a quiet moment is committed at once.
//!
//! # Checkpoints
//! Committed pages are copied from the WAL into the database file by a thread
//! of its own, woken by commits and at most once per [`CHECKPOINT_PAUSE`]:
//! the writer would otherwise stop every thousand pages to copy and fsync
//! them while writers wait. Its checkpoints are PASSIVE (they never wait for
//! the writer or the readers); one that could not copy the whole log is
//! tried again after the pause, commits or not. Should they fall behind, or
//! never find the log complete so that it can start over, the writer
//! checkpoints itself past [`WRITER_CHECKPOINT_PAGES`], which bounds the WAL.
//!
//! # Read path
//! Reads run on separate connections (a small pool), each in its own read
//! transaction: in WAL mode they see the last commit and never wait for the
//! writer. They are point lookups by primary key, short enough to run inline
//! in the calling task.
//!
//! Every accepted referral reads its consent record. Records are immutable
//! and their events append-only (triggers forbid the rest), so the records
//! read are kept decoded in memory with their number of events, and a read
//! asks the file only how many events the record has now: the same number
//! means the cached record is the stored one, whoever wrote the file (another
//! process such as `passerelle consent` included); another number reloads it.
//!
//! # Migrations
//! `migrations/sqlite/NNNN_name.sql`, embedded in the binary, applied in order
//! at open; the applied versions are kept in `schema_migrations`. A file
//! migrated by a newer Passerelle is refused rather than misread.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use crate::consent::record::check_next_event;
use crate::consent::{ConsentEvent, ConsentEventKind, ConsentRecord, RecordId};
use crate::error::Error;
use crate::model::ids::Siret;

use super::{ConsentStore, Stored};

/// The most jobs committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Jobs that may wait for the writer before senders wait for room.
const QUEUE: usize = 4096;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 4;
/// How long a connection waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest time between two checkpoints of the checkpointer thread.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(100);
/// WAL pages past which the writer checkpoints itself (about 40 MB).
const WRITER_CHECKPOINT_PAGES: i64 = 10_000;
/// Consent records kept decoded; past this many the cache starts over.
const MAX_CACHED_RECORDS: usize = 4096;
/// The shortest time between the starts of two commits. Each commit writes
/// every page it changed into the WAL, the shared ones (the ends of the
/// audit log, the outbox and their indexes) included, and syncs it: under a
/// moderate load, committing as soon as one job is there wrote about 26 pages
/// per commit for 4 jobs. Waiting at most this long gathers more jobs per
/// commit; a job arriving after a quiet moment is committed at once.
const COMMIT_INTERVAL: Duration = Duration::from_millis(1);
/// Prepared statements each connection keeps (`prepare_cached`). More than
/// the store's distinct statements (about 40): rusqlite's default of 16 is
/// fewer than the writer alone runs under load, and an evicted statement is
/// parsed and planned again at its next use.
const STATEMENT_CACHE: usize = 64;

/// The migrations, in order: version, name, SQL.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_consent",
        include_str!("../../migrations/sqlite/0001_consent.sql"),
    ),
    (
        2,
        "0002_audit",
        include_str!("../../migrations/sqlite/0002_audit.sql"),
    ),
    (
        3,
        "0003_referrals",
        include_str!("../../migrations/sqlite/0003_referrals.sql"),
    ),
    (
        4,
        "0004_delivery",
        include_str!("../../migrations/sqlite/0004_delivery.sql"),
    ),
    (
        5,
        "0005_outbox_claim_index",
        include_str!("../../migrations/sqlite/0005_outbox_claim_index.sql"),
    ),
    (
        6,
        "0006_lean_accept_path",
        include_str!("../../migrations/sqlite/0006_lean_accept_path.sql"),
    ),
    (
        7,
        "0007_outbox_by_referral_row",
        include_str!("../../migrations/sqlite/0007_outbox_by_referral_row.sql"),
    ),
    (
        8,
        "0008_referral_states",
        include_str!("../../migrations/sqlite/0008_referral_states.sql"),
    ),
    (
        9,
        "0009_recipient_reads",
        include_str!("../../migrations/sqlite/0009_recipient_reads.sql"),
    ),
];

/// A store in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    jobs: mpsc::Sender<Box<dyn WriteJob>>,
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    records: Mutex<HashMap<RecordId, ConsentRecord>>,
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("commits", &self.commits())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the store at `path`, applies the
    /// migrations and starts the writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let mut connection = Connection::open(&path).map_err(|error| Error::Io {
            context: format!("opening the store {}", path.display()),
            source: std::io::Error::other(error),
        })?;
        configure_writer(&connection)?;
        migrate(&mut connection, MIGRATIONS)?;
        let checkpoints = open_checkpointer(&path)?;
        connection
            .pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
            .map_err(storage("setting the writer's checkpoint threshold"))?;
        let (wake_checkpointer, commits_to_copy) = std::sync::mpsc::sync_channel(1);
        let checkpointer = std::thread::Builder::new()
            .name("passerelle-store-checkpointer".to_owned())
            .spawn(move || run_checkpointer(&checkpoints, &commits_to_copy))
            .map_err(|source| Error::Io {
                context: "starting the store checkpointer thread".to_owned(),
                source,
            })?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&commits);
        let writer = std::thread::Builder::new()
            .name("passerelle-store-writer".to_owned())
            .spawn(move || run_writer(&connection, queue, &counter, &wake_checkpointer))
            .map_err(|source| Error::Io {
                context: "starting the store writer thread".to_owned(),
                source,
            })?;
        Ok(Self {
            path,
            jobs,
            writer: Some(writer),
            checkpointer: Some(checkpointer),
            readers: Mutex::new(Vec::new()),
            records: Mutex::new(HashMap::new()),
            commits,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Transactions the writer has committed since the store was opened (for
    /// tests and metrics: fewer commits than writes is group commit at work).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Stops the writer once the jobs already queued are committed, and waits
    /// for it and the checkpointer. Dropping the store also stops them,
    /// without waiting.
    pub fn close(mut self) -> Result<(), Error> {
        let writer = self.writer.take();
        let checkpointer = self.checkpointer.take();
        drop(self);
        for (thread, name) in [(writer, "writer"), (checkpointer, "checkpointer")] {
            if let Some(thread) = thread {
                thread
                    .join()
                    .map_err(|_| Error::Internal(format!("the store {name} thread panicked")))?;
            }
        }
        Ok(())
    }

    /// Runs `work` on the write connection inside the next group commit and
    /// answers once the transaction holding it is durable. An error from
    /// `work` rolls back its own changes only.
    ///
    /// `work` may run twice: if another job of the same commit fails after
    /// writing, the transaction is rolled back and every job runs again, each
    /// in a savepoint of its own (see [`commit_batch`]). It must do nothing
    /// but its reads and writes on `connection`.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            work,
            result: None,
            reply,
        };
        self.jobs
            .send(Box::new(job))
            .await
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }

    /// Runs `work` in a read transaction on a pooled read connection.
    pub(crate) fn read<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let pooled = self.readers.lock().ok().and_then(|mut pool| pool.pop());
        let connection = match pooled {
            Some(connection) => connection,
            None => open_reader(&self.path)?,
        };
        let result = connection
            .unchecked_transaction()
            .map_err(storage("starting a read"))
            .and_then(|transaction| work(&transaction));
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < MAX_IDLE_READERS
        {
            pool.push(connection);
        }
        result
    }
}

impl ConsentStore for SqliteStore {
    async fn put_record(&self, record: ConsentRecord) -> Result<Stored, Error> {
        record.check()?;
        self.write(move |connection| put(connection, &record)).await
    }

    fn append_event(
        &self,
        record_id: RecordId,
        event: ConsentEvent,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        self.write(move |connection| append(connection, record_id, &event))
    }

    async fn record(&self, record_id: RecordId) -> Result<Option<ConsentRecord>, Error> {
        self.read(|connection| self.record_in(connection, record_id))
    }
}

impl SqliteStore {
    /// The consent record as this store last read it, without a read
    /// transaction: it may lack events appended since by another process
    /// (`passerelle consent event` on the same file). For a decision whose
    /// accept checks the count ([`NewReferral::consent_seen`](super::NewReferral)).
    pub(crate) async fn recent_record(
        &self,
        record_id: RecordId,
    ) -> Result<Option<ConsentRecord>, Error> {
        let cached = self
            .records
            .lock()
            .ok()
            .and_then(|records| records.get(&record_id).cloned());
        match cached {
            Some(record) => Ok(Some(record)),
            None => self.record(record_id).await,
        }
    }

    /// The consent record, read in the caller's read transaction: the
    /// decoded copy kept by the store while its events are all there is,
    /// else loaded (and kept).
    pub(crate) fn record_in(
        &self,
        connection: &Connection,
        record_id: RecordId,
    ) -> Result<Option<ConsentRecord>, Error> {
        let cached = self
            .records
            .lock()
            .ok()
            .and_then(|records| records.get(&record_id).cloned());
        if let Some(record) = cached
            && event_count(connection, record_id)? == Some(record.events.len())
        {
            return Ok(Some(record));
        }
        let record = load(connection, record_id)?;
        if let (Some(record), Ok(mut records)) = (&record, self.records.lock()) {
            if records.len() >= MAX_CACHED_RECORDS {
                records.clear();
            }
            records.insert(record_id, record.clone());
        }
        Ok(record)
    }
}

fn configure_writer(connection: &Connection) -> Result<(), Error> {
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(storage("setting the busy timeout"))?;
    let mode: String = connection
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(storage("switching to WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Internal(format!(
            "store: the database stays in {mode} journal mode; WAL is required"
        )));
    }
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(storage("setting synchronous=FULL"))?;
    // Each job runs in a savepoint, whose sub-journal would otherwise be a
    // temporary file written for every job.
    connection
        .pragma_update(None, "temp_store", "MEMORY")
        .map_err(storage("setting temp_store=MEMORY"))
}

fn open_checkpointer(path: &Path) -> Result<Connection, Error> {
    let connection = Connection::open(path).map_err(|error| Error::Io {
        context: format!("opening the store {}", path.display()),
        source: std::io::Error::other(error),
    })?;
    // FULL: the database file is synced before the log may start over.
    connection
        .pragma_update(None, "synchronous", "FULL")
        .map_err(storage("setting synchronous=FULL"))?;
    Ok(connection)
}

/// Copies committed pages from the WAL into the database file: woken by the
/// writer after its commits, at most once per [`CHECKPOINT_PAUSE`]; returns
/// when the writer stops (SQLite checkpoints once more as the last connection
/// closes).
fn run_checkpointer(connection: &Connection, commits: &std::sync::mpsc::Receiver<()>) {
    let mut pending = commits.recv().is_ok();
    while pending {
        // PASSIVE never waits: what it cannot copy now is copied after the
        // pause, whether or not more commits come.
        pending = checkpoint_passive(connection);
        let resume = Instant::now() + CHECKPOINT_PAUSE;
        loop {
            match commits.recv_timeout(resume.saturating_duration_since(Instant::now())) {
                Ok(()) => pending = true,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if !pending {
            pending = commits.recv().is_ok();
        }
    }
}

/// Runs one PASSIVE checkpoint; true when part of the WAL is still to copy.
/// A checkpoint running beside a commit, or behind a reader's older
/// snapshot, copies only part of the log: without another try, the rest
/// would wait for the next commit, however late. A failure is not tried
/// again before the next commit: the writer's own threshold bounds the log.
fn checkpoint_passive(connection: &Connection) -> bool {
    // The row is (busy, frames in the log, frames copied).
    match connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    }) {
        Ok((busy, log, copied)) => busy != 0 || copied < log,
        Err(error) if error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => true,
        Err(error) => {
            tracing::warn!(%error, "store: a checkpoint failed; the writer checkpoints past its threshold");
            false
        }
    }
}

fn open_reader(path: &Path) -> Result<Connection, Error> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| Error::Io {
        context: format!("opening the store {}", path.display()),
        source: std::io::Error::other(error),
    })?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(storage("setting the busy timeout"))?;
    connection
        .pragma_update(None, "query_only", true)
        .map_err(storage("making a read connection"))?;
    connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(connection)
}

/// Applies the migrations not applied yet, each in its own transaction, with
/// foreign keys off so that a migration may rebuild a table others refer to
/// (SQLite's documented procedure); each checks them before it commits.
fn migrate(connection: &mut Connection, migrations: &[(i64, &str, &str)]) -> Result<(), Error> {
    connection
        .pragma_update(None, "foreign_keys", false)
        .map_err(storage("disabling foreign keys for the migrations"))?;
    apply_migrations(connection, migrations)?;
    connection
        .pragma_update(None, "foreign_keys", true)
        .map_err(storage("enabling foreign keys"))
}

fn apply_migrations(
    connection: &mut Connection,
    migrations: &[(i64, &str, &str)],
) -> Result<(), Error> {
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY NOT NULL,
                name TEXT NOT NULL,
                applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
            ) STRICT",
        )
        .map_err(storage("creating schema_migrations"))?;
    let known = migrations.last().map_or(0, |(version, _, _)| *version);
    for (version, name, sql) in migrations {
        // IMMEDIATE: two processes opening a new file at once apply each migration once.
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(storage("starting a migration"))?;
        let applied: bool = transaction
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = ?1)",
                [version],
                |row| row.get(0),
            )
            .map_err(storage("reading schema_migrations"))?;
        if !applied {
            transaction.execute_batch(sql).map_err(|error| {
                Error::Internal(format!("store: applying migration {name}: {error}"))
            })?;
            transaction
                .execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
                    params![version, name],
                )
                .map_err(storage("recording a migration"))?;
            let broken: Option<String> = transaction
                .query_row("PRAGMA foreign_key_check", [], |row| row.get(0))
                .optional()
                .map_err(storage("checking foreign keys after a migration"))?;
            if let Some(table) = broken {
                return Err(Error::Internal(format!(
                    "store: migration {name} leaves rows of {table} referring to nothing"
                )));
            }
        }
        transaction
            .commit()
            .map_err(storage("committing a migration"))?;
    }
    let newest: i64 = connection
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(storage("reading schema_migrations"))?;
    if newest > known {
        return Err(Error::Internal(format!(
            "store: the database is at schema version {newest}, newer than this Passerelle knows ({known}); upgrade Passerelle"
        )));
    }
    Ok(())
}

/// A unit of work for the writer thread.
trait WriteJob: Send {
    /// Runs inside the batch's transaction: in a savepoint of its own when
    /// `isolated`, or straight in the transaction. Straight, it answers true
    /// when it failed after changing something (or the transaction is gone):
    /// the transaction then holds a part of a failed job, which only a
    /// rollback of the whole can undo.
    fn run(&mut self, connection: &Connection, isolated: bool) -> bool;
    /// Answers the caller once the batch's fate is known (`None`: committed).
    fn finish(self: Box<Self>, commit_failure: Option<&str>);
}

struct Job<T, F> {
    work: F,
    result: Option<Result<T, Error>>,
    reply: oneshot::Sender<Result<T, Error>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnMut(&Connection) -> Result<T, Error> + Send,
{
    fn run(&mut self, connection: &Connection, isolated: bool) -> bool {
        if isolated {
            self.result = Some(in_savepoint(connection, &mut self.work));
            return false;
        }
        let changes = connection.total_changes();
        let result = guarded(connection, &mut self.work);
        // A statement that fails undoes its own changes and is not counted:
        // a job that failed with the count unchanged left nothing behind.
        let spoiled = result.is_err()
            && (connection.total_changes() != changes || connection.is_autocommit());
        self.result = Some(result);
        spoiled
    }

    fn finish(self: Box<Self>, commit_failure: Option<&str>) {
        let Self {
            work,
            result,
            reply,
        } = *self;
        // What the job holds goes before its caller hears the answer.
        drop(work);
        let answer = match (result, commit_failure) {
            // The job's own refusal is true whatever became of the batch.
            (Some(Err(error)), _) => Err(error),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(failure)) => Err(Error::Internal(format!(
                "store: the transaction could not be committed: {failure}"
            ))),
            (None, None) => Err(Error::Internal(
                "store: a write job was never run".to_owned(),
            )),
        };
        // The caller may have stopped waiting; the write stands regardless.
        let _ = reply.send(answer);
    }
}

/// Runs `work`; a panic is its error, not the writer's end (and every other
/// caller's).
fn guarded<T>(
    connection: &Connection,
    work: &mut impl FnMut(&Connection) -> Result<T, Error>,
) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(|| work(connection)))
        .unwrap_or_else(|_| Err(Error::Internal("store: a write job panicked".to_owned())))
}

fn in_savepoint<T>(
    connection: &Connection,
    work: &mut impl FnMut(&Connection) -> Result<T, Error>,
) -> Result<T, Error> {
    // Cached statements: parsed once per connection, not once per job.
    let run = |sql: &str| {
        connection
            .prepare_cached(sql)
            .and_then(|mut statement| statement.execute([]))
            .map(|_| ())
    };
    run("SAVEPOINT job").map_err(storage("opening a savepoint"))?;
    let result = guarded(connection, work);
    if result.is_err() {
        run("ROLLBACK TO job").map_err(storage("rolling a savepoint back"))?;
    }
    run("RELEASE job").map_err(storage("closing a savepoint"))?;
    result
}

fn run_writer(
    connection: &Connection,
    mut queue: mpsc::Receiver<Box<dyn WriteJob>>,
    commits: &AtomicU64,
    wake_checkpointer: &SyncSender<()>,
) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    let mut last_commit: Option<Instant> = None;
    while let Some(first) = queue.blocking_recv() {
        // Under load, the jobs arriving within COMMIT_INTERVAL of the last
        // commit join this one; an isolated job is committed at once.
        if let Some(next) = last_commit.map(|at| at + COMMIT_INTERVAL) {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        last_commit = Some(Instant::now());
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let failure = match commit_batch(connection, &mut batch) {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
                // Full: the checkpointer is already due to run.
                let _ = wake_checkpointer.try_send(());
                None
            }
            Err(error) => Some(error.to_string()),
        };
        for job in batch.drain(..) {
            job.finish(failure.as_deref());
        }
    }
}

/// Runs the batch's jobs in one transaction and commits it. The jobs run
/// straight in the transaction: a savepoint per job copied every page it
/// changed into a sub-journal first, the pages the jobs before it in the
/// batch had just written included (6% of the accept path's CPU). A job
/// refused before it writes (most refusals: a reused id, a changed consent
/// record) leaves nothing to undo. Only when one fails after writing is the
/// whole rolled back and every job run again, each in its own savepoint, so
/// that the others still commit without it.
fn commit_batch(
    connection: &Connection,
    batch: &mut [Box<dyn WriteJob>],
) -> Result<(), rusqlite::Error> {
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let spoiled = batch.iter_mut().any(|job| job.run(connection, false));
    if spoiled {
        if !connection.is_autocommit() {
            connection.execute_batch("ROLLBACK")?;
        }
        connection.execute_batch("BEGIN IMMEDIATE")?;
        for job in batch.iter_mut() {
            job.run(connection, true);
        }
    }
    if let Err(error) = connection.execute_batch("COMMIT") {
        let _ = connection.execute_batch("ROLLBACK");
        return Err(error);
    }
    Ok(())
}

fn put(connection: &Connection, record: &ConsentRecord) -> Result<Stored, Error> {
    let Some(stored) = load(connection, record.record_id)? else {
        let id = record.record_id.to_string();
        connection
            .prepare_cached("INSERT INTO consent_records (record_id, header) VALUES (?1, ?2)")
            .and_then(|mut insert| insert.execute(params![id, header_json(record)?]))
            .map_err(storage("inserting a consent record"))?;
        for (seq, event) in (0_i64..).zip(&record.events) {
            insert_event(connection, &id, seq, event)?;
        }
        return Ok(Stored::Inserted);
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

fn append(connection: &Connection, record_id: RecordId, event: &ConsentEvent) -> Result<(), Error> {
    let id = record_id.to_string();
    let exists: bool = connection
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM consent_records WHERE record_id = ?1)")
        .and_then(|mut query| query.query_row([&id], |row| row.get(0)))
        .map_err(storage("looking a consent record up"))?;
    if !exists {
        return Err(Error::NotFound(format!("consent record {record_id}")));
    }
    let last: Option<(i64, String)> = connection
        .prepare_cached(
            "SELECT seq, at FROM consent_events WHERE record_id = ?1 ORDER BY seq DESC LIMIT 1",
        )
        .and_then(|mut query| {
            query
                .query_row([&id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(storage("reading the last consent event"))?;
    let (next, last_at) = match last {
        Some((seq, at)) => (seq + 1, Some(parse_time(&at, record_id)?)),
        None => (0, None),
    };
    check_next_event(last_at, event)?;
    insert_event(connection, &id, next, event)
}

fn insert_event(
    connection: &Connection,
    record_id: &str,
    seq: i64,
    event: &ConsentEvent,
) -> Result<(), Error> {
    connection
        .prepare_cached(
            "INSERT INTO consent_events (record_id, seq, kind, at, recorded_by) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut insert| {
            insert.execute(params![
                record_id,
                seq,
                event.kind.wire_name(),
                event.at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                event.recorded_by.as_str(),
            ])
        })
        .map_err(storage("appending a consent event"))?;
    Ok(())
}

/// How many events the record has, or `None` if it is not stored.
pub(super) fn event_count(
    connection: &Connection,
    record_id: RecordId,
) -> Result<Option<usize>, Error> {
    connection
        .prepare_cached(
            "SELECT (SELECT count(*) FROM consent_events WHERE record_id = ?1)
             FROM consent_records WHERE record_id = ?1",
        )
        .and_then(|mut query| {
            query
                .query_row([record_id.to_string()], |row| row.get::<_, i64>(0))
                .optional()
        })
        .map_err(storage("counting consent events"))
        .map(|count| count.and_then(|count| usize::try_from(count).ok()))
}

/// Reads a record and its events (call inside a transaction for a consistent view).
fn load(connection: &Connection, record_id: RecordId) -> Result<Option<ConsentRecord>, Error> {
    let id = record_id.to_string();
    let header: Option<String> = connection
        .prepare_cached("SELECT header FROM consent_records WHERE record_id = ?1")
        .and_then(|mut query| query.query_row([&id], |row| row.get(0)).optional())
        .map_err(storage("reading a consent record"))?;
    let Some(header) = header else {
        return Ok(None);
    };
    let mut record: ConsentRecord = serde_json::from_str(&header).map_err(|_| {
        Error::Internal(format!(
            "store: the stored consent record {record_id} no longer reads as a record"
        ))
    })?;
    let mut query = connection
        .prepare_cached(
            "SELECT kind, at, recorded_by FROM consent_events WHERE record_id = ?1 ORDER BY seq",
        )
        .map_err(storage("reading consent events"))?;
    let rows = query
        .query_map([&id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .map_err(storage("reading consent events"))?;
    for row in rows {
        let (kind, at, recorded_by) = row.map_err(storage("reading consent events"))?;
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

fn header_json(record: &ConsentRecord) -> Result<String, rusqlite::Error> {
    serde_json::to_string(&header(record))
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))
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

pub(super) fn storage(context: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |error| Error::Internal(format!("store: {context}: {error}"))
}

fn writer_stopped() -> Error {
    Error::Internal("store: the writer thread has stopped".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs queued while the writer is busy are committed together: one
    /// transaction for all of them, not one each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_queued_behind_a_busy_writer_share_one_commit() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(SqliteStore::open(directory.path().join("store.db")).expect("open"));
        let (release, blocker) = hold_writer(&store).await;
        let before = store.commits();
        let writes: Vec<_> = (0..100_i64)
            .map(|number| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .write(move |connection| {
                            connection
                                .execute("CREATE TABLE IF NOT EXISTS probe (n INTEGER) STRICT", [])
                                .and_then(|_| {
                                    connection.execute("INSERT INTO probe VALUES (?1)", [number])
                                })
                                .map_err(storage("probe"))
                        })
                        .await
                })
            })
            .collect();
        // Every write is queued before the writer is let go.
        while store.jobs.capacity() > QUEUE - 100 {
            tokio::task::yield_now().await;
        }
        release.send(()).expect("release the blocker");
        blocker.await.expect("joined").expect("the blocker commits");
        for write in writes {
            write.await.expect("joined").expect("the write commits");
        }
        // The blocker's batch, then one batch for the 100 queued writes.
        assert_eq!(store.commits() - before, 2);
        let count: i64 = store
            .read(|connection| {
                connection
                    .query_row("SELECT COUNT(*) FROM probe", [], |row| row.get(0))
                    .map_err(storage("count"))
            })
            .expect("count");
        assert_eq!(count, 100);
    }

    /// A failing job rolls back its own writes; the others in its batch commit.
    #[tokio::test]
    async fn a_failing_job_does_not_spoil_its_batch() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = probe_store(&directory.path().join("store.db")).await;
        let failing = store.write(|connection| {
            connection
                .execute("INSERT INTO probe VALUES (1)", [])
                .map_err(storage("probe"))?;
            Err::<(), _>(Error::Conflict("refused on purpose".to_owned()))
        });
        let succeeding = store.write(|connection| {
            connection
                .execute("INSERT INTO probe VALUES (2)", [])
                .map_err(storage("probe"))
        });
        let (failing, succeeding) = tokio::join!(failing, succeeding);
        assert!(matches!(failing, Err(Error::Conflict(_))));
        assert_eq!(succeeding.expect("commits"), 1);
        assert_eq!(probe_values(&store), vec![2]);
        store.close().expect("closes");
    }

    /// Holds the writer in a job of its own until the answer is dropped or
    /// sent, so that the jobs queued meanwhile share the next batch.
    async fn hold_writer(
        store: &Arc<SqliteStore>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), Error>>,
    ) {
        let (started, wait_started) = std::sync::mpsc::channel();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                store
                    .write(move |_| {
                        let _ = started.send(());
                        let _ = wait_release.recv();
                        Ok(())
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || wait_started.recv())
            .await
            .expect("joined")
            .expect("the blocker runs");
        (release, blocker)
    }

    /// A store with an empty table `probe`.
    async fn probe_store(path: &Path) -> SqliteStore {
        store_with(path, "CREATE TABLE probe (n INTEGER) STRICT").await
    }

    /// A store with the tables of `schema` besides its own.
    async fn store_with(path: &Path, schema: &'static str) -> SqliteStore {
        let store = SqliteStore::open(path).expect("open");
        store
            .write(move |connection| {
                connection
                    .execute_batch(schema)
                    .map_err(storage("a test table"))
            })
            .await
            .expect("a test table");
        store
    }

    fn probe_values(store: &SqliteStore) -> Vec<i64> {
        store
            .read(|connection| {
                let mut query = connection
                    .prepare("SELECT n FROM probe ORDER BY n")
                    .map_err(storage("probe"))?;
                let rows = query
                    .query_map([], |row| row.get(0))
                    .map_err(storage("probe"))?;
                rows.collect::<Result<_, _>>().map_err(storage("probe"))
            })
            .expect("read")
    }

    type ProbeJob = Box<dyn FnMut(&Connection) -> Result<usize, Error> + Send>;

    /// A job inserting `n` that counts its runs in `runs`.
    fn counted_insert(
        n: i64,
        runs: &Arc<std::sync::atomic::AtomicUsize>,
    ) -> impl FnMut(&Connection) -> Result<usize, Error> + Send + 'static {
        let runs = Arc::clone(runs);
        move |connection| {
            runs.fetch_add(1, Ordering::SeqCst);
            connection
                .execute("INSERT INTO probe VALUES (?1)", [n])
                .map_err(storage("probe"))
        }
    }

    /// In one batch, jobs that fail after writing (an error, a panic) leave
    /// nothing behind, and the jobs before and after them commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_failing_after_writing_are_undone_alone_in_a_shared_batch() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(probe_store(&directory.path().join("store.db")).await);
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, blocker) = hold_writer(&store).await;
        let before = store.commits();
        let spawn_write = |work: ProbeJob| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.write(work).await })
        };
        let first = spawn_write(Box::new(counted_insert(1, &runs)));
        // Let each job queue in this order.
        while store.jobs.capacity() > QUEUE - 1 {
            tokio::task::yield_now().await;
        }
        let failing = spawn_write(Box::new(|connection: &Connection| {
            connection
                .execute("INSERT INTO probe VALUES (2)", [])
                .map_err(storage("probe"))?;
            Err(Error::Conflict("refused on purpose".to_owned()))
        }));
        while store.jobs.capacity() > QUEUE - 2 {
            tokio::task::yield_now().await;
        }
        let panicking = spawn_write(Box::new(|connection: &Connection| {
            connection
                .execute("INSERT INTO probe VALUES (3)", [])
                .map_err(storage("probe"))?;
            panic!("a job that panics after writing");
        }));
        while store.jobs.capacity() > QUEUE - 3 {
            tokio::task::yield_now().await;
        }
        let last = spawn_write(Box::new(counted_insert(4, &runs)));
        while store.jobs.capacity() > QUEUE - 4 {
            tokio::task::yield_now().await;
        }
        release.send(()).expect("release the blocker");
        blocker.await.expect("joined").expect("the blocker commits");
        assert_eq!(first.await.expect("joined").expect("commits"), 1);
        assert!(matches!(
            failing.await.expect("joined"),
            Err(Error::Conflict(_))
        ));
        assert!(matches!(
            panicking.await.expect("joined"),
            Err(Error::Internal(message)) if message.contains("panicked")
        ));
        assert_eq!(last.await.expect("joined").expect("commits"), 1);
        assert_eq!(probe_values(&store), vec![1, 4]);
        // One batch; the first job ran again after the rollback, the last
        // only in the second pass (the first stopped at the failing job).
        assert_eq!(store.commits() - before, 2);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    /// A job refused before it writes leaves nothing to undo: no job of its
    /// batch runs twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_before_writing_runs_no_job_twice() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let store = Arc::new(probe_store(&directory.path().join("store.db")).await);
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (release, blocker) = hold_writer(&store).await;
        let first = {
            let store = Arc::clone(&store);
            let work = counted_insert(1, &runs);
            tokio::spawn(async move { store.write(work).await })
        };
        while store.jobs.capacity() > QUEUE - 1 {
            tokio::task::yield_now().await;
        }
        let refused = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .write(|connection| {
                        // A failed statement is undone by SQLite itself.
                        connection
                            .execute("INSERT INTO probe VALUES ('not a number')", [])
                            .map_err(storage("probe"))
                    })
                    .await
            })
        };
        while store.jobs.capacity() > QUEUE - 2 {
            tokio::task::yield_now().await;
        }
        let last = {
            let store = Arc::clone(&store);
            let work = counted_insert(3, &runs);
            tokio::spawn(async move { store.write(work).await })
        };
        while store.jobs.capacity() > QUEUE - 3 {
            tokio::task::yield_now().await;
        }
        release.send(()).expect("release the blocker");
        blocker.await.expect("joined").expect("the blocker commits");
        first.await.expect("joined").expect("commits");
        assert!(refused.await.expect("joined").is_err());
        last.await.expect("joined").expect("commits");
        assert_eq!(probe_values(&store), vec![1, 3]);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    /// The size of the database once every commit is copied into its file:
    /// its pages as a new connection sees them through the WAL.
    fn checkpointed_size(path: &Path) -> u64 {
        let connection = Connection::open(path).expect("a probe");
        let (pages, page_size): (i64, i64) = connection
            .query_row(
                "SELECT (SELECT page_count FROM pragma_page_count), (SELECT page_size FROM pragma_page_size)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("the page count");
        u64::try_from(pages * page_size).expect("a size")
    }

    /// A store with an empty table for rows of 16,000 characters.
    async fn filler_store(path: &Path) -> SqliteStore {
        store_with(path, "CREATE TABLE filler (text TEXT NOT NULL)").await
    }

    /// Commits `count` rows of 16,000 characters, one per commit.
    async fn insert_filler(store: &SqliteStore, count: usize) {
        for _ in 0..count {
            store
                .write(|connection| {
                    connection
                        .execute(
                            "INSERT INTO filler (text) VALUES (?1)",
                            ["x".repeat(16_000)],
                        )
                        .map(|_| ())
                        .map_err(storage("filler"))
                })
                .await
                .expect("a row");
        }
    }

    /// Waits up to 10 s for the database file to hold every commit.
    async fn wait_for_checkpoint(path: &Path, since: &str) {
        let file_size = || std::fs::metadata(path).map_or(0, |metadata| metadata.len());
        let expected = checkpointed_size(path);
        let deadline = Instant::now() + Duration::from_secs(10);
        while file_size() < expected {
            assert!(
                Instant::now() < deadline,
                "the database file holds {} of its {expected} bytes 10 s after {since}",
                file_size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Committed pages reach the database file without the writer copying
    /// them: some 200 pages, far below the writer's own threshold, are
    /// checkpointed by the checkpointer thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_checkpointer_copies_commits_into_the_database_file() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("store.db");
        let store = filler_store(&path).await;
        insert_filler(&store, 50).await;
        wait_for_checkpoint(&path, "the commits").await;
        store.close().expect("close");
    }

    /// A reader's snapshot keeps the checkpointer from copying the commits
    /// made after it; once the reader is done, the rest is copied although
    /// no commit comes to wake the checkpointer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_checkpoint_held_back_by_a_reader_is_finished_without_another_commit() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("store.db");
        let store = filler_store(&path).await;
        let reader = Connection::open(&path).expect("a reader");
        reader.execute_batch("BEGIN").expect("a read transaction");
        let rows: i64 = reader
            .query_row("SELECT count(*) FROM filler", [], |row| row.get(0))
            .expect("a snapshot");
        assert_eq!(rows, 0);
        insert_filler(&store, 50).await;
        // The checkpointer runs, woken by these commits, while the snapshot
        // holds: the pages committed after it stay in the WAL.
        tokio::time::sleep(CHECKPOINT_PAUSE * 3).await;
        let held_back = std::fs::metadata(&path).expect("the file").len();
        assert!(
            held_back < checkpointed_size(&path),
            "the commits after the reader's snapshot were copied while it was open"
        );
        reader.execute_batch("COMMIT").expect("the reader is done");
        wait_for_checkpoint(&path, "the reader was done").await;
        drop(reader);
        store.close().expect("close");
    }

    #[test]
    fn reopening_applies_no_migration_twice() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("store.db");
        SqliteStore::open(&path)
            .expect("open")
            .close()
            .expect("close");
        let store = SqliteStore::open(&path).expect("reopen");
        let versions: Vec<i64> = store
            .read(|connection| {
                let mut query = connection
                    .prepare("SELECT version FROM schema_migrations ORDER BY version")
                    .map_err(storage("versions"))?;
                let rows = query
                    .query_map([], |row| row.get(0))
                    .map_err(storage("versions"))?;
                rows.collect::<Result<_, _>>().map_err(storage("versions"))
            })
            .expect("read");
        assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let mode: String = store
            .read(|connection| {
                connection
                    .query_row("PRAGMA journal_mode", [], |row| row.get(0))
                    .map_err(storage("mode"))
            })
            .expect("mode");
        assert_eq!(mode, "wal");
    }

    /// Migration 0006 rebuilds the referrals, the outbox and the audit log: a
    /// store written by the previous version keeps every row, its outbox
    /// counter, its audit chain and its guards, and a referral's message reads
    /// its payload from the referral.
    #[tokio::test]
    async fn the_lean_rebuild_keeps_what_an_older_store_holds() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("store.db");
        let mut older = Connection::open(&path).expect("raw open");
        configure_writer(&older).expect("configure");
        migrate(&mut older, &MIGRATIONS[..5]).expect("migrations 1 to 5");
        older
            .execute_batch(
                r#"INSERT INTO referrals (referral_id, sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, state, accepted_at)
                   VALUES ('r-1', 'konexio', 'france-travail', 'f1', 'canonical-v2', '{"who":"Jeanne Testmigration"}', '{"who":"pseudonym-1"}', '{}', 'c-1', 'queued', '2026-01-01T00:00:00.000000Z'),
                          ('r-2', 'konexio', 'france-travail', 'f2', 'canonical-v2', '{"who":"Paul Testmigration"}', '{"who":"pseudonym-2"}', '{}', 'c-1', 'queued', '2026-01-01T00:00:01.000000Z');
                   INSERT INTO outbox (message_id, kind, referral_id, destination, payload, next_attempt_at, created_at, updated_at)
                   VALUES ('r-1', 'referral', 'r-1', 'france-travail', '{"who":"pseudonym-1"}', 't', 't', 't'),
                          ('r-2', 'referral', 'r-2', 'france-travail', '{"who":"written-apart"}', 't', 't', 't'),
                          ('e-1', 'status_event', 'r-1', 'konexio', '{"status":"STATUS_RECEIVED"}', 't', 't', 't'),
                          ('e-2', 'status_event', 'r-1', 'konexio', '{"status":"STATUS_ACCEPTED"}', 't', 't', 't');
                   DELETE FROM outbox WHERE message_id = 'e-2';"#,
            )
            .expect("rows of version 5");
        for referral in ["r-1", "r-2"] {
            crate::audit::append(
                &older,
                Utc::now(),
                &crate::audit::AuditEntry::new(crate::audit::AuditKind::ReferralAccepted)
                    .actor("konexio")
                    .referral(referral),
            )
            .expect("audit entry");
        }
        drop(older);

        let store = SqliteStore::open(&path).expect("migrate to 6");
        let payloads: Vec<(String, Option<String>)> = store
            .read(|connection| {
                let mut query = connection
                    .prepare("SELECT message_id, payload FROM outbox ORDER BY seq")
                    .map_err(storage("payloads"))?;
                let rows = query
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(storage("payloads"))?;
                rows.collect::<Result<_, _>>().map_err(storage("payloads"))
            })
            .expect("payloads");
        assert_eq!(
            payloads,
            vec![
                ("r-1".to_owned(), None),
                (
                    "r-2".to_owned(),
                    Some(r#"{"who":"written-apart"}"#.to_owned())
                ),
                (
                    "e-1".to_owned(),
                    Some(r#"{"status":"STATUS_RECEIVED"}"#.to_owned())
                ),
            ]
        );
        let message = store.outbox_message("r-1").expect("read").expect("message");
        assert_eq!(message.payload, r#"{"who":"pseudonym-1"}"#);
        assert_eq!(message.seq, 1);

        // The purged message's seq is not handed out again.
        let seq = store
            .write(|connection| {
                connection
                    .query_row(
                        "INSERT INTO outbox (message_id, kind, referral_id, destination, payload, next_attempt_at, created_at, updated_at)
                         VALUES ('e-3', 'status_event', 'r-2', 'konexio', '{}', 't', 't', 't') RETURNING seq",
                        [],
                        |row| row.get::<_, i64>(0),
                    )
                    .map_err(storage("insert"))
            })
            .await
            .expect("a new message");
        assert_eq!(seq, 5);

        // Foreign keys are enforced again, and the audit log is still guarded and chained.
        let orphan = store
            .write(|connection| {
                connection
                    .execute(
                        "INSERT INTO outbox (message_id, kind, referral_id, destination, payload, next_attempt_at, created_at, updated_at)
                         VALUES ('e-4', 'status_event', 'r-404', 'konexio', '{}', 't', 't', 't')",
                        [],
                    )
                    .map_err(storage("orphan"))
            })
            .await;
        assert!(orphan.is_err(), "a message of no referral was stored");
        let update = store
            .write(|connection| {
                connection
                    .execute("UPDATE audit_log SET at = 'x'", [])
                    .map_err(storage("update"))
            })
            .await;
        assert!(update.is_err(), "the audit log accepted an UPDATE");
        store.close().expect("close");
        let report = crate::audit::verify(&path, None).expect("the chain verifies");
        assert!(report.intact, "{report:?}");
        assert_eq!(report.entries, 2);
    }

    /// Migration 0007 gives referrals an explicit key and finds a referral's
    /// message through it: every message of an older store is found by its
    /// id as before, and ids stay unique for both kinds.
    #[tokio::test]
    async fn messages_of_an_older_store_are_found_through_their_referrals_key() {
        use crate::store::{Outcome, ReferralStore};

        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("store.db");
        let mut older = Connection::open(&path).expect("raw open");
        configure_writer(&older).expect("configure");
        migrate(&mut older, &MIGRATIONS[..6]).expect("migrations 1 to 6");
        // Accepted in the order r-b, r-a: keys follow acceptance, not ids.
        older
            .execute_batch(
                r#"INSERT INTO referrals (referral_id, sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, state, accepted_at)
                   VALUES ('r-b', 'konexio', 'france-travail', 'f1', 'canonical-v2', '{"who":"Jeanne Testmigration"}', '{"who":"pseudonym-b"}', '{}', 'c-1', 'queued', '2026-01-01T00:00:00.000000Z'),
                          ('r-a', 'konexio', 'france-travail', 'f2', 'canonical-v2', '{"who":"Paul Testmigration"}', '{"who":"pseudonym-a"}', '{}', 'c-1', 'queued', '2026-01-01T00:00:01.000000Z');
                   INSERT INTO outbox (message_id, kind, referral_id, destination, payload, next_attempt_at, created_at, updated_at)
                   VALUES ('r-b', 'referral', 'r-b', 'france-travail', NULL, 't', 't', 't'),
                          ('r-a', 'referral', 'r-a', 'france-travail', NULL, 't', 't', 't'),
                          ('e-1', 'status_event', 'r-a', 'konexio', '{"status":"STATUS_RECEIVED"}', 't', 't', 't');"#,
            )
            .expect("rows of version 6");
        drop(older);

        let store = SqliteStore::open(&path).expect("migrate to 7");
        let keys: Vec<(String, i64, Option<i64>)> = store
            .read(|connection| {
                let mut query = connection
                    .prepare(
                        "SELECT outbox.message_id, referrals.referral_row, outbox.referral_row
                         FROM outbox JOIN referrals USING (referral_id) ORDER BY outbox.seq",
                    )
                    .map_err(storage("keys"))?;
                let rows = query
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .map_err(storage("keys"))?;
                rows.collect::<Result<_, _>>().map_err(storage("keys"))
            })
            .expect("keys");
        assert_eq!(
            keys,
            vec![
                ("r-b".to_owned(), 1, Some(1)),
                ("r-a".to_owned(), 2, Some(2)),
                ("e-1".to_owned(), 2, None),
            ]
        );
        for (id, payload) in [
            ("r-a", r#"{"who":"pseudonym-a"}"#),
            ("r-b", r#"{"who":"pseudonym-b"}"#),
            ("e-1", r#"{"status":"STATUS_RECEIVED"}"#),
        ] {
            let message = store.outbox_message(id).expect("read").expect(id);
            assert_eq!(
                (message.message_id.as_str(), message.payload.as_str()),
                (id, payload)
            );
        }
        assert_eq!(store.outbox_message("r-404").expect("read"), None);

        let audit = crate::audit::AuditEntry::new(crate::audit::AuditKind::DeliveryAttempted)
            .actor("delivery")
            .referral("r-a");
        let delivered = store
            .complete("r-a".to_owned(), Outcome::Delivered, Utc::now(), audit)
            .await
            .expect("complete");
        assert!(delivered, "the referral's message was not found");
        let state = store
            .referral("r-a".to_owned())
            .await
            .expect("read")
            .expect("r-a")
            .state;
        assert_eq!(state, "delivered");
        let other = store.outbox_message("r-b").expect("read").expect("r-b");
        assert_eq!(other.state, "queued");

        // Both kinds of message ids stay unique, and a referral's message names its referral.
        for (what, sql) in [
            (
                "a second message of referral r-b",
                "INSERT INTO outbox (message_id, kind, referral_id, referral_row, destination, next_attempt_at, created_at, updated_at)
                 VALUES ('r-b', 'referral', 'r-b', 1, 'france-travail', 't', 't', 't')",
            ),
            (
                "a second message of status event e-1",
                "INSERT INTO outbox (message_id, kind, referral_id, destination, payload, next_attempt_at, created_at, updated_at)
                 VALUES ('e-1', 'status_event', 'r-a', 'konexio', '{}', 't', 't', 't')",
            ),
            (
                "a referral's message without its referral's key",
                "INSERT INTO outbox (message_id, kind, referral_id, destination, next_attempt_at, created_at, updated_at)
                 VALUES ('r-c', 'referral', 'r-a', 'france-travail', 't', 't', 't')",
            ),
            (
                "a message naming a referral key that does not exist",
                "INSERT INTO outbox (message_id, kind, referral_id, referral_row, destination, next_attempt_at, created_at, updated_at)
                 VALUES ('r-c', 'referral', 'r-a', 99, 'france-travail', 't', 't', 't')",
            ),
        ] {
            let refused = store
                .write(move |connection| connection.execute(sql, []).map_err(storage("insert")))
                .await;
            assert!(refused.is_err(), "the store took {what}");
        }
        store.close().expect("close");
    }

    /// Migration 0008 moves a referral's delivery state to a row of its own:
    /// an older store's states are kept, the referral row no longer has one,
    /// and recording an attempt or retrying a dead letter sets the new row.
    #[tokio::test]
    async fn delivery_states_of_an_older_store_move_to_their_own_rows() {
        use crate::store::{Outcome, ReferralStore};

        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("store.db");
        let mut older = Connection::open(&path).expect("raw open");
        configure_writer(&older).expect("configure");
        migrate(&mut older, &MIGRATIONS[..7]).expect("migrations 1 to 7");
        older
            .execute_batch(
                r#"INSERT INTO referrals (referral_id, sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, state, accepted_at)
                   VALUES ('r-1', 'konexio', 'france-travail', 'f1', 'canonical-v2', '{"who":"Jeanne Teststate"}', '{"who":"pseudonym-1"}', '{}', 'c-1', 'delivered', '2026-01-01T00:00:00.000000Z'),
                          ('r-2', 'konexio', 'france-travail', 'f2', 'canonical-v2', '{"who":"Paul Teststate"}', '{"who":"pseudonym-2"}', '{}', 'c-1', 'queued', '2026-01-01T00:00:01.000000Z'),
                          ('r-3', 'konexio', 'france-travail', 'f3', 'canonical-v2', '{"who":"Anne Teststate"}', '{"who":"pseudonym-3"}', '{}', 'c-1', 'dead_lettered', '2026-01-01T00:00:02.000000Z');
                   INSERT INTO outbox (message_id, kind, referral_id, referral_row, destination, state, next_attempt_at, created_at, updated_at)
                   VALUES ('r-1', 'referral', 'r-1', 1, 'france-travail', 'delivered', 't', 't', 't'),
                          ('r-2', 'referral', 'r-2', 2, 'france-travail', 'queued', 't', 't', 't'),
                          ('r-3', 'referral', 'r-3', 3, 'france-travail', 'dead', 't', 't', 't');
                   INSERT INTO outbox (message_id, kind, referral_id, destination, payload, next_attempt_at, created_at, updated_at)
                   VALUES ('e-1', 'status_event', 'r-2', 'konexio', '{"status":"STATUS_RECEIVED"}', 't', 't', 't');"#,
            )
            .expect("rows of version 7");
        drop(older);

        let store = SqliteStore::open(&path).expect("migrate to 8");
        let state = |id: &'static str| {
            let store = &store;
            async move {
                store
                    .referral(id.to_owned())
                    .await
                    .expect("read")
                    .expect(id)
                    .state
            }
        };
        assert_eq!(state("r-1").await, "delivered");
        assert_eq!(state("r-2").await, "queued");
        assert_eq!(state("r-3").await, "dead_lettered");
        let columns: Vec<String> = store
            .read(|connection| {
                let mut query = connection
                    .prepare("SELECT name FROM pragma_table_info('referrals')")
                    .map_err(storage("columns"))?;
                let rows = query
                    .query_map([], |row| row.get(0))
                    .map_err(storage("columns"))?;
                rows.collect::<Result<_, _>>().map_err(storage("columns"))
            })
            .expect("columns");
        assert!(
            !columns.iter().any(|column| column == "state"),
            "{columns:?}"
        );

        // A status event's outcome leaves its referral's state alone; the
        // referral's own outcome sets it.
        let audit = || {
            crate::audit::AuditEntry::new(crate::audit::AuditKind::DeliveryAttempted)
                .actor("delivery")
                .referral("r-2")
        };
        let done = store
            .complete("e-1".to_owned(), Outcome::Delivered, Utc::now(), audit())
            .await
            .expect("complete e-1");
        assert!(done, "the status event's message was not found");
        assert_eq!(state("r-2").await, "queued");
        let cancelled = Outcome::Cancelled {
            reason: "consent-withdrawn".to_owned(),
        };
        let done = store
            .complete("r-2".to_owned(), cancelled, Utc::now(), audit())
            .await
            .expect("complete r-2");
        assert!(done, "the referral's message was not found");
        assert_eq!(state("r-2").await, "withdrawn");
        let retried = store
            .retry_dead(
                Some("r-3".to_owned()),
                None,
                Utc::now(),
                "operator".to_owned(),
            )
            .await
            .expect("retry");
        assert_eq!(retried, 1);
        assert_eq!(state("r-3").await, "queued");

        // No state outside the documented list is stored.
        let refused = store
            .write(|connection| {
                connection
                    .execute(
                        "UPDATE referral_states SET state = 'lost' WHERE referral_row = 1",
                        [],
                    )
                    .map_err(storage("update"))
            })
            .await;
        assert!(refused.is_err(), "the store took an unknown state");
        store.close().expect("close");
    }

    /// Migration 0009 marks the referrals an older store's audit log shows
    /// their recipient read, once, at the first read; the sender's reads and
    /// other entries mark nothing. A withdrawal then reaches the reader.
    #[tokio::test]
    async fn reads_audited_by_an_older_store_mark_their_referrals_as_held() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("store.db");
        let mut older = Connection::open(&path).expect("raw open");
        configure_writer(&older).expect("configure");
        migrate(&mut older, &MIGRATIONS[..8]).expect("migrations 1 to 8");
        older
            .execute_batch(
                r#"INSERT INTO referrals (referral_row, referral_id, sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, accepted_at)
                   VALUES (1, 'r-1', 'konexio', 'france-travail', 'f1', 'canonical-v2', '{}', '{}', '{}', 'c-1', '2026-01-01T00:00:00.000000Z'),
                          (2, 'r-2', 'konexio', 'france-travail', 'f2', 'canonical-v2', '{}', '{}', '{}', 'c-1', '2026-01-01T00:00:01.000000Z'),
                          (3, 'r-3', 'konexio', 'france-travail', 'f3', 'canonical-v2', '{}', '{}', '{}', 'c-1', '2026-01-01T00:00:02.000000Z');
                   INSERT INTO referral_states (referral_row, state) VALUES (1, 'queued'), (2, 'queued'), (3, 'queued');
                   INSERT INTO audit_log (seq, at, entry, previous_hash, hash)
                   VALUES (1, '2026-01-02T00:00:00Z', '{"actor":"france-travail","kind":"referral_read","referral_id":"r-1"}', 'p', 'h1'),
                          (2, '2026-01-03T00:00:00Z', '{"actor":"france-travail","kind":"referral_read","referral_id":"r-1"}', 'h1', 'h2'),
                          (3, '2026-01-04T00:00:00Z', '{"actor":"konexio","kind":"referral_read","referral_id":"r-2"}', 'h2', 'h3'),
                          (4, '2026-01-05T00:00:00Z', '{"actor":"france-travail","kind":"referral_refused","referral_id":"r-3"}', 'h3', 'h4');"#,
            )
            .expect("rows of version 8");
        drop(older);

        let store = SqliteStore::open(&path).expect("migrate to 9");
        let marks: Vec<(i64, String)> = store
            .read(|connection| {
                let mut query = connection
                    .prepare("SELECT referral_row, first_read_at FROM recipient_reads ORDER BY referral_row")
                    .map_err(storage("marks"))?;
                let rows = query
                    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                    .map_err(storage("marks"))?;
                rows.collect::<Result<_, _>>().map_err(storage("marks"))
            })
            .expect("marks");
        assert_eq!(marks, vec![(1, "2026-01-02T00:00:00Z".to_owned())]);
        assert_eq!(
            store.offered_under_consent("c-1").expect("offered"),
            vec!["r-1".to_owned()]
        );
        store.close().expect("close");
    }

    #[test]
    fn a_database_from_a_newer_passerelle_is_refused() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("store.db");
        SqliteStore::open(&path)
            .expect("open")
            .close()
            .expect("close");
        let connection = Connection::open(&path).expect("raw open");
        connection
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES (999, '0999_future')",
                [],
            )
            .expect("insert");
        drop(connection);
        let error = SqliteStore::open(&path).expect_err("newer schema");
        assert!(error.to_string().contains("newer"), "{error}");
    }
}
