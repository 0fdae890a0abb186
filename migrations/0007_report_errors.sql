-- What GitHub refused for good when the reporter brought it up to a task (404, 410, 422:
-- a deleted comment, a removed installation, a pull request title GitHub will not take).
-- Each step of a report (check run, tracking comment, pull request, labels, validation
-- check) that GitHub refused is recorded once, shown on the task page and not tried
-- again; the other steps go on.
CREATE TABLE report_errors (
    task_id    BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step       TEXT NOT NULL CHECK (step IN
                   ('check_run', 'tracking_comment', 'pull_request', 'labels', 'validation_check')),
    status     INTEGER,
    message    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, step)
);

-- The replies (help, status, refusals...) the intake posted for a delivery, one per kind:
-- a delivery processed again (its outcome was not stored) does not answer twice.
CREATE TABLE delivery_replies (
    delivery_guid TEXT NOT NULL,
    kind          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (delivery_guid, kind)
);
