-- Indexes that no query reads, each updated by every accepted referral.
--
-- Referrals are read by id (the primary key) and by consent record (withdrawal,
-- `referrals_by_consent`), never by recipient or by sender. Outbox messages are
-- found by message id, by seq and through the claim and inbox indexes, never
-- by referral; referrals are never deleted, so no foreign key check needs one
-- either. `outbox_by_referral` was keyed by a UUID: each insert landed on a
-- random leaf page.

DROP INDEX referrals_by_recipient;
DROP INDEX referrals_by_sender;
DROP INDEX outbox_by_referral;
