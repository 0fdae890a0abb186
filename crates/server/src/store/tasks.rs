//! Tasks in PostgreSQL: creation (idempotent, one active task per user), checked state
//! transitions with their audit events, and dispatch under the repository, installation
//! and global limits. The limits are constraints in `migrations/0002_tasks.sql`; the code
//! here only chooses, and the database refuses anything that would break them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};

use super::{Store, StoreError};
use bg_agent_core::task::{IllegalTransition, Phase, Recipe, TaskState, TemplateSource};
pub use bg_agent_core::task::{TaskId, TaskRecord};

/// What started a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum TaskTrigger {
    Comment,
    Label,
    Rerun,
    RetryButton,
    RetryCommand,
    Api,
}

#[derive(Debug, Clone)]
pub struct NewTask {
    pub installation_id: i64,
    pub repository_id: i64,
    pub repository: String,
    pub issue_number: Option<i32>,
    pub comment_id: Option<i64>,
    pub delivery_guid: Option<String>,
    pub trigger: TaskTrigger,
    /// Unique per trigger, e.g. `comment:<id>` or `rerun:<delivery>`: the same trigger
    /// delivered twice finds the first task instead of making a second.
    pub idempotency_key: String,
    pub creator_login: String,
    pub creator_id: i64,
    /// The template used and where it came from; `None` for free-text `run`.
    pub template: Option<(String, TemplateSource)>,
    pub params: BTreeMap<String, String>,
    pub recipe: Recipe,
    pub instructions: String,
    /// One line for titles, e.g. `upgrade lodash 4.17.21`.
    pub summary: String,
    pub timeout_secs: u32,
    pub retry_of: Option<(TaskId, i32)>,
    /// The repository's default branch and clone URL as the webhook showed them, when
    /// it did (saves GitHub calls on the way to launch).
    pub base_branch: Option<String>,
    pub clone_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreatedTask {
    Created(TaskRecord),
    /// This trigger already made a task.
    Duplicate(TaskRecord),
    /// The creator already has an active task (named, for the refusal).
    CreatorBusy {
        active_task: TaskId,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("task {task} is no longer {expected} (it is {actual:?})")]
    Stale {
        task: TaskId,
        expected: TaskState,
        actual: Option<TaskState>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who or what caused an event, for the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct AuditActor<'a> {
    pub name: &'a str,
    pub delivery_guid: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub per_installation: u32,
    pub global: u32,
    /// A task starts once its check run exists (so GitHub shows it queued first), or
    /// after this long without one (reporting to GitHub must not block work forever).
    pub check_run_wait: std::time::Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEvent {
    pub actor: String,
    pub action: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub delivery_guid: Option<String>,
    pub at: DateTime<Utc>,
}

/// How many queued candidates one dispatch pass looks at before giving up.
const DISPATCH_CANDIDATES: i64 = 32;

/// `tasks.params`. A named type: a column override must fit in a 63-byte SQL identifier.
pub(super) type JsonParams = Json<BTreeMap<String, String>>;

/// A `tasks` row as [`task_query!`] reads it: [`TaskRecord`] with the JSON columns still
/// wrapped.
pub(super) struct TaskRow {
    pub(super) id: TaskId,
    pub(super) installation_id: i64,
    pub(super) repository_id: i64,
    pub(super) repository: String,
    pub(super) issue_number: Option<i32>,
    pub(super) creator_login: String,
    pub(super) creator_id: i64,
    pub(super) template: Option<String>,
    pub(super) instructions: String,
    pub(super) state: TaskState,
    pub(super) phase: Phase,
    pub(super) progress: i16,
    pub(super) attempt: i32,
    pub(super) retry_of: Option<TaskId>,
    pub(super) timeout_secs: i32,
    pub(super) error: Option<String>,
    pub(super) tracking_comment_id: Option<i64>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) finished_at: Option<DateTime<Utc>>,
    pub(super) comment_id: Option<i64>,
    pub(super) trigger: String,
    pub(super) params: JsonParams,
    pub(super) recipe: Recipe,
    pub(super) check_run_id: Option<i64>,
    pub(super) pr_check_run_id: Option<i64>,
    pub(super) base_branch: Option<String>,
    pub(super) head_sha: Option<String>,
    pub(super) branch: Option<String>,
    pub(super) commit_sha: Option<String>,
    pub(super) pr_number: Option<i32>,
    pub(super) pr_url: Option<String>,
    pub(super) changed: Option<bool>,
    pub(super) changed_files: Json<Vec<String>>,
    pub(super) failing_command: Option<String>,
    pub(super) execution_id: Option<String>,
    pub(super) cancel_requested_by: Option<String>,
    pub(super) log_lines: i32,
    pub(super) version: i64,
    pub(super) summary: String,
    pub(super) template_source: Option<TemplateSource>,
    pub(super) clone_url: Option<String>,
    pub(super) launched_by: Option<uuid::Uuid>,
    pub(super) agent_provider: Option<String>,
    pub(super) agent_rounds: i32,
    pub(super) agent_input_tokens: i64,
    pub(super) agent_output_tokens: i64,
    pub(super) agent_cost_microusd: Option<i64>,
    pub(super) wip_branch: Option<String>,
    pub(super) pr_state: Option<bg_agent_core::task::PrState>,
}

impl From<TaskRow> for TaskRecord {
    fn from(row: TaskRow) -> Self {
        TaskRecord {
            id: row.id,
            installation_id: row.installation_id,
            repository_id: row.repository_id,
            repository: row.repository,
            issue_number: row.issue_number,
            creator_login: row.creator_login,
            creator_id: row.creator_id,
            template: row.template,
            instructions: row.instructions,
            state: row.state,
            phase: row.phase,
            progress: row.progress,
            attempt: row.attempt,
            retry_of: row.retry_of,
            timeout_secs: row.timeout_secs,
            error: row.error,
            tracking_comment_id: row.tracking_comment_id,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            comment_id: row.comment_id,
            trigger: row.trigger,
            params: row.params.0,
            recipe: row.recipe,
            check_run_id: row.check_run_id,
            pr_check_run_id: row.pr_check_run_id,
            base_branch: row.base_branch,
            head_sha: row.head_sha,
            branch: row.branch,
            commit_sha: row.commit_sha,
            pr_number: row.pr_number,
            pr_url: row.pr_url,
            changed: row.changed,
            changed_files: row.changed_files.0,
            failing_command: row.failing_command,
            execution_id: row.execution_id,
            cancel_requested_by: row.cancel_requested_by,
            log_lines: row.log_lines,
            version: row.version,
            summary: row.summary,
            template_source: row.template_source,
            clone_url: row.clone_url,
            launched_by: row.launched_by,
            agent_provider: row.agent_provider,
            agent_rounds: row.agent_rounds,
            agent_input_tokens: row.agent_input_tokens,
            agent_output_tokens: row.agent_output_tokens,
            agent_cost_microusd: row.agent_cost_microusd,
            wip_branch: row.wip_branch,
            pr_state: row.pr_state,
        }
    }
}

/// A checked statement that reads whole tasks: `$head` (up to the column list, e.g.
/// `"SELECT"` or `"UPDATE … RETURNING"`), every column of [`TaskRow`], then `$tail` (a
/// literal, or `[…]`: literals joined by `+`).
/// Writing the list once keeps every such statement reading the same columns; `query_as!`
/// only takes literals, hence a macro rather than a constant.
macro_rules! task_query {
    ($head:tt, [$($tail:tt)+] $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            $crate::store::tasks::TaskRow,
            $head
                + r#" id AS "id: bg_agent_core::task::TaskId", installation_id, repository_id,
                    repository, issue_number, creator_login, creator_id, template, instructions,
                    state AS "state: bg_agent_core::task::TaskState",
                    phase AS "phase: bg_agent_core::task::Phase", progress, attempt,
                    retry_of AS "retry_of: bg_agent_core::task::TaskId", timeout_secs, error,
                    tracking_comment_id, created_at, started_at, finished_at, comment_id,
                    trigger,
                    params AS "params: crate::store::tasks::JsonParams",
                    recipe AS "recipe: bg_agent_core::task::Recipe", check_run_id,
                    pr_check_run_id, base_branch, head_sha, branch, commit_sha, pr_number,
                    pr_url, changed,
                    changed_files AS "changed_files: sqlx::types::Json<Vec<String>>",
                    failing_command, execution_id, cancel_requested_by, log_lines, version,
                    summary,
                    template_source AS "template_source: bg_agent_core::task::TemplateSource",
                    clone_url, launched_by, agent_provider, agent_rounds, agent_input_tokens,
                    agent_output_tokens, agent_cost_microusd, wip_branch,
                    pr_state AS "pr_state: bg_agent_core::task::PrState" "#
                + $($tail)+
            $(, $arg)*
        )
    };
    ($head:literal, $tail:literal $(, $arg:expr)* $(,)?) => {
        task_query!($head, [$tail] $(, $arg)*)
    };
}
pub(super) use task_query;

pub(super) fn violated_constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => db.constraint(),
        _ => None,
    }
}

pub(super) async fn append_event(
    executor: impl PgExecutor<'_>,
    task: TaskId,
    actor: AuditActor<'_>,
    action: &str,
    (from, to): (Option<TaskState>, Option<TaskState>),
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO task_events (task_id, actor, action, from_state, to_state, delivery_guid)
         VALUES ($1, $2, $3, $4, $5, $6)",
        task as TaskId,
        actor.name,
        action,
        from as Option<TaskState>,
        to as Option<TaskState>,
        actor.delivery_guid,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// One task, through the pool or inside a transaction.
pub(super) async fn fetch_task(
    executor: impl PgExecutor<'_>,
    id: TaskId,
) -> Result<Option<TaskRecord>, sqlx::Error> {
    Ok(
        task_query!("SELECT", "FROM tasks WHERE id = $1", id as TaskId)
            .fetch_optional(executor)
            .await?
            .map(TaskRecord::from),
    )
}

/// The transition itself, inside the caller's transaction; `None` if the task is no
/// longer in `from`. The caller has checked that the life cycle allows it.
pub(super) async fn transition_in(
    conn: &mut PgConnection,
    id: TaskId,
    (from, to): (TaskState, TaskState),
    actor: AuditActor<'_>,
    error: Option<&str>,
) -> Result<Option<TaskRecord>, sqlx::Error> {
    let row = task_query!(
        "UPDATE tasks SET state = $3, updated_at = now(), version = version + 1,
             error = COALESCE($4, error),
             runner_secret_hash = CASE WHEN $5 THEN NULL ELSE runner_secret_hash END,
             phase = CASE WHEN $5 THEN 'finished' ELSE phase END,
             finished_at = CASE WHEN $5 THEN now() END,
             installation_slot = CASE WHEN $3 IN ('starting', 'running') THEN installation_slot END,
             global_slot = CASE WHEN $3 IN ('starting', 'running') THEN global_slot END
         WHERE id = $1 AND state = $2
         RETURNING",
        "",
        id as TaskId,
        from as TaskState,
        to as TaskState,
        error,
        to.is_terminal(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    append_event(conn, id, actor, "transition", (Some(from), Some(to))).await?;
    let task = TaskRecord::from(row);
    if to.is_terminal() {
        let ran = task
            .started_at
            .zip(task.finished_at)
            .and_then(|(start, end)| (end - start).to_std().ok());
        crate::metrics::task_finished(to, ran);
    }
    Ok(Some(task))
}

impl Store {
    /// Creates a queued task, or finds the one this trigger already created, or reports
    /// the creator's active task. Counts the template's use in the same transaction.
    pub async fn create_task(&self, new: &NewTask) -> Result<CreatedTask, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = task_query!(
            "INSERT INTO tasks (installation_id, repository_id, repository, issue_number,
                 comment_id, delivery_guid, trigger, idempotency_key, creator_login,
                 creator_id, template, params, recipe, instructions, timeout_secs, attempt,
                 retry_of, summary, template_source, base_branch, clone_url)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                     $18, $19, $20, $21)
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING",
            "",
            new.installation_id,
            new.repository_id,
            new.repository,
            new.issue_number,
            new.comment_id,
            new.delivery_guid,
            new.trigger as TaskTrigger,
            new.idempotency_key,
            new.creator_login,
            new.creator_id,
            new.template.as_ref().map(|(name, _)| name.as_str()),
            Json(&new.params) as Json<&BTreeMap<String, String>>,
            new.recipe as Recipe,
            new.instructions,
            i32::try_from(new.timeout_secs).unwrap_or(i32::MAX),
            new.retry_of.map_or(1, |(_, attempt)| attempt + 1),
            new.retry_of.map(|(id, _)| id) as Option<TaskId>,
            new.summary,
            new.template.as_ref().map(|(_, source)| *source) as Option<TemplateSource>,
            new.base_branch,
            new.clone_url,
        )
        .fetch_optional(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(e) if violated_constraint(&e) == Some("tasks_one_active_per_user") => {
                drop(tx);
                let active_task = sqlx::query_scalar!(
                    r#"SELECT id AS "id: TaskId" FROM tasks WHERE creator_id = $1
                       AND state IN ('queued', 'starting', 'running')"#,
                    new.creator_id,
                )
                .fetch_optional(&self.pool)
                .await?;
                return match active_task {
                    Some(active_task) => Ok(CreatedTask::CreatorBusy { active_task }),
                    // It ended in between: the caller may simply try again.
                    None => Err(StoreError::Database(e)),
                };
            }
            Err(e) => return Err(e.into()),
        };
        let Some(row) = row else {
            drop(tx);
            let existing = task_query!(
                "SELECT",
                "FROM tasks WHERE idempotency_key = $1",
                new.idempotency_key,
            )
            .fetch_one(&self.pool)
            .await?;
            return Ok(CreatedTask::Duplicate(existing.into()));
        };
        let task = TaskRecord::from(row);
        let actor = AuditActor {
            name: &new.creator_login,
            delivery_guid: new.delivery_guid.as_deref(),
        };
        let action = if new.retry_of.is_some() {
            "retried"
        } else {
            "created"
        };
        append_event(&mut *tx, task.id, actor, action, (None, Some(task.state))).await?;
        // A retry is the same use again, not a new one.
        if let (Some((name, source)), None) = (&new.template, new.retry_of) {
            sqlx::query!(
                "INSERT INTO template_usage (repository_id, name, source, uses, last_used_at)
                 VALUES ($1, $2, $3, 1, now())
                 ON CONFLICT (repository_id, name, source)
                 DO UPDATE SET uses = template_usage.uses + 1, last_used_at = now()",
                new.repository_id,
                name,
                *source as TemplateSource,
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(CreatedTask::Created(task))
    }

    pub async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        Ok(fetch_task(&self.pool, id).await?)
    }

    /// Moves a task from `from` to `to` if the life cycle allows it and nobody moved it
    /// first (compare-and-set), recording the event. Leaving `starting`/`running` frees
    /// the task's slots; a terminal state stamps `finished_at`.
    pub async fn transition_task(
        &self,
        id: TaskId,
        from: TaskState,
        to: TaskState,
        actor: AuditActor<'_>,
        error: Option<&str>,
    ) -> Result<TaskRecord, TransitionError> {
        from.transition(to)?;
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let moved = transition_in(&mut tx, id, (from, to), actor, error)
            .await
            .map_err(StoreError::from)?;
        let Some(task) = moved else {
            drop(tx);
            let actual = self.task(id).await?.map(|t| t.state);
            return Err(TransitionError::Stale {
                task: id,
                expected: from,
                actual,
            });
        };
        tx.commit().await.map_err(StoreError::from)?;
        Ok(task)
    }

    /// Starts the next queued task that the limits allow — its repository has nothing
    /// starting or running, and a slot is free below both caps — taking installations in
    /// turn, so one with a deep queue cannot starve the others. Safe with many dispatchers
    /// at once: candidates are locked with `SKIP LOCKED`, and if two pick the same slot or
    /// repository the database refuses one, which then reports `None` for this pass.
    /// The task is marked as `launcher`'s from here on, so that while that server lives no
    /// other replica judges (or adopts) its launch.
    pub async fn dispatch_next(
        &self,
        caps: Caps,
        launcher: uuid::Uuid,
        actor: AuditActor<'_>,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Installations at their cap are passed over (however deep their queue), and the
        // others take turns: an installation's n-th task in flight (running or next in its
        // queue) goes before any installation's (n+1)-th, the older first.
        let candidates = sqlx::query!(
            r#"SELECT t.id AS "id: TaskId", t.installation_id FROM tasks t
             JOIN (SELECT q.id,
                          busy.n + row_number() OVER (PARTITION BY q.installation_id
                                                      ORDER BY q.created_at, q.id) AS turn
                   FROM tasks q
                   CROSS JOIN LATERAL (SELECT count(*) AS n FROM tasks b
                                       WHERE b.installation_id = q.installation_id
                                         AND b.installation_slot IS NOT NULL) busy
                   WHERE q.state = 'queued'
                     AND busy.n < $3
                     AND (q.check_run_id IS NOT NULL
                          OR q.created_at <= now() - make_interval(secs => $2::float8 / 1000.0))
                     AND NOT EXISTS (SELECT 1 FROM tasks r
                                     WHERE r.repository_id = q.repository_id
                                       AND r.state IN ('starting', 'running'))) c
               ON c.id = t.id
             -- Checked again on the locked row: another dispatcher may have started it
             -- since this statement's snapshot.
             WHERE t.state = 'queued'
             ORDER BY c.turn, t.created_at, t.id
             LIMIT $1
             FOR UPDATE OF t SKIP LOCKED"#,
            DISPATCH_CANDIDATES,
            caps.check_run_wait.as_secs_f64() * 1000.0,
            i64::try_from(caps.per_installation).unwrap_or(i64::MAX),
        )
        .fetch_all(&mut *tx)
        .await?;
        let global_slot = sqlx::query_scalar!(
            r#"SELECT s AS "s!" FROM generate_series(0, $1 - 1) s
             WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE global_slot = s) LIMIT 1"#,
            i32::try_from(caps.global).unwrap_or(i32::MAX),
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(global_slot) = global_slot else {
            return Ok(None);
        };
        for candidate in candidates {
            let id = candidate.id;
            let slot = sqlx::query_scalar!(
                r#"SELECT s AS "s!" FROM generate_series(0, $2 - 1) s
                 WHERE NOT EXISTS (SELECT 1 FROM tasks
                                   WHERE installation_id = $1 AND installation_slot = s)
                 LIMIT 1"#,
                candidate.installation_id,
                i32::try_from(caps.per_installation).unwrap_or(i32::MAX),
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some(slot) = slot else { continue };
            let started = task_query!(
                "UPDATE tasks SET state = 'starting', phase = 'starting', progress = 5,
                     version = version + 1,
                     installation_slot = $2, global_slot = $3, started_at = now(),
                     launched_by = $4, updated_at = now()
                 WHERE id = $1 AND state = 'queued'
                 RETURNING",
                "",
                id as TaskId,
                slot,
                global_slot,
                launcher,
            )
            .fetch_one(&mut *tx)
            .await;
            let row = match started {
                Ok(row) => row,
                // Another dispatcher took this slot or this repository a moment ago.
                Err(e) if violated_constraint(&e).is_some() => return Ok(None),
                // No longer queued (started or cancelled since the candidates were read).
                Err(sqlx::Error::RowNotFound) => continue,
                Err(e) => return Err(e.into()),
            };
            let task = TaskRecord::from(row);
            append_event(
                &mut *tx,
                id,
                actor,
                "transition",
                (Some(TaskState::Queued), Some(TaskState::Starting)),
            )
            .await?;
            tx.commit().await?;
            return Ok(Some(task));
        }
        Ok(None)
    }

    /// 1 for the next queued task of this repository to start, 2 for the one after, …
    pub async fn queue_position(&self, id: TaskId) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar!(
            r#"SELECT count(*) AS "position!" FROM tasks q, tasks t
             WHERE t.id = $1 AND t.state = 'queued' AND q.state = 'queued'
               AND q.repository_id = t.repository_id
               AND (q.created_at, q.id) <= (t.created_at, t.id)
             HAVING count(*) > 0"#,
            id as TaskId,
        )
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn task_events(&self, id: TaskId) -> Result<Vec<TaskEvent>, StoreError> {
        Ok(sqlx::query_as!(
            TaskEvent,
            "SELECT actor, action, from_state, to_state, delivery_guid, at
             FROM task_events WHERE task_id = $1 ORDER BY id",
            id as TaskId,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// A user's latest tasks in a repository, newest first.
    pub async fn tasks_of(
        &self,
        creator_id: i64,
        repository_id: i64,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let rows = task_query!(
            "SELECT",
            "FROM tasks
             WHERE creator_id = $1 AND repository_id = $2
             ORDER BY id DESC LIMIT $3",
            creator_id,
            repository_id,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(TaskRecord::from).collect())
    }

    /// A repository's latest tasks, newest first.
    pub async fn repository_tasks(
        &self,
        repository_id: i64,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let rows = task_query!(
            "SELECT",
            "FROM tasks WHERE repository_id = $1 ORDER BY id DESC LIMIT $2",
            repository_id,
            limit,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(TaskRecord::from).collect())
    }

    /// Remembers the tracking comment, so a retried delivery edits it instead of posting
    /// another. `false` if the task already had one.
    pub async fn set_tracking_comment(
        &self,
        id: TaskId,
        comment_id: i64,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query!(
            "UPDATE tasks SET tracking_comment_id = $2, updated_at = now()
             WHERE id = $1 AND tracking_comment_id IS NULL",
            id as TaskId,
            comment_id,
        )
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Audits a request that made no task (no permission, limits, bad arguments).
    pub async fn record_refusal(
        &self,
        repository_id: i64,
        actor: AuditActor<'_>,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO refusals (repository_id, actor, reason, delivery_guid)
             VALUES ($1, $2, $3, $4)",
            repository_id,
            actor.name,
            reason,
            actor.delivery_guid,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether a refusal may be posted to `user_id` on this issue now: at most once per
    /// `every`. Claimed atomically, so of replicas answering at once only one posts.
    pub async fn claim_refusal_reply(
        &self,
        repository_id: i64,
        issue_number: i64,
        user_id: i64,
        every: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let claimed = sqlx::query_scalar!(
            r#"INSERT INTO refusal_replies (repository_id, issue_number, user_id)
               VALUES ($1, $2, $3)
               ON CONFLICT (repository_id, issue_number, user_id) DO UPDATE SET replied_at = now()
               WHERE refusal_replies.replied_at <= now() - make_interval(secs => $4::float8)
               RETURNING 1 AS "claimed!""#,
            repository_id,
            issue_number,
            user_id,
            every.as_secs_f64(),
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(claimed.is_some())
    }

    pub async fn refusals(&self, repository_id: i64) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query!(
            "SELECT actor, reason FROM refusals WHERE repository_id = $1 ORDER BY id",
            repository_id,
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| (row.actor, row.reason))
        .collect())
    }

    /// (installation, repository) of every task occupying an executor.
    pub async fn running_tasks(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(sqlx::query!(
            "SELECT installation_id, repository_id FROM tasks
             WHERE state IN ('starting', 'running')",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| (row.installation_id, row.repository_id))
        .collect())
    }

    /// How often a template was used in a repository, and when last.
    pub async fn template_usage(
        &self,
        repository_id: i64,
        name: &str,
    ) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let row = sqlx::query!(
            r#"SELECT sum(uses)::bigint AS "uses!", max(last_used_at) AS last_used_at
             FROM template_usage
             WHERE repository_id = $1 AND name = $2 HAVING count(*) > 0"#,
            repository_id,
            name,
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or((0, None), |row| (row.uses, row.last_used_at)))
    }
}
