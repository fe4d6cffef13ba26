-- keygate: reversible disable and per-key metadata.

-- When the key was disabled; NULL while enabled. Unlike revoked_at, it can be
-- cleared again.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS disabled_at BIGINT;
-- The application's JSON object for the key (at most 4 KiB serialized), kept
-- as the text keygate wrote so it reads back exactly (jsonb would rewrite
-- numbers such as 1e2).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS metadata TEXT NOT NULL DEFAULT '{}';
