-- The durable inbox: one row per webhook delivery, keyed by X-GitHub-Delivery so a
-- redelivery is a no-op. Rows are claimed by workers with FOR UPDATE SKIP LOCKED.
CREATE TABLE deliveries (
    guid            TEXT PRIMARY KEY CHECK (length(guid) BETWEEN 1 AND 128),
    event           TEXT NOT NULL CHECK (length(event) BETWEEN 1 AND 64),
    action          TEXT,
    installation_id BIGINT,
    body            BYTEA NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    state           TEXT NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'processed', 'ignored', 'failed')),
    -- Why it ended ignored or failed, or the last transient error while pending.
    reason          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at    TIMESTAMPTZ,
    CHECK ((state = 'pending') = (processed_at IS NULL))
);

-- Workers scan only what is still to do, oldest first.
CREATE INDEX deliveries_pending_idx ON deliveries (next_attempt_at)
    WHERE state = 'pending';

-- Payloads are JSON of 5-25 KB: lz4 compresses them several times faster than the default
-- pglz, which matters at thousands of deliveries a second. Servers built without lz4 keep
-- the default.
DO $$
BEGIN
    ALTER TABLE deliveries ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available; deliveries.body keeps the default compression';
END
$$;

-- Installations of the App and the repositories each can reach, kept from
-- installation / installation_repositories deliveries.
CREATE TABLE installations (
    id            BIGINT PRIMARY KEY,
    account_login TEXT NOT NULL,
    account_id    BIGINT NOT NULL,
    account_type  TEXT NOT NULL,
    suspended     BOOLEAN NOT NULL DEFAULT false,
    deleted_at    TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE installation_repositories (
    installation_id BIGINT NOT NULL REFERENCES installations (id) ON DELETE CASCADE,
    repository_id   BIGINT NOT NULL,
    full_name       TEXT NOT NULL,
    private         BOOLEAN NOT NULL DEFAULT false,
    added_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (installation_id, repository_id)
);
CREATE INDEX installation_repositories_name_idx ON installation_repositories (full_name);
