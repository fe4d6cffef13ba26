-- keygate: explicit accounts, one successor per rotated key, and uniqueness
-- enforced by the database.

-- The key that replaced this one in a rotation. A key has at most one.
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
-- The first key of a rotation chain, for keys made by rotation: rate-limit
-- state belongs to the chain.
ALTER TABLE api_keys ADD COLUMN lineage TEXT;

-- Every account that holds keys has a record (created with its first key from
-- now on; backfilled here for keys stored before).
INSERT INTO accounts (id, parent, created_at)
SELECT account, NULL, MIN(created_at) FROM api_keys
WHERE account NOT IN (SELECT id FROM accounts)
GROUP BY account;

-- A sub-account's id is `parent/handle`. Links recorded before that rule
-- (any id under any parent) are not honoured.
UPDATE accounts SET parent = NULL
WHERE parent IS NOT NULL AND substr(id, 1, length(parent) + 1) <> parent || '/';

-- Keys stored twice (the same secret, or a key pair's public key in use by two
-- active keys) by concurrent imports: keep the oldest, revoke the rest.
UPDATE api_keys SET revoked_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000
WHERE revoked_at IS NULL AND EXISTS (
    SELECT 1 FROM api_keys o
    WHERE o.revoked_at IS NULL AND o.id <> api_keys.id
      AND (o.hash = api_keys.hash
           OR (o.format = 'pair' AND api_keys.format = 'pair' AND o.lookup = api_keys.lookup))
      AND (o.created_at < api_keys.created_at
           OR (o.created_at = api_keys.created_at AND o.id < api_keys.id))
);

-- One active key per secret, and one active key pair per public key.
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_hash ON api_keys (hash) WHERE revoked_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_pair ON api_keys (lookup)
    WHERE format = 'pair' AND revoked_at IS NULL;
