-- The referrals their recipient has read through the API.
--
-- A consent withdrawal is forwarded to every recipient that may hold a
-- referral made under the record: delivered, offered, or acknowledged with a
-- status event. A recipient that only read the referral (GET
-- /v1/referrals/{id}, the gRPC GetReferral) holds it too, but left no trace
-- that query could see: the read was audited, and the audit log is JSON
-- without an index. Each read by the recipient now also marks its referral
-- here, in the same transaction as its audit entry; the mark is kept once.

CREATE TABLE recipient_reads (
    referral_row INTEGER PRIMARY KEY REFERENCES referrals (referral_row),
    -- RFC 3339 UTC of the first read.
    first_read_at TEXT NOT NULL
) STRICT;

-- Reads audited before this migration.
INSERT INTO recipient_reads (referral_row, first_read_at)
SELECT referrals.referral_row, MIN(audit_log.at)
FROM audit_log
JOIN referrals
  ON referrals.referral_id = json_extract(audit_log.entry, '$.referral_id')
 AND referrals.recipient = json_extract(audit_log.entry, '$.actor')
WHERE json_extract(audit_log.entry, '$.kind') = 'referral_read'
GROUP BY referrals.referral_row;
