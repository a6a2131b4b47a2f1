-- Consent records and their append-only events.
--
-- A record's header (every field but the events) is written once and never
-- changed; its events are appended with consecutive sequence numbers and can
-- be neither updated nor deleted: the triggers below refuse it even to
-- manual SQL, so the history the state is derived from cannot be rewritten.

CREATE TABLE consent_records (
    record_id TEXT PRIMARY KEY NOT NULL,
    -- The record as canonical JSON, with an empty event list.
    header TEXT NOT NULL CHECK (json_valid(header)),
    stored_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE consent_events (
    record_id TEXT NOT NULL REFERENCES consent_records (record_id),
    -- 0 for the first event of a record, then 1, 2, ... without gaps.
    seq INTEGER NOT NULL CHECK (seq >= 0),
    -- The proto value name (CONSENT_EVENT_KIND_GIVEN, ...).
    kind TEXT NOT NULL,
    -- RFC 3339, UTC.
    at TEXT NOT NULL,
    -- SIRET of the organisation that recorded the event.
    recorded_by TEXT NOT NULL,
    PRIMARY KEY (record_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER consent_records_no_update
BEFORE UPDATE ON consent_records
BEGIN
    SELECT RAISE(ABORT, 'consent records are immutable: append an event instead');
END;

CREATE TRIGGER consent_events_no_update
BEFORE UPDATE ON consent_events
BEGIN
    SELECT RAISE(ABORT, 'consent events are append-only: no UPDATE');
END;

CREATE TRIGGER consent_events_no_delete
BEFORE DELETE ON consent_events
BEGIN
    SELECT RAISE(ABORT, 'consent events are append-only: no DELETE');
END;

CREATE TRIGGER consent_events_next_seq
BEFORE INSERT ON consent_events
WHEN NEW.seq <> (
    SELECT COALESCE(MAX(seq) + 1, 0) FROM consent_events WHERE record_id = NEW.record_id
)
BEGIN
    SELECT RAISE(ABORT, 'consent events are appended in sequence: no gap, no insertion in the past');
END;
