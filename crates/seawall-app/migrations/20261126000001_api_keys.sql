-- API keys: each issued to a tenant, and so to its tier. Only the SHA-256
-- of a key is kept (hex); the key itself is shown once, when it is issued.
-- A revoked key keeps its row, so the list shows when it was revoked.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    -- The key's first characters, to tell keys apart in a list.
    prefix TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id);
