-- Notices, version 5: low-balance episodes, and leases and give-ups on webhook deliveries.

-- An account whose balance is below its low-balance threshold, since when (a row only
-- then). The balance.low notice of an episode is named by `since`, so it fires once per
-- episode: the row is removed once the balance is back at or above the threshold (or the
-- threshold is removed), and the next dip starts a new episode with a new notice.
CREATE TABLE notice_low_balance (
    account   TEXT PRIMARY KEY,
    since     TEXT NOT NULL,
    threshold TEXT NOT NULL -- the threshold it fell below (decimal text)
) WITHOUT ROWID;

-- A delivery being attempted is claimed by one sender until claimed_until (a lease), so
-- several gateway processes on one ledger do not post the same notice at once; a sender
-- that dies mid-attempt loses its claim when the lease runs out, and another retries.
-- failed_at: the sender gave up after its maximum attempts (kept, visible, never retried
-- unless an operator resets it).
ALTER TABLE notice_outbox ADD COLUMN claimed_by TEXT;
ALTER TABLE notice_outbox ADD COLUMN claimed_until TEXT;
ALTER TABLE notice_outbox ADD COLUMN failed_at TEXT;
