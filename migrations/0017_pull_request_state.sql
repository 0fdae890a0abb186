-- What became of a task's pull request after it was opened, as GitHub's `pull_request`
-- events tell (`open` when opened, `merged` or `closed` when closed, `open` again when
-- reopened), and the time of the PR update that said so: a delivery processed late (a
-- retry, a redelivery) never overwrites a newer state. NULL: no pull request, or one
-- opened before this was recorded.
ALTER TABLE tasks
    ADD COLUMN pr_state text CHECK (pr_state IN ('open', 'merged', 'closed')),
    ADD COLUMN pr_state_at timestamptz,
    ADD CHECK (pr_state IS NULL OR pr_number IS NOT NULL);

-- A `pull_request` event finds its tasks by repository and number.
CREATE INDEX tasks_pull_request_idx ON tasks (repository_id, pr_number)
    WHERE pr_number IS NOT NULL;

-- Each round of a coding agent (round 1 makes the change, later ones answer a failed
-- validation) with what its CLI reported using; `tasks.agent_*` keep the sums.
CREATE TABLE task_agent_rounds (
    task_id        bigint NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    round          integer NOT NULL CHECK (round >= 1),
    provider       text NOT NULL,
    model          text CHECK (model <> '' AND length(model) <= 200),
    input_tokens   bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens  bigint NOT NULL CHECK (output_tokens >= 0),
    -- Millionths of a US dollar; NULL when the CLI reported no cost.
    cost_microusd  bigint CHECK (cost_microusd >= 0),
    reported_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, round)
);
