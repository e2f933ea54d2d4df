-- Stack update: what a stack was before its current update (kept for rollback), and what each
-- resource needed and how it is deleted as last applied, so that removed and replaced objects
-- are deleted in reverse dependency order without the template that made them.

ALTER TABLE stacks ADD COLUMN previous_template TEXT;
ALTER TABLE stacks ADD COLUMN previous_sources TEXT;

-- JSON list of the resource names this one depended on when it was last created or updated.
ALTER TABLE resources ADD COLUMN requires TEXT;
-- Delete | Retain, as last applied.
ALTER TABLE resources ADD COLUMN deletion_policy TEXT;

-- What a resource failure does to the rest of the action: `stop` starts nothing new (running
-- work finishes and is recorded), `continue` goes on with every branch that does not need
-- the failed resource.
ALTER TABLE stacks ADD COLUMN on_failure TEXT NOT NULL DEFAULT 'stop';

-- A stack's timeout (ms; NULL: none) and the deadline of its current action, set when the
-- action starts. Past the deadline the leader cancels the action, whichever engine started it.
ALTER TABLE stacks ADD COLUMN timeout_ms BIGINT;
ALTER TABLE stacks ADD COLUMN deadline_at BIGINT;
