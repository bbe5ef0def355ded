-- +goose Up
-- Fleet node life cycle. restart_generation is raised by the server to ask
-- the host for a restart of the node's agent; restart_applied is the
-- generation the host acknowledged after restarting it. config_applied is
-- the SHA-256 (hex) of the rendered agent config the host runs, and
-- config_error why it refused a newer one ('' when none). Hosts gain the
-- state 'cordoned' (no schema change: hosts.state is free text).
ALTER TABLE allocations ADD COLUMN restart_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE allocations ADD COLUMN restart_applied INTEGER NOT NULL DEFAULT 0;
ALTER TABLE allocations ADD COLUMN config_applied TEXT NOT NULL DEFAULT '';
ALTER TABLE allocations ADD COLUMN config_error TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE allocations DROP COLUMN config_error;
ALTER TABLE allocations DROP COLUMN config_applied;
ALTER TABLE allocations DROP COLUMN restart_applied;
ALTER TABLE allocations DROP COLUMN restart_generation;
