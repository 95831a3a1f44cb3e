-- Ledger schema, version 1.
-- Times are UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (fixed width, so text order is time order).

CREATE TABLE calls (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT, -- insertion order: settlement watermark
    id            TEXT    NOT NULL UNIQUE,           -- the gateway's ULID; replays are idempotent
    request_id    TEXT,                              -- upstream RequestId, for reconciliation
    account       TEXT    NOT NULL,
    access_key_id TEXT    NOT NULL,
    category      TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    item          TEXT    NOT NULL,
    occurred_at   TEXT    NOT NULL,
    status        INTEGER NOT NULL,
    error_code    TEXT,
    latency_ms    REAL    NOT NULL,
    recorded_at   TEXT    NOT NULL
);
CREATE INDEX calls_account_occurred ON calls (account, occurred_at);
CREATE INDEX calls_occurred ON calls (occurred_at);

-- Every call by outcome, per minute and account: charged, free (by code), refused (by reason).
CREATE TABLE outcome_counts (
    minute   TEXT    NOT NULL,
    account  TEXT    NOT NULL,
    category TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    outcome  TEXT    NOT NULL,
    detail   TEXT    NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (minute, account, category, action, outcome, detail)
) WITHOUT ROWID;

-- AccessKeys of the accounts the gateway serves.
CREATE TABLE credentials (
    access_key_id TEXT PRIMARY KEY,
    account       TEXT    NOT NULL,
    secret        TEXT    NOT NULL, -- 'plain:<secret>' or 'fernet:<token>' when a key is configured
    enabled       INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT    NOT NULL,
    disabled_at   TEXT
);
CREATE INDEX credentials_account ON credentials (account);
