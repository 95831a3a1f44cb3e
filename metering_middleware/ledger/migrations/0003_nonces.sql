-- Nonces, version 3: signature nonces claimed by calls, held until their signature expires,
-- so a restart does not reopen a replay window (loaded back into the nonce store at start).
--
-- One row per claim, appended: seq is the insertion order, so a commit's new rows land on
-- the table's last page (a key on the random nonce would dirty one page per row). A nonce
-- can have two rows (claimed again after it expired, a journal replayed twice): readers
-- take the latest expiry. Expiry is epoch milliseconds, as Redis holds it: this table is
-- the gateway's own working state, and an integer keeps the per-call insert and its index
-- small.

CREATE TABLE nonces (
    seq           INTEGER PRIMARY KEY,
    access_key_id TEXT    NOT NULL,
    nonce         TEXT    NOT NULL,
    account       TEXT    NOT NULL, -- '' when the claimer did not know it
    expires_ms    INTEGER NOT NULL
);
-- Pruning takes the earliest-expiring rows first; expiries grow with time, so inserts
-- into this index append too.
CREATE INDEX nonces_expiry ON nonces (expires_ms);
