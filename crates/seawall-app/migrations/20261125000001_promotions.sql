-- The promotions workload: coupon campaigns, point ledgers and time sales.
-- User ids here are the caller's (a gateway's or an identity service's), so
-- they reference no table. The database is the source of truth; Redis (or
-- the process's memory) decides who gets what first, and the constraints
-- below are the last line of defence if it ever decides wrongly.

-- `salt` is random, and part of the campaign's keys in Redis: a database
-- restored or recreated beside the same Redis never meets an older
-- campaign's state under a reused id.
CREATE TABLE coupon_campaigns (
    id BIGINT PRIMARY KEY,
    salt BIGINT NOT NULL,
    name TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    per_user BIGINT NOT NULL CHECK (per_user > 0),
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK (ends_at > starts_at)
);

-- Every coupon has a number from 1 to its campaign's quantity (unique: never
-- more coupons than the quantity) and is its user's first, second, …
-- coupon of the campaign up to the per-user limit (unique: never more per
-- user). Inserts check both bounds against the campaign.
CREATE TABLE coupons (
    campaign_id BIGINT NOT NULL REFERENCES coupon_campaigns (id),
    number BIGINT NOT NULL CHECK (number > 0),
    user_id BIGINT NOT NULL CHECK (user_id > 0),
    nth BIGINT NOT NULL CHECK (nth > 0),
    code TEXT NOT NULL UNIQUE,
    issued_at BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, number),
    UNIQUE (campaign_id, user_id, nth)
);

CREATE INDEX coupons_user ON coupons (user_id, issued_at);

-- A user's points: the balance and a version that every change moves by one
-- (optimistic locking: a write names the version it read).
CREATE TABLE point_accounts (
    user_id BIGINT PRIMARY KEY CHECK (user_id > 0),
    balance BIGINT NOT NULL CHECK (balance >= 0),
    version BIGINT NOT NULL CHECK (version > 0),
    updated_at BIGINT NOT NULL
);

-- Every change of a balance, in order: entry `version` is the change that
-- took the account to that version, so two writers of one version collide
-- here too. An idempotency key names at most one entry of its user.
CREATE TABLE point_ledger (
    user_id BIGINT NOT NULL,
    version BIGINT NOT NULL CHECK (version > 0),
    delta BIGINT NOT NULL CHECK (delta <> 0),
    balance_after BIGINT NOT NULL CHECK (balance_after >= 0),
    reason TEXT NOT NULL,
    idempotency_key TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, version),
    UNIQUE (user_id, idempotency_key)
);

CREATE TABLE time_sales (
    id BIGINT PRIMARY KEY,
    salt BIGINT NOT NULL,
    name TEXT NOT NULL,
    stock BIGINT NOT NULL CHECK (stock > 0),
    per_user BIGINT NOT NULL CHECK (per_user > 0),
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK (ends_at > starts_at)
);

-- Orders of a time sale, written by the `order` queue's jobs after the sale
-- acknowledged them. Each holds one unit, 1 to the stock (unique: never
-- oversold), and is its user's first, second, … order up to the per-user
-- limit. The id is the one the order was acknowledged with, so a job that
-- runs twice writes one row.
CREATE TABLE sale_orders (
    id TEXT PRIMARY KEY,
    sale_id BIGINT NOT NULL REFERENCES time_sales (id),
    unit BIGINT NOT NULL CHECK (unit > 0),
    user_id BIGINT NOT NULL CHECK (user_id > 0),
    nth BIGINT NOT NULL CHECK (nth > 0),
    ordered_at BIGINT NOT NULL,
    written_at BIGINT NOT NULL,
    UNIQUE (sale_id, unit),
    UNIQUE (sale_id, user_id, nth)
);
