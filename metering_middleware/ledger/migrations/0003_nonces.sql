-- Nonces, version 3: signature nonces claimed by calls, held until their signature expires,
-- so a restart does not reopen a replay window (loaded back into the nonce store at start).

CREATE TABLE nonces (
    access_key_id TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    account       TEXT NOT NULL,                -- '' when the claimer did not know it
    expires_at    TEXT NOT NULL,                -- UTC text like every ledger time
    PRIMARY KEY (access_key_id, nonce)
) WITHOUT ROWID;
-- Pruning takes the earliest-expiring rows first.
CREATE INDEX nonces_expires ON nonces (expires_at);
