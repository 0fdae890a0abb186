//! Running tasks: launching, the runner's reports (applied once each, in order), cancel
//! requests, the executions the reconciler watches, and the reporter's queue of tasks
//! whose latest state GitHub has not seen yet.

use std::time::Duration;

use sqlx::Row;

use super::tasks::{
    Actor, TASK_COLUMNS, TaskRecord, TransitionError, append_event, decode_task, transition_in,
};
use super::{Store, StoreError};
use bg_agent_core::protocol::{
    MAX_LOG_LINES, RunOutcome, RunnerEvent, RunnerReport, ValidationResult,
};
use bg_agent_core::task::render::TaskDetails;
use bg_agent_core::task::{Phase, TaskState, advance};

/// What became of a runner's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportApplied {
    Applied(Box<TaskRecord>),
    /// Already applied (a retry after a lost answer).
    Duplicate,
    /// The task has ended (or does not exist): the runner should stop.
    Ended,
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelRequested {
    /// It was queued and is now cancelled.
    Cancelled(Box<TaskRecord>),
    /// It occupies an executor; the engine stops it.
    Stopping(Box<TaskRecord>),
    /// It had already ended.
    AlreadyEnded(Box<TaskRecord>),
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl Store {
    /// The hash of the task's runner secret while the task is active.
    pub async fn runner_secret_hash(&self, id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT runner_secret_hash FROM tasks
             WHERE id = $1 AND state IN ('starting', 'running')",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// Records the secret's hash (before launching, so the runner's first report is
    /// accepted) and the branch it will push.
    pub async fn prepare_launch(
        &self,
        id: i64,
        secret_hash: &[u8],
        branch: &str,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE tasks SET runner_secret_hash = $2, branch = $3, updated_at = now()
             WHERE id = $1 AND state = 'starting'",
        )
        .bind(id)
        .bind(secret_hash)
        .bind(branch)
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// This server process is alive (the supervisor calls it every pass).
    pub async fn engine_heartbeat(&self, instance: uuid::Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO engine_instances (id) VALUES ($1)
             ON CONFLICT (id) DO UPDATE SET seen_at = now()",
        )
        .bind(instance)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// This server process is stopping: what it launched is not to be waited for.
    pub async fn engine_gone(&self, instance: uuid::Uuid) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM engine_instances WHERE id = $1")
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The server instances heard from within `within`.
    pub async fn live_engines(
        &self,
        within: Duration,
    ) -> Result<std::collections::HashSet<uuid::Uuid>, StoreError> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT id FROM engine_instances
             WHERE seen_at > now() - make_interval(secs => $1 / 1000.0)",
        )
        .bind(millis(within))
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().collect())
    }

    /// The runner is started: `starting → running`, remembering the execution and the
    /// server instance that started it.
    pub async fn mark_launched(
        &self,
        id: i64,
        execution_id: &str,
        instance: uuid::Uuid,
        actor: Actor<'_>,
    ) -> Result<TaskRecord, TransitionError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        sqlx::query("UPDATE tasks SET execution_id = $2, launched_by = $3 WHERE id = $1")
            .bind(id)
            .bind(execution_id)
            .bind(instance)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        let moved = transition_in(
            &mut tx,
            id,
            (TaskState::Starting, TaskState::Running),
            actor,
            None,
        )
        .await
        .map_err(StoreError::from)?;
        let Some(task) = moved else {
            drop(tx);
            return Err(TransitionError::Stale {
                task: id,
                expected: TaskState::Starting,
                actual: self.task(id).await?.map(|t| t.state),
            });
        };
        tx.commit().await.map_err(StoreError::from)?;
        Ok(task)
    }

    /// Remembers the execution of a task that is already running.
    pub async fn set_execution(
        &self,
        id: i64,
        execution_id: &str,
        instance: uuid::Uuid,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE tasks SET execution_id = $2, launched_by = $3 WHERE id = $1")
            .bind(id)
            .bind(execution_id)
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends an active task whatever its current active state (lost execution, timeout,
    /// cancel, failed launch). `None` if it had already ended.
    pub async fn end_task(
        &self,
        id: i64,
        to: TaskState,
        actor: Actor<'_>,
        error: Option<&str>,
    ) -> Result<Option<TaskRecord>, StoreError> {
        // The state may move under us (the runner reporting); a few rounds settle it.
        for _ in 0..5 {
            let Some(task) = self.task(id).await? else {
                return Ok(None);
            };
            if task.state.is_terminal() {
                return Ok(None);
            }
            match self.transition_task(id, task.state, to, actor, error).await {
                Ok(task) => return Ok(Some(task)),
                Err(TransitionError::Stale { .. }) => continue,
                Err(TransitionError::Illegal(e)) => {
                    tracing::warn!(task = id, error = %e, "cannot end task");
                    return Ok(None);
                }
                Err(TransitionError::Store(e)) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Applies one runner report, once: phase and progress only move forward, log lines
    /// are kept up to [`MAX_LOG_LINES`], and the final outcome ends the task.
    pub async fn apply_runner_report(
        &self,
        id: i64,
        report: &RunnerReport,
        redact: impl Fn(&str) -> String,
    ) -> Result<ReportApplied, StoreError> {
        let seq = i64::try_from(report.seq).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT state, phase, progress, last_seq, log_lines FROM tasks
             WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(ReportApplied::Ended);
        };
        let state: TaskState = row
            .try_get::<String, _>("state")?
            .parse()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let phase: Phase = row
            .try_get::<String, _>("phase")?
            .parse()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let progress: i16 = row.try_get("progress")?;
        let last_seq: i64 = row.try_get("last_seq")?;
        let log_lines: i32 = row.try_get("log_lines")?;
        if seq <= last_seq {
            return Ok(ReportApplied::Duplicate);
        }
        if state.is_terminal() {
            return Ok(ReportApplied::Ended);
        }
        let runner = Actor {
            name: "runner",
            delivery_guid: None,
        };
        // A report can overtake the dispatcher's own `starting → running`.
        if state == TaskState::Starting {
            transition_in(
                &mut tx,
                id,
                (TaskState::Starting, TaskState::Running),
                runner,
                None,
            )
            .await?;
        }
        match &report.event {
            RunnerEvent::Phase {
                phase: reported,
                progress: reported_progress,
            } => {
                let current = (phase, u8::try_from(progress).unwrap_or(0));
                let (new_phase, new_progress) = advance(current, (*reported, *reported_progress));
                sqlx::query(
                    "UPDATE tasks SET phase = $2, progress = $3, last_seq = $4,
                         version = version + 1, updated_at = now()
                     WHERE id = $1",
                )
                .bind(id)
                .bind(new_phase.as_str())
                .bind(i16::from(new_progress))
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                if new_phase != phase {
                    append_event(
                        &mut tx,
                        id,
                        runner,
                        &format!("phase {new_phase}"),
                        (None, None),
                    )
                    .await?;
                }
            }
            RunnerEvent::Log { lines } => {
                let room = usize::try_from(MAX_LOG_LINES as i64 - i64::from(log_lines))
                    .unwrap_or(0)
                    .min(lines.len());
                let kept: Vec<String> = lines[..room].iter().map(|l| redact(l)).collect();
                if !kept.is_empty() {
                    sqlx::query(
                        "INSERT INTO task_logs (task_id, seq, line)
                         SELECT $1, $2 + n - 1, line
                         FROM UNNEST($3::text[]) WITH ORDINALITY AS l(line, n)",
                    )
                    .bind(id)
                    .bind(log_lines)
                    .bind(&kept)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "UPDATE tasks SET log_lines = log_lines + $2, last_seq = $3,
                         version = version + 1, updated_at = now()
                     WHERE id = $1",
                )
                .bind(id)
                .bind(i32::try_from(room).unwrap_or(0))
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            }
            RunnerEvent::Validation(result) => {
                sqlx::query(
                    "INSERT INTO task_validations
                         (task_id, position, command, exit_code, duration_ms, output_tail)
                     SELECT $1, count(*), $2, $3, $4, $5 FROM task_validations WHERE task_id = $1",
                )
                .bind(id)
                .bind(redact(&result.command))
                .bind(result.exit_code)
                .bind(i64::try_from(result.duration_ms).unwrap_or(i64::MAX))
                .bind(
                    result
                        .output_tail
                        .lines()
                        .map(&redact)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE tasks SET last_seq = $2, version = version + 1, updated_at = now()
                     WHERE id = $1",
                )
                .bind(id)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                append_event(
                    &mut tx,
                    id,
                    runner,
                    &format!(
                        "validated `{}`: {}",
                        redact(&result.command),
                        if result.passed() { "passed" } else { "failed" }
                    ),
                    (None, None),
                )
                .await?;
            }
            RunnerEvent::Finished(outcome) => {
                let (branch, commit, changed, files, error, failing) = match outcome {
                    RunOutcome::Pushed {
                        branch,
                        commit,
                        changed_files,
                    } => (
                        Some(branch.as_str()),
                        Some(commit.as_str()),
                        Some(true),
                        changed_files.clone(),
                        None,
                        None,
                    ),
                    RunOutcome::NoChanges => (None, None, Some(false), Vec::new(), None, None),
                    RunOutcome::Failed {
                        error,
                        failing_command,
                    } => (
                        None,
                        None,
                        None,
                        Vec::new(),
                        Some(redact(error)),
                        failing_command.as_deref().map(&redact),
                    ),
                };
                sqlx::query(
                    "UPDATE tasks SET branch = COALESCE($2, branch), commit_sha = $3,
                         changed = $4, changed_files = $5, failing_command = $6,
                         last_seq = $7,
                         progress = CASE WHEN $4 IS NOT NULL THEN 100 ELSE progress END
                     WHERE id = $1",
                )
                .bind(id)
                .bind(branch)
                .bind(commit)
                .bind(changed)
                .bind(serde_json::Value::from(files))
                .bind(failing)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
                transition_in(
                    &mut tx,
                    id,
                    (TaskState::Running, outcome.final_state()),
                    runner,
                    error.as_deref(),
                )
                .await?;
            }
        }
        let row = sqlx::query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"))
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let task = decode_task(&row)?;
        tx.commit().await?;
        Ok(ReportApplied::Applied(Box::new(task)))
    }

    /// Cancels a queued task at once; marks an executing one for the engine to stop.
    pub async fn request_cancel(
        &self,
        id: i64,
        actor: Actor<'_>,
    ) -> Result<Option<CancelRequested>, StoreError> {
        for _ in 0..5 {
            let Some(task) = self.task(id).await? else {
                return Ok(None);
            };
            match task.state {
                TaskState::Queued => {
                    match self
                        .transition_task(id, TaskState::Queued, TaskState::Cancelled, actor, None)
                        .await
                    {
                        Ok(task) => return Ok(Some(CancelRequested::Cancelled(Box::new(task)))),
                        Err(TransitionError::Store(e)) => return Err(e),
                        // Dispatched in between: go round and stop it instead.
                        Err(_) => continue,
                    }
                }
                TaskState::Starting | TaskState::Running => {
                    let mut tx = self.pool.begin().await?;
                    let updated = sqlx::query(
                        "UPDATE tasks SET cancel_requested_by = COALESCE(cancel_requested_by, $2),
                             updated_at = now()
                         WHERE id = $1 AND state IN ('starting', 'running')",
                    )
                    .bind(id)
                    .bind(actor.name)
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() == 0 {
                        continue;
                    }
                    append_event(&mut tx, id, actor, "cancel requested", (None, None)).await?;
                    tx.commit().await?;
                    return Ok(Some(CancelRequested::Stopping(Box::new(task))));
                }
                _ => return Ok(Some(CancelRequested::AlreadyEnded(Box::new(task)))),
            }
        }
        Ok(None)
    }

    /// Every task occupying an executor, for the engine to watch.
    pub async fn executing_tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ('starting', 'running') ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(decode_task).collect::<Result<_, _>>()?)
    }

    /// Takes up to `limit` tasks whose latest version GitHub has not seen, leasing each
    /// for `lease` so another reporter leaves it alone meanwhile. A change of progress
    /// or log alone waits until `throttle` has passed since the last report; a new state
    /// or phase goes at once.
    pub async fn claim_unreported(
        &self,
        limit: i64,
        throttle: Duration,
        lease: Duration,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "UPDATE tasks SET report_due_at = now() + make_interval(secs => $3 / 1000.0)
             WHERE id IN (
                 SELECT id FROM tasks
                 WHERE reported_version < version AND report_due_at <= now()
                   AND (reported_state IS DISTINCT FROM state
                        OR reported_phase IS DISTINCT FROM phase
                        OR reported_at IS NULL
                        OR reported_at <= now() - make_interval(secs => $2 / 1000.0))
                 -- A new task's first check run gates its start: it goes first.
                 ORDER BY check_run_id IS NULL DESC, report_due_at
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING {TASK_COLUMNS}"
        ))
        .bind(limit)
        .bind(millis(throttle))
        .bind(millis(lease))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(decode_task).collect::<Result<_, _>>()?)
    }

    /// GitHub has seen `task` as it was at `task.version`.
    pub async fn mark_reported(&self, task: &TaskRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tasks SET reported_version = GREATEST(reported_version, $2),
                 reported_state = $3, reported_phase = $4, reported_at = now(),
                 report_failures = 0, report_error = NULL, report_due_at = now()
             WHERE id = $1",
        )
        .bind(task.id)
        .bind(task.version)
        .bind(task.state.as_str())
        .bind(task.phase.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A report failed: try again after a backoff that grows with each failure.
    pub async fn report_failed(
        &self,
        id: i64,
        error: &str,
        backoff: impl Fn(u32) -> Duration,
    ) -> Result<(), StoreError> {
        let failures: i32 = sqlx::query_scalar(
            "UPDATE tasks SET report_failures = report_failures + 1, report_error = $2
             WHERE id = $1 RETURNING report_failures",
        )
        .bind(id)
        .bind(error)
        .fetch_one(&self.pool)
        .await?;
        let delay = backoff(u32::try_from(failures).unwrap_or(u32::MAX));
        sqlx::query(
            "UPDATE tasks SET report_due_at = now() + make_interval(secs => $2 / 1000.0)
             WHERE id = $1",
        )
        .bind(id)
        .bind(millis(delay))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Remembers the task's check run and the commit it is on.
    pub async fn set_check_run(
        &self,
        id: i64,
        check_run_id: i64,
        base_branch: &str,
        head_sha: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tasks SET check_run_id = $2, base_branch = $3, head_sha = $4
             WHERE id = $1 AND check_run_id IS NULL",
        )
        .bind(id)
        .bind(check_run_id)
        .bind(base_branch)
        .bind(head_sha)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_pull_request(
        &self,
        id: i64,
        number: i32,
        url: &str,
        actor: Actor<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE tasks SET pr_number = $2, pr_url = $3, version = version + 1
             WHERE id = $1 AND pr_number IS NULL",
        )
        .bind(id)
        .bind(number)
        .bind(url)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 1 {
            append_event(
                &mut tx,
                id,
                actor,
                &format!("opened pull request #{number}"),
                (None, None),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_pr_check_run(&self, id: i64, check_run_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE tasks SET pr_check_run_id = $2 WHERE id = $1")
            .bind(id)
            .bind(check_run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn validations(&self, id: i64) -> Result<Vec<ValidationResult>, StoreError> {
        let rows: Vec<(String, Option<i32>, i64, String)> = sqlx::query_as(
            "SELECT command, exit_code, duration_ms, output_tail FROM task_validations
             WHERE task_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(command, exit_code, duration_ms, output_tail)| ValidationResult {
                    command,
                    exit_code,
                    duration_ms: u64::try_from(duration_ms).unwrap_or(0),
                    output_tail,
                },
            )
            .collect())
    }

    /// Validation results, the last `log_lines` log lines and the queue position: what
    /// the renderers need besides the record.
    pub async fn task_details(
        &self,
        task: &TaskRecord,
        log_lines: i64,
    ) -> Result<TaskDetails, StoreError> {
        Ok(TaskDetails {
            validations: self.validations(task.id).await?,
            log_tail: self.log_tail(task.id, log_lines).await?,
            queue_position: if task.state == TaskState::Queued {
                self.queue_position(task.id).await?
            } else {
                None
            },
        })
    }

    /// The last `n` log lines, oldest first.
    pub async fn log_tail(&self, id: i64, n: i64) -> Result<Vec<String>, StoreError> {
        let mut lines: Vec<String> = sqlx::query_scalar(
            "SELECT line FROM task_logs WHERE task_id = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(id)
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        lines.reverse();
        Ok(lines)
    }

    /// The task a check run belongs to.
    pub async fn task_by_check_run(
        &self,
        check_run_id: i64,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE check_run_id = $1 OR pr_check_run_id = $1"
        ))
        .bind(check_run_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(decode_task).transpose()?)
    }
}
