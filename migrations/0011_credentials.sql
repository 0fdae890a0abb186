-- Model-provider credentials (API keys) for coding agents, per installation or per user of
-- it, encrypted at rest (AES-256-GCM, crates/server/src/credentials.rs). The value is never
-- stored in the clear: `fingerprint` (8 hex digits of its SHA-256) is what people see.
CREATE TABLE agent_credentials (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    installation_id bigint NOT NULL,
    -- A GitHub user id; NULL: the installation's, for every user without one of their own.
    user_id bigint,
    provider text NOT NULL CHECK (provider IN ('anthropic', 'openai', 'gemini')),
    -- Which key of BG_AGENT_ENCRYPTION_KEY encrypted it (keys rotate).
    key_id text NOT NULL CHECK (key_id <> '' AND length(key_id) <= 64),
    nonce bytea NOT NULL CHECK (octet_length(nonce) = 12),
    -- Ciphertext and the 16-byte GCM tag; the associated data names (installation, user,
    -- provider), so a row's ciphertext copied to another row does not decrypt.
    ciphertext bytea NOT NULL CHECK (octet_length(ciphertext) > 16),
    fingerprint text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{8}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    -- One per scope; an installation-wide one (NULL user) counts once too.
    CONSTRAINT agent_credentials_one_per_scope
        UNIQUE NULLS NOT DISTINCT (installation_id, user_id, provider)
);

-- An installation's default coding agent; repository configuration may choose another.
CREATE TABLE installation_settings (
    installation_id bigint PRIMARY KEY,
    agent_provider text NOT NULL
        CHECK (agent_provider IN ('command', 'claude_code', 'codex', 'gemini', 'aider', 'cline')),
    agent_model text CHECK (agent_model <> '' AND length(agent_model) <= 200),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What the scope guard found in a task's change (deleted tests, skip markers, CI files,
-- diff budget), as the runner reported it: shown in the check run and the PR body.
ALTER TABLE tasks ADD COLUMN scope_findings text[] NOT NULL DEFAULT '{}';

-- The credential a task's agent was given, so the server can redact its value from the
-- task's log lines too (gone with the credential: a deleted one is no longer redacted).
ALTER TABLE tasks ADD COLUMN agent_credential_id bigint
    REFERENCES agent_credentials (id) ON DELETE SET NULL;
