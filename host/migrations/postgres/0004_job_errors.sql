-- Errors inside the engine while working a job (a database or stored-data error, not a plugin
-- error): counted per job, so that a job that can never be worked fails its resource instead
-- of coming back forever.
ALTER TABLE jobs ADD COLUMN internal_errors BIGINT NOT NULL DEFAULT 0;
