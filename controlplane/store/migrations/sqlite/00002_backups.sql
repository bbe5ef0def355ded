-- +goose Up
-- The projection of the agents' backup.* events (one row per backup run).
CREATE TABLE backups (
  cluster_id   TEXT NOT NULL,
  id           TEXT NOT NULL,
  node         TEXT NOT NULL,
  job          TEXT NOT NULL,
  method       TEXT NOT NULL,
  repository   TEXT NOT NULL,
  status       TEXT NOT NULL,
  request_id   TEXT NOT NULL DEFAULT '',
  started_at   INTEGER NOT NULL DEFAULT 0,
  finished_at  INTEGER NOT NULL DEFAULT 0,
  size_bytes   INTEGER NOT NULL DEFAULT 0,
  checksum     TEXT NOT NULL DEFAULT '',
  start_lsn    TEXT NOT NULL DEFAULT '',
  stop_lsn     TEXT NOT NULL DEFAULT '',
  timeline     INTEGER NOT NULL DEFAULT 0,
  path         TEXT NOT NULL DEFAULT '',
  error        TEXT NOT NULL DEFAULT '',
  verified_at  INTEGER NOT NULL DEFAULT 0,
  verify_error TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (cluster_id, id)
);
CREATE INDEX backups_request ON backups (cluster_id, request_id);

-- +goose Down
DROP TABLE backups;
