//! The task list: filters, newest first, keyset pagination by id, and the total.

use chrono::{DateTime, Utc};

use super::tasks::{TaskId, TaskRecord, task_query};
use super::{Store, StoreError};
use bg_agent_core::task::TaskState;

/// Which tasks to list; every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// `owner/name`.
    pub repo: Option<String>,
    /// Only these repositories (`owner/name`): the ones the viewer may read.
    pub repos: Option<Vec<String>>,
    pub state: Option<TaskState>,
    /// The creator's login.
    pub creator: Option<String>,
    pub template: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Words in the instructions or the summary (case-insensitive substring).
    pub q: Option<String>,
}

/// One page: the tasks, the cursor of the next page (tasks older than the last), and how
/// many tasks match in all.
pub async fn list_tasks(
    store: &Store,
    filter: &TaskFilter,
    cursor: Option<TaskId>,
    limit: i64,
) -> Result<(Vec<TaskRecord>, Option<TaskId>, i64), StoreError> {
    let limit = limit.clamp(1, 200);
    // `%`, `_` and `\` in the search are literal.
    let q = filter.q.as_deref().map(|q| {
        let escaped = q
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let rows = task_query!(
        "SELECT",
        "FROM tasks
         WHERE ($1::text IS NULL OR repository = $1)
           AND ($2::text[] IS NULL OR repository = ANY($2))
           AND ($3::text IS NULL OR state = $3)
           AND ($4::text IS NULL OR creator_login = $4)
           AND ($5::text IS NULL OR template = $5)
           AND ($6::timestamptz IS NULL OR created_at >= $6)
           AND ($7::timestamptz IS NULL OR created_at < $7)
           AND ($8::text IS NULL OR instructions ILIKE $8 OR summary ILIKE $8)
           AND ($9::bigint IS NULL OR id < $9)
         ORDER BY id DESC LIMIT $10",
        filter.repo,
        filter.repos.as_deref(),
        filter.state.map(TaskState::as_str),
        filter.creator,
        filter.template,
        filter.since,
        filter.until,
        q,
        cursor.map(TaskId::get),
        limit + 1,
    )
    .fetch_all(&store.pool)
    .await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "total!" FROM tasks
         WHERE ($1::text IS NULL OR repository = $1)
           AND ($2::text[] IS NULL OR repository = ANY($2))
           AND ($3::text IS NULL OR state = $3)
           AND ($4::text IS NULL OR creator_login = $4)
           AND ($5::text IS NULL OR template = $5)
           AND ($6::timestamptz IS NULL OR created_at >= $6)
           AND ($7::timestamptz IS NULL OR created_at < $7)
           AND ($8::text IS NULL OR instructions ILIKE $8 OR summary ILIKE $8)"#,
        filter.repo,
        filter.repos.as_deref(),
        filter.state.map(TaskState::as_str),
        filter.creator,
        filter.template,
        filter.since,
        filter.until,
        q,
    )
    .fetch_one(&store.pool)
    .await?;
    let mut tasks: Vec<TaskRecord> = rows.into_iter().map(TaskRecord::from).collect();
    let next = if tasks.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        tasks.pop();
        tasks.last().map(|t| t.id)
    } else {
        None
    };
    Ok((tasks, next, total))
}

impl Store {
    /// Every repository (`owner/name`) that has tasks: what a viewer's readable set is
    /// chosen from.
    pub async fn task_repositories(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar!("SELECT DISTINCT repository FROM tasks ORDER BY repository")
                .fetch_all(&self.pool)
                .await?,
        )
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
