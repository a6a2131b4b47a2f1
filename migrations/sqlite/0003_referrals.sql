-- Accepted referrals, their status events, and the outbox of messages to deliver.
--
-- A referral is stored only once accepted (consent and policy passed); refusals
-- leave an audit entry and nothing else. The row, its outbox message and its
-- audit entry commit in one transaction: no half-stored referral.

CREATE TABLE referrals (
    referral_id TEXT PRIMARY KEY NOT NULL,
    -- Organisation ids from the configuration.
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    -- SHA-256 (hex) of the submission: the same id with another fingerprint is refused.
    fingerprint TEXT NOT NULL,
    input_format TEXT NOT NULL,
    -- Canonical v2 JSON as the sender sent it (the sender's view).
    referral TEXT NOT NULL CHECK (json_valid(referral)),
    -- Canonical v2 JSON after minimisation (all the recipient ever sees).
    minimised TEXT NOT NULL CHECK (json_valid(minimised)),
    -- The decision report: policy, paths removed, pseudonymised, derived; consent basis.
    decision TEXT NOT NULL CHECK (json_valid(decision)),
    consent_record_id TEXT,
    -- queued, then (delivery) delivered, dead_lettered, withdrawn, expired.
    state TEXT NOT NULL,
    accepted_at TEXT NOT NULL
) STRICT;

CREATE INDEX referrals_by_recipient ON referrals (recipient, accepted_at);
CREATE INDEX referrals_by_sender ON referrals (sender, accepted_at);

CREATE TABLE status_events (
    event_id TEXT PRIMARY KEY NOT NULL,
    referral_id TEXT NOT NULL REFERENCES referrals (referral_id),
    -- Organisation id of the author.
    author TEXT NOT NULL,
    -- The proto value name (STATUS_ACCEPTED, ...).
    status TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    -- The canonical status/v1 JSON as posted.
    event TEXT NOT NULL CHECK (json_valid(event)),
    recorded_at TEXT NOT NULL
) STRICT;

CREATE INDEX status_events_by_referral ON status_events (referral_id, recorded_at);

CREATE TABLE outbox (
    -- The message id (referral id, or status event id), stable across retries.
    message_id TEXT PRIMARY KEY NOT NULL,
    -- referral or status_event.
    kind TEXT NOT NULL,
    referral_id TEXT NOT NULL REFERENCES referrals (referral_id),
    -- Organisation id the message is for.
    destination TEXT NOT NULL,
    -- Canonical JSON of what leaves, already minimised for the destination.
    payload TEXT NOT NULL CHECK (json_valid(payload)),
    state TEXT NOT NULL DEFAULT 'queued',
    created_at TEXT NOT NULL
) STRICT;

CREATE INDEX outbox_queued ON outbox (state, created_at);
