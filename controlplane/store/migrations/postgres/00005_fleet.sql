-- +goose Up
-- Fleet provider: allocation life cycle (active → releasing → gone, the
-- host acknowledges the stop), host liveness, cluster credentials that
-- fleet and cloud-init nodes receive.
ALTER TABLE allocations ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
ALTER TABLE hosts ADD COLUMN last_seen BIGINT NOT NULL DEFAULT 0;
CREATE TABLE cluster_credentials (
  cluster_id TEXT PRIMARY KEY,
  body       TEXT NOT NULL,
  created_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE cluster_credentials;
ALTER TABLE hosts DROP COLUMN last_seen;
ALTER TABLE allocations DROP COLUMN state;
