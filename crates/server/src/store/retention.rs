//! Retention: webhook bodies and finished tasks' logs older than the configured age are
//! purged, in small batches so no purge holds locks for long. Tasks, their audit events
//! and the delivery rows (their GUID is the duplicate check) are kept.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

/// What one batch purged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Deliveries whose body was dropped.
    pub bodies: u64,
    /// Log lines deleted.
    pub log_lines: u64,
}

impl Purged {
    pub fn is_empty(&self) -> bool {
        self.bodies == 0 && self.log_lines == 0
    }
}

impl Store {
    /// Purges one batch of what is older than `cutoff`: at most `batch` delivery bodies
    /// (of deliveries no longer pending: a pending one still needs its body) and the logs
    /// of at most `batch` tasks finished before it. Call again until it purges nothing.
    pub async fn purge_before(
        &self,
        cutoff: DateTime<Utc>,
        batch: i64,
    ) -> Result<Purged, StoreError> {
        let bodies = sqlx::query!(
            "UPDATE deliveries SET body = ''::bytea
             WHERE guid IN (
                 SELECT guid FROM deliveries
                 WHERE received_at < $1 AND state <> 'pending' AND octet_length(body) > 0
                 ORDER BY received_at LIMIT $2
                 FOR UPDATE SKIP LOCKED)",
            cutoff,
            batch,
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        let log_lines = sqlx::query!(
            "DELETE FROM task_logs WHERE task_id IN (
                 SELECT t.id FROM tasks t
                 WHERE t.finished_at < $1
                   AND EXISTS (SELECT 1 FROM task_logs l WHERE l.task_id = t.id)
                 ORDER BY t.finished_at LIMIT $2)",
            cutoff,
            batch,
        )
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(Purged { bodies, log_lines })
    }
}
