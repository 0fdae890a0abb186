//! What became of the pull requests tasks opened: GitHub's `pull_request` events
//! (`closed`, merged or not, and `reopened`) recorded on the tasks that opened them.

use chrono::{DateTime, Utc};

use super::tasks::{AuditActor, append_event};
use super::{DeliveryClaim, StoreError};
use bg_agent_core::task::{PrState, TaskId};

/// A pull request's new state, as one `pull_request` delivery tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestStateChange<'a> {
    pub repository_id: i64,
    pub number: i32,
    pub state: PrState,
    /// The pull request's `updated_at`: a delivery processed after a newer one (a retry,
    /// a redelivery) changes nothing.
    pub updated_at: Option<DateTime<Utc>>,
    /// Who closed, merged or reopened it (GitHub login).
    pub sender: &'a str,
    pub delivery_guid: &'a str,
}

/// What a `pull_request` delivery changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullRequestRecorded {
    /// The state is recorded on these tasks (the ones that opened the pull request).
    Recorded(Vec<TaskId>),
    /// Ours, but already in that state or told by a newer delivery.
    Unchanged,
    /// No task opened it.
    NotOurs,
}

impl DeliveryClaim {
    /// Records `change` on the tasks that opened that pull request, in the claim's
    /// transaction (nothing to ask GitHub), with an audit event each.
    pub async fn record_pull_request_state(
        &mut self,
        change: &PullRequestStateChange<'_>,
    ) -> Result<PullRequestRecorded, StoreError> {
        let updated = sqlx::query_scalar!(
            r#"UPDATE tasks SET pr_state = $3, pr_state_at = $4
               WHERE repository_id = $1 AND pr_number = $2
                 AND ($4::timestamptz IS NULL OR pr_state_at IS NULL OR pr_state_at <= $4)
                 AND pr_state IS DISTINCT FROM $3
               RETURNING id AS "id: TaskId""#,
            change.repository_id,
            change.number,
            change.state as PrState,
            change.updated_at,
        )
        .fetch_all(&mut *self.tx)
        .await?;
        if updated.is_empty() {
            let ours = sqlx::query_scalar!(
                r#"SELECT EXISTS (SELECT 1 FROM tasks WHERE repository_id = $1 AND pr_number = $2)
                   AS "ours!""#,
                change.repository_id,
                change.number,
            )
            .fetch_one(&mut *self.tx)
            .await?;
            return Ok(if ours {
                PullRequestRecorded::Unchanged
            } else {
                PullRequestRecorded::NotOurs
            });
        }
        let action = match change.state {
            PrState::Open => format!("pull request #{} reopened", change.number),
            PrState::Merged => format!("pull request #{} merged", change.number),
            PrState::Closed => format!("pull request #{} closed without merging", change.number),
        };
        for id in &updated {
            append_event(
                &mut *self.tx,
                *id,
                AuditActor {
                    name: change.sender,
                    delivery_guid: Some(change.delivery_guid),
                },
                &action,
                (None, None),
            )
            .await?;
        }
        Ok(PullRequestRecorded::Recorded(updated))
    }
}
