-- PostgreSQL ledger schema, version 2: rating (plans beside the ledger, and what settlement
-- keeps), the tables of the SQLite ledger's migration 0002_rating.sql.
--
-- Points are NUMERIC (exact, as the SQLite store's decimal TEXT); times timestamptz; months
-- 'YYYY-MM' billing months (UTC+8) as text. Text that is sorted or compared is COLLATE "C"
-- (byte order, like SQLite's BINARY), so listings come in the same order on both stores.
-- A line's unit_price stays text: it is part of the line's key ('' for none), compared and
-- sorted as the SQLite store sorts it, never added.
--
-- seq columns are identities. The store serialises every writer of these tables (and of
-- the money tables) with one transaction-scoped advisory lock, so a higher seq never
-- commits before a lower one: the marks settlement keeps (plan_seq, refund_seq) are exact,
-- as on SQLite where one writer at a time is the rule.

CREATE TABLE rating_plans (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          text COLLATE "C" NOT NULL UNIQUE,
    account     text COLLATE "C" NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('qps', 'single', 'general')),
    categories  text NOT NULL, -- sorted, space-separated; a QPS subscription's one category
    action      text,          -- QPS subscriptions only
    qps         integer,       -- QPS subscriptions only
    points      numeric,       -- resource plans only
    start_at    timestamptz NOT NULL, -- validity [start_at, end_at)
    end_at      timestamptz NOT NULL,
    ordered_at  timestamptz NOT NULL,
    price_paid  numeric NOT NULL,
    recorded_at timestamptz NOT NULL,
    CHECK ((kind = 'qps') = (action IS NOT NULL AND qps IS NOT NULL AND points IS NULL))
);
CREATE INDEX rating_plans_account ON rating_plans (account);

CREATE TABLE rating_refunds (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_id     text COLLATE "C" NOT NULL UNIQUE REFERENCES rating_plans (id),
    refunded_at timestamptz NOT NULL,
    amount      numeric,       -- cash refunded, when known
    recorded_at timestamptz NOT NULL
);

-- Entries are immutable (a correction is a new entry), as on SQLite: PL/pgSQL triggers.
CREATE FUNCTION metering_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are immutable: %', TG_TABLE_NAME, TG_ARGV[0]
        USING ERRCODE = 'restrict_violation';
END
$$;
CREATE TRIGGER rating_plans_immutable BEFORE UPDATE OR DELETE ON rating_plans
    FOR EACH ROW EXECUTE FUNCTION metering_immutable('add a new entry instead');
CREATE TRIGGER rating_plans_no_truncate BEFORE TRUNCATE ON rating_plans
    FOR EACH STATEMENT EXECUTE FUNCTION metering_immutable('add a new entry instead');
CREATE TRIGGER rating_refunds_immutable BEFORE UPDATE OR DELETE ON rating_refunds
    FOR EACH ROW EXECUTE FUNCTION metering_immutable('a refund is final');
CREATE TRIGGER rating_refunds_no_truncate BEFORE TRUNCATE ON rating_refunds
    FOR EACH STATEMENT EXECUTE FUNCTION metering_immutable('a refund is final');

-- Where the last full settlement pass stopped (see the SQLite schema). The settlement lock
-- is an advisory lock, not a row: it goes with its holder's connection.
CREATE TABLE rating_progress (
    name        text COLLATE "C" PRIMARY KEY,
    seen        bigint NOT NULL,
    horizon     timestamptz NOT NULL,
    plan_seq    bigint NOT NULL,
    refund_seq  bigint NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE rating_accounts (
    account           text COLLATE "C" PRIMARY KEY,
    seen              bigint NOT NULL,
    horizon           timestamptz NOT NULL,
    frontier_month    text COLLATE "C",
    frontier_at       timestamptz,
    frontier_occurred timestamptz,
    frontier_id       text COLLATE "C",
    state             text NOT NULL, -- JSON, as the SQLite store writes it
    updated_at        timestamptz NOT NULL
);

CREATE TABLE rating_checkpoints (
    account text COLLATE "C" NOT NULL,
    month   text COLLATE "C" NOT NULL,
    state   text NOT NULL,
    PRIMARY KEY (account, month)
);

CREATE TABLE rating_adjustments (
    call_seq     bigint PRIMARY KEY, -- calls.seq
    call_id      text COLLATE "C" NOT NULL UNIQUE,
    account      text COLLATE "C" NOT NULL,
    occurred_at  timestamptz NOT NULL,
    origin_month text COLLATE "C" NOT NULL,
    billed_month text COLLATE "C" NOT NULL,
    effective_at timestamptz NOT NULL
);
CREATE INDEX rating_adjustments_account ON rating_adjustments (account, billed_month);
CREATE INDEX rating_adjustments_effective ON rating_adjustments (effective_at);

CREATE TABLE rating_lines (
    account      text COLLATE "C" NOT NULL,
    billed_month text COLLATE "C" NOT NULL,
    origin_month text COLLATE "C" NOT NULL,
    item         text COLLATE "C" NOT NULL,
    kind         text COLLATE "C" NOT NULL, -- qps, single, general, payg, free
    plan_id      text COLLATE "C" NOT NULL DEFAULT '',
    tier         integer NOT NULL DEFAULT -1,
    unit_price   text COLLATE "C" NOT NULL DEFAULT '',
    category     text NOT NULL,
    calls        bigint NOT NULL,
    points       numeric NOT NULL,
    amount       numeric NOT NULL,
    PRIMARY KEY (account, billed_month, origin_month, item, kind, plan_id, tier, unit_price)
);

