-- Scale-out: engines that drain, stack locks with fencing tokens, cooperative cancel, and one
-- leader lease for periodic maintenance with a log of its terms.

-- An engine is dead when its heartbeat is older than its own lease.
ALTER TABLE engines ADD COLUMN draining_at BIGINT;
ALTER TABLE engines ADD COLUMN lease_ms BIGINT NOT NULL DEFAULT 10000;

-- Grows each time the lock changes hands (a takeover from a dead holder).
ALTER TABLE stack_locks ADD COLUMN token BIGINT NOT NULL DEFAULT 1;

-- Set by `stack cancel`: no new job of the current traversal starts; running ones finish.
ALTER TABLE stacks ADD COLUMN cancel_requested_at BIGINT;

-- The maintenance lease: one row; whoever holds an unexpired lease is the leader.
CREATE TABLE leader (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    term        BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
INSERT INTO leader (name, holder, term, acquired_at, expires_at) VALUES ('maintenance', '', 0, 0, 0);

-- Every term: who led, from when, and until when its lease ran (renewals move expires_at;
-- a resignation sets it to the moment of resigning).
CREATE TABLE leader_terms (
    term        BIGINT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE INDEX jobs_lease_owner ON jobs (lease_owner);
