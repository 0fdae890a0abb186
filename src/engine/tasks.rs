//! Triggers → tasks: the [`TriggerHandler`] that checks who asked, resolves the template,
//! creates the task (once per trigger) and acknowledges it on GitHub (👀 on the command,
//! one tracking comment). Refusals get a short comment and are audited.
//!
//! Still to come with the executor: retry and cancel (commands and check-run buttons);
//! those triggers are logged and left alone here.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::command::{Command, help_markdown};
use crate::github::{GitHubApp, GitHubError, InstallationClient, Permission, Reaction, RepoName};
use crate::store::tasks::{Actor, CreatedTask, NewTask, TaskRecord, TaskTrigger};
use crate::store::{Store, StoreError};
use crate::task::template::unknown_template_reply;
use crate::task::{RepoConfig, Template, TemplateSource, builtin_templates};
use crate::webhook::Trigger;
use crate::webhook::trigger::{CommandTrigger, LabelTrigger, ParsedCommand, RepoRef};

use super::{DeliveryMeta, HandlerError, TriggerHandler};

/// How long a looked-up permission is trusted: short, so a revoked collaborator is
/// refused within a minute, but a burst of commands costs one call.
const PERMISSION_TTL: Duration = Duration::from_secs(60);
const STATUS_LIMIT: i64 = 10;

#[derive(Debug, Clone, Copy)]
pub struct TaskPolicy {
    /// The least permission on the repository that may start tasks.
    pub required_permission: Permission,
    pub default_timeout_secs: u32,
}

impl From<crate::config::TaskSettings> for TaskPolicy {
    fn from(settings: crate::config::TaskSettings) -> Self {
        Self {
            required_permission: settings.required_permission,
            default_timeout_secs: settings.default_timeout_secs,
        }
    }
}

pub struct TaskIntake {
    store: Store,
    github: GitHubApp,
    policy: TaskPolicy,
    permissions: Mutex<HashMap<(i64, String), (Permission, Instant)>>,
}

/// Where a request came from and where to answer it.
struct Origin<'a> {
    meta: &'a DeliveryMeta,
    installation_id: i64,
    repository: &'a RepoRef,
    issue_number: i64,
    sender: &'a crate::webhook::trigger::Actor,
}

impl Origin<'_> {
    fn repo(&self) -> RepoName {
        RepoName::new(&self.repository.owner, &self.repository.name)
    }

    fn actor(&self) -> Actor<'_> {
        Actor {
            name: &self.sender.login,
            delivery_guid: Some(&self.meta.guid),
        }
    }
}

fn github_error(e: GitHubError) -> HandlerError {
    if e.is_transient() {
        HandlerError::Transient(e.to_string())
    } else {
        HandlerError::Permanent(e.to_string())
    }
}

fn store_error(e: StoreError) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

fn number(n: i64) -> Result<u64, HandlerError> {
    u64::try_from(n).map_err(|_| HandlerError::Permanent(format!("invalid number {n}")))
}

impl TaskIntake {
    pub fn new(store: Store, github: GitHubApp, policy: TaskPolicy) -> Self {
        Self {
            store,
            github,
            policy,
            permissions: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, origin: &Origin<'_>) -> Result<InstallationClient, HandlerError> {
        Ok(self.github.installation(number(origin.installation_id)?))
    }

    async fn reply(&self, origin: &Origin<'_>, body: &str) -> Result<(), HandlerError> {
        self.client(origin)?
            .create_issue_comment(&origin.repo(), number(origin.issue_number)?, body)
            .await
            .map_err(github_error)?;
        Ok(())
    }

    async fn permission(&self, origin: &Origin<'_>) -> Result<Permission, HandlerError> {
        let key = (origin.repository.id, origin.sender.login.clone());
        let cached = self
            .permissions
            .lock()
            .ok()
            .and_then(|cache| cache.get(&key).copied());
        if let Some((permission, at)) = cached
            && at.elapsed() < PERMISSION_TTL
        {
            return Ok(permission);
        }
        let permission = match self
            .client(origin)?
            .collaborator_permission(&origin.repo(), &origin.sender.login)
            .await
        {
            Ok(permission) => permission,
            // Not a user GitHub knows on this repository: no permission.
            Err(GitHubError::NotFound { .. }) => Permission::None,
            Err(e) => return Err(github_error(e)),
        };
        if let Ok(mut cache) = self.permissions.lock() {
            cache.retain(|_, (_, at)| at.elapsed() < PERMISSION_TTL);
            cache.insert(key, (permission, Instant::now()));
        }
        Ok(permission)
    }

    /// `Ok(true)` if the sender may act; otherwise the refusal is posted and audited.
    async fn authorise(&self, origin: &Origin<'_>) -> Result<bool, HandlerError> {
        let permission = self.permission(origin).await?;
        if permission >= self.policy.required_permission {
            return Ok(true);
        }
        tracing::info!(user = %origin.sender.login, ?permission, "refused: not enough permission");
        self.store
            .record_refusal(
                origin.repository.id,
                origin.actor(),
                &format!(
                    "permission {permission:?} is below {:?}",
                    self.policy.required_permission
                ),
            )
            .await
            .map_err(store_error)?;
        self.reply(
            origin,
            &format!(
                "**bg-agent:** @{} only people with {} access to this repository can ask me for tasks.",
                origin.sender.login,
                match self.policy.required_permission {
                    Permission::Admin => "admin",
                    Permission::Write => "write",
                    Permission::Read => "read",
                    Permission::None => "some",
                }
            ),
        )
        .await?;
        Ok(false)
    }

    /// Templates here, by precedence: the repository's, then the database's, then built-in.
    async fn templates(
        &self,
        origin: &Origin<'_>,
    ) -> Result<Result<Vec<Template>, String>, HandlerError> {
        let client = self.client(origin)?;
        let repo = origin.repo();
        let default_branch = match &origin.repository.default_branch {
            Some(branch) => branch.clone(),
            None => {
                client
                    .repository(&repo)
                    .await
                    .map_err(github_error)?
                    .default_branch
            }
        };
        let file = client
            .file_contents(&repo, crate::task::repo_config::PATH, Some(&default_branch))
            .await
            .map_err(github_error)?;
        let repo_config = match file {
            None => RepoConfig::default(),
            Some(file) => match std::str::from_utf8(&file.content)
                .map_err(|_| format!("{} is not UTF-8", crate::task::repo_config::PATH))
                .and_then(|text| RepoConfig::parse(text).map_err(|e| e.to_string()))
            {
                Ok(config) => config,
                Err(message) => return Ok(Err(message)),
            },
        };
        let mut templates = repo_config.templates;
        for template in self.store.database_templates().await.map_err(store_error)? {
            if !templates.iter().any(|t| t.name == template.name) {
                templates.push(template);
            }
        }
        for template in builtin_templates() {
            if !templates.iter().any(|t| t.name == template.name) {
                templates.push(template);
            }
        }
        Ok(Ok(templates))
    }

    async fn command(
        &self,
        origin: &Origin<'_>,
        trigger: &CommandTrigger,
    ) -> Result<(), HandlerError> {
        let command = match &trigger.command {
            ParsedCommand::Invalid { reply, .. } => return self.reply(origin, reply).await,
            ParsedCommand::Valid { command } => command,
        };
        let key = format!("comment:{}", trigger.comment_id);
        match command {
            Command::Help => self.reply(origin, &help_markdown()).await,
            Command::Status => self.status(origin).await,
            Command::Run { instructions } => {
                let request = TaskRequest::free_text(
                    (key, TaskTrigger::Comment, Some(trigger.comment_id)),
                    instructions.clone(),
                    self.policy.default_timeout_secs,
                );
                self.create(origin, request).await
            }
            Command::Template {
                name,
                positional,
                named,
            } => {
                let Some((template, params)) =
                    self.resolve(origin, name, positional, named).await?
                else {
                    return Ok(());
                };
                let instructions = template.render(&params);
                let request = TaskRequest::templated(
                    (key, TaskTrigger::Comment, Some(trigger.comment_id)),
                    &template,
                    params,
                    instructions,
                    self.policy.default_timeout_secs,
                );
                self.create(origin, request).await
            }
            Command::Retry { .. } | Command::Cancel { .. } => {
                tracing::info!(command = ?command.kind(), "retry and cancel arrive with the executor");
                Ok(())
            }
        }
    }

    async fn label(&self, origin: &Origin<'_>, trigger: &LabelTrigger) -> Result<(), HandlerError> {
        let key = format!("label:{}", origin.meta.guid);
        let issue_text = format!("{}\n\n{}", trigger.issue_title, trigger.issue_body);
        let request = match &trigger.template {
            None => TaskRequest::free_text(
                (key, TaskTrigger::Label, None),
                issue_text.trim().to_owned(),
                self.policy.default_timeout_secs,
            ),
            Some(name) => {
                // A label carries no arguments: only templates whose parameters all have
                // defaults (or are optional) can run from one.
                let Some((template, params)) =
                    self.resolve(origin, name, &[], &BTreeMap::new()).await?
                else {
                    return Ok(());
                };
                let mut instructions = template.render(&params);
                let _ = write!(
                    instructions,
                    "\n\nFrom issue #{}:\n{}",
                    trigger.issue_number,
                    issue_text.trim()
                );
                TaskRequest::templated(
                    (key, TaskTrigger::Label, None),
                    &template,
                    params,
                    instructions,
                    self.policy.default_timeout_secs,
                )
            }
        };
        self.create(origin, request).await
    }

    /// Finds the template and binds the arguments; `None` once the problem has been
    /// answered (bad configuration, unknown template, bad arguments).
    async fn resolve(
        &self,
        origin: &Origin<'_>,
        name: &str,
        positional: &[String],
        named: &BTreeMap<String, String>,
    ) -> Result<Option<(Template, BTreeMap<String, String>)>, HandlerError> {
        let templates = match self.templates(origin).await? {
            Ok(templates) => templates,
            Err(message) => {
                self.refuse(origin, &format!("**bg-agent:** {message}"))
                    .await?;
                return Ok(None);
            }
        };
        let Some(template) = templates.iter().find(|t| t.name == name) else {
            let names: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
            self.refuse(origin, &unknown_template_reply(name, &names))
                .await?;
            return Ok(None);
        };
        match template.bind(positional, named) {
            Ok(params) => Ok(Some((template.clone(), params))),
            Err(e) => {
                self.refuse(origin, &template.render_param_error(&e))
                    .await?;
                Ok(None)
            }
        }
    }

    async fn refuse(&self, origin: &Origin<'_>, reply: &str) -> Result<(), HandlerError> {
        let reason: String = reply
            .trim_start_matches("**bg-agent:** ")
            .chars()
            .take(200)
            .collect();
        self.store
            .record_refusal(origin.repository.id, origin.actor(), &reason)
            .await
            .map_err(store_error)?;
        self.reply(origin, reply).await
    }

    async fn status(&self, origin: &Origin<'_>) -> Result<(), HandlerError> {
        let tasks = self
            .store
            .tasks_of(origin.sender.id, origin.repository.id, STATUS_LIMIT)
            .await
            .map_err(store_error)?;
        let mut reply = format!(
            "**bg-agent:** @{}'s tasks in `{}`",
            origin.sender.login, origin.repository.full_name
        );
        if tasks.is_empty() {
            reply.push_str(": none yet. Try `/bg-agent help`.");
        } else {
            reply.push_str(
                " (newest first):\n\n| task | what | state | since |\n| --- | --- | --- | --- |",
            );
            for task in &tasks {
                let _ = write!(
                    reply,
                    "\n| #{} | {} | {} | {} |",
                    task.id,
                    task.template.as_deref().unwrap_or("run"),
                    task.state,
                    task.created_at.format("%Y-%m-%d %H:%M UTC")
                );
            }
        }
        self.reply(origin, &reply).await
    }

    async fn create(&self, origin: &Origin<'_>, request: TaskRequest) -> Result<(), HandlerError> {
        let new = NewTask {
            installation_id: origin.installation_id,
            repository_id: origin.repository.id,
            repository: origin.repository.full_name.clone(),
            issue_number: i32::try_from(origin.issue_number).ok(),
            comment_id: request.comment_id,
            delivery_guid: Some(origin.meta.guid.clone()),
            trigger: request.trigger,
            idempotency_key: request.key,
            creator_login: origin.sender.login.clone(),
            creator_id: origin.sender.id,
            template: request.template,
            params: request.params,
            recipe: request.recipe,
            instructions: request.instructions,
            timeout_secs: request.timeout_secs,
            retry_of: None,
        };
        let task = match self.store.create_task(&new).await.map_err(store_error)? {
            CreatedTask::Created(task) => {
                tracing::info!(task = task.id, "task created");
                task
            }
            // A redelivery, or this delivery again after a failed acknowledgement: finish
            // acknowledging, nothing more.
            CreatedTask::Duplicate(task) => task,
            CreatedTask::CreatorBusy { active_task } => {
                return self
                    .refuse(
                        origin,
                        &format!(
                            "**bg-agent:** @{} you already have an active task, #{active_task}; one at a time. \
                             Use `/bg-agent status` to see it.",
                            origin.sender.login
                        ),
                    )
                    .await;
            }
        };
        self.acknowledge(origin, &task, request.comment_id).await
    }

    /// 👀 on the command and the tracking comment, each at most once per task.
    async fn acknowledge(
        &self,
        origin: &Origin<'_>,
        task: &TaskRecord,
        comment_id: Option<i64>,
    ) -> Result<(), HandlerError> {
        let client = self.client(origin)?;
        let repo = origin.repo();
        if let Some(comment_id) = comment_id {
            // Reactions are idempotent on GitHub: a second one is answered 200.
            client
                .add_comment_reaction(&repo, number(comment_id)?, Reaction::Eyes)
                .await
                .map_err(github_error)?;
        }
        if task.tracking_comment_id.is_none() {
            let position = self
                .store
                .queue_position(task.id)
                .await
                .map_err(store_error)?;
            let body = tracking_comment(task, position);
            let comment = client
                .create_issue_comment(&repo, number(origin.issue_number)?, &body)
                .await
                .map_err(github_error)?;
            let id = i64::try_from(comment.id)
                .map_err(|_| HandlerError::Permanent("comment id out of range".into()))?;
            self.store
                .set_tracking_comment(task.id, id)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }
}

struct TaskRequest {
    key: String,
    trigger: TaskTrigger,
    comment_id: Option<i64>,
    template: Option<(String, TemplateSource)>,
    params: BTreeMap<String, String>,
    recipe: crate::task::Recipe,
    instructions: String,
    timeout_secs: u32,
}

/// (idempotency key, trigger, command comment)
type RequestOrigin = (String, TaskTrigger, Option<i64>);

impl TaskRequest {
    /// `/bg-agent run ...` or a plain `bg-agent` label: a coding agent gets the text.
    fn free_text(origin: RequestOrigin, instructions: String, default_timeout_secs: u32) -> Self {
        let (key, trigger, comment_id) = origin;
        Self {
            key,
            trigger,
            comment_id,
            template: None,
            params: BTreeMap::new(),
            recipe: crate::task::Recipe::Agent,
            instructions,
            timeout_secs: default_timeout_secs,
        }
    }

    fn templated(
        origin: RequestOrigin,
        template: &Template,
        params: BTreeMap<String, String>,
        instructions: String,
        default_timeout_secs: u32,
    ) -> Self {
        let (key, trigger, comment_id) = origin;
        Self {
            key,
            trigger,
            comment_id,
            template: Some((template.name.clone(), template.source)),
            params,
            recipe: template.recipe,
            instructions,
            timeout_secs: crate::task::effective_timeout_secs(
                template.timeout_secs,
                default_timeout_secs,
            ),
        }
    }
}

/// The tracking comment's first version; the reporter edits it as the task moves.
fn tracking_comment(task: &TaskRecord, queue_position: Option<i64>) -> String {
    let what = task.template.as_deref().unwrap_or("run");
    let mut body = format!(
        "**bg-agent** task #{} (`{what}`) — **{}**",
        task.id, task.state
    );
    if let Some(position) = queue_position {
        let _ = write!(body, ", position {position} in this repository's queue");
    }
    let _ = write!(
        body,
        "\n\nRequested by @{}. Attempt {}. I will update this comment as it runs.",
        task.creator_login, task.attempt
    );
    body
}

impl TriggerHandler for TaskIntake {
    async fn handle(&self, meta: &DeliveryMeta, trigger: &Trigger) -> Result<(), HandlerError> {
        let origin = match trigger {
            Trigger::Command(c) => Origin {
                meta,
                installation_id: c.installation_id,
                repository: &c.repository,
                issue_number: c.issue_number,
                sender: &c.sender,
            },
            Trigger::Label(l) => Origin {
                meta,
                installation_id: l.installation_id,
                repository: &l.repository,
                issue_number: l.issue_number,
                sender: &l.sender,
            },
            Trigger::CheckRunRerequested(_) | Trigger::CheckRunAction { .. } => {
                tracing::info!(
                    kind = trigger.kind(),
                    "check-run retry/cancel arrive with the executor"
                );
                return Ok(());
            }
            Trigger::Installation(_) | Trigger::Ping { .. } => return Ok(()),
        };
        // Everything, help included, is for people who may use the app: a drive-by
        // commenter cannot make it talk.
        if !self.authorise(&origin).await? {
            return Ok(());
        }
        match trigger {
            Trigger::Command(command) => self.command(&origin, command).await,
            Trigger::Label(label) => self.label(&origin, label).await,
            _ => Ok(()),
        }
    }
}
