//! A task as stored: what was asked, by whom, and how far it got.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};

use super::{Phase, Recipe, TaskState, TemplateSource};

/// A task's number (`tasks.id`). Serialized, shown and parsed as the bare number, so JSON
/// and URLs read as before.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
pub struct TaskId(i64);

impl TaskId {
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl From<i64> for TaskId {
    fn from(id: i64) -> Self {
        Self(id)
    }
}

impl From<TaskId> for i64 {
    fn from(id: TaskId) -> Self {
        id.0
    }
}

impl PartialEq<i64> for TaskId {
    fn eq(&self, other: &i64) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for TaskId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

/// One task, as the store reads it back. Plain data: the store fills it, the engine and
/// the renderers read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: TaskId,
    pub installation_id: i64,
    pub repository_id: i64,
    pub repository: String,
    pub issue_number: Option<i32>,
    pub creator_login: String,
    pub creator_id: i64,
    pub template: Option<String>,
    pub instructions: String,
    pub state: TaskState,
    pub phase: Phase,
    pub progress: i16,
    pub attempt: i32,
    pub retry_of: Option<TaskId>,
    pub timeout_secs: i32,
    pub error: Option<String>,
    pub tracking_comment_id: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub comment_id: Option<i64>,
    pub trigger: String,
    pub params: BTreeMap<String, String>,
    pub recipe: Recipe,
    pub check_run_id: Option<i64>,
    pub pr_check_run_id: Option<i64>,
    /// The default branch and its head commit, recorded with the check run.
    pub base_branch: Option<String>,
    pub head_sha: Option<String>,
    pub branch: Option<String>,
    pub commit_sha: Option<String>,
    pub pr_number: Option<i32>,
    pub pr_url: Option<String>,
    /// `Some(false)`: the run needed no change.
    pub changed: Option<bool>,
    pub changed_files: Vec<String>,
    pub failing_command: Option<String>,
    pub execution_id: Option<String>,
    pub cancel_requested_by: Option<String>,
    pub log_lines: i32,
    /// Bumped by every change GitHub should see.
    pub version: i64,
    /// One line for titles, e.g. `upgrade lodash 4.17.21`.
    pub summary: String,
    pub template_source: Option<TemplateSource>,
    pub clone_url: Option<String>,
    /// The server instance that launched it (see `Executor::sees_all_executions`).
    pub launched_by: Option<uuid::Uuid>,
    /// The coding agent that ran (its configuration name), and what it used over its
    /// rounds, as its CLI reported; the cost in millionths of a US dollar.
    pub agent_provider: Option<String>,
    pub agent_rounds: i32,
    pub agent_input_tokens: i64,
    pub agent_output_tokens: i64,
    pub agent_cost_microusd: Option<i64>,
    /// Where a failed task's unvalidated agent change was kept (no PR).
    pub wip_branch: Option<String>,
    /// What became of the pull request, as GitHub's `pull_request` events told;
    /// `None` before it is opened (and for ones opened before this was recorded).
    pub pr_state: Option<PrState>,
}

/// A task's pull request after it was opened: still open, merged, or closed unmerged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "snake_case")
)]
pub enum PrState {
    Open,
    Merged,
    Closed,
}

impl PrState {
    pub fn as_str(self) -> &'static str {
        match self {
            PrState::Open => "open",
            PrState::Merged => "merged",
            PrState::Closed => "closed",
        }
    }
}

impl fmt::Display for PrState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sample for tests of what people read, here and in the server (feature `testing`).
#[cfg(any(test, feature = "testing"))]
impl TaskRecord {
    /// Task #42 of `acme/widgets` (attempt 2, a retry of #41), an `upgrade lodash 4.17.21`
    /// asked for by `octo-lead` on issue #17, started at 2026-11-21 10:00:00 UTC, in
    /// `state`, validating at 72 %.
    pub fn sample(state: super::TaskState) -> Self {
        use std::collections::BTreeMap;

        use chrono::{DateTime, Utc};

        use super::{Phase, Recipe};

        let at = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .expect("a valid time")
            .with_timezone(&Utc);
        TaskRecord {
            id: TaskId::new(42),
            installation_id: 1,
            repository_id: 2,
            repository: "acme/widgets".into(),
            issue_number: Some(17),
            creator_login: "octo-lead".into(),
            creator_id: 3,
            template: Some("upgrade".into()),
            instructions: "Upgrade lodash to 4.17.21.".into(),
            state,
            phase: Phase::Validating,
            progress: 72,
            attempt: 2,
            retry_of: Some(TaskId::new(41)),
            timeout_secs: 3600,
            error: None,
            tracking_comment_id: None,
            created_at: at,
            started_at: Some(at),
            finished_at: None,
            comment_id: Some(9),
            trigger: "comment".into(),
            params: BTreeMap::from([
                ("package".into(), "lodash".into()),
                ("version".into(), "4.17.21".into()),
            ]),
            recipe: Recipe::NpmUpgrade,
            check_run_id: None,
            pr_check_run_id: None,
            base_branch: None,
            head_sha: None,
            branch: None,
            commit_sha: None,
            pr_number: None,
            pr_url: None,
            changed: None,
            changed_files: vec![],
            failing_command: None,
            execution_id: None,
            cancel_requested_by: None,
            log_lines: 0,
            version: 1,
            summary: "upgrade lodash 4.17.21".into(),
            template_source: None,
            clone_url: None,
            launched_by: None,
            agent_provider: None,
            agent_rounds: 0,
            agent_input_tokens: 0,
            agent_output_tokens: 0,
            agent_cost_microusd: None,
            wip_branch: None,
            pr_state: None,
        }
    }
}
