-- +goose Up
CREATE TABLE namespaces (
  name       TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL
);
CREATE TABLE projects (
  namespace  TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
  name       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (namespace, name)
);
CREATE TABLE tokens (
  id         TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  hash       TEXT NOT NULL UNIQUE,
  grants     TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE clusters (
  id               TEXT PRIMARY KEY,
  namespace        TEXT NOT NULL,
  project          TEXT NOT NULL,
  name             TEXT NOT NULL,
  engine           TEXT NOT NULL,
  version          TEXT NOT NULL,
  template         TEXT NOT NULL,
  plan             TEXT NOT NULL,
  provider         TEXT NOT NULL,
  replicas         INTEGER NOT NULL,
  synchronous_mode TEXT NOT NULL,
  phase            TEXT NOT NULL,
  reason           TEXT NOT NULL,
  primary_node     TEXT NOT NULL,
  term             INTEGER NOT NULL,
  revision         INTEGER NOT NULL,
  stale_events     INTEGER NOT NULL,
  ingest_key_hash  TEXT NOT NULL,
  created_at       INTEGER NOT NULL,
  updated_at       INTEGER NOT NULL,
  last_event_at    INTEGER NOT NULL DEFAULT 0,
  UNIQUE (namespace, project, name)
);
CREATE INDEX clusters_ns ON clusters (namespace, id);
CREATE TABLE nodes (
  cluster_id   TEXT NOT NULL,
  name         TEXT NOT NULL,
  host         TEXT NOT NULL,
  state        TEXT NOT NULL,
  role         TEXT NOT NULL,
  member_state TEXT NOT NULL,
  healthy      BOOLEAN NOT NULL,
  lsn          TEXT NOT NULL,
  lag_bytes    INTEGER NOT NULL,
  timeline     INTEGER NOT NULL,
  term         INTEGER NOT NULL,
  revision     INTEGER NOT NULL,
  handle       TEXT NOT NULL,
  updated_at   INTEGER NOT NULL,
  PRIMARY KEY (cluster_id, name)
);
CREATE TABLE events (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  id         TEXT NOT NULL UNIQUE,
  namespace  TEXT NOT NULL,
  project    TEXT NOT NULL,
  cluster    TEXT NOT NULL,
  node       TEXT NOT NULL,
  type       TEXT NOT NULL,
  term       INTEGER NOT NULL,
  revision   INTEGER NOT NULL,
  time       INTEGER NOT NULL,
  stale      BOOLEAN NOT NULL,
  data       TEXT NOT NULL
);
CREATE INDEX events_ns ON events (namespace, seq);
CREATE TABLE operations (
  id          TEXT PRIMARY KEY,
  namespace   TEXT NOT NULL,
  cluster_id  TEXT NOT NULL,
  kind        TEXT NOT NULL,
  state       TEXT NOT NULL,
  step        TEXT NOT NULL,
  attempts    INTEGER NOT NULL,
  error       TEXT NOT NULL,
  params      TEXT NOT NULL,
  owner       TEXT NOT NULL,
  lease_until INTEGER NOT NULL DEFAULT 0,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
);
CREATE INDEX operations_state ON operations (state);
CREATE TABLE templates (
  namespace  TEXT NOT NULL,
  name       TEXT NOT NULL,
  body       TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (namespace, name)
);
CREATE TABLE hosts (
  id              TEXT PRIMARY KEY,
  name            TEXT NOT NULL UNIQUE,
  address         TEXT NOT NULL,
  labels          TEXT NOT NULL,
  capacity        TEXT NOT NULL,
  state           TEXT NOT NULL,
  credential_hash TEXT NOT NULL,
  created_at      INTEGER NOT NULL
);
CREATE TABLE allocations (
  host_id    TEXT NOT NULL,
  cluster_id TEXT NOT NULL,
  node       TEXT NOT NULL,
  resources  TEXT NOT NULL,
  config     TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (cluster_id, node)
);
CREATE TABLE join_tokens (
  hash       TEXT PRIMARY KEY,
  labels     TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at    INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE TABLE audit (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT,
  at         INTEGER NOT NULL,
  actor      TEXT NOT NULL,
  namespace  TEXT NOT NULL,
  action     TEXT NOT NULL,
  resource   TEXT NOT NULL,
  status     INTEGER NOT NULL,
  result     TEXT NOT NULL
);

-- +goose Down
DROP TABLE audit;
DROP TABLE join_tokens;
DROP TABLE allocations;
DROP TABLE hosts;
DROP TABLE templates;
DROP TABLE operations;
DROP TABLE events;
DROP TABLE nodes;
DROP TABLE clusters;
DROP TABLE tokens;
DROP TABLE projects;
DROP TABLE namespaces;
