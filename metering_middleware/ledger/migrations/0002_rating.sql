-- Rating, version 2: plans beside the ledger, and what settlement keeps.
-- Money and points are decimal TEXT (exact); times are fixed-width UTC text like the ledger's;
-- months are 'YYYY-MM' billing months (UTC+8).

-- Prepaid plans: QPS subscriptions and resource plans. Immutable once bought: a correction is
-- a new entry, a refund is a row of rating_refunds. seq is the entry order, so settlement can
-- find plans bought (or refunded) into a period it already settled.
CREATE TABLE rating_plans (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    account     TEXT    NOT NULL,
    kind        TEXT    NOT NULL CHECK (kind IN ('qps', 'single', 'general')),
    categories  TEXT    NOT NULL, -- sorted, space-separated; a QPS subscription's one category
    action      TEXT,             -- QPS subscriptions only
    qps         INTEGER,          -- QPS subscriptions only
    points      TEXT,             -- resource plans only
    start_at    TEXT    NOT NULL, -- validity [start_at, end_at)
    end_at      TEXT    NOT NULL,
    ordered_at  TEXT    NOT NULL,
    price_paid  TEXT    NOT NULL,
    recorded_at TEXT    NOT NULL,
    CHECK ((kind = 'qps') = (action IS NOT NULL AND qps IS NOT NULL AND points IS NULL))
);
CREATE INDEX rating_plans_account ON rating_plans (account);

-- A refund ends a plan's coverage at refunded_at; the cash side arrives with the accounts issue.
CREATE TABLE rating_refunds (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_id     TEXT    NOT NULL UNIQUE REFERENCES rating_plans (id),
    refunded_at TEXT    NOT NULL,
    amount      TEXT,             -- cash refunded, when known
    recorded_at TEXT    NOT NULL
);

CREATE TRIGGER rating_plans_no_update BEFORE UPDATE ON rating_plans
BEGIN
    SELECT RAISE(ABORT, 'rating_plans rows are immutable: add a new entry instead');
END;
CREATE TRIGGER rating_plans_no_delete BEFORE DELETE ON rating_plans
BEGIN
    SELECT RAISE(ABORT, 'rating_plans rows are immutable: add a new entry instead');
END;
CREATE TRIGGER rating_refunds_no_update BEFORE UPDATE ON rating_refunds
BEGIN
    SELECT RAISE(ABORT, 'rating_refunds rows are immutable');
END;
CREATE TRIGGER rating_refunds_no_delete BEFORE DELETE ON rating_refunds
BEGIN
    SELECT RAISE(ABORT, 'rating_refunds rows are immutable');
END;

-- One settler at a time: the owner holds the lock until expires_at (a crashed one times out).
CREATE TABLE rating_lock (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    acquired_at TEXT NOT NULL,
    expires_at  TEXT NOT NULL
) WITHOUT ROWID;

-- Where the last full settlement pass stopped: every record with seq <= seen whose effective
-- time (occurred_at; recorded_at for adjustments) is before horizon is settled.
CREATE TABLE rating_progress (
    name        TEXT    PRIMARY KEY,
    seen        INTEGER NOT NULL,
    horizon     TEXT    NOT NULL,
    plan_seq    INTEGER NOT NULL,
    refund_seq  INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL
) WITHOUT ROWID;

-- Per account: the same marks for its last pass (they win when seen >= the global one), the
-- last settled position in deduction order, and the deduction state after it (JSON).
CREATE TABLE rating_accounts (
    account        TEXT    PRIMARY KEY,
    seen           INTEGER NOT NULL,
    horizon        TEXT    NOT NULL,
    frontier_month TEXT,
    frontier_at    TEXT,
    frontier_occurred TEXT,
    frontier_id    TEXT,
    state          TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
) WITHOUT ROWID;

-- The deduction state of an account at the start of a billing month: a late record re-rates
-- from here instead of from the beginning.
CREATE TABLE rating_checkpoints (
    account TEXT NOT NULL,
    month   TEXT NOT NULL,
    state   TEXT NOT NULL,
    PRIMARY KEY (account, month)
) WITHOUT ROWID;

-- Records that arrived after their month closed, with the month they are billed in and their
-- place in the deduction order (effective_at: their arrival), so a re-rate reproduces them.
CREATE TABLE rating_adjustments (
    call_seq     INTEGER PRIMARY KEY, -- calls.seq
    call_id      TEXT    NOT NULL UNIQUE,
    account      TEXT    NOT NULL,
    occurred_at  TEXT    NOT NULL,
    origin_month TEXT    NOT NULL,
    billed_month TEXT    NOT NULL,
    effective_at TEXT    NOT NULL
);
CREATE INDEX rating_adjustments_account ON rating_adjustments (account, billed_month);
CREATE INDEX rating_adjustments_effective ON rating_adjustments (effective_at);

-- Bill lines: calls of one item billed in one month by one source, with exact amounts.
-- origin_month differs from billed_month for adjustments.
CREATE TABLE rating_lines (
    account      TEXT    NOT NULL,
    billed_month TEXT    NOT NULL,
    origin_month TEXT    NOT NULL,
    item         TEXT    NOT NULL,
    kind         TEXT    NOT NULL, -- qps, single, general, payg, free
    plan_id      TEXT    NOT NULL DEFAULT '',
    tier         INTEGER NOT NULL DEFAULT -1,
    unit_price   TEXT    NOT NULL DEFAULT '',
    category     TEXT    NOT NULL,
    calls        INTEGER NOT NULL,
    points       TEXT    NOT NULL,
    amount       TEXT    NOT NULL,
    PRIMARY KEY (account, billed_month, origin_month, item, kind, plan_id, tier, unit_price)
) WITHOUT ROWID;
