//! The audit log: append-only and hash-chained, kept in the store (table
//! `audit_log`, migration `0002_audit`). Every decision goes in it: referrals
//! accepted or refused (with the reason code, the policy and the field paths
//! removed), reads of a referral by its recipient, idempotent replays, status
//! and consent events, deliveries, erasures. An entry holds ids, codes and
//! field paths, never values: [`append`] refuses any text with whitespace or
//! control characters, or longer than 256 characters, so that free text
//! cannot slip in by mistake.
//!
//! # Rows and hashes
//! Each row is `seq, at, entry, previous_hash, hash`:
//! - `seq`: 1, 2, 3 ... without gaps; `at`: RFC 3339 in UTC (`Z`).
//! - `entry`: the [`AuditEntry`] with its `seq` and `at`, as *canonical JSON*:
//!   one object, keys sorted by code point (they are all ASCII), no
//!   whitespace, absent ids and empty lists left out, strings in UTF-8 with
//!   only `"` and `\` escaped (entries hold no control characters), integers
//!   in decimal. It is exactly what Python writes with
//!   `json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
//! - `previous_hash`: the previous row's `hash`; 64 zeros ([`GENESIS_HASH`])
//!   for the first.
//! - `hash`: lower-case hex SHA-256 over the 64 ASCII characters of
//!   `previous_hash` followed by the UTF-8 bytes of `entry`.
//!
//! An auditor recomputes the chain with any tool, for example from the store:
//! ```text
//! sqlite3 -json passerelle.db "SELECT * FROM audit_log ORDER BY seq" > rows.json
//! python3 -c 'import hashlib, json
//! previous = "0" * 64
//! for row in json.load(open("rows.json")):
//!     assert row["previous_hash"] == previous, row["seq"]
//!     assert hashlib.sha256((previous + row["entry"]).encode()).hexdigest() == row["hash"], row["seq"]
//!     previous = row["hash"]'
//! ```
//! or from `passerelle audit export` (see `docs/audit.md`).
//!
//! # Appending
//! [`append`] runs inside the caller's write job, so a referral and its entry
//! commit together or not at all; [`append_entry`] is a job of its own for
//! standalone entries (reads, deliveries). The store's single writer thread
//! serialises appends, and `seq` being the primary key means two writers that
//! somehow raced would fail rather than fork the chain.
//!
//! # Verifying
//! [`verify`] opens the file read-only and walks it in `seq` order, checking
//! that `seq` has no gaps, that each `entry` is canonical JSON whose `seq` and
//! `at` are the row's, that each `hash` recomputes, and that each
//! `previous_hash` is the prior row's `hash`. It names the first broken entry
//! and how it broke ([`Problem`]).
//!
//! Limit: a hash chain proves nothing about its own end. Deleting the last
//! entries, or rewriting the last one (or rewriting an entry and re-hashing
//! every later one), leaves a chain that verifies. Only an anchor kept
//! elsewhere catches it: keep the head that `verify` prints (`SEQ:HASH`) and
//! pass it back later as `--expect-head`.

use std::fmt::{self, Display};
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::decision::{Decision, MinimisationReport};
use crate::error::Error;
use crate::store::SqliteStore;

/// The `previous_hash` of the first entry: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The longest id, code or path an entry accepts, in characters.
const MAX_TOKEN_CHARS: usize = 256;

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A referral passed consent and minimisation and was queued.
    ReferralAccepted,
    /// A referral was refused (`reason` says why).
    ReferralRefused,
    /// A recipient (or the sender) read a referral.
    ReferralRead,
    /// The same referral was sent again and answered as before, creating nothing.
    ReferralReplayed,
    /// A status event about a referral was recorded.
    StatusEventRecorded,
    /// A status event was refused (`reason` says why).
    StatusEventRefused,
    /// A consent record was stored.
    ConsentRecorded,
    /// An event (given, withdrawn, objected ...) was appended to a consent record.
    ConsentEventRecorded,
    /// A delivery to the recipient was attempted.
    DeliveryAttempted,
    /// The recipient acknowledged the delivery.
    Delivered,
    /// A delivery attempt failed (`reason` says how); it will be retried.
    DeliveryFailed,
    /// Delivery was given up after the last attempt.
    DeadLettered,
    /// Personal data was erased (GDPR Art. 17).
    Erasure,
}

impl AuditKind {
    /// The wire name (`referral_accepted`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReferralAccepted => "referral_accepted",
            Self::ReferralRefused => "referral_refused",
            Self::ReferralRead => "referral_read",
            Self::ReferralReplayed => "referral_replayed",
            Self::StatusEventRecorded => "status_event_recorded",
            Self::StatusEventRefused => "status_event_refused",
            Self::ConsentRecorded => "consent_recorded",
            Self::ConsentEventRecorded => "consent_event_recorded",
            Self::DeliveryAttempted => "delivery_attempted",
            Self::Delivered => "delivered",
            Self::DeliveryFailed => "delivery_failed",
            Self::DeadLettered => "dead_lettered",
            Self::Erasure => "erasure",
        }
    }
}

impl Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit entry: ids, codes and field paths, never values.
///
/// Build it with [`AuditEntry::new`] and the chained setters, or
/// [`AuditEntry::decision`] for the outcome of the forwarding decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// What happened.
    pub kind: AuditKind,
    /// The organisation that acted, by its configuration id (`asso-konexio`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The referral concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_id: Option<String>,
    /// The consent record concerned, or the one a referral leaves under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_record_id: Option<String>,
    /// The status event concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The code of the status event (`accepted`, `appointment_held` ...) or the
    /// kind of the consent event (`withdrawn` ...) recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_kind: Option<String>,
    /// The recipient organisation of a delivery, by its configuration id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The delivery attempt number (1 for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// A stable reason code (`consent-withdrawn`, `http-503` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The minimisation policy applied, as `id@version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Field paths removed by minimisation (or erased, for an erasure).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Field paths whose values were replaced by keyed pseudonyms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pseudonymised: Vec<String>,
    /// Field paths whose values were replaced by a coarser derived value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub derived: Vec<String>,
}

impl AuditEntry {
    /// An entry of this kind with nothing else set.
    pub fn new(kind: AuditKind) -> Self {
        Self {
            kind,
            actor: None,
            referral_id: None,
            consent_record_id: None,
            event_id: None,
            event_kind: None,
            recipient: None,
            attempt: None,
            reason: None,
            policy: None,
            paths: Vec::new(),
            pseudonymised: Vec::new(),
            derived: Vec::new(),
        }
    }

    /// The entry for a forwarding decision: `referral_accepted` with the
    /// consent record, the policy and the paths minimisation touched, or
    /// `referral_refused` with the refusal's reason code (its explanation
    /// stays out: it is prose).
    pub fn decision(actor: impl Display, referral_id: impl Display, decision: &Decision) -> Self {
        match decision {
            Decision::Forward(forward) => Self::new(AuditKind::ReferralAccepted)
                .actor(actor)
                .referral(referral_id)
                .consent_record(&forward.grant.record_id)
                .minimisation(&forward.report),
            Decision::Refuse(refusal) => Self::new(AuditKind::ReferralRefused)
                .actor(actor)
                .referral(referral_id)
                .reason(refusal.reason.code()),
        }
    }

    /// Sets the organisation that acted.
    #[must_use]
    pub fn actor(mut self, organisation_id: impl Display) -> Self {
        self.actor = Some(organisation_id.to_string());
        self
    }

    /// Sets the referral.
    #[must_use]
    pub fn referral(mut self, referral_id: impl Display) -> Self {
        self.referral_id = Some(referral_id.to_string());
        self
    }

    /// Sets the consent record.
    #[must_use]
    pub fn consent_record(mut self, record_id: impl Display) -> Self {
        self.consent_record_id = Some(record_id.to_string());
        self
    }

    /// Sets the status event id.
    #[must_use]
    pub fn event(mut self, event_id: impl Display) -> Self {
        self.event_id = Some(event_id.to_string());
        self
    }

    /// Sets the status code or consent event kind recorded.
    #[must_use]
    pub fn event_kind(mut self, code: impl Display) -> Self {
        self.event_kind = Some(code.to_string());
        self
    }

    /// Sets the recipient organisation.
    #[must_use]
    pub fn recipient(mut self, organisation_id: impl Display) -> Self {
        self.recipient = Some(organisation_id.to_string());
        self
    }

    /// Sets the delivery attempt number.
    #[must_use]
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Sets the reason code.
    #[must_use]
    pub fn reason(mut self, code: impl Display) -> Self {
        self.reason = Some(code.to_string());
        self
    }

    /// Sets the policy as `id@version`.
    #[must_use]
    pub fn policy(mut self, id: impl Display, version: impl Display) -> Self {
        self.policy = Some(format!("{id}@{version}"));
        self
    }

    /// Sets the field paths removed (or erased).
    #[must_use]
    pub fn paths<I>(mut self, paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: Display,
    {
        self.paths = paths.into_iter().map(|path| path.to_string()).collect();
        self
    }

    /// Sets the policy and the paths removed, pseudonymised and derived from a
    /// minimisation report.
    #[must_use]
    pub fn minimisation(mut self, report: &MinimisationReport) -> Self {
        self.policy = Some(format!("{}@{}", report.policy_id, report.policy_version));
        self.paths.clone_from(&report.removed);
        self.pseudonymised.clone_from(&report.pseudonymised);
        self.derived.clone_from(&report.derived);
        self
    }

    /// Refuses anything that does not look like an id, a code or a path, so
    /// that no free text (a name, an address, a sentence) reaches the log.
    /// The message names the field, never its content.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let single = [
            ("actor", &self.actor),
            ("referral_id", &self.referral_id),
            ("consent_record_id", &self.consent_record_id),
            ("event_id", &self.event_id),
            ("event_kind", &self.event_kind),
            ("recipient", &self.recipient),
            ("reason", &self.reason),
            ("policy", &self.policy),
        ];
        let lists = [
            ("paths", &self.paths),
            ("pseudonymised", &self.pseudonymised),
            ("derived", &self.derived),
        ];
        let bad = single
            .into_iter()
            .filter_map(|(field, value)| value.as_deref().map(|value| (field, value)))
            .chain(lists.into_iter().flat_map(|(field, values)| {
                values.iter().map(move |value| (field, value.as_str()))
            }))
            .find(|(_, value)| !is_token(value));
        match bad {
            None => Ok(()),
            Some((field, _)) => Err(Error::Internal(format!(
                "audit: the {field} of a {} entry is not an id, code or path (empty, over {MAX_TOKEN_CHARS} characters, or with spaces or control characters)",
                self.kind
            ))),
        }
    }
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.chars().count() <= MAX_TOKEN_CHARS
        && !text
            .chars()
            .any(|character| character.is_whitespace() || character.is_control())
}

/// Appends `entry` at `at` to the chain, on a connection inside a write
/// transaction (the store's write job), and returns its `seq`.
pub(crate) fn append(
    connection: &Connection,
    at: DateTime<Utc>,
    entry: &AuditEntry,
) -> Result<u64, Error> {
    append_rendered(connection, &render(at, entry)?)
}

/// Appends an entry rendered beforehand (outside the single writer, which
/// then only adds the `seq` and the hash), and returns its `seq`.
pub(crate) fn append_rendered(connection: &Connection, entry: &Rendered) -> Result<u64, Error> {
    let last: Option<(i64, String)> = connection
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .and_then(|mut query| {
            query
                .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(storage("reading the head of the audit log"))?;
    let (seq, previous_hash) = match last {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let text = entry.text(position(seq));
    let hash = chain_hash(&previous_hash, &text);
    connection
        .prepare_cached(
            "INSERT INTO audit_log (seq, at, entry, previous_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut insert| insert.execute(params![seq, entry.at, text, previous_hash, hash]))
        .map_err(storage("appending to the audit log"))?;
    Ok(position(seq))
}

/// Appends `entry`, stamped with the time of the write, in a write job of its
/// own (for entries that go with no other change: reads, deliveries); returns
/// its `seq` once durable.
pub async fn append_entry(store: &SqliteStore, entry: AuditEntry) -> Result<u64, Error> {
    // Checked here too, so that a bad entry fails before it queues for the writer.
    entry.check()?;
    store
        .write(move |connection| append(connection, Utc::now(), &entry))
        .await
}

/// An entry as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainedEntry {
    /// Its position: 1, 2, 3 ...
    pub seq: u64,
    /// When it was appended.
    pub at: DateTime<Utc>,
    /// The entry.
    pub entry: AuditEntry,
    /// The previous entry's hash.
    pub previous_hash: String,
    /// This entry's hash.
    pub hash: String,
}

/// Every entry of the store's audit log, in order (for tests and tools; the
/// log is read whole, so not for large logs).
pub fn entries(store: &SqliteStore) -> Result<Vec<ChainedEntry>, Error> {
    store.read(|connection| {
        let mut query = connection
            .prepare_cached(
                "SELECT seq, at, entry, previous_hash, hash FROM audit_log ORDER BY seq",
            )
            .map_err(storage("reading the audit log"))?;
        let rows = query
            .query_map([], Row::read)
            .map_err(storage("reading the audit log"))?;
        let mut entries = Vec::new();
        for row in rows {
            let row = row.map_err(storage("reading the audit log"))?;
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
            entries.push(ChainedEntry {
                seq: u64::try_from(row.seq).map_err(|_| unreadable())?,
                at,
                entry,
                previous_hash: row.previous_hash,
                hash: row.hash,
            });
        }
        Ok(entries)
    })
}

/// A position in the chain and its hash: the head a verification ends on, or
/// the one it must find (`SEQ:HASH` on the command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    /// The entry's seq.
    pub seq: u64,
    /// The entry's hash (lower-case hex).
    pub hash: String,
}

impl Display for ChainHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl FromStr for ChainHead {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let shape = "expected SEQ:HASH as `audit verify` prints it (a positive seq, a colon, 64 hexadecimal digits)";
        let (seq, hash) = text.split_once(':').ok_or(shape)?;
        let seq: u64 = seq.parse().map_err(|_| shape)?;
        if seq == 0 || hash.len() != 64 || !hash.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(shape.to_owned());
        }
        Ok(Self {
            seq,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// How an entry is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Problem {
    /// Its content, time or hash was changed (or it was rewritten and re-hashed).
    Altered,
    /// It is missing: removed, with or without renumbering the later entries.
    Removed,
    /// It is stored at another position than its own.
    Reordered,
    /// Two positions claim to be this entry: one was inserted or copied.
    Duplicated,
    /// The chain ends before the expected head: entries were removed from the end.
    Truncated,
    /// It is not the expected head: it or an entry before it was rewritten.
    AnchorMismatch,
}

impl Problem {
    /// The code (`altered`, `removed` ...).
    pub fn code(self) -> &'static str {
        match self {
            Self::Altered => "altered",
            Self::Removed => "removed",
            Self::Reordered => "reordered",
            Self::Duplicated => "duplicated",
            Self::Truncated => "truncated",
            Self::AnchorMismatch => "anchor-mismatch",
        }
    }
}

impl Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The first broken entry of a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// The seq of the entry.
    pub seq: u64,
    /// How it is broken.
    pub problem: Problem,
    /// What was found, for people (seqs and columns, never content).
    pub detail: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// No entry is broken (and the expected head, if any, is there).
    pub intact: bool,
    /// The rows read (all of them, also after a break).
    pub entries: u64,
    /// The last row's seq and hash; `None` for an empty log.
    pub head: Option<ChainHead>,
    /// The first broken entry.
    pub first_broken: Option<Broken>,
}

/// Walks the audit log of the store file at `store_path` (opened read-only,
/// without migrating) and reports the first broken entry. With `expect_head`
/// (a head printed by an earlier verification) it also checks that the chain
/// still reaches that entry with that hash.
pub fn verify(store_path: &Path, expect_head: Option<&ChainHead>) -> Result<VerifyReport, Error> {
    let mut connection = open_read_only(store_path)?;
    // One read transaction: a consistent snapshot even while the gateway appends.
    let snapshot = connection
        .transaction()
        .map_err(storage("starting a read"))?;
    let mut walk = Walk {
        expected_seq: 1,
        previous_hash: GENESIS_HASH.to_owned(),
        entries: 0,
        head: None,
        broken: None,
        anchor: expect_head,
    };
    {
        let mut query = snapshot
            .prepare("SELECT seq, at, entry, previous_hash, hash FROM audit_log ORDER BY seq")
            .map_err(storage("reading the audit log"))?;
        let mut rows = query.query([]).map_err(storage("reading the audit log"))?;
        let find = |seq: i64| {
            snapshot
                .query_row(
                    "SELECT seq FROM audit_log WHERE json_extract(entry, '$.seq') = ?1 AND seq <> ?1 LIMIT 1",
                    [seq],
                    |row| row.get(0),
                )
                .optional()
                .map_err(storage("looking for a misplaced entry"))
        };
        while let Some(row) = rows.next().map_err(storage("reading the audit log"))? {
            let row = Row::read(row).map_err(storage("reading the audit log"))?;
            walk.step(row, &find)?;
        }
    }
    Ok(walk.finish())
}

/// [`verify`] over rows already read, in `seq` order (a PostgreSQL store's
/// log, read in one snapshot).
pub fn verify_rows(rows: Vec<Row>, expect_head: Option<&ChainHead>) -> Result<VerifyReport, Error> {
    let claimed: Vec<(i64, Option<i64>)> = rows
        .iter()
        .map(|row| {
            let claimed = serde_json::from_str::<Value>(&row.entry)
                .ok()
                .and_then(|entry| entry.get("seq").and_then(Value::as_i64));
            (row.seq, claimed)
        })
        .collect();
    let find = |seq: i64| {
        Ok(claimed
            .iter()
            .find(|(position, holds)| *holds == Some(seq) && *position != seq)
            .map(|(position, _)| *position))
    };
    let mut walk = Walk {
        expected_seq: 1,
        previous_hash: GENESIS_HASH.to_owned(),
        entries: 0,
        head: None,
        broken: None,
        anchor: expect_head,
    };
    for row in rows {
        walk.step(row, &find)?;
    }
    Ok(walk.finish())
}

/// [`export`] over rows already read, in `seq` order.
pub fn export_rows(rows: &[Row], out: &mut dyn Write) -> Result<u64, Error> {
    let mut written = 0;
    for row in rows {
        let line = export_line(row)?;
        writeln!(out, "{line}").map_err(|source| Error::Io {
            context: "writing the audit export".to_owned(),
            source,
        })?;
        written += 1;
    }
    Ok(written)
}

/// Writes every entry of the store file at `store_path` as one JSON line
/// (`seq`, `at`, the entry's fields in key order, `previous_hash`, `hash`),
/// in order, and returns the number written. It does not verify: run
/// [`verify`] for that. Dropping `previous_hash` and `hash` from a line and
/// writing the rest canonically gives back the hashed text.
pub fn export(store_path: &Path, out: &mut dyn Write) -> Result<u64, Error> {
    let mut connection = open_read_only(store_path)?;
    let snapshot = connection
        .transaction()
        .map_err(storage("starting a read"))?;
    let mut query = snapshot
        .prepare("SELECT seq, at, entry, previous_hash, hash FROM audit_log ORDER BY seq")
        .map_err(storage("reading the audit log"))?;
    let mut rows = query.query([]).map_err(storage("reading the audit log"))?;
    let mut written = 0;
    while let Some(row) = rows.next().map_err(storage("reading the audit log"))? {
        let row = Row::read(row).map_err(storage("reading the audit log"))?;
        let line = export_line(&row)?;
        writeln!(out, "{line}").map_err(|source| Error::Io {
            context: "writing the audit export".to_owned(),
            source,
        })?;
        written += 1;
    }
    Ok(written)
}

fn export_line(row: &Row) -> Result<String, Error> {
    let not_an_entry = || {
        Error::Internal(format!(
            "audit: the entry at position {} is not an audit entry; run `passerelle audit verify`",
            row.seq
        ))
    };
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(&row.entry) else {
        return Err(not_an_entry());
    };
    let (Some(seq), Some(at)) = (fields.remove("seq"), fields.remove("at")) else {
        return Err(not_an_entry());
    };
    if fields.contains_key("previous_hash") || fields.contains_key("hash") {
        return Err(not_an_entry());
    }
    let mut line = vec![b'{'];
    write_member(&mut line, "seq", &seq)?;
    line.push(b',');
    write_member(&mut line, "at", &at)?;
    for (key, value) in sorted(&fields) {
        line.push(b',');
        write_member(&mut line, key, value)?;
    }
    line.push(b',');
    write_member(
        &mut line,
        "previous_hash",
        &Value::from(row.previous_hash.as_str()),
    )?;
    line.push(b',');
    write_member(&mut line, "hash", &Value::from(row.hash.as_str()))?;
    line.push(b'}');
    text(line)
}

/// One row of `audit_log`, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Its position.
    pub seq: i64,
    /// When it was appended (RFC 3339).
    pub at: String,
    /// The entry as hashed (canonical JSON).
    pub entry: String,
    /// The previous entry's hash.
    pub previous_hash: String,
    /// This entry's hash.
    pub hash: String,
}

impl Row {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            seq: row.get(0)?,
            at: row.get(1)?,
            entry: row.get(2)?,
            previous_hash: row.get(3)?,
            hash: row.get(4)?,
        })
    }
}

/// The state of a verification between rows.
struct Walk<'a> {
    expected_seq: i64,
    previous_hash: String,
    entries: u64,
    head: Option<ChainHead>,
    broken: Option<Broken>,
    anchor: Option<&'a ChainHead>,
}

impl Walk<'_> {
    fn step(
        &mut self,
        row: Row,
        find: &dyn Fn(i64) -> Result<Option<i64>, Error>,
    ) -> Result<(), Error> {
        self.entries += 1;
        let seq = position(row.seq);
        self.head = Some(ChainHead {
            seq,
            hash: row.hash.clone(),
        });
        // Past the first break every later link is suspect: count, do not judge.
        if self.broken.is_some() {
            return Ok(());
        }
        self.broken = self.check(&row, find)?;
        if self.broken.is_none()
            && let Some(anchor) = self.anchor
            && anchor.seq == seq
            && anchor.hash != row.hash
        {
            self.broken = Some(Broken {
                seq,
                problem: Problem::AnchorMismatch,
                detail: format!(
                    "entry {seq} does not have the expected hash: it, or an entry before it, was rewritten and every later hash recomputed"
                ),
            });
        }
        self.previous_hash = row.hash;
        self.expected_seq = row.seq + 1;
        Ok(())
    }

    /// The first problem this row shows, in an order that names the right
    /// entry: a gap before anything else, then the row on its own, then its
    /// place, then its link to the row before.
    fn check(
        &self,
        row: &Row,
        find: &dyn Fn(i64) -> Result<Option<i64>, Error>,
    ) -> Result<Option<Broken>, Error> {
        let seq = position(row.seq);
        let expected = position(self.expected_seq);
        let broken = |seq, problem, detail: String| {
            Ok(Some(Broken {
                seq,
                problem,
                detail,
            }))
        };
        if row.seq != self.expected_seq {
            let detail = if seq == expected + 1 {
                format!("entry {expected} is missing")
            } else {
                format!("entries {expected} to {} are missing", seq - 1)
            };
            return broken(expected, Problem::Removed, detail);
        }
        let Ok(Value::Object(parsed)) = serde_json::from_str::<Value>(&row.entry) else {
            return broken(
                seq,
                Problem::Altered,
                format!("entry {seq} is not a JSON object"),
            );
        };
        let mut canonical = Vec::new();
        if write_object(&mut canonical, &parsed).is_err() || canonical != row.entry.as_bytes() {
            return broken(
                seq,
                Problem::Altered,
                format!("entry {seq} is not in canonical form"),
            );
        }
        if chain_hash(&row.previous_hash, &row.entry) != row.hash {
            return broken(
                seq,
                Problem::Altered,
                format!(
                    "the hash of entry {seq} does not match its content: the entry or its hash was changed"
                ),
            );
        }
        let claimed = parsed.get("seq").and_then(Value::as_u64);
        match claimed {
            None => {
                return broken(seq, Problem::Altered, format!("entry {seq} holds no seq"));
            }
            Some(claimed) if claimed != seq => {
                return Ok(Some(misplaced(find, row.seq, claimed)?));
            }
            Some(_) => {}
        }
        if parsed.get("at").and_then(Value::as_str) != Some(row.at.as_str()) {
            return broken(
                seq,
                Problem::Altered,
                format!("the at column of entry {seq} differs from the time in the entry"),
            );
        }
        if row.previous_hash != self.previous_hash {
            return Ok(Some(if seq == 1 {
                Broken {
                    seq,
                    problem: Problem::Altered,
                    detail: "entry 1 does not start from the genesis hash: it was rewritten and re-hashed".to_owned(),
                }
            } else {
                Broken {
                    seq: seq - 1,
                    problem: Problem::Altered,
                    detail: format!(
                        "the hash of entry {} is not the one entry {seq} links to: entry {} was changed and re-hashed",
                        seq - 1,
                        seq - 1
                    ),
                }
            }));
        }
        Ok(None)
    }

    fn finish(self) -> VerifyReport {
        let last = self.head.as_ref().map_or(0, |head| head.seq);
        let broken = match (self.broken, self.anchor) {
            (None, Some(anchor)) if anchor.seq > last => Some(Broken {
                seq: last + 1,
                problem: Problem::Truncated,
                detail: format!(
                    "the chain ends at entry {last} but the expected head is entry {}: entries from {} on were removed",
                    anchor.seq,
                    last + 1
                ),
            }),
            (broken, _) => broken,
        };
        VerifyReport {
            intact: broken.is_none(),
            entries: self.entries,
            head: self.head,
            first_broken: broken,
        }
    }
}

/// Names what happened when the row at position `seq` holds entry `claimed`:
/// entry `seq` stored elsewhere is a reordering; stored nowhere, a removal
/// with the later entries renumbered; a later entry stored earlier, an
/// inserted or copied entry.
/// `find(seq)` is the position of the row holding entry `seq` elsewhere than
/// at `seq`, if any.
fn misplaced(
    find: &dyn Fn(i64) -> Result<Option<i64>, Error>,
    row_seq: i64,
    claimed: u64,
) -> Result<Broken, Error> {
    let seq = position(row_seq);
    if claimed < seq {
        return Ok(Broken {
            seq: claimed,
            problem: Problem::Duplicated,
            detail: format!(
                "positions {claimed} and {seq} both hold entry {claimed}: one was inserted or copied"
            ),
        });
    }
    Ok(match find(row_seq)? {
        Some(position) => Broken {
            seq,
            problem: Problem::Reordered,
            detail: format!(
                "position {seq} holds entry {claimed} and entry {seq} is at position {position}"
            ),
        },
        None => Broken {
            seq,
            problem: Problem::Removed,
            detail: format!(
                "entry {seq} is missing and the later entries were renumbered (position {seq} holds entry {claimed})"
            ),
        },
    })
}

/// A `seq` column as a position; the table's CHECK keeps it at 1 or more.
pub(crate) fn position(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

fn open_read_only(path: &Path) -> Result<Connection, Error> {
    let unreadable = |error: rusqlite::Error| Error::Io {
        context: format!("opening the store {}", path.display()),
        source: std::io::Error::other(error),
    };
    // Checked first: read-only opening never creates the file, but its error would not say why.
    if !path.is_file() {
        return Err(Error::NotFound(format!("store file {}", path.display())));
    }
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(unreadable)?;
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(unreadable)?;
    let has_log: bool = connection
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'audit_log')",
            [],
            |row| row.get(0),
        )
        .map_err(unreadable)?;
    if !has_log {
        return Err(Error::NotFound(format!(
            "an audit log in {} (not a Passerelle store, or one never opened by a version with the audit log)",
            path.display()
        )));
    }
    Ok(connection)
}

/// The time as stored: RFC 3339, UTC with `Z`, fractional seconds only when
/// there are some.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// An entry checked and rendered as canonical JSON, all but its `seq`, which
/// only the head of the chain decides when the entry is appended.
#[derive(Debug, Clone)]
pub(crate) struct Rendered {
    /// The time as stored (see [`timestamp`]).
    pub(crate) at: String,
    /// The text up to the value of `seq`.
    head: String,
    /// The text after it.
    tail: String,
}

impl Rendered {
    /// The canonical JSON of the entry at position `seq`.
    pub(crate) fn text(&self, seq: u64) -> String {
        format!("{}{seq}{}", self.head, self.tail)
    }
}

/// Checks `entry` and renders it with its `at` (see the module doc).
pub(crate) fn render(at: DateTime<Utc>, entry: &AuditEntry) -> Result<Rendered, Error> {
    entry.check()?;
    let Ok(Value::Object(mut fields)) = serde_json::to_value(entry) else {
        return Err(Error::Internal(
            "audit: an entry does not encode as a JSON object".to_owned(),
        ));
    };
    let at = timestamp(at);
    fields.insert("at".to_owned(), Value::from(at.as_str()));
    let members = sorted(&fields);
    // `seq` goes where it sorts among the other keys.
    let (before, after) =
        members.split_at(members.partition_point(|(key, _)| key.as_str() < "seq"));
    let mut head = vec![b'{'];
    for (key, value) in before {
        write_member(&mut head, key, value)?;
        head.push(b',');
    }
    head.extend_from_slice(b"\"seq\":");
    let mut tail = Vec::new();
    for (key, value) in after {
        tail.push(b',');
        write_member(&mut tail, key, value)?;
    }
    tail.push(b'}');
    Ok(Rendered {
        at,
        head: text(head)?,
        tail: text(tail)?,
    })
}

/// SHA-256 over `previous_hash` then `entry`, in lower-case hex.
pub(crate) fn chain_hash(previous_hash: &str, entry: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous_hash.as_bytes());
    hasher.update(entry.as_bytes());
    hex::encode(hasher.finalize())
}

/// Keys sorted here rather than trusting the map's order: a dependency turning
/// on serde_json's `preserve_order` must not change the hashed text.
fn sorted(fields: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut members: Vec<_> = fields.iter().collect();
    members.sort_by_key(|(key, _)| *key);
    members
}

// The canonical text is written as bytes, each string and scalar straight
// from serde_json's writer, and checked as UTF-8 once at the end.

fn write_object(out: &mut Vec<u8>, fields: &Map<String, Value>) -> Result<(), Error> {
    out.push(b'{');
    for (index, (key, value)) in sorted(fields).into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_member(out, key, value)?;
    }
    out.push(b'}');
    Ok(())
}

fn write_member(out: &mut Vec<u8>, key: &str, value: &Value) -> Result<(), Error> {
    write_scalar(out, key)?;
    out.push(b':');
    write_value(out, value)
}

fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), Error> {
    match value {
        Value::Object(fields) => write_object(out, fields),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value(out, item)?;
            }
            out.push(b']');
            Ok(())
        }
        scalar => write_scalar(out, scalar),
    }
}

/// A string or a scalar in serde_json's compact form: the escaping Python's
/// json.dumps also uses.
fn write_scalar<T: Serialize + ?Sized>(out: &mut Vec<u8>, scalar: &T) -> Result<(), Error> {
    serde_json::to_writer(&mut *out, scalar)
        .map_err(|_| Error::Internal("audit: a value does not write as JSON".to_owned()))
}

fn text(bytes: Vec<u8>) -> Result<String, Error> {
    String::from_utf8(bytes)
        .map_err(|_| Error::Internal("audit: canonical JSON that is not UTF-8".to_owned()))
}

fn storage(context: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |error| Error::Internal(format!("audit: {context}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::PathBuf;
    use std::sync::Arc;

    const REFERRAL: &str = "7d1f6a52-3f0e-4c4b-9a55-1c2e3f4a5b6c";

    fn minute(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 4, 9, minute, 0)
            .single()
            .expect("valid time")
    }

    fn sample(number: u32) -> AuditEntry {
        match number % 4 {
            0 => AuditEntry::new(AuditKind::ReferralAccepted)
                .actor("asso-konexio")
                .referral(REFERRAL)
                .policy("france-travail-orientation", "2026-11-1")
                .paths(["person.birth_date", "identifiers.nir"]),
            1 => AuditEntry::new(AuditKind::ReferralRead)
                .actor("france-travail")
                .referral(REFERRAL),
            2 => AuditEntry::new(AuditKind::DeliveryFailed)
                .referral(REFERRAL)
                .recipient("france-travail")
                .attempt(number)
                .reason("http-503"),
            _ => AuditEntry::new(AuditKind::ConsentEventRecorded)
                .actor("asso-konexio")
                .consent_record("0b7a2c1e-5d4f-4a3b-8c9d-0e1f2a3b4c5d")
                .event_kind("withdrawn"),
        }
    }

    /// A store file holding `count` entries at minutes 0, 1, 2 ...; the store is closed.
    async fn chain(count: u32) -> (tempfile::TempDir, PathBuf) {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("passerelle.db");
        let store = SqliteStore::open(&path).expect("open");
        for number in 0..count {
            let seq = store
                .write(move |connection| append(connection, minute(number), &sample(number)))
                .await
                .expect("append");
            assert_eq!(seq, u64::from(number) + 1);
        }
        store.close().expect("close");
        (directory, path)
    }

    /// What an attacker with the file can do: the triggers go first.
    fn tamper(path: &Path, sql: &str) {
        let connection = Connection::open(path).expect("open the file directly");
        connection
            .execute_batch(&format!(
                "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; {sql}"
            ))
            .expect("tampering");
    }

    fn row(path: &Path, seq: u64) -> (String, String, String) {
        let connection = Connection::open(path).expect("open the file directly");
        connection
            .query_row(
                "SELECT entry, previous_hash, hash FROM audit_log WHERE seq = ?1",
                [i64::try_from(seq).expect("small")],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .expect("row")
    }

    fn first_broken(path: &Path, anchor: Option<&ChainHead>) -> (u64, Problem) {
        let report = verify(path, anchor).expect("verify runs");
        assert!(!report.intact, "{report:?}");
        let broken = report.first_broken.expect("a break");
        (broken.seq, broken.problem)
    }

    #[tokio::test]
    async fn a_chain_of_appended_entries_verifies_and_reports_its_head() {
        let (_directory, path) = chain(6).await;
        let report = verify(&path, None).expect("verify");
        let (_, _, last_hash) = row(&path, 6);
        assert_eq!(
            report,
            VerifyReport {
                intact: true,
                entries: 6,
                head: Some(ChainHead {
                    seq: 6,
                    hash: last_hash
                }),
                first_broken: None,
            }
        );
    }

    #[tokio::test]
    async fn an_empty_log_is_intact_and_has_no_head() {
        let (_directory, path) = chain(0).await;
        let report = verify(&path, None).expect("verify");
        assert!(report.intact);
        assert_eq!((report.entries, report.head), (0, None));
    }

    /// The documented formula, computed here without the module's helpers:
    /// sorted keys, no spaces, absent fields left out; SHA-256 over the
    /// previous hash's hex then the entry.
    #[tokio::test]
    async fn the_stored_entry_and_hash_follow_the_documented_format() {
        let (_directory, path) = chain(2).await;
        let (entry, previous_hash, hash) = row(&path, 1);
        assert_eq!(
            entry,
            format!(
                r#"{{"actor":"asso-konexio","at":"2027-01-04T09:00:00Z","kind":"referral_accepted","paths":["person.birth_date","identifiers.nir"],"policy":"france-travail-orientation@2026-11-1","referral_id":"{REFERRAL}","seq":1}}"#
            )
        );
        assert_eq!(previous_hash, "0".repeat(64));
        let expected = Sha256::digest(format!("{previous_hash}{entry}").as_bytes());
        assert_eq!(hash, hex::encode(expected));
        let (_, second_previous, _) = row(&path, 2);
        assert_eq!(second_previous, hash);
    }

    #[tokio::test]
    async fn the_triggers_refuse_update_and_delete() {
        let (_directory, path) = chain(2).await;
        let connection = Connection::open(&path).expect("open the file directly");
        let update = connection.execute("UPDATE audit_log SET at = 'x' WHERE seq = 1", []);
        let delete = connection.execute("DELETE FROM audit_log WHERE seq = 2", []);
        assert!(update.is_err() && delete.is_err());
        drop(connection);
        assert!(verify(&path, None).expect("verify").intact);
    }

    #[tokio::test]
    async fn an_altered_entry_is_named() {
        let (_directory, path) = chain(5).await;
        tamper(
            &path,
            "UPDATE audit_log SET entry = replace(entry, 'france-travail', 'mission-locale') WHERE seq = 2",
        );
        assert_eq!(first_broken(&path, None), (2, Problem::Altered));
    }

    #[tokio::test]
    async fn an_altered_time_column_is_named() {
        let (_directory, path) = chain(5).await;
        tamper(
            &path,
            "UPDATE audit_log SET at = '2026-01-01T00:00:00Z' WHERE seq = 4",
        );
        assert_eq!(first_broken(&path, None), (4, Problem::Altered));
    }

    #[tokio::test]
    async fn a_removed_middle_entry_is_named() {
        let (_directory, path) = chain(5).await;
        tamper(&path, "DELETE FROM audit_log WHERE seq = 3");
        assert_eq!(first_broken(&path, None), (3, Problem::Removed));
    }

    #[tokio::test]
    async fn a_removed_first_entry_is_named() {
        let (_directory, path) = chain(3).await;
        tamper(&path, "DELETE FROM audit_log WHERE seq = 1");
        assert_eq!(first_broken(&path, None), (1, Problem::Removed));
    }

    #[tokio::test]
    async fn a_removal_hidden_by_renumbering_is_named() {
        let (_directory, path) = chain(5).await;
        tamper(
            &path,
            "DELETE FROM audit_log WHERE seq = 2;
             UPDATE audit_log SET seq = seq - 1 WHERE seq > 2",
        );
        assert_eq!(first_broken(&path, None), (2, Problem::Removed));
    }

    #[tokio::test]
    async fn swapped_entries_are_named_as_reordered() {
        let (_directory, path) = chain(5).await;
        tamper(
            &path,
            "UPDATE audit_log SET seq = 100 WHERE seq = 2;
             UPDATE audit_log SET seq = 2 WHERE seq = 4;
             UPDATE audit_log SET seq = 4 WHERE seq = 100",
        );
        assert_eq!(first_broken(&path, None), (2, Problem::Reordered));
    }

    #[tokio::test]
    async fn an_inserted_entry_is_named() {
        let (_directory, path) = chain(4).await;
        let (_, _, second_hash) = row(&path, 2);
        let forged = r#"{"at":"2027-01-04T09:02:30Z","kind":"erasure","seq":3}"#;
        let forged_hash = chain_hash(&second_hash, forged);
        tamper(
            &path,
            &format!(
                "UPDATE audit_log SET seq = seq + 10 WHERE seq > 2;
                 UPDATE audit_log SET seq = seq - 9 WHERE seq > 10;
                 INSERT INTO audit_log VALUES (3, '2027-01-04T09:02:30Z', '{forged}', '{second_hash}', '{forged_hash}')"
            ),
        );
        assert_eq!(first_broken(&path, None), (3, Problem::Duplicated));
    }

    /// The forger recomputes the hash of the entry they changed but cannot fix
    /// the link the next entry holds without re-hashing everything after.
    #[tokio::test]
    async fn an_entry_rewritten_with_a_recomputed_hash_is_named() {
        let (_directory, path) = chain(5).await;
        let (entry, previous_hash, _) = row(&path, 3);
        let forged = entry.replace("http-503", "http-200");
        assert_ne!(forged, entry);
        let forged_hash = chain_hash(&previous_hash, &forged);
        tamper(
            &path,
            &format!(
                "UPDATE audit_log SET entry = '{forged}', hash = '{forged_hash}' WHERE seq = 3"
            ),
        );
        assert_eq!(first_broken(&path, None), (3, Problem::Altered));
    }

    /// An entry re-spaced (same meaning) and re-hashed no longer matches what
    /// an auditor recomputes from the export: verify names it, even last.
    #[tokio::test]
    async fn a_non_canonical_entry_is_named() {
        let (_directory, path) = chain(3).await;
        let (entry, previous_hash, _) = row(&path, 3);
        let spaced = entry.replace(',', ", ");
        let spaced_hash = chain_hash(&previous_hash, &spaced);
        tamper(
            &path,
            &format!(
                "UPDATE audit_log SET entry = '{spaced}', hash = '{spaced_hash}' WHERE seq = 3"
            ),
        );
        let report = verify(&path, None).expect("verify");
        let broken = report.first_broken.expect("a break");
        assert_eq!((broken.seq, broken.problem), (3, Problem::Altered));
        assert!(broken.detail.contains("canonical"), "{}", broken.detail);
    }

    /// Without an anchor, removing the tail goes unseen (the documented limit);
    /// with the head an earlier verification printed, it is named.
    #[tokio::test]
    async fn a_truncated_tail_is_caught_only_against_an_expected_head() {
        let (_directory, path) = chain(5).await;
        let head = verify(&path, None).expect("verify").head.expect("a head");
        assert!(verify(&path, Some(&head)).expect("verify").intact);
        tamper(&path, "DELETE FROM audit_log WHERE seq >= 4");
        assert!(verify(&path, None).expect("verify").intact);
        assert_eq!(first_broken(&path, Some(&head)), (4, Problem::Truncated));
    }

    /// An older anchor still holds once the chain has grown past it.
    #[tokio::test]
    async fn an_earlier_head_stays_valid_as_the_chain_grows() {
        let (_directory, path) = chain(3).await;
        let head = verify(&path, None).expect("verify").head.expect("a head");
        let store = SqliteStore::open(&path).expect("open");
        append_entry(&store, sample(7)).await.expect("append");
        store.close().expect("close");
        let report = verify(&path, Some(&head)).expect("verify");
        assert!(report.intact);
        assert_eq!(report.head.map(|head| head.seq), Some(4));
    }

    #[tokio::test]
    async fn a_rewritten_last_entry_is_caught_against_an_expected_head() {
        let (_directory, path) = chain(3).await;
        let head = verify(&path, None).expect("verify").head.expect("a head");
        let (entry, previous_hash, _) = row(&path, 3);
        let forged = entry.replace("france-travail", "cap-emploi");
        let forged_hash = chain_hash(&previous_hash, &forged);
        tamper(
            &path,
            &format!(
                "UPDATE audit_log SET entry = '{forged}', hash = '{forged_hash}' WHERE seq = 3"
            ),
        );
        assert!(verify(&path, None).expect("verify").intact);
        assert_eq!(
            first_broken(&path, Some(&head)),
            (3, Problem::AnchorMismatch)
        );
    }

    /// The write job that carries an entry and fails takes the entry with it;
    /// the next entry takes the free seq.
    #[tokio::test]
    async fn an_entry_commits_with_its_write_job_or_not_at_all() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("passerelle.db");
        let store = SqliteStore::open(&path).expect("open");
        append_entry(&store, sample(0)).await.expect("append");
        let failed = store
            .write(|connection| {
                append(connection, minute(1), &sample(1))?;
                Err::<(), _>(Error::Conflict("the referral changed".to_owned()))
            })
            .await;
        assert!(matches!(failed, Err(Error::Conflict(_))));
        let seq = append_entry(&store, sample(2)).await.expect("append");
        assert_eq!(seq, 2);
        let kinds: Vec<AuditKind> = entries(&store)
            .expect("entries")
            .into_iter()
            .map(|chained| chained.entry.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![AuditKind::ReferralAccepted, AuditKind::DeliveryFailed]
        );
        store.close().expect("close");
        assert!(verify(&path, None).expect("verify").intact);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_give_a_gap_free_valid_chain() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("passerelle.db");
        let store = Arc::new(SqliteStore::open(&path).expect("open"));
        let tasks: Vec<_> = (0..16_u32)
            .map(|task| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for number in 0..25 {
                        let entry = sample(task * 25 + number);
                        seqs.push(append_entry(&store, entry).await.expect("append"));
                    }
                    seqs
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.extend(task.await.expect("task"));
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=400).collect::<Vec<u64>>());
        let store = Arc::into_inner(store).expect("the tasks are done");
        store.close().expect("close");
        let report = verify(&path, None).expect("verify");
        assert!(report.intact, "{report:?}");
        assert_eq!(report.entries, 400);
    }

    /// The gateway keeps the store open (WAL, entries not yet checkpointed)
    /// while a DPO verifies: the read-only walk sees every committed entry.
    #[tokio::test]
    async fn verify_runs_while_the_store_is_open() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("passerelle.db");
        let store = SqliteStore::open(&path).expect("open");
        for number in 0..3 {
            append_entry(&store, sample(number)).await.expect("append");
        }
        let report = verify(&path, None).expect("verify");
        assert!(report.intact);
        assert_eq!(report.entries, 3);
        append_entry(&store, sample(3))
            .await
            .expect("append after verify");
        store.close().expect("close");
    }

    #[tokio::test]
    async fn free_text_is_refused_and_nothing_is_appended() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("passerelle.db");
        let store = SqliteStore::open(&path).expect("open");
        let sentence = AuditEntry::new(AuditKind::ReferralRefused).reason("Jeanne Dupont refused");
        let Err(Error::Internal(message)) = append_entry(&store, sentence).await else {
            panic!("free text must be refused");
        };
        assert!(
            message.contains("reason") && !message.contains("Dupont"),
            "{message}"
        );
        let blank_path = AuditEntry::new(AuditKind::Erasure).paths(["person.first_name", ""]);
        let in_job = store
            .write(move |connection| append(connection, minute(0), &blank_path))
            .await;
        assert!(in_job.is_err());
        assert!(entries(&store).expect("entries").is_empty());
        store.close().expect("close");
    }

    #[test]
    fn a_decision_becomes_an_accepted_or_refused_entry() {
        use crate::decision::{Refusal, RefusalReason};
        let refused = AuditEntry::decision(
            "asso-konexio",
            REFERRAL,
            &Decision::Refuse(Refusal::new(
                RefusalReason::ConsentWithdrawn,
                "record 0b7a2c1e was withdrawn",
            )),
        );
        assert_eq!(
            refused,
            AuditEntry::new(AuditKind::ReferralRefused)
                .actor("asso-konexio")
                .referral(REFERRAL)
                .reason("consent-withdrawn")
        );
        let report = MinimisationReport {
            removed: vec!["identifiers.nir".to_owned()],
            pseudonymised: vec!["identifiers.caf".to_owned()],
            derived: vec!["obstacles.health".to_owned()],
            policy_id: "france-travail-orientation".to_owned(),
            policy_version: "2026-11-1".to_owned(),
        };
        let entry = AuditEntry::new(AuditKind::ReferralAccepted).minimisation(&report);
        assert_eq!(
            entry.policy.as_deref(),
            Some("france-travail-orientation@2026-11-1")
        );
        assert_eq!(
            (entry.paths, entry.pseudonymised, entry.derived),
            (report.removed, report.pseudonymised, report.derived)
        );
    }

    #[tokio::test]
    async fn entries_read_back_as_appended() {
        let (_directory, path) = chain(4).await;
        let store = SqliteStore::open(&path).expect("open");
        let read = entries(&store).expect("entries");
        store.close().expect("close");
        let expected: Vec<(u64, DateTime<Utc>, AuditEntry)> = (0..4)
            .map(|number| (u64::from(number) + 1, minute(number), sample(number)))
            .collect();
        let actual: Vec<_> = read
            .into_iter()
            .map(|chained| (chained.seq, chained.at, chained.entry))
            .collect();
        assert_eq!(actual, expected);
    }

    /// Each export line gives back the hashed text once `previous_hash` and
    /// `hash` are dropped and the rest written with sorted keys (serde_json's
    /// map is sorted here, standing in for another tool).
    #[tokio::test]
    async fn export_lines_let_an_auditor_recompute_the_chain() {
        let (_directory, path) = chain(4).await;
        let mut out = Vec::new();
        assert_eq!(export(&path, &mut out).expect("export"), 4);
        let text = String::from_utf8(out).expect("UTF-8");
        let mut previous = GENESIS_HASH.to_owned();
        for (number, line) in (1_u64..).zip(text.lines()) {
            assert!(
                line.starts_with(&format!(r#"{{"seq":{number},"at":"#)),
                "{line}"
            );
            let Value::Object(mut fields) = serde_json::from_str(line).expect("JSON") else {
                panic!("an object per line");
            };
            let link = fields.remove("previous_hash").expect("previous_hash");
            let hash = fields.remove("hash").expect("hash");
            assert_eq!(link, Value::from(previous.as_str()));
            let canonical = serde_json::to_string(&fields).expect("JSON");
            let recomputed =
                hex::encode(Sha256::digest(format!("{previous}{canonical}").as_bytes()));
            assert_eq!(hash, Value::from(recomputed.as_str()));
            previous = recomputed;
        }
        assert_eq!(text.lines().count(), 4);
    }

    #[test]
    fn a_missing_store_is_not_found_and_not_created() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("absent.db");
        assert!(matches!(verify(&path, None), Err(Error::NotFound(_))));
        assert!(matches!(
            export(&path, &mut Vec::new()),
            Err(Error::NotFound(_))
        ));
        assert!(!path.exists());
    }

    #[test]
    fn a_database_without_an_audit_log_is_not_found() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("other.db");
        Connection::open(&path)
            .and_then(|connection| connection.execute_batch("CREATE TABLE t (x INTEGER)"))
            .expect("another database");
        assert!(matches!(verify(&path, None), Err(Error::NotFound(_))));
    }

    #[test]
    fn a_chain_head_reads_back_as_it_prints() {
        let head: ChainHead = format!("42:{}", "AB".repeat(32)).parse().expect("valid");
        assert_eq!(head.seq, 42);
        assert_eq!(head.to_string(), format!("42:{}", "ab".repeat(32)));
        for wrong in [
            "42".to_owned(),
            format!("0:{}", "ab".repeat(32)),
            format!("x:{}", "ab".repeat(32)),
            format!("42:{}", "ab".repeat(31)),
            format!("42:{}", "zz".repeat(32)),
        ] {
            assert!(wrong.parse::<ChainHead>().is_err(), "{wrong}");
        }
    }
}
