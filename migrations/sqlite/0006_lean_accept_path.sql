-- Less written per accepted referral, which the single writer pays for in
-- every group commit.
--
-- * A referral's outbox message no longer copies the minimised referral: its
--   payload is NULL and is read from `referrals.minimised` (status events keep
--   their own payload, which is minimised per destination). About a fifth of
--   the bytes each referral wrote.
-- * No `json_valid` CHECKs on the JSON columns written by the gateway: every
--   one is serde_json's output, and re-parsing it inside the commit cost more
--   than the insert itself. The other CHECKs (outbox states, audit positions)
--   and the audit log's append-only triggers stay.
-- * The referrals' indexes by (recipient, accepted_at) and (sender,
--   accepted_at), and the outbox's by referral, served no query and are
--   dropped (referrals are never deleted, so no foreign key check needs the
--   last one); withdrawal looks referrals up by consent record, which read the
--   whole table: it gets an index.
--
-- Tables are rebuilt (SQLite cannot drop a CHECK in place) with foreign keys
-- off; the migration runner checks them before committing. The outbox keeps
-- its `seq` values and its AUTOINCREMENT counter, so pull cursors stay valid.

CREATE TABLE referrals_lean (
    referral_id TEXT PRIMARY KEY NOT NULL,
    -- Organisation ids from the configuration.
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    -- SHA-256 (hex) of the submission: the same id with another fingerprint is refused.
    fingerprint TEXT NOT NULL,
    input_format TEXT NOT NULL,
    -- Canonical v2 JSON as the sender sent it (the sender's view).
    referral TEXT NOT NULL,
    -- Canonical v2 JSON after minimisation (all the recipient ever sees).
    minimised TEXT NOT NULL,
    -- The decision report: policy, paths removed, pseudonymised, derived; consent basis.
    decision TEXT NOT NULL,
    consent_record_id TEXT,
    -- queued, then (delivery) delivered, dead_lettered, withdrawn, expired.
    state TEXT NOT NULL,
    accepted_at TEXT NOT NULL
) STRICT;

INSERT INTO referrals_lean (referral_id, sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, state, accepted_at)
SELECT referral_id, sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, state, accepted_at
FROM referrals ORDER BY rowid;

CREATE TABLE outbox_lean (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The message id (referral id, or status event id), stable across retries.
    message_id TEXT NOT NULL UNIQUE,
    -- referral or status_event.
    kind TEXT NOT NULL,
    referral_id TEXT NOT NULL REFERENCES referrals (referral_id),
    -- Organisation id the message is for.
    destination TEXT NOT NULL,
    -- Canonical JSON of what leaves, already minimised for the destination;
    -- NULL for a referral, whose payload is `referrals.minimised`.
    payload TEXT,
    state TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'delivered', 'dead', 'cancelled')),
    -- Attempts started (a claim by a worker or a lease to a puller counts).
    attempts INTEGER NOT NULL DEFAULT 0,
    -- RFC 3339 UTC with microseconds: compares as text.
    next_attempt_at TEXT NOT NULL,
    lease_until TEXT,
    -- A status code or error kind, never the receiver's answer.
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
) STRICT;

INSERT INTO outbox_lean (seq, message_id, kind, referral_id, destination, payload, state, attempts, next_attempt_at, lease_until, last_error, created_at, updated_at)
SELECT seq, message_id, kind, referral_id, destination,
       CASE WHEN kind = 'referral'
                 AND payload IS (SELECT minimised FROM referrals WHERE referrals.referral_id = outbox.referral_id)
            THEN NULL ELSE payload END,
       state, attempts, next_attempt_at, lease_until, last_error, created_at, updated_at
FROM outbox ORDER BY seq;

-- Seq values of purged messages are never handed out again: the new table's
-- counter starts where the old one was, even if no message is left.
UPDATE sqlite_sequence
SET seq = (SELECT MAX(seq) FROM sqlite_sequence WHERE name IN ('outbox', 'outbox_lean'))
WHERE name = 'outbox_lean';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'outbox_lean', seq FROM sqlite_sequence
WHERE name = 'outbox' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox_lean');

CREATE TABLE audit_log_lean (
    -- 1, 2, 3 ... without gaps.
    seq INTEGER PRIMARY KEY NOT NULL CHECK (seq >= 1),
    -- RFC 3339, UTC.
    at TEXT NOT NULL,
    -- The entry as canonical JSON (sorted keys, no spaces), `seq` and `at` included.
    entry TEXT NOT NULL,
    -- Lower-case hex SHA-256 of the previous entry (64 zeros for the first).
    previous_hash TEXT NOT NULL,
    -- Lower-case hex SHA-256 of previous_hash || entry.
    hash TEXT NOT NULL
) STRICT;

INSERT INTO audit_log_lean (seq, at, entry, previous_hash, hash)
SELECT seq, at, entry, previous_hash, hash FROM audit_log ORDER BY seq;

-- Dropping a table drops its indexes and triggers; dropping the audit log does
-- not fire its DELETE trigger.
DROP TABLE outbox;
DROP TABLE referrals;
DROP TABLE audit_log;

ALTER TABLE referrals_lean RENAME TO referrals;
ALTER TABLE outbox_lean RENAME TO outbox;
ALTER TABLE audit_log_lean RENAME TO audit_log;

CREATE INDEX referrals_by_consent ON referrals (consent_record_id);

CREATE INDEX outbox_claimable ON outbox (destination, next_attempt_at, seq)
    WHERE state = 'queued';
CREATE INDEX outbox_inbox ON outbox (destination, seq)
    WHERE state = 'queued';

CREATE TRIGGER audit_log_no_update
BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: no UPDATE');
END;

CREATE TRIGGER audit_log_no_delete
BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: no DELETE');
END;
