//! Sign-in sessions (`migrations/0012_web_sessions.sql`): found by the SHA-256 of the
//! cookie's session id, never by the id itself.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

/// A live session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub user_id: i64,
    pub login: String,
    /// The user's GitHub token (user-to-server).
    pub token: String,
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
            "INSERT INTO web_sessions (id_hash, user_id, login, token, csrf_token, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            id_hash,
            session.user_id,
            session.login,
            session.token,
            session.csrf_token,
            session.expires_at,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session, unless it expired or was signed out.
    pub async fn session(&self, id_hash: &[u8]) -> Result<Option<SessionRecord>, StoreError> {
        Ok(sqlx::query_as!(
            SessionRecord,
            "SELECT user_id, login, token, csrf_token, expires_at FROM web_sessions
             WHERE id_hash = $1 AND expires_at > now()",
            id_hash,
        )
        .fetch_optional(&self.pool)
        .await?)
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
