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

-- Rollback (opt-in per stack): a failed create or update converges back on the template the
-- stack had before it. `rollback_pending` is set in the transaction that ends the failed
-- action, so the rollback starts even if that engine dies next (the leader starts it);
-- `skip_rollback` is set by `stack cancel --no-rollback` for the action in progress.
ALTER TABLE stacks ADD COLUMN rollback_enabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE stacks ADD COLUMN rollback_pending BIGINT NOT NULL DEFAULT 0;
ALTER TABLE stacks ADD COLUMN skip_rollback BIGINT NOT NULL DEFAULT 0;

-- When the job first started work (its first claim): a resource's `timeout` runs from here,
-- across polls, retries and takeovers.
ALTER TABLE jobs ADD COLUMN started_at BIGINT;
