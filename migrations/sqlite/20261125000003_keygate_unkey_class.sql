-- keygate: reversible disable, per-key metadata and usage credits.

-- When the key was disabled; NULL while enabled. Unlike revoked_at, it can be
-- cleared again.
ALTER TABLE api_keys ADD COLUMN disabled_at BIGINT;
-- The application's JSON object for the key (at most 4 KiB serialized).
ALTER TABLE api_keys ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';

-- Usage credits: NULL remaining means no usage limit. Refill is lazy: when
-- now - refilled_at reaches the interval, the next spend sets remaining to
-- the refill amount and moves refilled_at on by whole intervals.
ALTER TABLE api_keys ADD COLUMN credits_remaining BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refill_amount BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refill_interval_ms BIGINT;
ALTER TABLE api_keys ADD COLUMN credits_refilled_at BIGINT;
