//! Reading a task's log and its attempts, for the JSON API: whole or from a sequence
//! number on (a live stream resumes where its client left off).

use chrono::{DateTime, Utc};

use super::tasks::TaskId;
use super::{Store, StoreError};
use bg_agent_core::protocol::LogLevel;
use bg_agent_core::task::TaskState;

/// One stored log line; `seq` numbers a task's lines from 0 and is never reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub level: LogLevel,
    pub line: String,
}

/// Which of a task's lines to read; the default is all of them.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only lines after this sequence number.
    pub after: Option<i64>,
    /// Only lines logged at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only lines of this level and above.
    pub level: Option<LogLevel>,
    /// Only lines containing this text.
    pub contains: Option<String>,
}

/// One attempt of a request: the first task and each retry of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: TaskId,
    pub attempt: i32,
    pub state: TaskState,
}

impl Store {
    /// Up to `limit` of the lines `filter` keeps, oldest first.
    pub async fn log_lines(
        &self,
        id: TaskId,
        filter: &LogFilter,
        limit: i64,
    ) -> Result<Vec<LogLine>, StoreError> {
        let levels: Option<Vec<String>> = filter
            .level
            .map(|l| l.and_above().map(|l| l.as_str().to_owned()).collect());
        let rows = sqlx::query!(
            r#"SELECT seq::bigint AS "seq!", at, level, line FROM task_logs
             WHERE task_id = $1 AND ($2::bigint IS NULL OR seq > $2)
               AND ($3::timestamptz IS NULL OR at >= $3)
               AND ($4::text[] IS NULL OR level = ANY($4))
               AND ($5::text IS NULL OR strpos(line, $5) > 0)
             ORDER BY seq LIMIT $6"#,
            id as TaskId,
            filter.after,
            filter.since,
            levels.as_deref(),
            filter.contains.as_deref(),
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| LogLine {
                seq: row.seq,
                at: row.at,
                // The column's check allows only the known levels.
                level: LogLevel::parse(&row.level).unwrap_or_default(),
                line: row.line,
            })
            .collect())
    }

    /// Every attempt of the request `id` belongs to, first to last.
    pub async fn attempts(&self, id: TaskId) -> Result<Vec<Attempt>, StoreError> {
        Ok(sqlx::query_as!(
            Attempt,
            r#"WITH RECURSIVE first AS (
                   SELECT id, retry_of FROM tasks WHERE id = $1
                   UNION ALL
                   SELECT t.id, t.retry_of FROM tasks t JOIN first f ON t.id = f.retry_of
               ), chain AS (
                   SELECT id FROM first WHERE retry_of IS NULL
                   UNION ALL
                   SELECT t.id FROM tasks t JOIN chain c ON t.retry_of = c.id
               )
               SELECT t.id AS "id!: TaskId", t.attempt, t.state AS "state: TaskState"
               FROM chain JOIN tasks t USING (id) ORDER BY t.attempt, t.id"#,
            id as TaskId,
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// How many tasks are in each state (states without any are absent).
    pub async fn task_state_counts(&self) -> Result<Vec<(TaskState, i64)>, StoreError> {
        Ok(sqlx::query!(
            r#"SELECT state AS "state: TaskState", count(*) AS "n!" FROM tasks GROUP BY state"#
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| (row.state, row.n))
        .collect())
    }
}
