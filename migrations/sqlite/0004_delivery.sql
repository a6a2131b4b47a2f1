-- Delivery state of the outbox: a cursor (seq) for pull inboxes, attempts and
-- backoff, leases (a message handed to a worker or a puller is not offered
-- again before its lease ends), dead letters with their last error, and the
-- destinations disabled after answering 410 Gone.
--
-- The outbox of 0003 is rebuilt with an INTEGER PRIMARY KEY so that the
-- cursor never changes (VACUUM may renumber implicit rowids).

CREATE TABLE outbox_delivery (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    referral_id TEXT NOT NULL REFERENCES referrals (referral_id),
    destination TEXT NOT NULL,
    payload TEXT NOT NULL CHECK (json_valid(payload)),
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

INSERT INTO outbox_delivery (message_id, kind, referral_id, destination, payload, state, next_attempt_at, created_at, updated_at)
SELECT message_id, kind, referral_id, destination, payload, state, created_at, created_at, created_at
FROM outbox ORDER BY created_at, message_id;

DROP TABLE outbox;
ALTER TABLE outbox_delivery RENAME TO outbox;

CREATE INDEX outbox_due ON outbox (state, destination, next_attempt_at);
CREATE INDEX outbox_by_referral ON outbox (referral_id);

CREATE TABLE disabled_destinations (
    destination TEXT PRIMARY KEY NOT NULL,
    reason TEXT NOT NULL,
    disabled_at TEXT NOT NULL
) STRICT;
