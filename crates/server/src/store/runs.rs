//! Running tasks: launching, the runner's reports (applied once each, in order), cancel
//! requests, the executions the reconciler watches, and the reporter's queue of tasks
//! whose latest state GitHub has not seen yet.

use std::time::Duration;

use sqlx::PgExecutor;
use sqlx::types::Json;

use super::tasks::{
    AuditActor, TaskId, TaskRecord, TransitionError, append_event, fetch_task, task_query,
    transition_in,
};
use super::{Store, StoreError};
use bg_agent_core::output::{MAX_LINE_CHARS, clip_line, dropped_marker};
use bg_agent_core::protocol::{
    MAX_LOG_LINES, RunOutcome, RunnerEvent, RunnerReport, ValidationResult,
};
use bg_agent_core::task::render::TaskDetails;
use bg_agent_core::task::{Phase, TaskState, advance};

/// At most this many scope-guard findings are kept per task.
const MAX_SCOPE_FINDINGS: usize = 50;

/// What became of a runner's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportApplied {
    Applied(Box<TaskRecord>),
    /// Already applied (a retry after a lost answer).
    Duplicate,
    /// The task has ended (or does not exist): the runner should stop.
    Ended,
}

/// The coding agent a task is launched with, as [`Store::prepare_launch`] records it.
#[derive(Debug, Clone, Copy)]
pub struct PreparedAgent<'a> {
    /// The provider's configuration name (`codex`...).
    pub provider: &'a str,
    /// The audit event saying what runs and who chose it.
    pub audit: &'a str,
}

/// What [`Store::prepare_launch`] recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launching {
    /// The WIP branch the run starts from (a retry of a task whose change was kept).
    pub resume_branch: Option<String>,
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

/// Which execution runs a task and which server instance started it.
async fn record_execution(
    executor: impl PgExecutor<'_>,
    id: TaskId,
    execution_id: &str,
    instance: uuid::Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE tasks SET execution_id = $2, launched_by = $3 WHERE id = $1",
        id as TaskId,
        execution_id,
        instance,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// A push to any branch but the task's own is not the task's outcome.
fn pushed_to_its_branch(
    outcome: &RunOutcome,
    task_branch: Option<&str>,
    task_id: Option<i64>,
) -> RunOutcome {
    match outcome {
        RunOutcome::Pushed { branch, .. } if Some(branch.as_str()) != task_branch => {
            RunOutcome::Failed {
                error: format!(
                    "the runner reported a push to `{branch}`, not to the task's branch `{}`",
                    task_branch.unwrap_or("(none)")
                ),
                failing_command: None,
                wip_branch: None,
            }
        }
        // A kept change goes only to the task's own WIP branch.
        RunOutcome::Failed {
            error,
            failing_command,
            wip_branch: Some(wip),
        } if task_id.is_some_and(|id| *wip != bg_agent_core::protocol::wip_branch(id)) => {
            RunOutcome::Failed {
                error: error.clone(),
                failing_command: failing_command.clone(),
                wip_branch: None,
            }
        }
        other => other.clone(),
    }
}

impl Store {
    /// The hash of the task's runner secret while the task is active.
    pub async fn runner_secret_hash(&self, id: TaskId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar!(
            "SELECT runner_secret_hash FROM tasks
             WHERE id = $1 AND state IN ('starting', 'running')",
            id as TaskId,
        )
        .fetch_optional(&self.pool)
        .await?
        .flatten())
    }

    /// Records the secret's hash (before launching, so the runner's first report is
    /// accepted), the branch it will push and the coding agent the server chose for it
    /// (`None`: a recipe). `None` when the task is no longer starting.
    ///
    /// A retry starts from its previous attempt's kept change: that attempt's WIP branch,
    /// or else the one it started from itself; recorded here and returned.
    pub async fn prepare_launch(
        &self,
        id: TaskId,
        secret_hash: &[u8],
        branch: &str,
        agent: Option<PreparedAgent<'_>>,
    ) -> Result<Option<Launching>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query!(
            r#"UPDATE tasks SET runner_secret_hash = $2, branch = $3,
                 agent_provider = COALESCE($4, agent_provider),
                 resume_branch = CASE WHEN $5 THEN
                     (SELECT COALESCE(p.wip_branch, p.resume_branch) FROM tasks p
                      WHERE p.id = tasks.retry_of) END,
                 updated_at = now()
             WHERE id = $1 AND state = 'starting'
             RETURNING resume_branch"#,
            id as TaskId,
            secret_hash,
            branch,
            agent.map(|a| a.provider),
            agent.is_some(),
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let actor = AuditActor {
            name: "bg-agent",
            delivery_guid: None,
        };
        if let Some(agent) = agent {
            append_event(&mut *tx, id, actor, agent.audit, (None, None)).await?;
        }
        if let Some(resume) = &row.resume_branch {
            append_event(
                &mut *tx,
                id,
                actor,
                &format!("starts from the earlier attempt's change on {resume}"),
                (None, None),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(Launching {
            resume_branch: row.resume_branch,
        }))
    }

    /// This server process is alive (the supervisor calls it every pass).
    pub async fn engine_heartbeat(&self, instance: uuid::Uuid) -> Result<(), StoreError> {
        sqlx::query!(
            "INSERT INTO engine_instances (id) VALUES ($1)
             ON CONFLICT (id) DO UPDATE SET seen_at = now()",
            instance,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// This server process is stopping: what it launched is not to be waited for.
    pub async fn engine_gone(&self, instance: uuid::Uuid) -> Result<(), StoreError> {
        sqlx::query!("DELETE FROM engine_instances WHERE id = $1", instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The server instances heard from within `within`.
    pub async fn live_engines(
        &self,
        within: Duration,
    ) -> Result<std::collections::HashSet<uuid::Uuid>, StoreError> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar!(
            "SELECT id FROM engine_instances
             WHERE seen_at > now() - make_interval(secs => $1::float8 / 1000.0)",
            millis(within),
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().collect())
    }

    /// The runner is started: `starting → running`, remembering the execution and the
    /// server instance that started it.
    pub async fn mark_launched(
        &self,
        id: TaskId,
        execution_id: &str,
        instance: uuid::Uuid,
        actor: AuditActor<'_>,
    ) -> Result<TaskRecord, TransitionError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        record_execution(&mut *tx, id, execution_id, instance)
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
        id: TaskId,
        execution_id: &str,
        instance: uuid::Uuid,
    ) -> Result<(), StoreError> {
        record_execution(&self.pool, id, execution_id, instance).await?;
        Ok(())
    }

    /// Ends an active task whatever its current active state (lost execution, timeout,
    /// cancel, failed launch). `None` if it had already ended.
    pub async fn end_task(
        &self,
        id: TaskId,
        to: TaskState,
        actor: AuditActor<'_>,
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
                    tracing::warn!(task = id.get(), error = %e, "cannot end task");
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
        id: TaskId,
        report: &RunnerReport,
        redact: impl Fn(&str) -> String,
    ) -> Result<ReportApplied, StoreError> {
        let seq = i64::try_from(report.seq).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query!(
            r#"SELECT state AS "state: TaskState", phase AS "phase: Phase", progress, last_seq,
                    log_lines, branch, runner_secret_hash IS NULL AS "reported_end!"
             FROM tasks WHERE id = $1 FOR UPDATE"#,
            id as TaskId,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(ReportApplied::Ended);
        };
        let (state, phase, progress) = (row.state, row.phase, row.progress);
        let (last_seq, log_lines) = (row.last_seq, row.log_lines);
        if seq <= last_seq {
            return Ok(ReportApplied::Duplicate);
        }
        // Ended, or its outcome is in and awaits the supervisor's check: nothing follows.
        if state.is_terminal() || (state == TaskState::Running && row.reported_end) {
            return Ok(ReportApplied::Ended);
        }
        let runner = AuditActor {
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
                sqlx::query!(
                    "UPDATE tasks SET phase = $2, progress = $3, last_seq = $4,
                         version = version + 1, updated_at = now()
                     WHERE id = $1",
                    id as TaskId,
                    new_phase as Phase,
                    i16::from(new_progress),
                    seq,
                )
                .execute(&mut *tx)
                .await?;
                if new_phase != phase {
                    append_event(
                        &mut *tx,
                        id,
                        runner,
                        &format!("phase {new_phase}"),
                        (None, None),
                    )
                    .await?;
                }
            }
            RunnerEvent::Log { lines, level } => {
                // The newest lines are kept: a report larger than the cap keeps its end, and
                // older stored lines past the cap are deleted below. `log_lines` counts every
                // line received, so the oldest stored `seq` is the number dropped.
                let received = i32::try_from(lines.len()).unwrap_or(i32::MAX);
                // Past i32::MAX lines (never from a real runner) nothing more is stored.
                let (total, skipped) = match log_lines.checked_add(received) {
                    Some(total) => (total, lines.len().saturating_sub(MAX_LOG_LINES)),
                    None => (log_lines, lines.len()),
                };
                let kept: Vec<String> = lines[skipped..]
                    .iter()
                    .map(|l| clip_line(&redact(l), MAX_LINE_CHARS).into_owned())
                    .collect();
                if !kept.is_empty() {
                    sqlx::query!(
                        "INSERT INTO task_logs (task_id, seq, level, line)
                         SELECT $1, $2 + n - 1, $4, line
                         FROM UNNEST($3::text[]) WITH ORDINALITY AS l(line, n)",
                        id as TaskId,
                        i64::from(log_lines) + skipped as i64,
                        &kept,
                        level.as_str(),
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                let first_kept =
                    total.saturating_sub(i32::try_from(MAX_LOG_LINES).unwrap_or(i32::MAX));
                if first_kept > 0 {
                    sqlx::query!(
                        "DELETE FROM task_logs WHERE task_id = $1 AND seq < $2",
                        id as TaskId,
                        first_kept,
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query!(
                    "UPDATE tasks SET log_lines = $2, last_seq = $3,
                         version = version + 1, updated_at = now()
                     WHERE id = $1",
                    id as TaskId,
                    total,
                    seq,
                )
                .execute(&mut *tx)
                .await?;
            }
            RunnerEvent::Validation(result) => {
                sqlx::query!(
                    "INSERT INTO task_validations
                         (task_id, position, command, exit_code, duration_ms, output_tail)
                     SELECT $1, count(*), $2, $3, $4, $5 FROM task_validations WHERE task_id = $1",
                    id as TaskId,
                    redact(&result.command),
                    result.exit_code,
                    i64::try_from(result.duration_ms).unwrap_or(i64::MAX),
                    result
                        .output_tail
                        .lines()
                        .map(&redact)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query!(
                    "UPDATE tasks SET last_seq = $2, version = version + 1, updated_at = now()
                     WHERE id = $1",
                    id as TaskId,
                    seq,
                )
                .execute(&mut *tx)
                .await?;
                append_event(
                    &mut *tx,
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
            RunnerEvent::ScopeFindings { findings } => {
                let findings: Vec<String> = findings
                    .iter()
                    .take(MAX_SCOPE_FINDINGS)
                    .map(|f| clip_line(&redact(f), MAX_LINE_CHARS).into_owned())
                    .collect();
                sqlx::query!(
                    "UPDATE tasks SET scope_findings = $2, last_seq = $3,
                         version = version + 1, updated_at = now()
                     WHERE id = $1",
                    id as TaskId,
                    &findings,
                    seq,
                )
                .execute(&mut *tx)
                .await?;
                append_event(
                    &mut *tx,
                    id,
                    runner,
                    &format!("scope guard: {} findings", findings.len()),
                    (None, None),
                )
                .await?;
            }
            RunnerEvent::AgentRound {
                round,
                provider,
                model,
                usage,
            } => {
                let cost = usage
                    .cost_usd
                    .filter(|c| c.is_finite() && *c >= 0.0)
                    .map(|c| (c * 1_000_000.0).round() as i64);
                sqlx::query!(
                    "UPDATE tasks SET agent_provider = $2,
                         agent_rounds = GREATEST(agent_rounds, $3),
                         agent_input_tokens = agent_input_tokens + $4,
                         agent_output_tokens = agent_output_tokens + $5,
                         agent_cost_microusd = CASE WHEN $6::bigint IS NULL THEN agent_cost_microusd
                             ELSE COALESCE(agent_cost_microusd, 0) + $6 END,
                         last_seq = $7, version = version + 1, updated_at = now()
                     WHERE id = $1",
                    id as TaskId,
                    provider.name(),
                    i32::try_from(*round).unwrap_or(i32::MAX),
                    i64::try_from(usage.input_tokens).unwrap_or(i64::MAX),
                    i64::try_from(usage.output_tokens).unwrap_or(i64::MAX),
                    cost,
                    seq,
                )
                .execute(&mut *tx)
                .await?;
                super::agent_rounds::record_round(
                    &mut *tx,
                    id,
                    *round,
                    provider.name(),
                    model.as_deref(),
                    usage,
                    cost,
                )
                .await?;
                append_event(
                    &mut *tx,
                    id,
                    runner,
                    &format!(
                        "{} round {round}: {} input and {} output tokens{}",
                        provider.display(),
                        usage.input_tokens,
                        usage.output_tokens,
                        usage
                            .cost_usd
                            .map(|c| format!(", ${c:.4}"))
                            .unwrap_or_default()
                    ),
                    (None, None),
                )
                .await?;
            }
            RunnerEvent::Finished(outcome) => {
                let outcome = &pushed_to_its_branch(outcome, row.branch.as_deref(), Some(id.get()));
                let wip = match outcome {
                    RunOutcome::Failed {
                        wip_branch: Some(wip),
                        ..
                    } => Some(wip.as_str()),
                    _ => None,
                };
                if let Some(wip) = wip {
                    sqlx::query!(
                        "UPDATE tasks SET wip_branch = $2 WHERE id = $1",
                        id as TaskId,
                        wip,
                    )
                    .execute(&mut *tx)
                    .await?;
                    append_event(
                        &mut *tx,
                        id,
                        runner,
                        &format!("kept the unvalidated change on {wip}"),
                        (None, None),
                    )
                    .await?;
                }
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
                        ..
                    } => (
                        None,
                        None,
                        None,
                        Vec::new(),
                        Some(redact(error)),
                        failing_command.as_deref().map(&redact),
                    ),
                };
                sqlx::query!(
                    "UPDATE tasks SET branch = COALESCE($2, branch), commit_sha = $3,
                         changed = $4, changed_files = $5, failing_command = $6,
                         last_seq = $7,
                         progress = CASE WHEN $4::bool IS NOT NULL THEN 100 ELSE progress END
                     WHERE id = $1",
                    id as TaskId,
                    branch,
                    commit,
                    changed,
                    Json(files) as Json<Vec<String>>,
                    failing,
                    seq,
                )
                .execute(&mut *tx)
                .await?;
                if let RunOutcome::Pushed { branch, commit, .. } = outcome {
                    // Not succeeded yet: the supervisor first checks on GitHub that the
                    // branch points at this commit. The runner has nothing more to say.
                    sqlx::query!(
                        "UPDATE tasks SET runner_secret_hash = NULL, version = version + 1,
                             updated_at = now()
                         WHERE id = $1",
                        id as TaskId,
                    )
                    .execute(&mut *tx)
                    .await?;
                    append_event(
                        &mut *tx,
                        id,
                        runner,
                        &format!("pushed {commit} to {branch}"),
                        (None, None),
                    )
                    .await?;
                } else {
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
        }
        let task = fetch_task(&mut *tx, id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        tx.commit().await?;
        Ok(ReportApplied::Applied(Box::new(task)))
    }

    /// Cancels a queued task at once; marks an executing one for the engine to stop.
    pub async fn request_cancel(
        &self,
        id: TaskId,
        actor: AuditActor<'_>,
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
                    let updated = sqlx::query!(
                        "UPDATE tasks SET cancel_requested_by = COALESCE(cancel_requested_by, $2),
                             updated_at = now()
                         WHERE id = $1 AND state IN ('starting', 'running')",
                        id as TaskId,
                        actor.name,
                    )
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() == 0 {
                        continue;
                    }
                    append_event(&mut *tx, id, actor, "cancel requested", (None, None)).await?;
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
        let rows = task_query!(
            "SELECT",
            "FROM tasks WHERE state IN ('starting', 'running') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(TaskRecord::from).collect())
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
        let rows = task_query!(
            "UPDATE tasks SET report_due_at = now() + make_interval(secs => $3::float8 / 1000.0)
             WHERE id IN (
                 SELECT id FROM tasks
                 WHERE reported_version < version AND report_due_at <= now()
                   AND (reported_state IS DISTINCT FROM state
                        OR reported_phase IS DISTINCT FROM phase
                        OR reported_at IS NULL
                        OR reported_at <= now() - make_interval(secs => $2::float8 / 1000.0))
                 -- A new task's first check run gates its start: it goes first.
                 ORDER BY check_run_id IS NULL DESC, report_due_at
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING",
            "",
            limit,
            millis(throttle),
            millis(lease),
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(TaskRecord::from).collect())
    }

    /// Keeps task `id` claimed by the reporter working on it for another `lease`.
    pub async fn renew_report_lease(&self, id: TaskId, lease: Duration) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE tasks SET report_due_at = now() + make_interval(secs => $2::float8 / 1000.0)
             WHERE id = $1 AND reported_version < version",
            id as TaskId,
            millis(lease),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Remembers the commit a task's check run goes on before the run is made, so the
    /// next attempt looks for a run made before a crash on that same commit.
    pub async fn set_head(
        &self,
        id: TaskId,
        base_branch: &str,
        head_sha: &str,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE tasks SET base_branch = $2, head_sha = $3
             WHERE id = $1 AND check_run_id IS NULL AND head_sha IS NULL",
            id as TaskId,
            base_branch,
            head_sha,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// GitHub has seen `task` as it was at `task.version`.
    pub async fn mark_reported(&self, task: &TaskRecord) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE tasks SET reported_version = GREATEST(reported_version, $2),
                 reported_state = $3, reported_phase = $4, reported_at = now(),
                 report_failures = 0, report_error = NULL, report_due_at = now()
             WHERE id = $1",
            task.id as TaskId,
            task.version,
            task.state as TaskState,
            task.phase as Phase,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A report failed: try again after a backoff that grows with each failure.
    pub async fn report_failed(
        &self,
        id: TaskId,
        error: &str,
        backoff: impl Fn(u32) -> Duration,
    ) -> Result<(), StoreError> {
        let failures: i32 = sqlx::query_scalar!(
            "UPDATE tasks SET report_failures = report_failures + 1, report_error = $2
             WHERE id = $1 RETURNING report_failures",
            id as TaskId,
            error,
        )
        .fetch_one(&self.pool)
        .await?;
        let delay = backoff(u32::try_from(failures).unwrap_or(u32::MAX));
        sqlx::query!(
            "UPDATE tasks SET report_due_at = now() + make_interval(secs => $2::float8 / 1000.0)
             WHERE id = $1",
            id as TaskId,
            millis(delay),
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Remembers the task's check run and the commit it is on.
    pub async fn set_check_run(
        &self,
        id: TaskId,
        check_run_id: i64,
        base_branch: &str,
        head_sha: &str,
    ) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE tasks SET check_run_id = $2, base_branch = $3, head_sha = $4
             WHERE id = $1 AND check_run_id IS NULL",
            id as TaskId,
            check_run_id,
            base_branch,
            head_sha,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_pull_request(
        &self,
        id: TaskId,
        number: i32,
        url: &str,
        actor: AuditActor<'_>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query!(
            "UPDATE tasks SET pr_number = $2, pr_url = $3, pr_state = 'open',
                 version = version + 1
             WHERE id = $1 AND pr_number IS NULL",
            id as TaskId,
            number,
            url,
        )
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 1 {
            append_event(
                &mut *tx,
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

    pub async fn set_pr_check_run(&self, id: TaskId, check_run_id: i64) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE tasks SET pr_check_run_id = $2 WHERE id = $1",
            id as TaskId,
            check_run_id,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn validations(&self, id: TaskId) -> Result<Vec<ValidationResult>, StoreError> {
        let rows = sqlx::query!(
            "SELECT command, exit_code, duration_ms, output_tail FROM task_validations
             WHERE task_id = $1 ORDER BY position",
            id as TaskId,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| ValidationResult {
                command: row.command,
                exit_code: row.exit_code,
                duration_ms: u64::try_from(row.duration_ms).unwrap_or(0),
                output_tail: row.output_tail,
            })
            .collect())
    }

    /// Validation results, the last `log_lines` log lines and the queue position: what
    /// the renderers need besides the record.
    /// What the scope guard found in the task's change.
    pub async fn scope_findings(&self, id: TaskId) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar!(
            "SELECT scope_findings FROM tasks WHERE id = $1",
            id as TaskId
        )
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or_default())
    }

    pub async fn task_details(
        &self,
        task: &TaskRecord,
        log_lines: i64,
    ) -> Result<TaskDetails, StoreError> {
        // Independent reads, each on its own connection (a page waits for the slowest).
        let queue_position = async {
            if task.state == TaskState::Queued {
                self.queue_position(task.id).await
            } else {
                Ok(None)
            }
        };
        let (validations, log_tail, scope_findings, queue_position) = tokio::try_join!(
            self.validations(task.id),
            self.log_tail(task.id, log_lines),
            self.scope_findings(task.id),
            queue_position,
        )?;
        Ok(TaskDetails {
            validations,
            log_tail,
            scope_findings,
            queue_position,
        })
    }

    /// The last `n` log lines, oldest first. When they reach back to the oldest line kept
    /// and older lines were dropped (the log keeps the newest [`MAX_LOG_LINES`]), a marker
    /// line saying how many comes first.
    pub async fn log_tail(&self, id: TaskId, n: i64) -> Result<Vec<String>, StoreError> {
        let mut rows = sqlx::query!(
            "SELECT seq, line FROM task_logs WHERE task_id = $1 ORDER BY seq DESC LIMIT $2",
            id as TaskId,
            n.saturating_add(1),
        )
        .fetch_all(&self.pool)
        .await?;
        let reaches_start = i64::try_from(rows.len()).unwrap_or(i64::MAX) <= n;
        rows.truncate(usize::try_from(n).unwrap_or(0));
        rows.reverse();
        let dropped = match rows.first() {
            Some(first) if reaches_start && first.seq > 0 => Some(first.seq),
            _ => None,
        };
        Ok(dropped
            .map(|d| dropped_marker(u64::try_from(d).unwrap_or(0)))
            .into_iter()
            .chain(rows.into_iter().map(|r| r.line))
            .collect())
    }

    /// The task a check run belongs to.
    pub async fn task_by_check_run(
        &self,
        check_run_id: i64,
    ) -> Result<Option<TaskRecord>, StoreError> {
        Ok(task_query!(
            "SELECT",
            "FROM tasks WHERE check_run_id = $1 OR pr_check_run_id = $1",
            check_run_id,
        )
        .fetch_optional(&self.pool)
        .await?
        .map(TaskRecord::from))
    }
}
