-- Server processes running the engine, and which one launched each task. An executor that
-- only sees its own executions (the local one: child processes) cannot tell another
-- replica's running task from a lost one; the launching instance's heartbeat can.
CREATE TABLE engine_instances (
    id         UUID PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    seen_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

ALTER TABLE tasks ADD COLUMN launched_by UUID;
