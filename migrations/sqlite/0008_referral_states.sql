-- A referral's delivery state in a table of its own.
--
-- A referral row holds the sender's copy, the minimised copy and the decision
-- report: about 4.7 KB for a 2 KB referral, so more than a 4 KB page holds and
-- the rest goes to an overflow page. Changing its `state` from 'queued' to
-- 'delivered' changed the row's size, and SQLite rewrites a row whose size
-- changes whole: a new overflow page, the leaf and the free list, about 4.7 KB
-- written to the WAL (and again by the checkpoint) for every delivery.
--
-- The state now lives in `referral_states`, one short row per referral keyed
-- by the referral's key, in the order referrals were accepted: a delivery
-- updates a few bytes on a page it shares with its neighbours (about 125 bytes
-- of WAL per delivery, measured with 100 deliveries per commit).

CREATE TABLE referral_states (
    referral_row INTEGER PRIMARY KEY REFERENCES referrals (referral_row),
    -- queued, then (delivery) delivered, dead_lettered, withdrawn, expired.
    state TEXT NOT NULL
        CHECK (state IN ('queued', 'delivered', 'dead_lettered', 'withdrawn', 'expired'))
) STRICT;

INSERT INTO referral_states (referral_row, state)
SELECT referral_row, state FROM referrals ORDER BY referral_row;

ALTER TABLE referrals DROP COLUMN state;
