-- +goose Up
-- Physical backups may be throttled (pg_basebackup --max-rate) so they do
-- not starve the node's disk; "" = unthrottled.
ALTER TABLE jobs ADD COLUMN max_rate TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE jobs DROP COLUMN max_rate;
