-- Money, version 4: balances, account settings and standing, notices and their webhook outbox.
-- Money is signed decimal TEXT (exact); times are fixed-width UTC text like the ledger's;
-- months are 'YYYY-MM' billing months (UTC+8).

-- The cash balance of an account is the sum of its entries. Entries are immutable: a
-- re-rate posts the difference as new entries, a mistake is corrected by a new entry.
-- Credits are positive (top-ups, refunds, rounding in the account's favour), charges
-- negative (purchases, pay-as-you-go). id is deterministic for every entry a program posts
-- (purchase:PLAN, refund:PLAN, payg:ACCOUNT:MONTH:N ...), so a rerun cannot post twice.
CREATE TABLE balance_entries (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    account     TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN (
                    'topup', 'purchase', 'payg', 'adjustment', 'rounding', 'refund',
                    'correction')),
    amount      TEXT    NOT NULL,
    at          TEXT    NOT NULL, -- when it takes effect (a purchase: its order time)
    month       TEXT,             -- payg, adjustment, rounding: the billing month charged
    ref         TEXT,             -- purchase, refund: the plan's id
    reason      TEXT,             -- corrections: why (required); others: how it was computed
    recorded_at TEXT    NOT NULL
);
CREATE INDEX balance_entries_account ON balance_entries (account, seq);
CREATE INDEX balance_entries_month ON balance_entries (account, month) WHERE month IS NOT NULL;

CREATE TRIGGER balance_entries_no_update BEFORE UPDATE ON balance_entries
BEGIN
    SELECT RAISE(ABORT, 'balance_entries rows are immutable: post a new entry instead');
END;
CREATE TRIGGER balance_entries_no_delete BEFORE DELETE ON balance_entries
BEGIN
    SELECT RAISE(ABORT, 'balance_entries rows are immutable: post a new entry instead');
END;

-- The sum of each account's entries, kept by every writer in the transaction that posts
-- them (a cache: entries are the truth). balance_mark is the last entry summed: a writer
-- first adds every entry after it, so entries this migration inserts are summed by the
-- first write (or read) after it. Its row 'closed' (year * 12 + month) is the last month
-- a pass over every account closed, so later passes skip looking for months to close.
CREATE TABLE balance_totals (
    account  TEXT    PRIMARY KEY,
    balance  TEXT    NOT NULL,
    entries  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE balance_mark (
    name     TEXT    PRIMARY KEY,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO balance_mark (name, last_seq) VALUES ('totals', 0);

-- What usage entries have posted per (account, month, kind): a cache kept with the entries
-- (in their transaction), so a settlement pass compares the month's lines with one row
-- instead of summing the month's entries.
CREATE TABLE balance_posted (
    account TEXT    NOT NULL,
    month   TEXT    NOT NULL,
    kind    TEXT    NOT NULL,
    amount  TEXT    NOT NULL,
    entries INTEGER NOT NULL,
    PRIMARY KEY (account, month, kind)
) WITHOUT ROWID;

-- Every past purchase gets its entry (ledgers from before balances), and every refund
-- recorded with its amount.
INSERT INTO balance_entries (id, account, kind, amount, at, ref, reason, recorded_at)
SELECT 'purchase:' || id, account, 'purchase',
       CASE WHEN CAST(price_paid AS REAL) = 0 THEN '0' ELSE '-' || price_paid END,
       ordered_at, id, 'migrated: bought before balances', recorded_at
FROM rating_plans ORDER BY seq;
INSERT INTO balance_entries (id, account, kind, amount, at, ref, reason, recorded_at)
SELECT 'refund:' || r.plan_id, p.account, 'refund', r.amount, r.refunded_at, r.plan_id,
       'migrated: refunded before balances', r.recorded_at
FROM rating_refunds r JOIN rating_plans p ON p.id = r.plan_id
WHERE r.amount IS NOT NULL ORDER BY r.seq;

-- A month whose rounding has been posted: settlement passed its close (end + grace days).
CREATE TABLE balance_closes (
    account   TEXT NOT NULL,
    month     TEXT NOT NULL,
    closed_at TEXT NOT NULL,
    PRIMARY KEY (account, month)
) WITHOUT ROWID;

-- Operator settings per account: a monthly pay-as-you-go cap and a low-balance threshold.
CREATE TABLE account_settings (
    account     TEXT PRIMARY KEY,
    monthly_cap TEXT, -- CNY of pay-as-you-go per billing month; NULL: no cap
    low_balance TEXT, -- notice when the balance falls below it; NULL: no notice
    updated_at  TEXT NOT NULL
) WITHOUT ROWID;

-- Accounts that are not in good standing (a row exists only then). overdue_since: when
-- settlement first found the balance below zero; suspended_at: when it was found overdue
-- for 24 hours; held_at/held_reason: an operator's suspension, lifted only by hand.
CREATE TABLE account_standing (
    account       TEXT PRIMARY KEY,
    overdue_since TEXT,
    suspended_at  TEXT,
    held_at       TEXT,
    held_reason   TEXT,
    updated_at    TEXT NOT NULL,
    CHECK (overdue_since IS NOT NULL OR held_at IS NOT NULL)
) WITHOUT ROWID;

-- Notices: each recorded once (id is deterministic: kind and what it is about).
CREATE TABLE notices (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    account     TEXT    NOT NULL,
    subject     TEXT,             -- a plan id, a month, ...
    at          TEXT    NOT NULL, -- when it happened
    data        TEXT    NOT NULL, -- JSON details
    recorded_at TEXT    NOT NULL
);
CREATE INDEX notices_account ON notices (account, seq);

-- Webhook deliveries still owed (written in the notice's transaction, so none is lost
-- across a restart); delivered rows keep their delivery time.
CREATE TABLE notice_outbox (
    notice_id    TEXT    PRIMARY KEY REFERENCES notices (id),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      TEXT    NOT NULL,
    last_error   TEXT,
    delivered_at TEXT
) WITHOUT ROWID;
CREATE INDEX notice_outbox_due ON notice_outbox (next_at) WHERE delivered_at IS NULL;
