-- Sign-in sessions of the status pages. The cookie holds a random session id (signed);
-- only its SHA-256 is stored, so reading this table does not hand out sessions. The
-- user's GitHub token stays here, server-side, for their own permission checks: it never
-- reaches the browser. Sign-out deletes the row; expired rows are purged.
CREATE TABLE web_sessions (
    id_hash    BYTEA PRIMARY KEY CHECK (octet_length(id_hash) = 32),
    user_id    BIGINT NOT NULL,
    login      TEXT NOT NULL,
    token      TEXT NOT NULL CHECK (token <> ''),
    -- The per-session token every state-changing form carries.
    csrf_token TEXT NOT NULL CHECK (length(csrf_token) >= 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX web_sessions_expires_idx ON web_sessions (expires_at);
CREATE INDEX web_sessions_user_idx ON web_sessions (user_id);

-- The task list's filters: by creator name and by day.
CREATE INDEX tasks_created_at_idx ON tasks (created_at);
