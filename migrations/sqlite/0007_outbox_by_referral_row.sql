-- No index entry at a random place per accepted referral, but one.
--
-- Referral ids are UUIDs chosen by senders (or derived from a CSV row's
-- identifier), so an index keyed by them takes each new entry at a random
-- leaf: under sustained load every accepted referral dirties a leaf page of
-- its own, written whole into the WAL at each commit. The referrals' key is
-- one such index and cannot be avoided (lookups by id, idempotency). The
-- outbox's UNIQUE (message_id) was a second one, and a referral's message id
-- is its referral id.
--
-- * Referrals get an explicit integer key, `referral_row`: the same value as
--   their rowid until now, but kept as it is by VACUUM (an implicit rowid is
--   not). The referral id stays UNIQUE.
-- * A referral's message names its referral by that key: the index on it
--   grows at its end, as rows are accepted. A status event's message is
--   found by its own id through a partial index that holds only status event
--   messages, fewer than one per referral.
--
-- Tables are rebuilt with foreign keys off; the migration runner checks them
-- before committing. The outbox keeps its `seq` values and AUTOINCREMENT
-- counter, so pull cursors stay valid.

CREATE TABLE referrals_keyed (
    -- Increasing in the order referrals were accepted; what the outbox names.
    referral_row INTEGER PRIMARY KEY,
    referral_id TEXT NOT NULL UNIQUE,
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

INSERT INTO referrals_keyed (referral_row, referral_id, sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, state, accepted_at)
SELECT rowid, referral_id, sender, recipient, fingerprint, input_format, referral, minimised, decision, consent_record_id, state, accepted_at
FROM referrals ORDER BY rowid;

CREATE TABLE outbox_keyed (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The message id (referral id, or status event id), stable across retries.
    -- Unique: a referral's through its referral's key, a status event
    -- message's through the partial index below.
    message_id TEXT NOT NULL,
    -- referral or status_event.
    kind TEXT NOT NULL,
    referral_id TEXT NOT NULL REFERENCES referrals (referral_id),
    -- The referral's key, for a referral's message only.
    referral_row INTEGER REFERENCES referrals (referral_row),
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
    updated_at TEXT NOT NULL,
    CHECK ((kind = 'referral' AND referral_row IS NOT NULL)
        OR (kind = 'status_event' AND referral_row IS NULL))
) STRICT;

INSERT INTO outbox_keyed (seq, message_id, kind, referral_id, referral_row, destination, payload, state, attempts, next_attempt_at, lease_until, last_error, created_at, updated_at)
SELECT seq, message_id, kind, referral_id,
       CASE WHEN kind = 'referral'
            THEN (SELECT referral_row FROM referrals_keyed WHERE referrals_keyed.referral_id = outbox.referral_id)
       END,
       destination, payload, state, attempts, next_attempt_at, lease_until, last_error, created_at, updated_at
FROM outbox ORDER BY seq;

UPDATE sqlite_sequence
SET seq = (SELECT MAX(seq) FROM sqlite_sequence WHERE name IN ('outbox', 'outbox_keyed'))
WHERE name = 'outbox_keyed';
INSERT INTO sqlite_sequence (name, seq)
SELECT 'outbox_keyed', seq FROM sqlite_sequence
WHERE name = 'outbox' AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'outbox_keyed');

DROP TABLE outbox;
DROP TABLE referrals;

ALTER TABLE referrals_keyed RENAME TO referrals;
ALTER TABLE outbox_keyed RENAME TO outbox;

CREATE INDEX referrals_by_consent ON referrals (consent_record_id);

CREATE UNIQUE INDEX outbox_referral_messages ON outbox (referral_row)
    WHERE kind = 'referral';
CREATE UNIQUE INDEX outbox_status_event_messages ON outbox (message_id)
    WHERE kind = 'status_event';
CREATE INDEX outbox_claimable ON outbox (destination, next_attempt_at, seq)
    WHERE state = 'queued';
CREATE INDEX outbox_inbox ON outbox (destination, seq)
    WHERE state = 'queued';
