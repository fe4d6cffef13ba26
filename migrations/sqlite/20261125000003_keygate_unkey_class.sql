-- keygate: reversible disable and per-key metadata.

-- When the key was disabled; NULL while enabled. Unlike revoked_at, it can be
-- cleared again.
ALTER TABLE api_keys ADD COLUMN disabled_at BIGINT;
-- The application's JSON object for the key (at most 4 KiB serialized).
ALTER TABLE api_keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
