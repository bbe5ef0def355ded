-- +goose Up
-- The alert engine's alerts (one row per fingerprint, docs/api.md "Alerts").
CREATE TABLE alerts (
  id             TEXT PRIMARY KEY,
  namespace      TEXT NOT NULL,
  project        TEXT NOT NULL,
  cluster        TEXT NOT NULL,
  cluster_id     TEXT NOT NULL,
  node           TEXT NOT NULL DEFAULT '',
  subject        TEXT NOT NULL DEFAULT '',
  rule           TEXT NOT NULL,
  severity       TEXT NOT NULL,
  state          TEXT NOT NULL,
  summary        TEXT NOT NULL DEFAULT '',
  first_seen     INTEGER NOT NULL DEFAULT 0,
  last_seen      INTEGER NOT NULL DEFAULT 0,
  fired_at       INTEGER NOT NULL DEFAULT 0,
  resolved_at    INTEGER NOT NULL DEFAULT 0,
  flapping       INTEGER NOT NULL DEFAULT 0,
  acked_at       INTEGER NOT NULL DEFAULT 0,
  acked_by       TEXT NOT NULL DEFAULT '',
  last_notified  INTEGER NOT NULL DEFAULT 0,
  updated_at     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX alerts_namespace ON alerts (namespace, state, updated_at);

-- Silences: an alert (fingerprint) notifies nothing until until_ms.
CREATE TABLE alert_silences (
  id          TEXT PRIMARY KEY,
  namespace   TEXT NOT NULL,
  alert_id    TEXT NOT NULL,
  until_ms    INTEGER NOT NULL,
  reason      TEXT NOT NULL,
  created_by  TEXT NOT NULL,
  created_at  INTEGER NOT NULL
);
CREATE INDEX alert_silences_alert ON alert_silences (alert_id, until_ms);

-- A cluster's alert threshold overrides (proto.AlertThresholds as JSON).
CREATE TABLE alert_thresholds (
  cluster_id  TEXT PRIMARY KEY,
  body        TEXT NOT NULL,
  updated_at  INTEGER NOT NULL
);

-- Where a namespace's alert transitions go. secret is write-only in the API.
CREATE TABLE notification_channels (
  namespace   TEXT NOT NULL,
  name        TEXT NOT NULL,
  kind        TEXT NOT NULL,
  url         TEXT NOT NULL DEFAULT '',
  secret      TEXT NOT NULL DEFAULT '',
  binding     TEXT NOT NULL DEFAULT '',
  operation   TEXT NOT NULL DEFAULT '',
  created_at  INTEGER NOT NULL,
  PRIMARY KEY (namespace, name)
);

-- One row per notification sent to a channel.
CREATE TABLE notification_deliveries (
  id          TEXT PRIMARY KEY,
  namespace   TEXT NOT NULL,
  channel     TEXT NOT NULL,
  alert_id    TEXT NOT NULL,
  transition  TEXT NOT NULL,
  status      TEXT NOT NULL,
  attempts    INTEGER NOT NULL DEFAULT 0,
  last_error  TEXT NOT NULL DEFAULT '',
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
);
CREATE INDEX notification_deliveries_channel ON notification_deliveries (namespace, channel, created_at);

-- +goose Down
DROP TABLE notification_deliveries;
DROP TABLE notification_channels;
DROP TABLE alert_thresholds;
DROP TABLE alert_silences;
DROP TABLE alerts;
