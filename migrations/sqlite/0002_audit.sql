-- The audit log: append-only and hash-chained.
--
-- Each entry holds ids, codes and field paths, never values (see src/audit.rs).
-- `hash` is SHA-256 over the previous entry's hash and this entry's canonical
-- JSON, so altering, removing or reordering an entry breaks every later link:
-- `passerelle audit verify` walks the chain and names the first broken entry.
-- The triggers refuse UPDATE and DELETE even to manual SQL.

CREATE TABLE audit_log (
    -- 1, 2, 3 ... without gaps.
    seq INTEGER PRIMARY KEY NOT NULL CHECK (seq >= 1),
    -- RFC 3339, UTC.
    at TEXT NOT NULL,
    -- The entry as canonical JSON (sorted keys, no spaces), `seq` and `at` included.
    entry TEXT NOT NULL CHECK (json_valid(entry)),
    -- Lower-case hex SHA-256 of the previous entry (64 zeros for the first).
    previous_hash TEXT NOT NULL,
    -- Lower-case hex SHA-256 of previous_hash || entry.
    hash TEXT NOT NULL
) STRICT;

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
