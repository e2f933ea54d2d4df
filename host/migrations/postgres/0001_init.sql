-- Kiln's store. Times are milliseconds since the Unix epoch on the database's clock.
-- JSON values are TEXT. This file mirrors the SQLite migration.

CREATE TABLE stacks (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    action        TEXT NOT NULL,             -- CREATE | DELETE
    status        TEXT NOT NULL,             -- IN_PROGRESS | COMPLETE | FAILED
    status_reason TEXT NOT NULL DEFAULT '',
    template      TEXT NOT NULL,             -- the validated template (JSON), what engines evaluate
    sources       TEXT NOT NULL,             -- template, environments and parameters as given (JSON)
    traversal     BIGINT NOT NULL,           -- generation of the current action
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    deleted_at    BIGINT
);
CREATE UNIQUE INDEX stacks_live_name ON stacks (name) WHERE deleted_at IS NULL;

CREATE TABLE resources (
    stack_id      TEXT NOT NULL REFERENCES stacks (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    type          TEXT NOT NULL,
    action        TEXT NOT NULL,             -- INIT | CREATE | DELETE
    status        TEXT NOT NULL,             -- COMPLETE | IN_PROGRESS | FAILED
    status_reason TEXT NOT NULL DEFAULT '',
    physical_id   TEXT,
    state         TEXT,
    attributes    TEXT,
    properties    TEXT,
    traversal     BIGINT NOT NULL DEFAULT 0, -- the traversal that last worked on it
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (stack_id, name)
);
-- "Has this traversal failed anywhere?" and "what is left?" without scanning the stack.
CREATE INDEX resources_progress ON resources (stack_id, traversal, status);

-- One row per ready resource of a traversal. Claimed with a lease; `token` fences writes.
CREATE TABLE jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stack_id         TEXT NOT NULL,
    resource         TEXT NOT NULL,
    traversal        BIGINT NOT NULL,
    operation        TEXT NOT NULL,          -- create | delete
    due_at           BIGINT NOT NULL,
    attempt          BIGINT NOT NULL DEFAULT 1,
    first_failure_at BIGINT,                 -- when the first failed attempt ended
    last_delay_ms    BIGINT,                 -- the delay chosen before this attempt
    history          TEXT,                   -- failed attempts so far (JSON list)
    pending_state    TEXT,                   -- set while polling a long operation
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    token            BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    UNIQUE (stack_id, resource, traversal)
);
CREATE INDEX jobs_due ON jobs (due_at);
CREATE INDEX jobs_traversal ON jobs (stack_id, traversal);

CREATE TABLE events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stack_id    TEXT NOT NULL,
    resource    TEXT,                        -- NULL for the stack itself
    action      TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    physical_id TEXT,
    engine      TEXT,
    at          BIGINT NOT NULL
);
CREATE INDEX events_stack ON events (stack_id, id);

-- One action per stack: the row exists while an action is in progress.
CREATE TABLE stack_locks (
    stack_id    TEXT PRIMARY KEY,
    action      TEXT NOT NULL,
    holder      TEXT NOT NULL,
    acquired_at BIGINT NOT NULL
);

-- Engine processes: registered at start, heartbeating on the database clock while they run.
CREATE TABLE engines (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    version      TEXT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at   BIGINT
);
