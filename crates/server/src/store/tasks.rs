//! Tasks in PostgreSQL: creation (idempotent, one active task per user), checked state
//! transitions with their audit events, and dispatch under the repository, installation
//! and global limits. The limits are constraints in `migrations/0002_tasks.sql`; the code
//! here only chooses, and the database refuses anything that would break them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};

use super::{Store, StoreError};
pub use bg_agent_core::task::TaskRecord;
use bg_agent_core::task::{IllegalTransition, Recipe, TaskState, Template, TemplateSource};

/// What started a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskTrigger {
    Comment,
    Label,
    Rerun,
    RetryButton,
    RetryCommand,
    Api,
}

impl TaskTrigger {
    fn as_str(self) -> &'static str {
        match self {
            TaskTrigger::Comment => "comment",
            TaskTrigger::Label => "label",
            TaskTrigger::Rerun => "rerun",
            TaskTrigger::RetryButton => "retry_button",
            TaskTrigger::RetryCommand => "retry_command",
            TaskTrigger::Api => "api",
        }
    }
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
    pub retry_of: Option<(i64, i32)>,
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
        active_task: i64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("task {task} is no longer {expected} (it is {actual:?})")]
    Stale {
        task: i64,
        expected: TaskState,
        actual: Option<TaskState>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who or what caused an event, for the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
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

pub(super) const TASK_COLUMNS: &str = "id, installation_id, repository_id, repository,
    issue_number, creator_login, creator_id, template, instructions, state, phase, progress,
    attempt, retry_of, timeout_secs, error, tracking_comment_id, created_at, started_at,
    finished_at, comment_id, trigger, params, recipe, check_run_id, pr_check_run_id,
    base_branch, head_sha, branch, commit_sha, pr_number, pr_url, changed, changed_files,
    failing_command, execution_id, cancel_requested_by, log_lines, version, summary,
    template_source, clone_url, launched_by";

/// How many queued candidates one dispatch pass looks at before giving up.
const DISPATCH_CANDIDATES: i64 = 32;

pub(super) fn decode_task(row: &PgRow) -> Result<TaskRecord, sqlx::Error> {
    let text = |name: &str| row.try_get::<String, _>(name);
    let bad = |what: &str, value: String| {
        sqlx::Error::Decode(format!("unknown task {what} {value:?}").into())
    };
    let state = text("state")?;
    let phase = text("phase")?;
    let recipe = text("recipe")?;
    let json = |name: &str| row.try_get::<serde_json::Value, _>(name);
    Ok(TaskRecord {
        id: row.try_get("id")?,
        installation_id: row.try_get("installation_id")?,
        repository_id: row.try_get("repository_id")?,
        repository: text("repository")?,
        issue_number: row.try_get("issue_number")?,
        creator_login: text("creator_login")?,
        creator_id: row.try_get("creator_id")?,
        template: row.try_get("template")?,
        instructions: text("instructions")?,
        state: state.parse().map_err(|_| bad("state", state.clone()))?,
        phase: phase.parse().map_err(|_| bad("phase", phase.clone()))?,
        progress: row.try_get("progress")?,
        attempt: row.try_get("attempt")?,
        retry_of: row.try_get("retry_of")?,
        timeout_secs: row.try_get("timeout_secs")?,
        error: row.try_get("error")?,
        tracking_comment_id: row.try_get("tracking_comment_id")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        comment_id: row.try_get("comment_id")?,
        trigger: text("trigger")?,
        params: serde_json::from_value(json("params")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        recipe: recipe.parse().map_err(|_| bad("recipe", recipe.clone()))?,
        check_run_id: row.try_get("check_run_id")?,
        pr_check_run_id: row.try_get("pr_check_run_id")?,
        base_branch: row.try_get("base_branch")?,
        head_sha: row.try_get("head_sha")?,
        branch: row.try_get("branch")?,
        commit_sha: row.try_get("commit_sha")?,
        pr_number: row.try_get("pr_number")?,
        pr_url: row.try_get("pr_url")?,
        changed: row.try_get("changed")?,
        changed_files: serde_json::from_value(json("changed_files")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        failing_command: row.try_get("failing_command")?,
        execution_id: row.try_get("execution_id")?,
        cancel_requested_by: row.try_get("cancel_requested_by")?,
        log_lines: row.try_get("log_lines")?,
        version: row.try_get("version")?,
        summary: text("summary")?,
        clone_url: row.try_get("clone_url")?,
        launched_by: row.try_get("launched_by")?,
        template_source: match row.try_get::<Option<String>, _>("template_source")? {
            None => None,
            Some(source) => {
                Some(source_from_str(&source).ok_or_else(|| bad("template source", source))?)
            }
        },
    })
}

pub(super) fn violated_constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => db.constraint(),
        _ => None,
    }
}

fn source_from_str(source: &str) -> Option<TemplateSource> {
    [
        TemplateSource::BuiltIn,
        TemplateSource::Database,
        TemplateSource::Repository,
    ]
    .into_iter()
    .find(|s| source_str(*s) == source)
}

fn source_str(source: TemplateSource) -> &'static str {
    match source {
        TemplateSource::BuiltIn => "built_in",
        TemplateSource::Database => "database",
        TemplateSource::Repository => "repository",
    }
}

pub(super) async fn append_event(
    tx: &mut Transaction<'_, Postgres>,
    task: i64,
    actor: Actor<'_>,
    action: &str,
    states: (Option<TaskState>, Option<TaskState>),
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO task_events (task_id, actor, action, from_state, to_state, delivery_guid)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(task)
    .bind(actor.name)
    .bind(action)
    .bind(states.0.map(TaskState::as_str))
    .bind(states.1.map(TaskState::as_str))
    .bind(actor.delivery_guid)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The transition itself, inside the caller's transaction; `None` if the task is no
/// longer in `from`. The caller has checked that the life cycle allows it.
pub(super) async fn transition_in(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    (from, to): (TaskState, TaskState),
    actor: Actor<'_>,
    error: Option<&str>,
) -> Result<Option<TaskRecord>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "UPDATE tasks SET state = $3, updated_at = now(), version = version + 1,
             error = COALESCE($4, error),
             runner_secret_hash = CASE WHEN $5 THEN NULL ELSE runner_secret_hash END,
             phase = CASE WHEN $5 THEN 'finished' ELSE phase END,
             finished_at = CASE WHEN $5 THEN now() END,
             installation_slot = CASE WHEN $3 IN ('starting', 'running') THEN installation_slot END,
             global_slot = CASE WHEN $3 IN ('starting', 'running') THEN global_slot END
         WHERE id = $1 AND state = $2
         RETURNING {TASK_COLUMNS}"
    ))
    .bind(id)
    .bind(from.as_str())
    .bind(to.as_str())
    .bind(error)
    .bind(to.is_terminal())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let task = decode_task(&row)?;
    append_event(tx, id, actor, "transition", (Some(from), Some(to))).await?;
    Ok(Some(task))
}

impl Store {
    /// Creates a queued task, or finds the one this trigger already created, or reports
    /// the creator's active task. Counts the template's use in the same transaction.
    pub async fn create_task(&self, new: &NewTask) -> Result<CreatedTask, StoreError> {
        let mut tx = self.pool.begin().await?;
        let params =
            serde_json::to_value(&new.params).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO tasks (installation_id, repository_id, repository, issue_number,
                 comment_id, delivery_guid, trigger, idempotency_key, creator_login,
                 creator_id, template, params, recipe, instructions, timeout_secs, attempt,
                 retry_of, summary, template_source, base_branch, clone_url)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                     $18, $19, $20, $21)
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING {TASK_COLUMNS}"
        ))
        .bind(new.installation_id)
        .bind(new.repository_id)
        .bind(&new.repository)
        .bind(new.issue_number)
        .bind(new.comment_id)
        .bind(&new.delivery_guid)
        .bind(new.trigger.as_str())
        .bind(&new.idempotency_key)
        .bind(&new.creator_login)
        .bind(new.creator_id)
        .bind(new.template.as_ref().map(|(name, _)| name.as_str()))
        .bind(params)
        .bind(new.recipe.as_str())
        .bind(&new.instructions)
        .bind(i32::try_from(new.timeout_secs).unwrap_or(i32::MAX))
        .bind(new.retry_of.map_or(1, |(_, attempt)| attempt + 1))
        .bind(new.retry_of.map(|(id, _)| id))
        .bind(&new.summary)
        .bind(new.template.as_ref().map(|(_, source)| source_str(*source)))
        .bind(&new.base_branch)
        .bind(&new.clone_url)
        .fetch_optional(&mut *tx)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(e) if violated_constraint(&e) == Some("tasks_one_active_per_user") => {
                drop(tx);
                let active_task = sqlx::query_scalar(
                    "SELECT id FROM tasks WHERE creator_id = $1
                       AND state IN ('queued', 'starting', 'running')",
                )
                .bind(new.creator_id)
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
            let existing = sqlx::query(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE idempotency_key = $1"
            ))
            .bind(&new.idempotency_key)
            .fetch_one(&self.pool)
            .await?;
            return Ok(CreatedTask::Duplicate(decode_task(&existing)?));
        };
        let task = decode_task(&row)?;
        let actor = Actor {
            name: &new.creator_login,
            delivery_guid: new.delivery_guid.as_deref(),
        };
        let action = if new.retry_of.is_some() {
            "retried"
        } else {
            "created"
        };
        append_event(&mut tx, task.id, actor, action, (None, Some(task.state))).await?;
        // A retry is the same use again, not a new one.
        if let (Some((name, source)), None) = (&new.template, new.retry_of) {
            sqlx::query(
                "INSERT INTO template_usage (repository_id, name, source, uses, last_used_at)
                 VALUES ($1, $2, $3, 1, now())
                 ON CONFLICT (repository_id, name, source)
                 DO UPDATE SET uses = template_usage.uses + 1, last_used_at = now()",
            )
            .bind(new.repository_id)
            .bind(name)
            .bind(source_str(*source))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(CreatedTask::Created(task))
    }

    pub async fn task(&self, id: i64) -> Result<Option<TaskRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(decode_task).transpose()?)
    }

    /// Moves a task from `from` to `to` if the life cycle allows it and nobody moved it
    /// first (compare-and-set), recording the event. Leaving `starting`/`running` frees
    /// the task's slots; a terminal state stamps `finished_at`.
    pub async fn transition_task(
        &self,
        id: i64,
        from: TaskState,
        to: TaskState,
        actor: Actor<'_>,
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

    /// Starts the oldest queued task that the limits allow: its repository has nothing
    /// starting or running, and a slot is free below both caps. Safe with many dispatchers
    /// at once: candidates are locked with `SKIP LOCKED`, and if two pick the same slot or
    /// repository the database refuses one, which then reports `None` for this pass.
    pub async fn dispatch_next(
        &self,
        caps: Caps,
        actor: Actor<'_>,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let candidates: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, installation_id FROM tasks q
             WHERE state = 'queued'
               AND (check_run_id IS NOT NULL
                    OR created_at <= now() - make_interval(secs => $2 / 1000.0))
               AND NOT EXISTS (SELECT 1 FROM tasks r WHERE r.repository_id = q.repository_id
                                 AND r.state IN ('starting', 'running'))
             ORDER BY created_at, id
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
        )
        .bind(DISPATCH_CANDIDATES)
        .bind(caps.check_run_wait.as_secs_f64() * 1000.0)
        .fetch_all(&mut *tx)
        .await?;
        let global_slot: Option<i32> = sqlx::query_scalar(
            "SELECT s FROM generate_series(0, $1 - 1) s
             WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE global_slot = s) LIMIT 1",
        )
        .bind(i32::try_from(caps.global).unwrap_or(i32::MAX))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(global_slot) = global_slot else {
            return Ok(None);
        };
        for (id, installation_id) in candidates {
            let slot: Option<i32> = sqlx::query_scalar(
                "SELECT s FROM generate_series(0, $2 - 1) s
                 WHERE NOT EXISTS (SELECT 1 FROM tasks
                                   WHERE installation_id = $1 AND installation_slot = s)
                 LIMIT 1",
            )
            .bind(installation_id)
            .bind(i32::try_from(caps.per_installation).unwrap_or(i32::MAX))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(slot) = slot else { continue };
            let started = sqlx::query(&format!(
                "UPDATE tasks SET state = 'starting', phase = 'starting', progress = 5,
                     version = version + 1,
                     installation_slot = $2, global_slot = $3, started_at = now(),
                     updated_at = now()
                 WHERE id = $1 AND state = 'queued'
                 RETURNING {TASK_COLUMNS}"
            ))
            .bind(id)
            .bind(slot)
            .bind(global_slot)
            .fetch_one(&mut *tx)
            .await;
            let row = match started {
                Ok(row) => row,
                // Another dispatcher took this slot or this repository a moment ago.
                Err(e) if violated_constraint(&e).is_some() => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let task = decode_task(&row)?;
            append_event(
                &mut tx,
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
    pub async fn queue_position(&self, id: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM tasks q, tasks t
             WHERE t.id = $1 AND t.state = 'queued' AND q.state = 'queued'
               AND q.repository_id = t.repository_id
               AND (q.created_at, q.id) <= (t.created_at, t.id)
             HAVING count(*) > 0",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn task_events(&self, id: i64) -> Result<Vec<TaskEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT actor, action, from_state, to_state, delivery_guid, at
             FROM task_events WHERE task_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TaskEvent {
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    from_state: row.try_get("from_state")?,
                    to_state: row.try_get("to_state")?,
                    delivery_guid: row.try_get("delivery_guid")?,
                    at: row.try_get("at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// A user's latest tasks in a repository, newest first.
    pub async fn tasks_of(
        &self,
        creator_id: i64,
        repository_id: i64,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE creator_id = $1 AND repository_id = $2
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(creator_id)
        .bind(repository_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(decode_task).collect::<Result<_, _>>()?)
    }

    /// A repository's latest tasks, newest first.
    pub async fn repository_tasks(
        &self,
        repository_id: i64,
        limit: i64,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE repository_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(repository_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(decode_task).collect::<Result<_, _>>()?)
    }

    /// Remembers the tracking comment, so a retried delivery edits it instead of posting
    /// another. `false` if the task already had one.
    pub async fn set_tracking_comment(&self, id: i64, comment_id: i64) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE tasks SET tracking_comment_id = $2, updated_at = now()
             WHERE id = $1 AND tracking_comment_id IS NULL",
        )
        .bind(id)
        .bind(comment_id)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Audits a request that made no task (no permission, limits, bad arguments).
    pub async fn record_refusal(
        &self,
        repository_id: i64,
        actor: Actor<'_>,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refusals (repository_id, actor, reason, delivery_guid)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(repository_id)
        .bind(actor.name)
        .bind(reason)
        .bind(actor.delivery_guid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn refusals(&self, repository_id: i64) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT actor, reason FROM refusals WHERE repository_id = $1 ORDER BY id",
        )
        .bind(repository_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores (or replaces) a template; it must already be valid.
    pub async fn save_template(&self, template: &Template) -> Result<(), StoreError> {
        let definition =
            serde_json::to_value(template).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query(
            "INSERT INTO templates (name, definition) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET definition = $2, updated_at = now()",
        )
        .bind(&template.name)
        .bind(definition)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The database's templates. One that no longer decodes or validates (written by an
    /// older version) is skipped with a warning rather than hiding all the others.
    pub async fn database_templates(&self) -> Result<Vec<Template>, StoreError> {
        let rows: Vec<(String, serde_json::Value)> =
            sqlx::query_as("SELECT name, definition FROM templates ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, definition)| {
                let template = serde_json::from_value::<Template>(definition)
                    .map_err(|e| e.to_string())
                    .and_then(|t| t.validate().map(|()| t).map_err(|e| e.to_string()));
                match template {
                    Ok(mut template) => {
                        template.source = TemplateSource::Database;
                        Some(template)
                    }
                    Err(error) => {
                        tracing::warn!(template = %name, %error, "stored template is unusable");
                        None
                    }
                }
            })
            .collect())
    }

    /// (installation, repository) of every task occupying an executor.
    pub async fn running_tasks(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT installation_id, repository_id FROM tasks
             WHERE state IN ('starting', 'running')",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// How often a template was used in a repository, and when last.
    pub async fn template_usage(
        &self,
        repository_id: i64,
        name: &str,
    ) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let row: Option<(i64, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT sum(uses)::bigint, max(last_used_at) FROM template_usage
             WHERE repository_id = $1 AND name = $2 HAVING count(*) > 0",
        )
        .bind(repository_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.unwrap_or((0, None)))
    }
}
