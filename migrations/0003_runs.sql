-- Running tasks and reporting them. The runner's reports are applied once each (by
-- sequence number); every change GitHub should see bumps `version`, and the reporter
-- brings GitHub up to `version` from the stored state alone, so an outage or a restart
-- delays reports but never loses them.
ALTER TABLE tasks
    ADD COLUMN execution_id        TEXT,
    -- The highest runner report applied; a retried report with a lower or equal sequence
    -- number is acknowledged and ignored.
    ADD COLUMN last_seq            BIGINT NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    ADD COLUMN log_lines           INTEGER NOT NULL DEFAULT 0 CHECK (log_lines >= 0),
    ADD COLUMN failing_command     TEXT,
    ADD COLUMN changed_files       JSONB NOT NULL DEFAULT '[]',
    -- Set when someone asks to stop a task that occupies an executor; the engine stops
    -- the execution and ends the task `cancelled`.
    ADD COLUMN cancel_requested_by TEXT,
    -- The default branch and its head when the task was created: the check run's commit
    -- and the pull request's base.
    ADD COLUMN base_branch         TEXT,
    ADD COLUMN head_sha            TEXT,
    ADD COLUMN pr_check_run_id     BIGINT,
    ADD COLUMN version             BIGINT NOT NULL DEFAULT 1,
    ADD COLUMN reported_version    BIGINT NOT NULL DEFAULT 0,
    -- What GitHub was last shown, so progress-only changes are throttled but a phase or
    -- state change goes out at once.
    ADD COLUMN reported_state      TEXT,
    ADD COLUMN reported_phase      TEXT,
    ADD COLUMN reported_at         TIMESTAMPTZ,
    -- Backoff after a failed report.
    ADD COLUMN report_failures     INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN report_due_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN report_error        TEXT;

-- The reporter's queue: tasks GitHub has not seen in their latest version.
CREATE INDEX tasks_unreported_idx ON tasks (report_due_at) WHERE reported_version < version;
-- One check run per task (external_id = task id); a lost answer must not create a second.
CREATE UNIQUE INDEX tasks_check_run_idx ON tasks (check_run_id) WHERE check_run_id IS NOT NULL;
-- One pull request per branch of a repository.
CREATE UNIQUE INDEX tasks_pr_idx ON tasks (repository_id, pr_number) WHERE pr_number IS NOT NULL;

-- One row per validation command the runner ran.
CREATE TABLE task_validations (
    task_id     BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL CHECK (position >= 0),
    command     TEXT NOT NULL,
    exit_code   INTEGER,
    duration_ms BIGINT NOT NULL CHECK (duration_ms >= 0),
    output_tail TEXT NOT NULL,
    PRIMARY KEY (task_id, position)
);

-- One line for titles (pull request, check run), e.g. `upgrade lodash 4.17.21`.
ALTER TABLE tasks ADD COLUMN summary TEXT NOT NULL DEFAULT '';

-- Where the template came from, so a retry counts and shows it the same way.
ALTER TABLE tasks ADD COLUMN template_source TEXT
    CHECK (template_source IN ('built_in', 'database', 'repository'));

-- Where the runner clones from, as the triggering webhook said (saves a look-up at launch).
ALTER TABLE tasks ADD COLUMN clone_url TEXT;
