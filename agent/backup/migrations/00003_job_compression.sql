-- +goose Up
-- Compression of physical backups: s2 (default), zstd or none.
ALTER TABLE jobs ADD COLUMN compression TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE jobs DROP COLUMN compression;
