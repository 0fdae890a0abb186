//! Tasks asked for without a webhook (the JSON API and its MCP tools): the same
//! requests, rows, limits, retries and cancels as a comment or a check-run button. There
//! is no issue to answer on, so nothing is posted there: problems are returned to the
//! caller, and the reporter shows the task on GitHub with its check run as for any other.

use std::collections::BTreeMap;

use bg_agent_core::task::{ParamError, Permission, TaskState, Template};
use bg_agent_github::{GitHubError, RepoName};

use super::{
    Place, Requester, RetryOutcome, TaskIntake, TaskRequest, Templates, cancel_task, retry_task,
};
use crate::store::StoreError;
use crate::store::runs::CancelRequested;
use crate::store::tasks::{CreatedTask, TaskRecord, TaskTrigger};
use crate::webhook::trigger::{Actor, RepoRef};

/// What a caller asks a task to do.
#[derive(Debug, Clone)]
pub enum Requested {
    /// Free text for the coding agent, as `/bg-agent run ...`.
    Instructions(String),
    /// A template and its parameters by name, as `/bg-agent <template> key=value ...`.
    Template {
        name: String,
        parameters: BTreeMap<String, String>,
    },
}

/// Why a request made no task (or no retry, or no cancel).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the App is not installed on this repository")]
    NotInstalled,
    #[error("instructions are empty")]
    EmptyInstructions,
    #[error("no template named {name:?} here (available: {})", available.join(", "))]
    UnknownTemplate {
        name: String,
        available: Vec<String>,
    },
    #[error("{error}")]
    BadParameter { name: Option<String>, error: String },
    #[error("the repository's configuration is unusable: {0}")]
    RepoConfig(String),
    #[error("concurrent task limit reached: task {active_task} is still active")]
    Busy {
        active_task: crate::store::tasks::TaskId,
    },
    #[error("task {task} is {state}: only failed, cancelled or timed-out tasks can be retried")]
    NotRetryable {
        task: crate::store::tasks::TaskId,
        state: TaskState,
    },
    #[error("task {task} has already ended ({state})")]
    AlreadyEnded {
        task: crate::store::tasks::TaskId,
        state: TaskState,
    },
    #[error("GitHub: {0}")]
    GitHub(#[from] GitHubError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TaskIntake {
    /// The least permission on a repository that may start, retry or cancel tasks.
    pub fn required_permission(&self) -> Permission {
        self.policy.required_permission
    }

    /// `owner/name` as the App sees it through its installation there.
    pub async fn installed_repository(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<(i64, RepoRef), RequestError> {
        let repo = RepoName::new(owner, name);
        let installation_id = self
            .github
            .repository_installation(&repo)
            .await?
            .ok_or(RequestError::NotInstalled)?;
        let repository = match self
            .github
            .installation(installation_id)
            .repository(&repo)
            .await
        {
            Ok(repository) => repository,
            Err(GitHubError::NotFound { .. }) => return Err(RequestError::NotInstalled),
            Err(e) => return Err(e.into()),
        };
        let repository = RepoRef {
            id: i64::try_from(repository.id).map_err(|_| RequestError::NotInstalled)?,
            owner: repository.owner,
            name: repository.name,
            full_name: repository.full_name,
            default_branch: Some(repository.default_branch),
            clone_url: None,
            private: repository.private,
        };
        let installation_id =
            i64::try_from(installation_id).map_err(|_| RequestError::NotInstalled)?;
        Ok((installation_id, repository))
    }

    /// Makes a task in `repository` for `creator`, once per `key`: the template resolved
    /// and its parameters checked exactly as for a comment, the same row, the same limits.
    pub async fn request(
        &self,
        installation_id: i64,
        repository: &RepoRef,
        creator: &Actor,
        requested: Requested,
        key: String,
    ) -> Result<CreatedTask, RequestError> {
        let origin = (key, TaskTrigger::Api, None);
        let request = match requested {
            Requested::Instructions(instructions) => {
                if instructions.trim().is_empty() {
                    return Err(RequestError::EmptyInstructions);
                }
                TaskRequest::free_text(origin, instructions, self.policy.default_timeout_secs)
            }
            Requested::Template { name, parameters } => {
                let repo = RepoName::new(&repository.owner, &repository.name);
                let templates = self
                    .templates_in(installation_id, &repo, repository.default_branch.as_deref())
                    .await?;
                let (template, params) = bind(templates, &name, &parameters)?;
                let instructions = template.render(&params);
                TaskRequest::templated(
                    origin,
                    &template,
                    params,
                    instructions,
                    self.policy.default_timeout_secs,
                )
            }
        };
        let place = Place {
            installation_id,
            repository,
            issue_number: None,
            delivery_guid: None,
            creator,
        };
        let new = self.new_task(place, request);
        match self.store_task(&new).await? {
            CreatedTask::CreatorBusy { active_task } => Err(RequestError::Busy { active_task }),
            created => Ok(created),
        }
    }

    /// A new attempt of `task` asked for by `by` (the check run's Retry, through the API):
    /// at most one per task, so asking twice finds the first (`Duplicate`).
    pub async fn retry_as(
        &self,
        task: &TaskRecord,
        by: &Actor,
    ) -> Result<CreatedTask, RequestError> {
        let by = Requester {
            login: &by.login,
            user_id: by.id,
        };
        match retry_task(&self.store, &self.signal, task, by).await? {
            RetryOutcome::NotRetryable => Err(RequestError::NotRetryable {
                task: task.id,
                state: task.state,
            }),
            RetryOutcome::Created(task) => Ok(CreatedTask::Created(task)),
            RetryOutcome::AlreadyRetried(task) => Ok(CreatedTask::Duplicate(task)),
            RetryOutcome::CreatorBusy { active_task } => Err(RequestError::Busy { active_task }),
        }
    }

    /// Cancels `task` for `by`: at once when queued, by the supervisor when executing.
    pub async fn cancel_as(
        &self,
        task: &TaskRecord,
        by: &Actor,
    ) -> Result<TaskRecord, RequestError> {
        let by = Requester {
            login: &by.login,
            user_id: by.id,
        };
        match cancel_task(&self.store, &self.signal, task, by).await? {
            Some(CancelRequested::Cancelled(task) | CancelRequested::Stopping(task)) => Ok(*task),
            Some(CancelRequested::AlreadyEnded(task)) => Err(RequestError::AlreadyEnded {
                task: task.id,
                state: task.state,
            }),
            // Gone, or its state kept changing under us: as good as ended.
            None => Err(RequestError::AlreadyEnded {
                task: task.id,
                state: task.state,
            }),
        }
    }
}

/// The template named and the parameters bound to it, checked against their types and
/// patterns as a command's arguments are.
fn bind(
    templates: Templates,
    name: &str,
    parameters: &BTreeMap<String, String>,
) -> Result<(Template, BTreeMap<String, String>), RequestError> {
    let templates = templates.map_err(RequestError::RepoConfig)?;
    let Some(template) = templates.iter().find(|t| t.name == name) else {
        return Err(RequestError::UnknownTemplate {
            name: name.to_owned(),
            available: templates.iter().map(|t| t.name.clone()).collect(),
        });
    };
    let params = template.bind(&[], parameters).map_err(|e| {
        let name = match &e {
            ParamError::Missing { name }
            | ParamError::Invalid { name, .. }
            | ParamError::Unknown { name, .. }
            | ParamError::Repeated { name } => Some(name.clone()),
            ParamError::TooMany { .. } => None,
        };
        RequestError::BadParameter {
            name,
            error: e.to_string(),
        }
    })?;
    Ok((template.clone(), params))
}
