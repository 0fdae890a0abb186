-- The signed-in user's GitHub token is no longer stored in the clear: it is encrypted with
-- the keyring of agent credentials (BG_AGENT_ENCRYPTION_KEY, AES-256-GCM, a key id so keys
-- rotate), and the associated data is the session's id hash, so a ciphertext copied to
-- another session's row does not decrypt (crates/server/src/web/auth.rs).
--
-- Existing sessions hold plaintext tokens that cannot be kept: the table is dropped and
-- made again, so every signed-in person signs in again once (their GitHub tokens leave
-- the database with the rows).
DROP TABLE web_sessions;

CREATE TABLE web_sessions (
    id_hash          BYTEA PRIMARY KEY CHECK (octet_length(id_hash) = 32),
    user_id          BIGINT NOT NULL,
    login            TEXT NOT NULL,
    -- Which key of BG_AGENT_ENCRYPTION_KEY encrypted the token.
    token_key_id     TEXT NOT NULL CHECK (token_key_id <> '' AND length(token_key_id) <= 64),
    token_nonce      BYTEA NOT NULL CHECK (octet_length(token_nonce) = 12),
    -- The token's ciphertext and the 16-byte GCM tag.
    token_ciphertext BYTEA NOT NULL CHECK (octet_length(token_ciphertext) > 16),
    -- The per-session token every state-changing form carries.
    csrf_token       TEXT NOT NULL CHECK (length(csrf_token) >= 32),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at       TIMESTAMPTZ NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX web_sessions_expires_idx ON web_sessions (expires_at);
CREATE INDEX web_sessions_user_idx ON web_sessions (user_id);
