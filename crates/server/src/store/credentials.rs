//! Agent credentials (encrypted; see `crate::credentials`) and installations' default
//! agents. Nothing here sees a credential's value: values are sealed before they come in
//! and opened after they go out.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::credentials::{Provider, Scope, Sealed};
use bg_agent_core::task::TaskId;

/// A stored credential, without its value: what `credentials list` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    pub id: i64,
    pub installation_id: i64,
    pub user_id: Option<i64>,
    pub provider: String,
    pub key_id: String,
    pub fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A stored credential with its sealed value, to be opened with the keyring.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    pub id: i64,
    pub scope: Scope,
    pub sealed: Sealed,
    pub fingerprint: String,
}

struct Row {
    id: i64,
    installation_id: i64,
    user_id: Option<i64>,
    provider: String,
    key_id: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    fingerprint: String,
}

impl Row {
    fn into_stored(self) -> Option<StoredCredential> {
        // The CHECK constraint keeps other names out.
        let provider = Provider::parse(&self.provider)?;
        Some(StoredCredential {
            id: self.id,
            scope: Scope {
                installation_id: self.installation_id,
                user_id: self.user_id,
                provider,
            },
            sealed: Sealed {
                key_id: self.key_id,
                nonce: self.nonce,
                ciphertext: self.ciphertext,
            },
            fingerprint: self.fingerprint,
        })
    }
}

impl Store {
    /// Stores the credential of `scope`, replacing the one it had (then its `last_used_at`
    /// starts again). Returns whether one was replaced.
    pub async fn put_credential(
        &self,
        scope: &Scope,
        sealed: &Sealed,
        fingerprint: &str,
    ) -> Result<bool, StoreError> {
        let replaced = sqlx::query_scalar!(
            r#"INSERT INTO agent_credentials
                 (installation_id, user_id, provider, key_id, nonce, ciphertext, fingerprint)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT ON CONSTRAINT agent_credentials_one_per_scope DO UPDATE
                SET key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce,
                    ciphertext = EXCLUDED.ciphertext, fingerprint = EXCLUDED.fingerprint,
                    updated_at = now(), last_used_at = NULL
             RETURNING xmax::text <> '0' AS "replaced!""#,
            scope.installation_id,
            scope.user_id,
            scope.provider.as_str(),
            sealed.key_id,
            sealed.nonce,
            sealed.ciphertext,
            fingerprint,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(replaced)
    }

    /// Every credential (of one installation, if given), without values.
    pub async fn credentials(
        &self,
        installation_id: Option<i64>,
    ) -> Result<Vec<CredentialInfo>, StoreError> {
        Ok(sqlx::query_as!(
            CredentialInfo,
            "SELECT id, installation_id, user_id, provider, key_id, fingerprint, created_at,
                    updated_at, last_used_at
             FROM agent_credentials
             WHERE $1::bigint IS NULL OR installation_id = $1
             ORDER BY installation_id, user_id NULLS FIRST, provider",
            installation_id,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The credential of exactly `scope`.
    pub async fn credential(&self, scope: &Scope) -> Result<Option<StoredCredential>, StoreError> {
        let row = sqlx::query_as!(
            Row,
            "SELECT id, installation_id, user_id, provider, key_id, nonce, ciphertext, fingerprint
             FROM agent_credentials
             WHERE installation_id = $1 AND user_id IS NOT DISTINCT FROM $2 AND provider = $3",
            scope.installation_id,
            scope.user_id,
            scope.provider.as_str(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(Row::into_stored))
    }

    /// The credential a task of `user_id` in `installation_id` uses for `provider`: the
    /// user's own if there is one, else the installation's.
    pub async fn credential_for(
        &self,
        installation_id: i64,
        user_id: i64,
        provider: Provider,
    ) -> Result<Option<StoredCredential>, StoreError> {
        let row = sqlx::query_as!(
            Row,
            "SELECT id, installation_id, user_id, provider, key_id, nonce, ciphertext, fingerprint
             FROM agent_credentials
             WHERE installation_id = $1 AND (user_id = $2 OR user_id IS NULL) AND provider = $3
             ORDER BY user_id NULLS LAST
             LIMIT 1",
            installation_id,
            user_id,
            provider.as_str(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(Row::into_stored))
    }

    /// Deletes the credential of `scope`; `false` if there was none.
    pub async fn delete_credential(&self, scope: &Scope) -> Result<bool, StoreError> {
        let deleted = sqlx::query!(
            "DELETE FROM agent_credentials
             WHERE installation_id = $1 AND user_id IS NOT DISTINCT FROM $2 AND provider = $3",
            scope.installation_id,
            scope.user_id,
            scope.provider.as_str(),
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted > 0)
    }

    /// Records that `task`'s agent is given credential `id` (its `last_used_at`, and the
    /// task's link to it for redaction).
    pub async fn credential_used(&self, id: i64, task: TaskId) -> Result<(), StoreError> {
        sqlx::query!(
            "WITH used AS (
                 UPDATE agent_credentials SET last_used_at = now() WHERE id = $1 RETURNING id
             )
             UPDATE tasks SET agent_credential_id = (SELECT id FROM used) WHERE id = $2",
            id,
            task as TaskId,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The credential `task`'s agent was given, if any (to redact its value).
    pub async fn task_credential(
        &self,
        task: TaskId,
    ) -> Result<Option<StoredCredential>, StoreError> {
        let row = sqlx::query_as!(
            Row,
            "SELECT c.id, c.installation_id, c.user_id, c.provider, c.key_id, c.nonce,
                    c.ciphertext, c.fingerprint
             FROM tasks t JOIN agent_credentials c ON c.id = t.agent_credential_id
             WHERE t.id = $1",
            task as TaskId,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(Row::into_stored))
    }

    /// The installations this server knows of (from installation webhooks, and any with a
    /// stored credential), with their account's login when known: what the settings page
    /// lists when nobody signs in (`BG_AGENT_AUTH=none`).
    pub async fn known_installations(&self) -> Result<Vec<(i64, Option<String>)>, StoreError> {
        let rows = sqlx::query!(
            r#"SELECT id AS "id!", account_login AS "account" FROM installations
               WHERE deleted_at IS NULL
             UNION
             SELECT DISTINCT installation_id, NULL FROM agent_credentials c
               WHERE NOT EXISTS (SELECT 1 FROM installations i
                                 WHERE i.id = c.installation_id AND i.deleted_at IS NULL)
             ORDER BY 1"#,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.id, r.account)).collect())
    }

    /// Sets an installation's default agent (and model; `None`: the agent's own default).
    pub async fn set_default_agent(
        &self,
        installation_id: i64,
        provider: &str,
        model: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO installation_settings (installation_id, agent_provider, agent_model)
             VALUES ($1, $2, $3)
             ON CONFLICT (installation_id) DO UPDATE
                SET agent_provider = EXCLUDED.agent_provider,
                    agent_model = EXCLUDED.agent_model, updated_at = now()",
            installation_id,
            provider,
            model,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An installation's default agent and model, if it has one.
    pub async fn default_agent(
        &self,
        installation_id: i64,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let row = sqlx::query!(
            "SELECT agent_provider, agent_model FROM installation_settings
             WHERE installation_id = $1",
            installation_id,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.agent_provider, r.agent_model)))
    }
}
