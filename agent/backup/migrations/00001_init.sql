-- +goose Up
-- Backup jobs: the whitepaper's backup job schema (Op 4).
CREATE TABLE jobs (
    name                  TEXT PRIMARY KEY,
    description           TEXT    NOT NULL DEFAULT '',
    schedule              TEXT    NOT NULL,            -- cron expression (5 fields or a @descriptor)
    time_zone             TEXT    NOT NULL DEFAULT 'UTC',
    window_seconds        INTEGER NOT NULL,            -- an occurrence may start this long after its time
    retention_count       INTEGER NOT NULL DEFAULT 0,  -- keep at least the newest N good backups (0: no count rule)
    retention_age_seconds INTEGER NOT NULL DEFAULT 0,  -- keep backups younger than this (0: no age rule)
    source_type           TEXT    NOT NULL,            -- "postgresql"
    source_location       TEXT    NOT NULL,            -- "host:port" of the local server
    method                TEXT    NOT NULL,            -- physical | logical | verify
    repository            TEXT    NOT NULL,            -- repository name
    target_job            TEXT    NOT NULL DEFAULT '', -- verify: the job whose backups it verifies
    updated_at_ms         INTEGER NOT NULL
);

-- Runs: one row per backup or verify attempt on this node.
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    job             TEXT    NOT NULL,
    occurrence_unix INTEGER,                 -- scheduled occurrence (Unix seconds); NULL for manual runs
    node            TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    repository      TEXT    NOT NULL,
    status          TEXT    NOT NULL,        -- running | succeeded | failed
    started_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER,
    size_bytes      INTEGER NOT NULL DEFAULT 0,
    checksum        TEXT    NOT NULL DEFAULT '',  -- "sha256:<hex>" of the stored bytes
    start_lsn       TEXT    NOT NULL DEFAULT '',
    stop_lsn        TEXT    NOT NULL DEFAULT '',
    timeline        INTEGER NOT NULL DEFAULT 0,
    repository_path TEXT    NOT NULL DEFAULT '',
    error           TEXT    NOT NULL DEFAULT '',
    verified_at_ms  INTEGER,
    verify_error    TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX runs_job_started ON runs (job, started_at_ms);
CREATE UNIQUE INDEX runs_job_occurrence ON runs (job, occurrence_unix) WHERE occurrence_unix IS NOT NULL;

CREATE TABLE logs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT    NOT NULL,
    at_ms    INTEGER NOT NULL,
    level    TEXT    NOT NULL,
    message  TEXT    NOT NULL
);
CREATE INDEX logs_run ON logs (run_id, id);

-- Outbox: events not yet delivered to the control plane, oldest first.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,   -- CloudEvents id: stable across retries
    type            TEXT    NOT NULL,
    payload         BLOB    NOT NULL,          -- JSON of the proto payload
    created_at_ms   INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    delivered_at_ms INTEGER
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE delivered_at_ms IS NULL;

-- Secrets: AES-256-GCM sealed with the host key.
CREATE TABLE secrets (
    name          TEXT PRIMARY KEY,
    sealed        BLOB    NOT NULL,  -- nonce || ciphertext || tag
    updated_at_ms INTEGER NOT NULL
);

-- +goose Down
DROP TABLE secrets;
DROP TABLE outbox;
DROP TABLE logs;
DROP TABLE runs;
DROP TABLE jobs;
