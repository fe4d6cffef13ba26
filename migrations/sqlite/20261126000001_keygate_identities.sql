-- keygate: identities, the customer or organisation behind a group of keys.
-- An identity belongs to exactly one account; its external id is unique
-- there. Its credits and rate limits are shared by all its keys.

CREATE TABLE IF NOT EXISTS identities (
    id                         TEXT PRIMARY KEY,
    account                    TEXT NOT NULL REFERENCES accounts (id),
    external_id                TEXT NOT NULL,
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

-- The identity a key belongs to, if any.
ALTER TABLE api_keys ADD COLUMN identity_id TEXT;
CREATE INDEX IF NOT EXISTS api_keys_identity ON api_keys (identity_id)
    WHERE identity_id IS NOT NULL;

-- A key's identity must be one of the key's own account. SQLite cannot add
-- a composite foreign key to an existing table, so triggers enforce
-- (identity_id, account) -> identities (id, account) on every write.
CREATE TRIGGER IF NOT EXISTS api_keys_identity_insert
BEFORE INSERT ON api_keys
WHEN NEW.identity_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM identities WHERE id = NEW.identity_id AND account = NEW.account)
BEGIN
    SELECT RAISE(ABORT, 'keygate: identity of another account');
END;

CREATE TRIGGER IF NOT EXISTS api_keys_identity_update
BEFORE UPDATE OF identity_id, account ON api_keys
WHEN NEW.identity_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM identities WHERE id = NEW.identity_id AND account = NEW.account)
BEGIN
    SELECT RAISE(ABORT, 'keygate: identity of another account');
END;

-- An identity never moves to another account, and is not deleted while a
-- key still names it (keygate detaches the keys first).
CREATE TRIGGER IF NOT EXISTS identities_account_fixed
BEFORE UPDATE OF id, account ON identities
WHEN NEW.account <> OLD.account OR NEW.id <> OLD.id
BEGIN
    SELECT RAISE(ABORT, 'keygate: identity of another account');
END;

CREATE TRIGGER IF NOT EXISTS identities_delete_unused
BEFORE DELETE ON identities
WHEN EXISTS (SELECT 1 FROM api_keys WHERE identity_id = OLD.id)
BEGIN
    SELECT RAISE(ABORT, 'keygate: identity of another account');
END;
