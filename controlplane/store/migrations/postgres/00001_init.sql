-- +goose Up
CREATE TABLE namespaces (
  name       TEXT PRIMARY KEY,
  created_at BIGINT NOT NULL
);
CREATE TABLE projects (
  namespace  TEXT NOT NULL REFERENCES namespaces(name) ON DELETE CASCADE,
  name       TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (namespace, name)
);
CREATE TABLE tokens (
  id         TEXT PRIMARY KEY,
  name       TEXT NOT NULL,
  hash       TEXT NOT NULL UNIQUE,
  grants     TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  revoked_at BIGINT NOT NULL DEFAULT 0
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
  replicas         BIGINT NOT NULL,
  synchronous_mode TEXT NOT NULL,
  phase            TEXT NOT NULL,
  reason           TEXT NOT NULL,
  primary_node     TEXT NOT NULL,
  term             BIGINT NOT NULL,
  revision         BIGINT NOT NULL,
  stale_events     BIGINT NOT NULL,
  ingest_key_hash  TEXT NOT NULL,
  created_at       BIGINT NOT NULL,
  updated_at       BIGINT NOT NULL,
  last_event_at    BIGINT NOT NULL DEFAULT 0,
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
  lag_bytes    BIGINT NOT NULL,
  timeline     BIGINT NOT NULL,
  term         BIGINT NOT NULL,
  revision     BIGINT NOT NULL,
  handle       TEXT NOT NULL,
  updated_at   BIGINT NOT NULL,
  PRIMARY KEY (cluster_id, name)
);
CREATE TABLE events (
  seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id         TEXT NOT NULL UNIQUE,
  namespace  TEXT NOT NULL,
  project    TEXT NOT NULL,
  cluster    TEXT NOT NULL,
  node       TEXT NOT NULL,
  type       TEXT NOT NULL,
  term       BIGINT NOT NULL,
  revision   BIGINT NOT NULL,
  time       BIGINT NOT NULL,
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
  attempts    BIGINT NOT NULL,
  error       TEXT NOT NULL,
  params      TEXT NOT NULL,
  owner       TEXT NOT NULL,
  lease_until BIGINT NOT NULL DEFAULT 0,
  created_at  BIGINT NOT NULL,
  updated_at  BIGINT NOT NULL
);
CREATE INDEX operations_state ON operations (state);
CREATE TABLE templates (
  namespace  TEXT NOT NULL,
  name       TEXT NOT NULL,
  body       TEXT NOT NULL,
  created_at BIGINT NOT NULL,
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
  created_at      BIGINT NOT NULL
);
CREATE TABLE allocations (
  host_id    TEXT NOT NULL,
  cluster_id TEXT NOT NULL,
  node       TEXT NOT NULL,
  resources  TEXT NOT NULL,
  config     TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (cluster_id, node)
);
CREATE TABLE join_tokens (
  hash       TEXT PRIMARY KEY,
  labels     TEXT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_at    BIGINT NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL
);
CREATE TABLE audit (
  seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at         BIGINT NOT NULL,
  actor      TEXT NOT NULL,
  namespace  TEXT NOT NULL,
  action     TEXT NOT NULL,
  resource   TEXT NOT NULL,
  status     BIGINT NOT NULL,
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
