-- Tenant tiers and the tenants on them. The four tiers are the brief's; the
-- four demo tenants let the tier editor and the tenant quota be tried at once.
CREATE TABLE tiers (
    name TEXT PRIMARY KEY,
    per_minute BIGINT NOT NULL CHECK (per_minute > 0),
    per_hour BIGINT NOT NULL CHECK (per_hour > 0),
    per_day BIGINT NOT NULL CHECK (per_day > 0),
    -- NULL: unlimited.
    max_users BIGINT CHECK (max_users > 0)
);

INSERT INTO tiers (name, per_minute, per_hour, per_day, max_users) VALUES
    ('free', 60, 1000, 10000, 10),
    ('basic', 120, 3000, 30000, 50),
    ('premium', 300, 10000, 100000, 200),
    ('enterprise', 1000, 50000, 500000, NULL);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    tier TEXT NOT NULL REFERENCES tiers (name)
);

INSERT INTO tenants (id, tier) VALUES
    ('demo-free', 'free'),
    ('demo-basic', 'basic'),
    ('demo-premium', 'premium'),
    ('demo-enterprise', 'enterprise');
