-- +goose Up
-- Tenant lifecycle (issue 9). A namespace gets an immutable id; token
-- grants (JSON: namespace_id beside namespace), templates and audit entries
-- name it, so a namespace deleted and created again under the same name
-- starts empty: nothing that referred to the old one matches the new id.
-- Events and audit entries get a per-namespace sequence number (ns_seq,
-- the API's seq), drawn from the sequences table, so gaps in one tenant's
-- numbers say nothing about another tenant's activity.
ALTER TABLE namespaces ADD COLUMN id TEXT NOT NULL DEFAULT '';
UPDATE namespaces SET id = 'ns-' || substr(md5(random()::text || name), 1, 16);
CREATE UNIQUE INDEX namespaces_id ON namespaces (id);

ALTER TABLE templates ADD COLUMN namespace_id TEXT NOT NULL DEFAULT '';
-- Templates of namespaces that no longer exist would show in (and block
-- names of) a namespace created again under the name.
DELETE FROM templates WHERE namespace NOT IN (SELECT name FROM namespaces);
UPDATE templates SET namespace_id = COALESCE((SELECT id FROM namespaces WHERE namespaces.name = templates.namespace), '');

ALTER TABLE audit ADD COLUMN namespace_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN ns_seq BIGINT NOT NULL DEFAULT 0;
UPDATE audit SET namespace_id = COALESCE((SELECT id FROM namespaces WHERE namespaces.name = audit.namespace), '');
UPDATE audit SET ns_seq = r.n
  FROM (SELECT seq, ROW_NUMBER() OVER (PARTITION BY namespace_id ORDER BY seq) AS n FROM audit WHERE namespace_id <> '') AS r
  WHERE audit.seq = r.seq;
CREATE INDEX audit_ns ON audit (namespace_id, ns_seq);
CREATE INDEX audit_at ON audit (at);

-- Events of namespaces that no longer exist would show in a namespace
-- created again under the name.
DELETE FROM events WHERE namespace NOT IN (SELECT name FROM namespaces);
ALTER TABLE events ADD COLUMN ns_seq BIGINT NOT NULL DEFAULT 0;
UPDATE events SET ns_seq = r.n
  FROM (SELECT seq, ROW_NUMBER() OVER (PARTITION BY namespace ORDER BY seq) AS n FROM events) AS r
  WHERE events.seq = r.seq;
DROP INDEX events_ns;
CREATE UNIQUE INDEX events_ns_seq ON events (namespace, ns_seq);

-- scope: 'events:<namespace name>' or 'audit:<namespace id>'.
CREATE TABLE sequences (
  scope TEXT PRIMARY KEY,
  last  BIGINT NOT NULL
);
INSERT INTO sequences (scope, last) SELECT 'events:' || namespace, MAX(ns_seq) FROM events GROUP BY namespace;
INSERT INTO sequences (scope, last) SELECT 'audit:' || namespace_id, MAX(ns_seq) FROM audit WHERE namespace_id <> '' GROUP BY namespace_id;

UPDATE tokens SET grants = COALESCE((
  SELECT jsonb_agg(g.value || jsonb_build_object('namespace_id',
    COALESCE((SELECT id FROM namespaces WHERE name = g.value->>'namespace'), '')) ORDER BY g.ord)
  FROM jsonb_array_elements(tokens.grants::jsonb) WITH ORDINALITY AS g(value, ord)), '[]'::jsonb)::text
WHERE jsonb_typeof(grants::jsonb) = 'array';

-- +goose Down
DROP TABLE sequences;
DROP INDEX events_ns_seq;
CREATE INDEX events_ns ON events (namespace, seq);
ALTER TABLE events DROP COLUMN ns_seq;
DROP INDEX audit_at;
DROP INDEX audit_ns;
ALTER TABLE audit DROP COLUMN ns_seq;
ALTER TABLE audit DROP COLUMN namespace_id;
ALTER TABLE templates DROP COLUMN namespace_id;
DROP INDEX namespaces_id;
ALTER TABLE namespaces DROP COLUMN id;
