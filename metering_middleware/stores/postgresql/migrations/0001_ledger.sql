-- PostgreSQL ledger schema, version 1: the tables of the SQLite ledger's LedgerStore half
-- (calls, per-minute outcome counts, credentials, claimed signature nonces).
--
-- Times are timestamptz (microseconds, like the SQLite text). Every text column that is
-- sorted or compared uses COLLATE "C": byte order, as SQLite's BINARY compares, so
-- listings and keyset pages come in the same order on both stores whatever the
-- database's locale.

CREATE TABLE calls (
    seq           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- insertion order
    id            text COLLATE "C" NOT NULL UNIQUE, -- the gateway's ULID; replays are idempotent
    request_id    text,                             -- upstream RequestId, for reconciliation
    account       text COLLATE "C" NOT NULL,
    access_key_id text COLLATE "C" NOT NULL,
    category      text COLLATE "C" NOT NULL,
    action        text COLLATE "C" NOT NULL,
    version       text NOT NULL,
    item          text COLLATE "C" NOT NULL,
    occurred_at   timestamptz NOT NULL,
    status        integer NOT NULL,
    error_code    text,
    latency_ms    double precision NOT NULL,
    recorded_at   timestamptz NOT NULL
);
-- The listing's order and keyset (occurred_at, id); per account for the CLI and bills.
CREATE INDEX calls_occurred ON calls (occurred_at, id);
CREATE INDEX calls_account_occurred ON calls (account, occurred_at, id);

-- Every call by outcome, per minute and account: charged, free (by code), refused (by reason).
CREATE TABLE outcome_counts (
    minute   timestamptz NOT NULL,
    account  text COLLATE "C" NOT NULL,
    category text COLLATE "C" NOT NULL,
    action   text COLLATE "C" NOT NULL,
    outcome  text COLLATE "C" NOT NULL,
    detail   text COLLATE "C" NOT NULL,
    count    bigint NOT NULL,
    PRIMARY KEY (minute, account, category, action, outcome, detail)
);

-- AccessKeys of the accounts the gateway serves.
CREATE TABLE credentials (
    access_key_id text COLLATE "C" PRIMARY KEY,
    account       text COLLATE "C" NOT NULL,
    secret        text NOT NULL, -- 'plain:<secret>' or 'fernet:<token>'
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL,
    disabled_at   timestamptz
);
CREATE INDEX credentials_account ON credentials (account);

-- Claimed signature nonces, held until their signature expires (epoch milliseconds, as
-- Redis holds them). Unlike SQLite's append-only table, one row per nonce: an upsert
-- keeps the later expiry, so a journal replayed twice or a nonce claimed again after it
-- expired leaves one row (PostgreSQL's B-tree takes random keys well enough).
CREATE TABLE nonces (
    access_key_id text COLLATE "C" NOT NULL,
    nonce         text COLLATE "C" NOT NULL,
    account       text NOT NULL, -- '' when the claimer did not know it
    expires_ms    bigint NOT NULL,
    PRIMARY KEY (access_key_id, nonce)
);
-- Pruning takes the earliest-expiring rows first.
CREATE INDEX nonces_expiry ON nonces (expires_ms);
