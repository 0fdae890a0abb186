//! Triggers → tasks: the [`TriggerHandler`] that checks who asked, resolves the template,
//! creates the task (once per trigger) and acknowledges it on GitHub (👀 on the command,
//! one tracking comment). Refusals get a short comment and are audited.
//!
//! Retry (`/bg-agent retry`, the check run's Re-run and Retry button) makes a new
//! attempt linked to the old task; cancel drops a queued task at once and asks the
//! supervisor to stop a running one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::tasks::{AuditActor, CreatedTask, NewTask, TaskId, TaskRecord, TaskTrigger};
use crate::store::{Store, StoreError};
use crate::webhook::Trigger;
use crate::webhook::trigger::{
    Actor, CheckRunButton, CheckRunTrigger, CommandTrigger, LabelTrigger, ParsedCommand, RepoRef,
};
use bg_agent_core::command::{Command, help_markdown};
use bg_agent_core::task::template::unknown_template_reply;
use bg_agent_core::task::untrusted::{IssueText, issue_instructions};
use bg_agent_core::task::{LabelTrust, Permission};
use bg_agent_core::task::{RepoConfig, Template, TemplateSource, builtin_templates};
use bg_agent_github::{GitHubApp, GitHubError, InstallationClient, Reaction, RepoName};

use super::{DeliveryMeta, HandlerError, Signal, TriggerHandler};

mod direct;
use crate::store::runs::CancelRequested;
use bg_agent_core::task::render::{self, TaskDetails};
use bg_agent_core::task::reply;
pub use direct::{RequestError, Requested};

/// How long a looked-up permission is trusted: short, so a revoked collaborator is
/// refused within a minute, but a burst of commands costs one call.
const PERMISSION_TTL: Duration = Duration::from_secs(60);
const STATUS_LIMIT: i64 = 10;
/// A user without permission gets at most one refusal per issue this often: more
/// commands are audited, not answered, so they cannot make the app post without bound.
const REFUSAL_REPLY_EVERY: Duration = Duration::from_secs(10 * 60);
/// A delivery gets at most one reply (help, status or a refusal): the key of its claim.
const REPLY_KIND: &str = "reply";

/// Whether an App-made comment is task `id`'s tracking comment: it starts the way
/// [`render::tracking_comment`] starts. Only the App's own comments are looked at, so a
/// user cannot plant one.
fn is_tracking_comment(body: &str, id: TaskId) -> bool {
    body.starts_with(&format!("**bg-agent** task [#{id}]("))
}

#[derive(Debug, Clone, Copy)]
pub struct TaskPolicy {
    /// The least permission on the repository that may start tasks.
    pub required_permission: Permission,
    pub default_timeout_secs: u32,
    /// Whether a label also needs its issue's author to have that permission.
    pub label_trust: LabelTrust,
}

impl From<crate::config::TaskSettings> for TaskPolicy {
    fn from(settings: crate::config::TaskSettings) -> Self {
        Self {
            required_permission: settings.required_permission,
            default_timeout_secs: settings.default_timeout_secs,
            label_trust: settings.label_trust,
        }
    }
}

pub struct TaskIntake {
    store: Store,
    github: GitHubApp,
    policy: TaskPolicy,
    permissions: Mutex<HashMap<(i64, String), (Permission, Instant)>>,
    signal: Signal,
    public_url: String,
}

/// Where a request came from and where to answer it.
struct Origin<'a> {
    meta: &'a DeliveryMeta,
    installation_id: i64,
    repository: &'a RepoRef,
    issue_number: i64,
    sender: &'a Actor,
}

impl Origin<'_> {
    fn repo(&self) -> RepoName {
        RepoName::new(&self.repository.owner, &self.repository.name)
    }

    fn actor(&self) -> AuditActor<'_> {
        AuditActor {
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
            signal: Signal::new(),
            public_url: "http://127.0.0.1:3000".to_owned(),
        }
    }

    /// Wakes the engine when a task is created or asked to stop.
    pub fn with_signal(mut self, signal: Signal) -> Self {
        self.signal = signal;
        self
    }

    /// Where task pages are, for links in comments.
    pub fn with_public_url(mut self, public_url: &str) -> Self {
        self.public_url = public_url.trim_end_matches('/').to_owned();
        self
    }

    fn client(&self, origin: &Origin<'_>) -> Result<InstallationClient, HandlerError> {
        Ok(self.github.installation(number(origin.installation_id)?))
    }

    /// Posts the delivery's reply, once: a delivery processed again (its outcome was not
    /// stored) finds the reply claimed and posts nothing. A claim whose post failed is
    /// given back so the next attempt posts it; a crash between the post and our write
    /// loses nothing but costs at most that one reply (never two).
    async fn reply(&self, origin: &Origin<'_>, body: &str) -> Result<(), HandlerError> {
        let guid = &origin.meta.guid;
        if !self
            .store
            .claim_delivery_reply(guid, REPLY_KIND)
            .await
            .map_err(store_error)?
        {
            tracing::info!(delivery = %guid, "reply already posted for this delivery");
            return Ok(());
        }
        let posted = match self.client(origin) {
            Ok(client) => client
                .create_issue_comment(&origin.repo(), number(origin.issue_number)?, body)
                .await
                .map_err(github_error),
            Err(e) => Err(e),
        };
        if let Err(e) = posted {
            self.store
                .release_delivery_reply(guid, REPLY_KIND)
                .await
                .map_err(store_error)?;
            return Err(e);
        }
        Ok(())
    }

    async fn permission(&self, origin: &Origin<'_>) -> Result<Permission, HandlerError> {
        self.permission_of(origin, &origin.sender.login).await
    }

    /// `login`'s permission on the origin's repository, cached briefly.
    async fn permission_of(
        &self,
        origin: &Origin<'_>,
        login: &str,
    ) -> Result<Permission, HandlerError> {
        let key = (origin.repository.id, login.to_owned());
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
            .collaborator_permission(&origin.repo(), login)
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
        let may_reply = self
            .store
            .claim_refusal_reply(
                origin.repository.id,
                origin.issue_number,
                origin.sender.id,
                REFUSAL_REPLY_EVERY,
            )
            .await
            .map_err(store_error)?;
        if may_reply {
            self.reply(
                origin,
                &reply::no_permission(&origin.sender.login, self.policy.required_permission),
            )
            .await?;
        } else {
            tracing::info!(user = %origin.sender.login, issue = origin.issue_number, "refusal not posted: answered on this issue lately");
        }
        Ok(false)
    }

    /// Templates here, by precedence: the repository's, then the database's, then built-in.
    async fn templates(&self, origin: &Origin<'_>) -> Result<Templates, HandlerError> {
        self.templates_in(
            origin.installation_id,
            &origin.repo(),
            origin.repository.default_branch.as_deref(),
        )
        .await
        .map_err(|e| match e {
            RequestError::GitHub(e) => github_error(e),
            other => HandlerError::Transient(other.to_string()),
        })
    }

    /// The templates usable in `repo` of an installation, by precedence: the repository's
    /// (`.github/bg-agent.yml` on its default branch), then the installation's in the
    /// database, then the built-ins. `Ok(Err(..))` when the repository's file is unusable.
    pub async fn templates_in(
        &self,
        installation_id: i64,
        repo: &RepoName,
        default_branch: Option<&str>,
    ) -> Result<Templates, RequestError> {
        let client = self
            .github
            .installation(u64::try_from(installation_id).map_err(|_| RequestError::NotInstalled)?);
        let default_branch = match default_branch {
            Some(branch) => branch.to_owned(),
            None => client.repository(repo).await?.default_branch,
        };
        let repo_config = match read_repo_config(&client, repo, &default_branch).await? {
            Ok(config) => config,
            Err(message) => return Ok(Err(message)),
        };
        let mut templates = repo_config.templates;
        for template in self.store.database_templates(installation_id).await? {
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
        templates: Option<Templates>,
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
                let Some((template, params)) = self
                    .resolve(origin, templates, name, positional, named)
                    .await?
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
            Command::Retry { task } => {
                let Some(task) = self.target(origin, *task, "retry").await? else {
                    return Ok(());
                };
                self.retry(
                    origin,
                    &task,
                    TaskTrigger::RetryCommand,
                    Some(trigger.comment_id),
                )
                .await
            }
            Command::Cancel { task } => {
                let Some(task) = self.target(origin, *task, "cancel").await? else {
                    return Ok(());
                };
                self.cancel(origin, &task, Some(trigger.comment_id)).await
            }
        }
    }

    /// A label makes the issue's text the agent's instructions: unless the policy trusts
    /// the labeller alone, the issue's author must be allowed to ask for tasks too.
    /// `Ok(true)` if so; otherwise the labeller is told why, and the refusal audited.
    async fn trust_issue_author(
        &self,
        origin: &Origin<'_>,
        trigger: &LabelTrigger,
    ) -> Result<bool, HandlerError> {
        let required = self.policy.required_permission;
        let permission = match (&trigger.issue_author, self.policy.label_trust) {
            (_, LabelTrust::Labeller) => return Ok(true),
            (Some(author), _) if author.id == origin.sender.id => return Ok(true),
            (Some(author), _) => self.permission_of(origin, &author.login).await?,
            (None, _) => Permission::None,
        };
        if permission >= required {
            return Ok(true);
        }
        let author = trigger.issue_author.as_ref().map(|a| a.login.as_str());
        tracing::info!(
            labeller = %origin.sender.login,
            author,
            ?permission,
            "refused: the issue's author may not ask for tasks"
        );
        self.refuse(
            origin,
            &reply::untrusted_issue_author(&origin.sender.login, author, required),
        )
        .await?;
        Ok(false)
    }

    async fn label(
        &self,
        origin: &Origin<'_>,
        trigger: &LabelTrigger,
        templates: Option<Templates>,
    ) -> Result<(), HandlerError> {
        if !self.trust_issue_author(origin, trigger).await? {
            return Ok(());
        }
        let key = format!("label:{}", origin.meta.guid);
        // The issue's text goes to the agent as untrusted input, with its provenance.
        let issue = IssueText {
            repository: &origin.repository.full_name,
            number: trigger.issue_number,
            title: &trigger.issue_title,
            body: &trigger.issue_body,
            author: trigger.issue_author.as_ref().map(|a| a.login.as_str()),
            opened_at: trigger.issue_created_at,
            updated_at: trigger.issue_updated_at,
            labelled_by: &trigger.sender.login,
            label: &trigger.label,
        };
        let request = match &trigger.template {
            None => {
                let mut request = TaskRequest::free_text(
                    (key, TaskTrigger::Label, None),
                    issue_instructions(&issue, None),
                    self.policy.default_timeout_secs,
                );
                request.summary = bg_agent_core::task::free_text_summary(&trigger.issue_title);
                request
            }
            Some(name) => {
                // A label carries no arguments: only templates whose parameters all have
                // defaults (or are optional) can run from one.
                let Some((template, params)) = self
                    .resolve(origin, templates, name, &[], &BTreeMap::new())
                    .await?
                else {
                    return Ok(());
                };
                let instructions = issue_instructions(&issue, Some(&template.render(&params)));
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
        templates: Option<Templates>,
        name: &str,
        positional: &[String],
        named: &BTreeMap<String, String>,
    ) -> Result<Option<(Template, BTreeMap<String, String>)>, HandlerError> {
        let templates = match templates {
            Some(templates) => templates,
            None => self.templates(origin).await?,
        };
        let templates = match templates {
            Ok(templates) => templates,
            Err(message) => {
                self.refuse(origin, &reply::unusable_repo_config(&message))
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

    async fn refuse(&self, origin: &Origin<'_>, text: &str) -> Result<(), HandlerError> {
        self.store
            .record_refusal(
                origin.repository.id,
                origin.actor(),
                &reply::refusal_reason(text),
            )
            .await
            .map_err(store_error)?;
        self.reply(origin, text).await
    }

    async fn status(&self, origin: &Origin<'_>) -> Result<(), HandlerError> {
        let tasks = self
            .store
            .tasks_of(origin.sender.id, origin.repository.id, STATUS_LIMIT)
            .await
            .map_err(store_error)?;
        let text = reply::status(&origin.sender.login, &origin.repository.full_name, &tasks);
        self.reply(origin, &text).await
    }

    async fn create(&self, origin: &Origin<'_>, request: TaskRequest) -> Result<(), HandlerError> {
        let comment_id = request.comment_id;
        let new = self.new_task(
            Place {
                installation_id: origin.installation_id,
                repository: origin.repository,
                issue_number: i32::try_from(origin.issue_number).ok(),
                delivery_guid: Some(origin.meta.guid.clone()),
                creator: origin.sender,
            },
            request,
        );
        let (task, fresh) = match self.store_task(&new).await.map_err(store_error)? {
            CreatedTask::Created(task) => (task, true),
            // A redelivery, or this delivery again after a failed acknowledgement: finish
            // acknowledging, nothing more.
            CreatedTask::Duplicate(task) => (task, false),
            CreatedTask::CreatorBusy { active_task } => {
                return self
                    .refuse(
                        origin,
                        &reply::already_active(&origin.sender.login, active_task),
                    )
                    .await;
            }
        };
        self.acknowledge(origin, &task, comment_id, fresh).await
    }

    /// The row a request makes: the one place a [`TaskRequest`] becomes a [`NewTask`],
    /// whether it came from a webhook or from the JSON API.
    fn new_task(&self, place: Place<'_>, request: TaskRequest) -> NewTask {
        let repo = RepoName::new(&place.repository.owner, &place.repository.name);
        NewTask {
            installation_id: place.installation_id,
            repository_id: place.repository.id,
            repository: place.repository.full_name.clone(),
            issue_number: place.issue_number,
            comment_id: request.comment_id,
            delivery_guid: place.delivery_guid,
            trigger: request.trigger,
            idempotency_key: request.key,
            creator_login: place.creator.login.clone(),
            creator_id: place.creator.id,
            template: request.template,
            params: request.params,
            recipe: request.recipe,
            instructions: request.instructions,
            summary: request.summary,
            timeout_secs: request.timeout_secs,
            retry_of: request.retry_of,
            base_branch: place.repository.default_branch.clone(),
            // Where the runner will clone from: the configured GitHub, not the payload.
            clone_url: Some(self.github.clone_url(&repo)),
        }
    }

    /// Stores a new task (once per idempotency key) and wakes the engine for it.
    async fn store_task(&self, new: &NewTask) -> Result<CreatedTask, StoreError> {
        let created = self.store.create_task(new).await?;
        if let CreatedTask::Created(task) = &created {
            tracing::info!(task = task.id.get(), attempt = task.attempt, trigger = ?new.trigger, "task created");
            crate::metrics::task_created(new.trigger);
            self.signal.wake();
        }
        Ok(created)
    }

    /// 👀 on the command and the tracking comment, each at most once per task. `fresh`:
    /// the task was made just now, so no earlier attempt can have posted its comment.
    async fn acknowledge(
        &self,
        origin: &Origin<'_>,
        task: &TaskRecord,
        comment_id: Option<i64>,
        fresh: bool,
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
            let page_url = render::page_url(&self.public_url, task.id);
            let details = TaskDetails {
                queue_position: position,
                ..TaskDetails::default()
            };
            let body = render::tracking_comment(task, &details.context(&page_url));
            let issue = number(origin.issue_number)?;
            // Made before a crash between GitHub's answer and our write: adopt it.
            let existing = if fresh {
                None
            } else {
                client
                    .own_issue_comments(&repo, issue)
                    .await
                    .map_err(github_error)?
                    .into_iter()
                    .find(|c| {
                        c.body
                            .as_deref()
                            .is_some_and(|b| is_tracking_comment(b, task.id))
                    })
            };
            let comment = match existing {
                Some(comment) => {
                    tracing::info!(
                        task = task.id.get(),
                        comment = comment.id,
                        "adopting the tracking comment made before"
                    );
                    comment
                }
                None => client
                    .create_issue_comment(&repo, issue, &body)
                    .await
                    .map_err(github_error)?,
            };
            let id = i64::try_from(comment.id)
                .map_err(|_| HandlerError::Permanent("comment id out of range".into()))?;
            self.store
                .set_tracking_comment(task.id, id)
                .await
                .map_err(store_error)?;
            // The reporter and the supervisor claim tasks with SKIP LOCKED: one that looked
            // while this update held the row passed the task over; have them look again.
            self.signal.wake();
        }
        Ok(())
    }
}

impl TaskIntake {
    /// The task a retry or cancel is about: the one named, or else the sender's latest in
    /// this repository. `None` once the problem has been answered.
    async fn target(
        &self,
        origin: &Origin<'_>,
        id: Option<TaskId>,
        verb: &str,
    ) -> Result<Option<TaskRecord>, HandlerError> {
        let task = match id {
            Some(id) => self
                .store
                .task(id)
                .await
                .map_err(store_error)?
                .filter(|t| t.repository_id == origin.repository.id),
            None => self
                .store
                .tasks_of(origin.sender.id, origin.repository.id, 1)
                .await
                .map_err(store_error)?
                .into_iter()
                .next(),
        };
        if task.is_none() {
            self.reply(origin, &reply::no_such_task(verb, id)).await?;
        }
        Ok(task)
    }

    /// A new attempt of `task`, asked for by the sender: same request, attempt + 1,
    /// linked by `retry_of`. Each task is retried at most once (the idempotency key), so
    /// a double click or a redelivery makes one new attempt.
    async fn retry(
        &self,
        origin: &Origin<'_>,
        task: &TaskRecord,
        trigger: TaskTrigger,
        comment_id: Option<i64>,
    ) -> Result<(), HandlerError> {
        if !task.state.is_retryable() {
            return self
                .reply(origin, &reply::not_retryable(task.id, task.state))
                .await;
        }
        self.create(origin, TaskRequest::retry(task, trigger, comment_id))
            .await
    }

    async fn cancel(
        &self,
        origin: &Origin<'_>,
        task: &TaskRecord,
        comment_id: Option<i64>,
    ) -> Result<(), HandlerError> {
        match self
            .request_cancel(task, origin.actor())
            .await
            .map_err(store_error)?
        {
            Some(CancelRequested::Cancelled(_)) | Some(CancelRequested::Stopping(_)) => {
                if let Some(comment_id) = comment_id {
                    self.client(origin)?
                        .add_comment_reaction(&origin.repo(), number(comment_id)?, Reaction::Eyes)
                        .await
                        .map_err(github_error)?;
                }
                Ok(())
            }
            Some(CancelRequested::AlreadyEnded(task)) => {
                self.reply(origin, &reply::already_ended(task.id, task.state))
                    .await
            }
            None => Ok(()),
        }
    }

    /// Cancels a queued task or asks the supervisor to stop an executing one, whoever
    /// asks and however (a comment, a button, the API).
    async fn request_cancel(
        &self,
        task: &TaskRecord,
        actor: AuditActor<'_>,
    ) -> Result<Option<CancelRequested>, StoreError> {
        let requested = self.store.request_cancel(task.id, actor).await?;
        if let Some(CancelRequested::Cancelled(_) | CancelRequested::Stopping(_)) = &requested {
            tracing::info!(task = task.id.get(), by = %actor.name, "cancel requested");
            self.signal.wake();
        }
        Ok(requested)
    }

    /// The check run's Re-run, Retry and Cancel: the task is the run's `external_id`.
    async fn check_run(
        &self,
        meta: &DeliveryMeta,
        run: &CheckRunTrigger,
        action: CheckRunButton,
        trigger: TaskTrigger,
    ) -> Result<(), HandlerError> {
        let by_external_id = run
            .external_id
            .as_deref()
            .and_then(|id| id.parse::<TaskId>().ok());
        let task = match by_external_id {
            Some(id) => self.store.task(id).await.map_err(store_error)?,
            None => self
                .store
                .task_by_check_run(run.check_run_id)
                .await
                .map_err(store_error)?,
        }
        .filter(|t| t.repository_id == run.repository.id);
        let Some(task) = task else {
            tracing::info!(
                check_run = run.check_run_id,
                "check run of no task of ours; ignored"
            );
            return Ok(());
        };
        let Some(issue_number) = task.issue_number else {
            tracing::info!(
                task = task.id.get(),
                "task has no issue to answer on; ignored"
            );
            return Ok(());
        };
        let origin = Origin {
            meta,
            installation_id: run.installation_id,
            repository: &run.repository,
            issue_number: i64::from(issue_number),
            sender: &run.sender,
        };
        if !self.authorise(&origin).await? {
            return Ok(());
        }
        match action {
            CheckRunButton::Retry => self.retry(&origin, &task, trigger, None).await,
            CheckRunButton::Cancel => self.cancel(&origin, &task, None).await,
        }
    }
}

/// The templates usable in a repository, or why its configuration is unusable.
type Templates = Result<Vec<Template>, String>;

/// Someone asking outside a webhook: a person on the status page or the API.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub login: &'a str,
    pub user_id: i64,
}

/// The repository's `.github/bg-agent.yml` on `branch` (the default when it has none);
/// `Ok(Err(message))` when the file is unusable.
pub async fn read_repo_config(
    client: &InstallationClient,
    repo: &RepoName,
    branch: &str,
) -> Result<Result<RepoConfig, String>, GitHubError> {
    let path = bg_agent_core::task::repo_config::PATH;
    let Some(file) = client.file_contents(repo, path, Some(branch)).await? else {
        return Ok(Ok(RepoConfig::default()));
    };
    Ok(std::str::from_utf8(&file.content)
        .map_err(|_| format!("{path} is not UTF-8"))
        .and_then(|text| RepoConfig::parse(text).map_err(|e| e.to_string())))
}

/// What a retry asked for outside GitHub came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Only failed, cancelled and timed-out tasks are retried.
    NotRetryable,
    Created(TaskRecord),
    /// The task was already retried (by any path: one retry per task): that attempt.
    AlreadyRetried(TaskRecord),
    /// The requester already has an active task.
    CreatorBusy {
        active_task: TaskId,
    },
}

/// A new attempt of `task`, asked for on the status page or through the API: the same
/// request [`TaskIntake`] makes for `/bg-agent retry` and the check run's Retry button
/// (same idempotency key, so each task is retried once whichever way is used), reported
/// on GitHub like any other task; `by` becomes its creator.
pub async fn retry_task(
    store: &Store,
    signal: &Signal,
    task: &TaskRecord,
    by: Requester<'_>,
) -> Result<RetryOutcome, StoreError> {
    if !task.state.is_retryable() {
        return Ok(RetryOutcome::NotRetryable);
    }
    let request = TaskRequest::retry(task, TaskTrigger::Api, None);
    let new = NewTask {
        installation_id: task.installation_id,
        repository_id: task.repository_id,
        repository: task.repository.clone(),
        issue_number: task.issue_number,
        comment_id: None,
        delivery_guid: None,
        trigger: request.trigger,
        idempotency_key: request.key,
        creator_login: by.login.to_owned(),
        creator_id: by.user_id,
        template: request.template,
        params: request.params,
        recipe: request.recipe,
        instructions: request.instructions,
        summary: request.summary,
        timeout_secs: request.timeout_secs,
        retry_of: request.retry_of,
        base_branch: task.base_branch.clone(),
        clone_url: task.clone_url.clone(),
    };
    Ok(match store.create_task(&new).await? {
        CreatedTask::Created(task) => {
            tracing::info!(task = task.id.get(), attempt = task.attempt, by = %by.login, "task retried");
            signal.wake();
            RetryOutcome::Created(task)
        }
        CreatedTask::Duplicate(task) => RetryOutcome::AlreadyRetried(task),
        CreatedTask::CreatorBusy { active_task } => RetryOutcome::CreatorBusy { active_task },
    })
}

/// Cancels `task` for someone on the status page or the API, as `/bg-agent cancel` and
/// the check run's Cancel button do: a queued task at once, an executing one stopped by
/// the supervisor.
pub async fn cancel_task(
    store: &Store,
    signal: &Signal,
    task: &TaskRecord,
    by: Requester<'_>,
) -> Result<Option<CancelRequested>, StoreError> {
    let actor = AuditActor {
        name: by.login,
        delivery_guid: None,
    };
    let outcome = store.request_cancel(task.id, actor).await?;
    if let Some(CancelRequested::Cancelled(_) | CancelRequested::Stopping(_)) = &outcome {
        tracing::info!(task = task.id.get(), by = %by.login, "cancel requested");
        signal.wake();
    }
    Ok(outcome)
}

struct TaskRequest {
    retry_of: Option<(TaskId, i32)>,
    key: String,
    trigger: TaskTrigger,
    comment_id: Option<i64>,
    template: Option<(String, TemplateSource)>,
    params: BTreeMap<String, String>,
    recipe: bg_agent_core::task::Recipe,
    instructions: String,
    summary: String,
    timeout_secs: u32,
}

/// Where a task is made and by whom, for [`TaskIntake::new_task`].
struct Place<'a> {
    installation_id: i64,
    repository: &'a RepoRef,
    issue_number: Option<i32>,
    delivery_guid: Option<String>,
    creator: &'a Actor,
}

/// (idempotency key, trigger, command comment)
type RequestOrigin = (String, TaskTrigger, Option<i64>);

impl TaskRequest {
    /// The next attempt of `task`: same request, attempt + 1, one per task.
    fn retry(task: &TaskRecord, trigger: TaskTrigger, comment_id: Option<i64>) -> Self {
        Self {
            retry_of: Some((task.id, task.attempt)),
            key: format!("retry:{}", task.id),
            trigger,
            comment_id,
            template: task.template.clone().zip(task.template_source),
            params: task.params.clone(),
            recipe: task.recipe,
            instructions: task.instructions.clone(),
            summary: task.summary.clone(),
            timeout_secs: u32::try_from(task.timeout_secs)
                .unwrap_or(bg_agent_core::task::MAX_TIMEOUT_SECS),
        }
    }

    /// `/bg-agent run ...` or a plain `bg-agent` label: a coding agent gets the text.
    fn free_text(origin: RequestOrigin, instructions: String, default_timeout_secs: u32) -> Self {
        let (key, trigger, comment_id) = origin;
        Self {
            retry_of: None,
            key,
            trigger,
            comment_id,
            template: None,
            params: BTreeMap::new(),
            recipe: bg_agent_core::task::Recipe::Agent,
            summary: bg_agent_core::task::free_text_summary(&instructions),
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
            retry_of: None,
            key,
            trigger,
            comment_id,
            template: Some((template.name.clone(), template.source)),
            summary: template.summary(&params),
            params,
            recipe: template.recipe,
            instructions,
            timeout_secs: bg_agent_core::task::effective_timeout_secs(
                template.timeout_secs,
                default_timeout_secs,
            ),
        }
    }
}

impl TaskIntake {
    /// A payload whose repository names a clone URL other than the configured GitHub's
    /// is refused (recorded, logged, the delivery failed with the reason): the clone
    /// host is never taken from a payload, and one that names another is not GitHub's.
    async fn refuse_foreign_clone_url(
        &self,
        meta: &DeliveryMeta,
        repository: &RepoRef,
        sender: &Actor,
    ) -> Result<(), HandlerError> {
        let Some(named) = &repository.clone_url else {
            return Ok(());
        };
        let ours = self
            .github
            .clone_url(&RepoName::new(&repository.owner, &repository.name));
        if named.eq_ignore_ascii_case(&ours) {
            return Ok(());
        }
        let reason = format!(
            "refused: the payload's clone URL {named:?} is not the configured GitHub's ({ours})"
        );
        tracing::warn!(repository = %repository.full_name, %reason, "payload names another host");
        let actor = AuditActor {
            name: &sender.login,
            delivery_guid: Some(&meta.guid),
        };
        self.store
            .record_refusal(repository.id, actor, &reason)
            .await
            .map_err(store_error)?;
        Err(HandlerError::Permanent(reason))
    }
}

impl TriggerHandler for TaskIntake {
    async fn handle(&self, meta: &DeliveryMeta, trigger: &Trigger) -> Result<(), HandlerError> {
        let named_repository = match trigger {
            Trigger::Command(c) => Some((&c.repository, &c.sender)),
            Trigger::Label(l) => Some((&l.repository, &l.sender)),
            Trigger::CheckRunRerequested(run) | Trigger::CheckRunAction { check_run: run, .. } => {
                Some((&run.repository, &run.sender))
            }
            Trigger::Installation(_) | Trigger::PullRequest(_) | Trigger::Ping { .. } => None,
        };
        if let Some((repository, sender)) = named_repository {
            self.refuse_foreign_clone_url(meta, repository, sender)
                .await?;
        }
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
            Trigger::CheckRunRerequested(run) => {
                return self
                    .check_run(meta, run, CheckRunButton::Retry, TaskTrigger::Rerun)
                    .await;
            }
            Trigger::CheckRunAction { check_run, action } => {
                return self
                    .check_run(meta, check_run, *action, TaskTrigger::RetryButton)
                    .await;
            }
            Trigger::Installation(_) | Trigger::PullRequest(_) | Trigger::Ping { .. } => {
                return Ok(());
            }
        };
        // Everything, help included, is for people who may use the app: a drive-by
        // commenter cannot make it talk.
        // A template's look-up (the repository's configuration on GitHub) runs alongside
        // the permission check: both are round trips on the way to the task.
        let uses_template = match trigger {
            Trigger::Command(c) => matches!(
                &c.command,
                ParsedCommand::Valid {
                    command: Command::Template { .. }
                }
            ),
            Trigger::Label(l) => l.template.is_some(),
            _ => false,
        };
        let (allowed, templates) = if uses_template {
            let (allowed, templates) =
                tokio::join!(self.authorise(&origin), self.templates(&origin));
            (allowed, Some(templates))
        } else {
            (self.authorise(&origin).await, None)
        };
        if !allowed? {
            return Ok(());
        }
        let templates = templates.transpose()?;
        match trigger {
            Trigger::Command(command) => self.command(&origin, command, templates).await,
            Trigger::Label(label) => self.label(&origin, label, templates).await,
            _ => Ok(()),
        }
    }
}
