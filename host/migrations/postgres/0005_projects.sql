-- Tenancy: every stack belongs to a project (the API token's); names are unique within a
-- project, not across them. Stacks made before projects existed belong to `default`.
ALTER TABLE stacks ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
DROP INDEX stacks_live_name;
CREATE UNIQUE INDEX stacks_live_name ON stacks (project, name) WHERE deleted_at IS NULL;
