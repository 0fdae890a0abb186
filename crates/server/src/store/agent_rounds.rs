//! A coding agent's rounds, one row each (`task_agent_rounds`): what each invocation of
//! its CLI used, as the runner reported it. The task page and the API show them; the
//! sums stay on the task (`tasks.agent_*`).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::{Store, StoreError};
use bg_agent_core::protocol::Usage;
use bg_agent_core::task::TaskId;

/// Longest model name kept (the schema's limit); a repository's configuration names it.
const MAX_MODEL_CHARS: usize = 200;

/// One round of a task's coding agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRoundRecord {
    /// 1 makes the change; each later round answers a failed validation.
    pub round: i32,
    /// The provider's configuration name, e.g. `claude_code`.
    pub provider: String,
    /// `None`: the CLI's default model.
    pub model: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Millionths of a US dollar; `None` when the CLI reported no cost.
    pub cost_microusd: Option<i64>,
    pub reported_at: DateTime<Utc>,
}

/// Records round `round` of task `id` inside the report's transaction. A round reported
/// twice (it cannot be, reports apply once per sequence number) keeps the first.
pub(super) async fn record_round(
    executor: impl PgExecutor<'_>,
    id: TaskId,
    round: u32,
    provider: &str,
    model: Option<&str>,
    usage: &Usage,
    cost_microusd: Option<i64>,
) -> Result<(), sqlx::Error> {
    let model = model
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| m.chars().take(MAX_MODEL_CHARS).collect::<String>());
    sqlx::query!(
        "INSERT INTO task_agent_rounds
             (task_id, round, provider, model, input_tokens, output_tokens, cost_microusd)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (task_id, round) DO NOTHING",
        id as TaskId,
        i32::try_from(round).unwrap_or(i32::MAX).max(1),
        provider,
        model,
        i64::try_from(usage.input_tokens).unwrap_or(i64::MAX),
        i64::try_from(usage.output_tokens).unwrap_or(i64::MAX),
        cost_microusd,
    )
    .execute(executor)
    .await?;
    Ok(())
}

impl Store {
    /// Task `id`'s agent rounds, first to last.
    pub async fn agent_rounds(&self, id: TaskId) -> Result<Vec<AgentRoundRecord>, StoreError> {
        Ok(sqlx::query_as!(
            AgentRoundRecord,
            "SELECT round, provider, model, input_tokens, output_tokens, cost_microusd,
                    reported_at
             FROM task_agent_rounds WHERE task_id = $1 ORDER BY round",
            id as TaskId,
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
