//! Sign-in sessions (`migrations/0014_web_sessions_sealed.sql`): found by the SHA-256 of
//! the cookie's session id, never by the id itself. The user's GitHub token comes in
//! sealed (`web::auth`, bound to the session) and goes out sealed: nothing here sees it.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::credentials::Sealed;

/// A live session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub user_id: i64,
    pub login: String,
    /// The user's GitHub token (user-to-server), encrypted.
    pub token: Sealed,
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("user_id", &self.user_id)
            .field("login", &self.login)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub async fn create_session(
        &self,
        id_hash: &[u8],
        session: &SessionRecord,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO web_sessions (id_hash, user_id, login, token_key_id, token_nonce,
                                       token_ciphertext, csrf_token, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            id_hash,
            session.user_id,
            session.login,
            session.token.key_id,
            session.token.nonce,
            session.token.ciphertext,
            session.csrf_token,
            session.expires_at,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session, unless it expired or was signed out.
    pub async fn session(&self, id_hash: &[u8]) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query!(
            "SELECT user_id, login, token_key_id, token_nonce, token_ciphertext, csrf_token,
                    expires_at
             FROM web_sessions
             WHERE id_hash = $1 AND expires_at > now()",
            id_hash,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| SessionRecord {
            user_id: r.user_id,
            login: r.login,
            token: Sealed {
                key_id: r.token_key_id,
                nonce: r.token_nonce,
                ciphertext: r.token_ciphertext,
            },
            csrf_token: r.csrf_token,
            expires_at: r.expires_at,
        }))
    }

    /// Sign-out.
    pub async fn delete_session(&self, id_hash: &[u8]) -> Result<bool, StoreError> {
        let deleted = sqlx::query!("DELETE FROM web_sessions WHERE id_hash = $1", id_hash)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Every session of a user whose token GitHub no longer accepts.
    pub async fn delete_user_sessions(&self, user_id: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query!("DELETE FROM web_sessions WHERE user_id = $1", user_id)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected())
    }

    /// Drops expired sessions (their tokens with them).
    pub async fn purge_expired_sessions(&self) -> Result<u64, StoreError> {
        let deleted = sqlx::query!("DELETE FROM web_sessions WHERE expires_at <= now()")
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected())
    }
}
