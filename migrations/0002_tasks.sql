-- Tasks and their audit trail. The limits that must hold across replicas live here as
-- constraints, so two engines racing on one database cannot break them:
-- - one idempotency key per trigger (a redelivered trigger creates no second task);
-- - at most one active (queued, starting, running) task per user;
-- - at most one starting/running task per repository (later ones wait, queued);
-- - per-installation and global caps: a starting/running task holds a numbered slot, unique
--   per installation and globally, and the dispatcher only hands out slots below the
--   configured caps.
CREATE TABLE tasks (
    id                  BIGSERIAL PRIMARY KEY,
    installation_id     BIGINT NOT NULL,
    repository_id       BIGINT NOT NULL,
    -- owner/name when the task was created (a rename does not break the link to the id).
    repository          TEXT NOT NULL CHECK (repository LIKE '%/%'),
    issue_number        INTEGER,
    comment_id          BIGINT,
    delivery_guid       TEXT,
    trigger             TEXT NOT NULL
                        CHECK (trigger IN ('comment', 'label', 'rerun', 'retry_button', 'retry_command', 'api')),
    idempotency_key     TEXT NOT NULL UNIQUE,
    creator_login       TEXT NOT NULL,
    creator_id          BIGINT NOT NULL,
    template            TEXT,
    params              JSONB NOT NULL DEFAULT '{}',
    recipe              TEXT NOT NULL CHECK (recipe IN ('npm_upgrade', 'agent')),
    instructions        TEXT NOT NULL,
    state               TEXT NOT NULL DEFAULT 'queued'
                        CHECK (state IN ('queued', 'starting', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    phase               TEXT NOT NULL DEFAULT 'queued'
                        CHECK (phase IN ('queued', 'starting', 'cloning', 'applying', 'validating', 'pushing', 'finished')),
    progress            SMALLINT NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    attempt             INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    retry_of            BIGINT REFERENCES tasks (id),
    timeout_secs        INTEGER NOT NULL CHECK (timeout_secs BETWEEN 60 AND 3600),
    installation_slot   INTEGER CHECK (installation_slot >= 0),
    global_slot         INTEGER CHECK (global_slot >= 0),
    check_run_id        BIGINT,
    tracking_comment_id BIGINT,
    branch              TEXT,
    commit_sha          TEXT,
    pr_number           INTEGER,
    pr_url              TEXT,
    changed             BOOLEAN,
    error               TEXT,
    runner_secret_hash  BYTEA,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at          TIMESTAMPTZ,
    finished_at         TIMESTAMPTZ,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Slots are held exactly while the task occupies an executor.
    CHECK ((state IN ('starting', 'running'))
           = (installation_slot IS NOT NULL AND global_slot IS NOT NULL)),
    CHECK ((state IN ('succeeded', 'failed', 'cancelled', 'timed_out')) = (finished_at IS NOT NULL)),
    CHECK ((retry_of IS NULL) = (attempt = 1))
);

CREATE UNIQUE INDEX tasks_one_active_per_user ON tasks (creator_id)
    WHERE state IN ('queued', 'starting', 'running');
CREATE UNIQUE INDEX tasks_one_running_per_repository ON tasks (repository_id)
    WHERE state IN ('starting', 'running');
CREATE UNIQUE INDEX tasks_installation_slots ON tasks (installation_id, installation_slot)
    WHERE installation_slot IS NOT NULL;
CREATE UNIQUE INDEX tasks_global_slots ON tasks (global_slot)
    WHERE global_slot IS NOT NULL;
-- The dispatcher's queue, oldest first.
CREATE INDEX tasks_queued_idx ON tasks (created_at, id) WHERE state = 'queued';
-- `/bg-agent status` and the status page: a repository's (or a user's) latest tasks.
CREATE INDEX tasks_repository_idx ON tasks (repository_id, id DESC);
CREATE INDEX tasks_creator_idx ON tasks (creator_id, repository_id, id DESC);
CREATE INDEX tasks_retry_of_idx ON tasks (retry_of) WHERE retry_of IS NOT NULL;

-- Append-only audit trail: who did what to which task, when, from which delivery.
CREATE TABLE task_events (
    id            BIGSERIAL PRIMARY KEY,
    task_id       BIGINT NOT NULL REFERENCES tasks (id),
    at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    from_state    TEXT,
    to_state      TEXT,
    delivery_guid TEXT,
    detail        JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX task_events_task_idx ON task_events (task_id, id);

-- Refusals (permission, limits) leave no task but must be audited too.
CREATE TABLE refusals (
    id            BIGSERIAL PRIMARY KEY,
    at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    repository_id BIGINT NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    delivery_guid TEXT,
    detail        JSONB NOT NULL DEFAULT '{}'
);

-- Log lines reported by runners, capped per task, already redacted.
CREATE TABLE task_logs (
    task_id BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL CHECK (seq >= 0),
    at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    line    TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

-- Templates stored in the database (the JSON API manages them); repository templates live
-- in the repository, built-ins in the code. Usage is counted for all of them.
CREATE TABLE templates (
    name        TEXT PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,63}$'),
    definition  JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE template_usage (
    repository_id BIGINT NOT NULL,
    name          TEXT NOT NULL,
    source        TEXT NOT NULL CHECK (source IN ('built_in', 'database', 'repository')),
    uses          BIGINT NOT NULL DEFAULT 0 CHECK (uses >= 0),
    last_used_at  TIMESTAMPTZ,
    PRIMARY KEY (repository_id, name, source)
);
