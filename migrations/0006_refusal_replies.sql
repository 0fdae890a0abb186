-- When the app last answered a user's refused request on an issue. A user without
-- permission gets one refusal per issue per window however many commands they post; the
-- rest are audited in `refusals` but not answered. Kept here, not in memory, so that the
-- bound holds across replicas.
CREATE TABLE refusal_replies (
    repository_id BIGINT NOT NULL,
    issue_number  BIGINT NOT NULL,
    user_id       BIGINT NOT NULL,
    replied_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, issue_number, user_id)
);
