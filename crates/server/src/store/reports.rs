//! What GitHub refused for good when a task was reported, and the replies already posted
//! for a delivery: both keep a fault from turning into a retry without end or a second
//! comment.

use chrono::{DateTime, Utc};

use super::tasks::TaskId;
use super::{Store, StoreError};

/// One step of a report that GitHub refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportErrorRecord {
    pub step: String,
    pub status: Option<i32>,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Records that GitHub refused `step` of task `id`'s report for good; the first
    /// refusal of a step is kept.
    pub async fn record_report_error(
        &self,
        id: TaskId,
        step: &str,
        status: Option<u16>,
        message: &str,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO report_errors (task_id, step, status, message) VALUES ($1, $2, $3, $4)
             ON CONFLICT (task_id, step) DO NOTHING",
            id as TaskId,
            step,
            status.map(i32::from),
            message,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The steps of task `id`'s report that GitHub refused for good, oldest first.
    pub async fn report_errors(&self, id: TaskId) -> Result<Vec<ReportErrorRecord>, StoreError> {
        Ok(sqlx::query_as!(
            ReportErrorRecord,
            "SELECT step, status, message, created_at FROM report_errors
             WHERE task_id = $1 ORDER BY created_at, step",
            id as TaskId,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Claims the `kind` reply to delivery `guid`: `true` the first time only, so a
    /// delivery processed again posts nothing it already posted.
    pub async fn claim_delivery_reply(&self, guid: &str, kind: &str) -> Result<bool, StoreError> {
        let claimed = sqlx::query!(
            "INSERT INTO delivery_replies (delivery_guid, kind) VALUES ($1, $2)
             ON CONFLICT DO NOTHING",
            guid,
            kind,
        )
        .execute(&self.pool)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// Gives a claim back after the reply could not be posted, so a later attempt posts it.
    pub async fn release_delivery_reply(&self, guid: &str, kind: &str) -> Result<(), StoreError> {
        sqlx::query!(
            "DELETE FROM delivery_replies WHERE delivery_guid = $1 AND kind = $2",
            guid,
            kind,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
