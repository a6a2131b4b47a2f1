-- Passerelle's store on PostgreSQL: the same tables as the SQLite migrations
-- 0001–0004 reach, in one step (SQLite's STRICT tables, json_valid checks and
-- RAISE triggers have no common syntax with PostgreSQL, so the two sets of
-- migrations are kept side by side and checked by the same tests).
--
-- Times are timestamptz; JSON documents are text, kept byte for byte as the
-- gateway wrote them (fingerprints and signatures are computed on those bytes).

CREATE TABLE consent_records (
    record_id text PRIMARY KEY,
    -- The record as canonical JSON, with an empty event list.
    header text NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE consent_events (
    record_id text NOT NULL REFERENCES consent_records (record_id),
    -- 0 for the first event of a record, then 1, 2, ... without gaps.
    seq integer NOT NULL CHECK (seq >= 0),
    -- The proto value name (CONSENT_EVENT_KIND_GIVEN, ...).
    kind text NOT NULL,
    -- RFC 3339, UTC, as the event carries it.
    at text NOT NULL,
    -- SIRET of the organisation that recorded the event.
    recorded_by text NOT NULL,
    PRIMARY KEY (record_id, seq)
);

CREATE TABLE audit_log (
    -- 1, 2, 3 ... without gaps: one chain for every replica.
    seq bigint PRIMARY KEY CHECK (seq >= 1),
    -- RFC 3339, UTC, as hashed.
    at text NOT NULL,
    -- The entry as canonical JSON (sorted keys, no spaces), `seq` and `at` included.
    entry text NOT NULL,
    -- Lower-case hex SHA-256 of the previous entry (64 zeros for the first).
    previous_hash text NOT NULL,
    -- Lower-case hex SHA-256 of previous_hash || entry.
    hash text NOT NULL
);

-- The head of the audit chain, one row. Every transaction that appends to the
-- chain locks it (SELECT ... FOR UPDATE), so that concurrent writers of every
-- replica append one after another and the chain stays one verifiable chain.
CREATE TABLE audit_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO audit_head (seq, hash)
VALUES (0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only tables refuse UPDATE and DELETE, as the SQLite triggers do.
CREATE FUNCTION passerelle_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: no %', TG_TABLE_NAME, TG_OP;
END;
$$;

CREATE TRIGGER consent_records_append_only BEFORE UPDATE OR DELETE ON consent_records
    FOR EACH ROW EXECUTE FUNCTION passerelle_append_only();
CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION passerelle_append_only();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION passerelle_append_only();

CREATE TABLE referrals (
    referral_id text PRIMARY KEY,
    -- Organisation ids from the configuration.
    sender text NOT NULL,
    recipient text NOT NULL,
    -- SHA-256 (hex) of the submission: the same id with another fingerprint is refused.
    fingerprint text NOT NULL,
    input_format text NOT NULL,
    -- Canonical v2 JSON as the sender sent it (the sender's view).
    referral text NOT NULL,
    -- Canonical v2 JSON after minimisation (all the recipient ever sees).
    minimised text NOT NULL,
    -- The decision report: policy, paths removed, pseudonymised, derived; consent basis.
    decision text NOT NULL,
    consent_record_id text,
    -- queued, then (delivery) delivered, dead_lettered, withdrawn, expired.
    state text NOT NULL,
    accepted_at timestamptz NOT NULL
);

CREATE INDEX referrals_by_recipient ON referrals (recipient, accepted_at);
CREATE INDEX referrals_by_sender ON referrals (sender, accepted_at);
CREATE INDEX referrals_by_consent ON referrals (consent_record_id);

CREATE TABLE status_events (
    event_id text PRIMARY KEY,
    referral_id text NOT NULL REFERENCES referrals (referral_id),
    -- Organisation id of the author.
    author text NOT NULL,
    -- The proto value name (STATUS_ACCEPTED, ...).
    status text NOT NULL,
    occurred_at timestamptz NOT NULL,
    fingerprint text NOT NULL,
    -- The canonical status/v1 JSON as posted.
    event text NOT NULL,
    recorded_at timestamptz NOT NULL
);

CREATE INDEX status_events_by_referral ON status_events (referral_id, recorded_at);

CREATE TABLE outbox (
    -- The order messages were queued in: the inbox cursor.
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Stable across retries (the webhook-id).
    message_id text NOT NULL UNIQUE,
    -- referral or status_event.
    kind text NOT NULL,
    referral_id text NOT NULL REFERENCES referrals (referral_id),
    -- Organisation id the message is for.
    destination text NOT NULL,
    -- Canonical JSON of what leaves, already minimised for the destination.
    payload text NOT NULL,
    state text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'delivered', 'dead', 'cancelled')),
    -- Attempts started (a claim by a worker or a lease to a puller counts).
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- Set while a worker (of any replica) or a puller holds the message.
    lease_until timestamptz,
    -- A status code or error kind, never the receiver's answer.
    last_error text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE INDEX outbox_due ON outbox (state, destination, next_attempt_at);
CREATE INDEX outbox_by_referral ON outbox (referral_id);

CREATE TABLE disabled_destinations (
    destination text PRIMARY KEY,
    reason text NOT NULL,
    disabled_at timestamptz NOT NULL
);
