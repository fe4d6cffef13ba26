-- keygate: accounts and API keys. Times are Unix milliseconds.
-- Secrets are never stored: only their hash and the pepper version that made it.
-- Ids use the "C" collation so they sort by bytes, as keygate pages by id.

CREATE TABLE IF NOT EXISTS accounts (
    id         TEXT COLLATE "C" PRIMARY KEY,
    parent     TEXT COLLATE "C",
    created_at BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS accounts_parent ON accounts (parent);

CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT COLLATE "C" PRIMARY KEY,
    account      TEXT COLLATE "C" NOT NULL,
    name         TEXT NOT NULL,
    format       TEXT NOT NULL,
    lookup       TEXT COLLATE "C" NOT NULL,
    hash         BYTEA NOT NULL,
    hash_version BIGINT NOT NULL,
    bundle       TEXT,
    scopes       JSONB NOT NULL DEFAULT '[]',  -- array of scope names
    rate_limits  JSONB NOT NULL DEFAULT '[]',  -- array of {class, quota}
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT                        -- soft delete: revoked keys stay
);

-- Verify finds candidates by lookup id (not unique: the hash decides).
CREATE INDEX IF NOT EXISTS api_keys_lookup ON api_keys (lookup);
-- Listing and limit counting are per account, in id order.
CREATE INDEX IF NOT EXISTS api_keys_account ON api_keys (account, id);
