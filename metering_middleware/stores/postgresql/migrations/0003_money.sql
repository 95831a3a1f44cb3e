-- PostgreSQL ledger schema, version 3: money (balances, account settings and standing) and
-- the notices money writes cause, the tables of the SQLite ledger's 0004_money.sql.
--
-- Money is NUMERIC (exact; Decimal in and out). Entries are immutable (PL/pgSQL triggers).
-- balance_totals and balance_posted are caches of the entries, kept by a trigger in the
-- transaction that posts them, so no writer can forget them (SQLite keeps them in Python
-- with a catch-up mark; here every entry is summed as it is inserted).
-- Notices are recorded (the same ids as on SQLite); webhooks do not deliver from
-- PostgreSQL yet, so there is no outbox.

CREATE TABLE balance_entries (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          text COLLATE "C" NOT NULL UNIQUE,
    account     text COLLATE "C" NOT NULL,
    kind        text NOT NULL CHECK (kind IN (
                    'topup', 'purchase', 'payg', 'adjustment', 'rounding', 'refund',
                    'correction')),
    amount      numeric NOT NULL,
    at          timestamptz NOT NULL, -- when it takes effect (a purchase: its order time)
    month       text COLLATE "C",     -- payg, adjustment, rounding: the billing month charged
    ref         text,                 -- purchase, refund: the plan's id
    reason      text,                 -- corrections: why (required); others: how computed
    recorded_at timestamptz NOT NULL
);
CREATE INDEX balance_entries_account ON balance_entries (account, seq);
CREATE INDEX balance_entries_month ON balance_entries (account, month) WHERE month IS NOT NULL;

CREATE TRIGGER balance_entries_immutable BEFORE UPDATE OR DELETE ON balance_entries
    FOR EACH ROW EXECUTE FUNCTION metering_immutable('post a new entry instead');
CREATE TRIGGER balance_entries_no_truncate BEFORE TRUNCATE ON balance_entries
    FOR EACH STATEMENT EXECUTE FUNCTION metering_immutable('post a new entry instead');

CREATE TABLE balance_totals (
    account  text COLLATE "C" PRIMARY KEY,
    balance  numeric NOT NULL,
    entries  bigint NOT NULL
);

CREATE TABLE balance_posted (
    account text COLLATE "C" NOT NULL,
    month   text COLLATE "C" NOT NULL,
    kind    text COLLATE "C" NOT NULL,
    amount  numeric NOT NULL,
    entries bigint NOT NULL,
    PRIMARY KEY (account, month, kind)
);

CREATE FUNCTION metering_entry_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO balance_totals AS t (account, balance, entries)
    VALUES (NEW.account, NEW.amount, 1)
    ON CONFLICT (account) DO UPDATE SET balance = t.balance + excluded.balance,
                                        entries = t.entries + 1;
    IF NEW.month IS NOT NULL THEN
        INSERT INTO balance_posted AS p (account, month, kind, amount, entries)
        VALUES (NEW.account, NEW.month, NEW.kind, NEW.amount, 1)
        ON CONFLICT (account, month, kind) DO UPDATE SET amount = p.amount + excluded.amount,
                                                        entries = p.entries + 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER balance_entries_totals AFTER INSERT ON balance_entries
    FOR EACH ROW EXECUTE FUNCTION metering_entry_totals();

-- The last month (year * 12 + month) a pass over every account closed.
CREATE TABLE balance_mark (
    name     text COLLATE "C" PRIMARY KEY,
    last_seq bigint NOT NULL
);

CREATE TABLE balance_closes (
    account   text COLLATE "C" NOT NULL,
    month     text COLLATE "C" NOT NULL,
    closed_at timestamptz NOT NULL,
    PRIMARY KEY (account, month)
);

CREATE TABLE account_settings (
    account     text COLLATE "C" PRIMARY KEY,
    monthly_cap numeric, -- CNY of pay-as-you-go per billing month; NULL: no cap
    low_balance numeric, -- notice when the balance falls below it; NULL: no notice
    updated_at  timestamptz NOT NULL
);

CREATE TABLE account_standing (
    account       text COLLATE "C" PRIMARY KEY,
    overdue_since timestamptz,
    suspended_at  timestamptz,
    held_at       timestamptz,
    held_reason   text,
    updated_at    timestamptz NOT NULL,
    CHECK (overdue_since IS NOT NULL OR held_at IS NOT NULL)
);

CREATE TABLE notices (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          text COLLATE "C" NOT NULL UNIQUE,
    kind        text COLLATE "C" NOT NULL,
    account     text COLLATE "C" NOT NULL,
    subject     text,
    at          timestamptz NOT NULL,
    data        text NOT NULL, -- JSON details
    recorded_at timestamptz NOT NULL
);
CREATE INDEX notices_account ON notices (account, seq);
