-- keygate: identities, the customer or organisation behind a group of keys.
-- An identity belongs to exactly one account; its external id is unique
-- there. Its credits and rate limits are shared by all its keys.

CREATE TABLE IF NOT EXISTS identities (
    id                         TEXT COLLATE "C" PRIMARY KEY,
    account                    TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    external_id                TEXT NOT NULL,
    -- Kept as the text keygate wrote, like api_keys.metadata.
    metadata                   TEXT NOT NULL DEFAULT '{}',
    rate_limits                TEXT NOT NULL DEFAULT '[]',  -- array of {class, quota}
    credits_remaining          BIGINT,
    credits_refill_amount      BIGINT,
    credits_refill_interval_ms BIGINT,
    credits_refilled_at        BIGINT,
    created_at                 BIGINT NOT NULL,
    UNIQUE (account, external_id),
    UNIQUE (id, account)
);

-- The identity a key belongs to, if any: one of the key's own account. The
-- composite foreign key makes the database refuse any other.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS identity_id TEXT COLLATE "C";
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_identity_account;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_identity_account
    FOREIGN KEY (identity_id, account) REFERENCES identities (id, account);
CREATE INDEX IF NOT EXISTS api_keys_identity ON api_keys (identity_id)
    WHERE identity_id IS NOT NULL;
