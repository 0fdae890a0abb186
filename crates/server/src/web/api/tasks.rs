//! Tasks through the API: each operation is a plain function (the MCP tools call the same
//! ones) and a handler that parses the request and answers.
//!
//! Who sees what: a task of a repository the viewer cannot read is "not found", never
//! forbidden (that would tell it exists); creating, retrying and cancelling need the
//! permission the comment path needs.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiJson, ApiPath, ApiQuery, ApiState};
use crate::engine::tasks::Requested;
use crate::store::agent_rounds::AgentRoundRecord;
use crate::store::listing::{TaskFilter, list_tasks as list_stored};
use crate::store::logs::LogFilter;
use crate::store::tasks::{CreatedTask, TaskId, TaskRecord};
use crate::web::auth::Viewer;
use crate::webhook::trigger::Actor;
use bg_agent_core::protocol::LogLevel;
use bg_agent_core::task::render::page_url;
use bg_agent_core::task::{Permission, TaskState};

/// Log lines a task page shows in `log_tail`.
const LOG_TAIL_LINES: i64 = 50;
/// Lines one read of the log returns at most (the whole stored log fits: runners' logs
/// keep the newest 2 000).
const MAX_LOG_PAGE: i64 = 5_000;

/// A template parameter's value: text, a whole number or a boolean (bound as text, as a
/// comment's arguments are).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ParamValue {
    Text(String),
    Integer(i64),
    Boolean(bool),
}

impl ParamValue {
    fn into_text(self) -> String {
        match self {
            ParamValue::Text(text) => text,
            ParamValue::Integer(n) => n.to_string(),
            ParamValue::Boolean(b) => b.to_string(),
        }
    }
}

/// Either free-text `instructions` for the coding agent, or a `template` with its
/// `parameters`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// Free text for the coding agent, as `/bg-agent run <instructions>`.
    #[serde(default)]
    pub instructions: Option<String>,
    /// A template's name (the repository's, the installation's or a built-in).
    #[serde(default)]
    pub template: Option<String>,
    /// The template's parameters by name; checked against their type and pattern.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamValue>,
}

/// One attempt of a request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub id: i64,
    pub attempt: i32,
    pub state: String,
}

/// A task as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskSummary {
    pub id: i64,
    /// `owner/name`.
    pub repository: String,
    /// `queued`, `starting`, `running`, `succeeded`, `failed`, `cancelled` or `timed_out`.
    pub state: String,
    /// `queued`, `starting`, `cloning`, `applying`, `validating`, `pushing` or `finished`.
    pub phase: String,
    /// 0 to 100.
    pub progress: i16,
    pub summary: String,
    /// Who asked (GitHub login).
    pub creator: String,
    /// What asked: `comment`, `label`, `rerun`, `retry_button`, `retry_command` or `api`.
    pub trigger: String,
    pub template: Option<String>,
    pub attempt: i32,
    pub retry_of: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to end (or to now while it runs), in seconds.
    pub duration_secs: Option<f64>,
    /// The coding agent that ran (`claude_code`, `codex`, `gemini`, `aider`, `cline` or
    /// `command`); absent for a recipe, or before its launch.
    pub provider: Option<String>,
    /// What the agent's CLI reported spending over all rounds, in US dollars; absent
    /// when it reported no cost.
    pub cost_usd: Option<f64>,
    pub pr_url: Option<String>,
    /// The pull request's state since it was opened: `open`, `merged` or `closed`
    /// (closed without merging), from GitHub's `pull_request` events; absent without a
    /// pull request.
    pub pr_state: Option<String>,
    pub error: Option<String>,
    /// The task's page.
    pub url: String,
}

/// One validation command's result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ValidationView {
    pub command: String,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub output_tail: String,
}

/// What one round of the coding agent used, as its CLI reported.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentRoundView {
    /// 1 makes the change; each later round answers a failed validation.
    pub round: i32,
    pub provider: String,
    /// Absent: the CLI's default model.
    pub model: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: Option<f64>,
    pub reported_at: DateTime<Utc>,
}

/// The coding agent's use over the task: sums, and each round.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageView {
    pub provider: String,
    /// The model of the last round; absent: the CLI's default.
    pub model: Option<String>,
    /// Rounds run (the verifier loop adds one per failed validation it answers).
    pub rounds: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: Option<f64>,
    /// Each round, first to last.
    pub per_round: Vec<AgentRoundView>,
}

/// One audit event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
}

/// A task in full.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskSummary,
    pub instructions: String,
    pub parameters: BTreeMap<String, String>,
    /// `built_in`, `database` or `repository`.
    pub template_source: Option<String>,
    pub timeout_secs: i32,
    pub issue_number: Option<i32>,
    pub branch: Option<String>,
    pub commit_sha: Option<String>,
    pub pr_number: Option<i32>,
    /// Whether the change touched anything (once known).
    pub changed: Option<bool>,
    pub changed_files: Vec<String>,
    pub failing_command: Option<String>,
    /// The coding agent's tokens and cost; absent for a recipe, or before it reported.
    pub usage: Option<UsageView>,
    /// 1 for the next queued task of its repository to start, and so on.
    pub queue_position: Option<i64>,
    /// Every attempt of this request, first to last (this one included).
    pub attempts: Vec<AttemptView>,
    pub validations: Vec<ValidationView>,
    pub events: Vec<EventView>,
    /// The log's last lines.
    pub log_tail: Vec<String>,
    /// Lines the runner reported in all (the log keeps the newest).
    pub log_lines: i32,
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskPage {
    pub tasks: Vec<TaskSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
    /// Tasks matching the filters in all, counted up to 1,000 (100 with `q`).
    pub total: i64,
    /// `false` when more than `total` tasks match (the count stopped at its cap).
    pub total_exact: bool,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `owner/name`.
    pub repo: Option<String>,
    /// A task state, e.g. `running`.
    pub state: Option<String>,
    /// The creator's GitHub login.
    pub creator: Option<String>,
    pub template: Option<String>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// A substring of the summary, the instructions or the repository, without case.
    pub q: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Tasks per page, 1 to 100 (default 50).
    pub limit: Option<i64>,
}

/// One log line.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogLineView {
    /// The line's number in the task's log (also the live stream's event id).
    pub seq: i64,
    pub at: DateTime<Utc>,
    /// `output` (printed by a command) or the runner's own `info`, `warn`, `error`.
    pub level: String,
    pub line: String,
}

/// A task's log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogView {
    pub task_id: i64,
    pub state: String,
    pub lines: Vec<LogLineView>,
    /// Lines the runner reported in all; the oldest may have been dropped (the log keeps
    /// the newest).
    pub total_lines: i32,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only lines after this sequence number.
    pub after: Option<i64>,
    /// Only lines logged at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only lines containing this text.
    pub contains: Option<String>,
    /// Only lines of this level and above: `output` (everything: what the commands
    /// printed and the runner's own lines), `info` (the runner's own lines), `warn`, `error`.
    #[param(value_type = Option<String>, pattern = "^(output|info|warn|error)$")]
    pub level: Option<String>,
}

impl LogQuery {
    fn filter(&self) -> Result<LogFilter, ApiError> {
        let level = self
            .level
            .as_deref()
            .map(|l| {
                LogLevel::parse(l).ok_or_else(|| {
                    ApiError::invalid("level", "must be output, info, warn or error")
                })
            })
            .transpose()?;
        Ok(LogFilter {
            after: self.after,
            since: self.since,
            level,
            contains: self.contains.clone().filter(|c| !c.is_empty()),
        })
    }
}

// ---- What the handlers and the MCP tools share ----

/// The task, if the viewer may read its repository: otherwise "not found", as if it did
/// not exist.
async fn readable(state: &ApiState, viewer: &Viewer, id: i64) -> Result<TaskRecord, ApiError> {
    let task = state
        .store
        .task(TaskId::new(id))
        .await?
        .ok_or_else(|| ApiError::not_found("task"))?;
    let (owner, name) = split_repo(&task.repository);
    if !viewer.can_read(&state.auth, owner, name).await? {
        return Err(ApiError::not_found("task"));
    }
    Ok(task)
}

pub(super) fn split_repo(full_name: &str) -> (&str, &str) {
    full_name.split_once('/').unwrap_or((full_name, ""))
}

/// The viewer's permission must be what the comment path requires; below read access,
/// the repository is "not found".
async fn require_write(
    state: &ApiState,
    viewer: &Viewer,
    owner: &str,
    name: &str,
) -> Result<(), ApiError> {
    let permission = viewer.permission(&state.auth, owner, name).await?;
    let required = state.intake.required_permission();
    if permission < Permission::Read {
        return Err(ApiError::not_found("repository"));
    }
    if permission < required {
        return Err(ApiError::forbidden(format!(
            "your permission on {owner}/{name} is {}; this needs {}",
            permission_name(permission),
            permission_name(required)
        )));
    }
    Ok(())
}

fn permission_name(permission: Permission) -> &'static str {
    match permission {
        Permission::None => "none",
        Permission::Read => "read",
        Permission::Write => "write",
        Permission::Admin => "admin",
    }
}

fn summary(state: &ApiState, task: &TaskRecord) -> TaskSummary {
    let duration_secs = task.started_at.map(|start| {
        let end = task.finished_at.unwrap_or_else(Utc::now);
        (end - start).num_milliseconds().max(0) as f64 / 1000.0
    });
    TaskSummary {
        id: task.id.get(),
        repository: task.repository.clone(),
        state: task.state.to_string(),
        phase: task.phase.to_string(),
        progress: task.progress,
        summary: task.summary.clone(),
        creator: task.creator_login.clone(),
        trigger: task.trigger.clone(),
        template: task.template.clone(),
        attempt: task.attempt,
        retry_of: task.retry_of.map(TaskId::get),
        created_at: task.created_at,
        started_at: task.started_at,
        finished_at: task.finished_at,
        duration_secs,
        provider: task.agent_provider.clone(),
        cost_usd: task.agent_cost_microusd.map(dollars),
        pr_url: task.pr_url.clone(),
        pr_state: task.pr_state.map(|s| s.as_str().to_owned()),
        error: task.error.clone(),
        url: page_url(&state.public_url, task.id),
    }
}

fn dollars(microusd: i64) -> f64 {
    microusd as f64 / 1_000_000.0
}

fn usage(task: &TaskRecord, rounds: Vec<AgentRoundRecord>) -> Option<UsageView> {
    let provider = task.agent_provider.clone()?;
    Some(UsageView {
        provider,
        model: rounds.last().and_then(|r| r.model.clone()),
        rounds: task.agent_rounds,
        input_tokens: task.agent_input_tokens,
        output_tokens: task.agent_output_tokens,
        cost_usd: task.agent_cost_microusd.map(dollars),
        per_round: rounds
            .into_iter()
            .map(|r| AgentRoundView {
                round: r.round,
                provider: r.provider,
                model: r.model,
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cost_usd: r.cost_microusd.map(dollars),
                reported_at: r.reported_at,
            })
            .collect(),
    })
}

async fn detail(state: &ApiState, task: TaskRecord) -> Result<TaskDetail, ApiError> {
    // Independent reads, each on its own connection: the answer waits for the slowest,
    // not for their sum.
    let (details, rounds, attempts, events) = tokio::try_join!(
        state.store.task_details(&task, LOG_TAIL_LINES),
        state.store.agent_rounds(task.id),
        state.store.attempts(task.id),
        state.store.task_events(task.id),
    )?;
    Ok(TaskDetail {
        task: summary(state, &task),
        instructions: task.instructions.clone(),
        parameters: task.params.clone(),
        template_source: task.template_source.map(|s| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        }),
        timeout_secs: task.timeout_secs,
        issue_number: task.issue_number,
        branch: task.branch.clone(),
        commit_sha: task.commit_sha.clone(),
        pr_number: task.pr_number,
        changed: task.changed,
        changed_files: task.changed_files.clone(),
        failing_command: task.failing_command.clone(),
        usage: usage(&task, rounds),
        queue_position: details.queue_position,
        attempts: attempts
            .into_iter()
            .map(|a| AttemptView {
                id: a.id.get(),
                attempt: a.attempt,
                state: a.state.to_string(),
            })
            .collect(),
        validations: details
            .validations
            .into_iter()
            .map(|v| ValidationView {
                command: v.command,
                exit_code: v.exit_code,
                duration_ms: v.duration_ms,
                output_tail: v.output_tail,
            })
            .collect(),
        events: events
            .into_iter()
            .map(|e| EventView {
                at: e.at,
                actor: e.actor,
                action: e.action,
                from_state: e.from_state,
                to_state: e.to_state,
            })
            .collect(),
        log_tail: details.log_tail,
        log_lines: task.log_lines,
    })
}

/// Makes a task in `owner/repo`. `Ok((true, _))` when it is new; `(false, _)` when this
/// idempotency key already made it.
pub async fn create(
    state: &ApiState,
    viewer: &Viewer,
    owner: &str,
    repo: &str,
    body: CreateTask,
    idempotency_key: Option<&str>,
) -> Result<(bool, TaskDetail), ApiError> {
    let requested = match (body.instructions, body.template) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "template",
                "give either instructions or a template, not both",
            ));
        }
        (Some(instructions), None) => {
            if !body.parameters.is_empty() {
                return Err(ApiError::invalid(
                    "parameters",
                    "parameters go with a template, not with instructions",
                ));
            }
            if instructions.trim().is_empty() {
                return Err(ApiError::invalid("instructions", "instructions are empty"));
            }
            Requested::Instructions(instructions)
        }
        (None, Some(name)) => Requested::Template {
            name,
            parameters: body
                .parameters
                .into_iter()
                .map(|(k, v)| (k, v.into_text()))
                .collect(),
        },
        (None, None) => {
            return Err(ApiError::invalid(
                "instructions",
                "give instructions, or a template and its parameters",
            ));
        }
    };
    require_write(state, viewer, owner, repo).await?;
    let (installation_id, repository) = state.intake.installed_repository(owner, repo).await?;
    // A client's key makes a retried request find its first task; without one, every
    // request is new.
    let key = match idempotency_key {
        Some(key) => format!("api:{}:{key}", viewer.user_id),
        None => format!("api:{}", uuid::Uuid::new_v4()),
    };
    let creator = Actor {
        id: viewer.user_id,
        login: viewer.login.clone(),
    };
    let created = state
        .intake
        .request(installation_id, &repository, &creator, requested, key)
        .await?;
    match created {
        CreatedTask::Created(task) => Ok((true, detail(state, task).await?)),
        CreatedTask::Duplicate(task) => Ok((false, detail(state, task).await?)),
        CreatedTask::CreatorBusy { .. } => Err(ApiError::internal("busy after the intake")),
    }
}

pub async fn list(
    state: &ApiState,
    viewer: &Viewer,
    query: ListQuery,
) -> Result<TaskPage, ApiError> {
    let task_state = query
        .state
        .as_deref()
        .map(|s| {
            s.parse::<TaskState>()
                .map_err(|_| ApiError::invalid("state", format!("{s:?} is not a task state")))
        })
        .transpose()?;
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .map(TaskId::new)
                .map_err(|_| ApiError::invalid("cursor", "not a cursor from a previous page"))
        })
        .transpose()?;
    // Only repositories the viewer can read (all of them without sign-in).
    let readable = viewer
        .readable_repositories(&state.auth)
        .await?
        .map(|ids| ids.as_ref().clone());
    let filter = TaskFilter {
        readable,
        repository: query.repo,
        states: task_state.into_iter().collect(),
        creator: query.creator,
        template: query.template,
        since: query.since,
        until: query.until,
        q: query.q,
    };
    let page = list_stored(&state.store, &filter, cursor, query.limit.unwrap_or(50)).await?;
    Ok(TaskPage {
        tasks: page.tasks.iter().map(|t| summary(state, t)).collect(),
        next_cursor: page.next_cursor.map(|id| id.to_string()),
        total: page.total,
        total_exact: page.total_exact,
    })
}

pub async fn get(state: &ApiState, viewer: &Viewer, id: i64) -> Result<TaskDetail, ApiError> {
    let task = readable(state, viewer, id).await?;
    detail(state, task).await
}

pub async fn logs(
    state: &ApiState,
    viewer: &Viewer,
    id: i64,
    query: &LogQuery,
) -> Result<LogView, ApiError> {
    let filter = query.filter()?;
    let task = readable(state, viewer, id).await?;
    let lines = state
        .store
        .log_lines(task.id, &filter, MAX_LOG_PAGE)
        .await?;
    Ok(LogView {
        task_id: task.id.get(),
        state: task.state.to_string(),
        lines: lines
            .into_iter()
            .map(|l| LogLineView {
                seq: l.seq,
                at: l.at,
                level: l.level.as_str().to_owned(),
                line: l.line,
            })
            .collect(),
        total_lines: task.log_lines,
    })
}

/// A new attempt; `(true, _)` when made now, `(false, _)` when this task was retried
/// already (that attempt).
pub async fn retry(
    state: &ApiState,
    viewer: &Viewer,
    id: i64,
) -> Result<(bool, TaskDetail), ApiError> {
    let task = readable(state, viewer, id).await?;
    let (owner, name) = split_repo(&task.repository);
    require_write(state, viewer, owner, name).await?;
    let by = Actor {
        id: viewer.user_id,
        login: viewer.login.clone(),
    };
    match state.intake.retry_as(&task, &by).await? {
        CreatedTask::Created(task) => Ok((true, detail(state, task).await?)),
        CreatedTask::Duplicate(task) => Ok((false, detail(state, task).await?)),
        CreatedTask::CreatorBusy { .. } => Err(ApiError::internal("busy after the intake")),
    }
}

pub async fn cancel(state: &ApiState, viewer: &Viewer, id: i64) -> Result<TaskDetail, ApiError> {
    let task = readable(state, viewer, id).await?;
    let (owner, name) = split_repo(&task.repository);
    require_write(state, viewer, owner, name).await?;
    let by = Actor {
        id: viewer.user_id,
        login: viewer.login.clone(),
    };
    let task = state.intake.cancel_as(&task, &by).await?;
    detail(state, task).await
}

/// A way tasks make their change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProviderView {
    pub name: String,
    pub description: String,
    /// Whether this server can run it (the coding agent needs BG_AGENT_AGENT_COMMAND).
    pub available: bool,
}

/// The coding agent and the deterministic recipe, and whether each can run here.
pub fn providers(state: &ApiState) -> Vec<ProviderView> {
    vec![
        ProviderView {
            name: bg_agent_core::task::Recipe::Agent.as_str().to_owned(),
            description: "The configured coding agent: free-text instructions and agent templates".to_owned(),
            available: state.agent_available,
        },
        ProviderView {
            name: bg_agent_core::task::Recipe::NpmUpgrade.as_str().to_owned(),
            description: "Sets an npm dependency's version in package.json and the lockfile (the `upgrade` template)".to_owned(),
            available: true,
        },
    ]
}

// ---- Handlers ----

/// Make a task.
///
/// The same request as a `/bg-agent` comment: free-text `instructions`, or a `template`
/// with `parameters`. The task reports on GitHub with its check run (there is no issue
/// to comment on). An `Idempotency-Key` header makes a repeated request find the task
/// the first one made (200) instead of making another.
#[utoipa::path(
    post,
    path = "/api/v1/repos/{owner}/{repo}/tasks",
    tag = "tasks",
    params(
        ("owner" = String, Path, description = "The repository's owner"),
        ("repo" = String, Path, description = "The repository's name"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a repeated request find the first one's task"),
    ),
    request_body = CreateTask,
    responses(
        (status = 201, description = "The task, queued", body = TaskDetail),
        (status = 200, description = "The task this idempotency key made before", body = TaskDetail),
        (status = 400, description = "A field is missing or wrong (`field` names it)", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not enough permission on the repository", body = super::ErrorBody),
        (status = 404, description = "No such repository, or the App is not installed there", body = super::ErrorBody),
        (status = 409, description = "You already have an active task", body = super::ErrorBody),
        (status = 413, description = "The body is too large", body = super::ErrorBody),
    ),
)]
pub async fn create_task(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath((owner, repo)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateTask>,
) -> Result<Response, ApiError> {
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    ApiError::invalid("Idempotency-Key", "must be 1 to 200 visible characters")
                })
        })
        .transpose()?;
    let (fresh, task) = create(&state, &viewer, &owner, &repo, body, key).await?;
    let status = if fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(task)).into_response())
}

/// List tasks.
///
/// Tasks of repositories you can read, newest first, filtered; `next_cursor` pages on.
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of tasks", body = TaskPage),
        (status = 400, description = "A filter is wrong (`field` names it)", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
    ),
)]
pub async fn list_tasks(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TaskPage>, ApiError> {
    Ok(Json(list(&state, &viewer, query).await?))
}

/// A task in full.
///
/// State, phase and progress, timings, template and parameters, instructions, the
/// attempts, the pull request and its state, the coding agent's usage and cost (per
/// round), the error, validation results, audit events and the log's last lines.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's number")),
    responses(
        (status = 200, description = "The task", body = TaskDetail),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 404, description = "No such task, or not one you can read", body = super::ErrorBody),
    ),
)]
pub async fn get_task(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<TaskDetail>, ApiError> {
    Ok(Json(get(&state, &viewer, id).await?))
}

/// A task's log.
///
/// The whole stored log as JSON; with `Accept: text/event-stream`, a live stream of
/// Server-Sent Events (`event: log`, `id:` the line's `seq`, `data:` the line) until the
/// task ends (`event: end`, `data:` its state). A reconnecting client sends
/// `Last-Event-ID` and gets the lines after it.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/logs",
    tag = "tasks",
    params(
        ("id" = i64, Path, description = "The task's number"),
        LogQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume a live stream after this line"),
    ),
    responses(
        (status = 200, description = "The log (JSON), or its live stream (`text/event-stream`)",
            content((LogView = "application/json"), (String = "text/event-stream"))),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 404, description = "No such task, or not one you can read", body = super::ErrorBody),
    ),
)]
pub async fn get_task_logs(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_stream {
        return Ok(Json(logs(&state, &viewer, id, &query).await?).into_response());
    }
    let task = readable(&state, &viewer, id).await?;
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be a line's seq"))
        })
        .transpose()?;
    let after = last_event_id.or(query.after);
    let events = crate::web::live_log::events(
        state.store.clone(),
        &state.signal,
        state.shutdown.clone(),
        task.id,
        after,
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Retry a task.
///
/// A new attempt of a failed, cancelled or timed-out task (as the check run's Retry
/// button). A task is retried at most once: asking again returns that attempt (200).
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/retry",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's number")),
    responses(
        (status = 201, description = "The new attempt", body = TaskDetail),
        (status = 200, description = "The attempt made by an earlier retry", body = TaskDetail),
        (status = 400, description = "The task has not failed, been cancelled or timed out", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not enough permission on the repository", body = super::ErrorBody),
        (status = 404, description = "No such task, or not one you can read", body = super::ErrorBody),
        (status = 409, description = "You already have an active task", body = super::ErrorBody),
    ),
)]
pub async fn retry_task(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let (fresh, task) = retry(&state, &viewer, id).await?;
    let status = if fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(task)).into_response())
}

/// Cancel a task.
///
/// A queued task is cancelled at once; a starting or running one is stopped by the
/// engine (its `state` changes shortly after).
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/cancel",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's number")),
    responses(
        (status = 200, description = "Cancelled, or being stopped", body = TaskDetail),
        (status = 400, description = "The task has already ended", body = super::ErrorBody),
        (status = 401, description = "Not signed in", body = super::ErrorBody),
        (status = 403, description = "Not enough permission on the repository", body = super::ErrorBody),
        (status = 404, description = "No such task, or not one you can read", body = super::ErrorBody),
    ),
)]
pub async fn cancel_task(
    State(state): State<ApiState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<TaskDetail>, ApiError> {
    Ok(Json(cancel(&state, &viewer, id).await?))
}
