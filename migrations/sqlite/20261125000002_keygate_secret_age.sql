-- keygate: when each key's secret was last set (at creation, a secret reset,
-- or the rotation that made the key), so keys past a profile's maximum secret
-- age can be found. Keys stored before count from their creation.
-- Nullable so that instances still running the previous version can insert
-- keys during a rolling upgrade; keygate reads NULL as created_at.

ALTER TABLE api_keys ADD COLUMN secret_set_at BIGINT;
UPDATE api_keys SET secret_set_at = created_at WHERE secret_set_at IS NULL;
