-- Claims read the queued messages of one destination in the order they are
-- due, visiting nothing else.
--
-- With the initial index on (state, destination, next_attempt_at), a claim "the
-- first 64 due messages by seq" read every due message of the destination and
-- sorted them: with a backlog of N messages each claim cost O(N), so delivery
-- slowed down as the backlog grew, which made it grow faster. Claims now take
-- the due messages by (next_attempt_at, seq) from a partial index over queued
-- messages, and pull inboxes walk their queued messages by seq.

DROP INDEX outbox_due;

CREATE INDEX outbox_claimable ON outbox (destination, next_attempt_at, seq)
    WHERE state = 'queued';

CREATE INDEX outbox_inbox ON outbox (destination, seq)
    WHERE state = 'queued';
