//! The supervisor: starts queued tasks as the limits allow, watches their executions,
//! stops what was cancelled or ran out of time, and reconciles after a restart — a task
//! whose execution is gone ends `failed` (retryable) instead of staying `running`.
//! Everything it decides from is in the database, so any replica can do it.
//!
//! A runner's reported push is checked on GitHub (the branch points at the reported
//! commit) before the task succeeds, and a runner's token is revoked once its task has
//! ended; each task gets a token of its own.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::background::Background;
use crate::config::Unvalidated;
use crate::credentials::{CredentialError, Keyring, NeedsCredential, Provider};
use crate::engine::tasks::read_repo_config;
use crate::executor::{ExecutionId, Executor, Launch, Observed};
use crate::store::runs::PreparedAgent;
use crate::store::tasks::{AuditActor, Caps, TaskRecord};
use crate::store::{Store, StoreError};
use bg_agent_core::protocol::{
    AgentProvider, AgentSpec, CALLBACK_CA_ENV, SPEC_ENV, ScopePolicy, TaskSpec,
};
use bg_agent_core::task::repo_config::AgentChoice;
use bg_agent_core::task::{Recipe, TaskId, TaskState, branch_name};
use bg_agent_github::{GitHubApp, GitHubError, InstallationToken, RepoName};

use super::Signal;

/// A timed-out execution that is somehow still running gets this long before the
/// supervisor stops it itself (the executor's own timeout should have come first).
const TIMEOUT_GRACE: Duration = Duration::from_secs(30);
/// A task left `starting` without an execution (a replica died mid-launch) for this long
/// is given up as lost.
const LAUNCH_GRACE: Duration = Duration::from_secs(120);
/// Another replica unheard of for this long is gone, and so are the runs it launched
/// (with an executor that only sees its own).
const INSTANCE_SILENCE: Duration = Duration::from_secs(30);
/// How often a live process renews its heartbeat: well inside `INSTANCE_SILENCE`.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// The runner token must outlive the task by this much (pushing happens at the end).
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// At shutdown, launches and stops under way get this long to finish before the
/// executor is told the server is stopping (a stop takes the runner's grace period).
const WORK_GRACE: Duration = Duration::from_secs(15);

const SUPERVISOR: AuditActor<'static> = AuditActor {
    name: "bg-agent",
    delivery_guid: None,
};

#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    pub caps: Caps,
    pub public_url: String,
    /// Where runners report (the public URL unless configured otherwise).
    pub callback_url: String,
    pub agent_command: Option<Vec<String>>,
    /// The coding agent of agent tasks, unless the repository chooses.
    pub agent: AgentSpec,
    /// Until credentials are stored per installation: the one handed to every agent task.
    pub agent_credential: Option<SecretString>,
    pub npm_registry: Option<String>,
    /// CA certificates (PEM) runners trust for their callback, passed on as
    /// `BG_AGENT_CALLBACK_CA`.
    pub callback_ca: Option<String>,
    /// The App's slug: commits are authored by its bot user, `<slug>[bot]`.
    pub app_slug: String,
    /// How often to look again without a wake-up (other replicas' changes, timeouts).
    pub poll: Duration,
    /// What becomes of a change no validation command checked.
    pub unvalidated: Unvalidated,
    /// Opens stored agent credentials; `None`: agents that need one cannot run.
    pub encryption_keys: Option<Keyring>,
    /// The scope guard's policy, passed to runners in the task spec.
    pub scope: ScopePolicy,
}

#[derive(Debug, thiserror::Error)]
enum LaunchError {
    #[error("GitHub: {0}")]
    GitHub(#[from] GitHubError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Executor(#[from] crate::executor::ExecutorError),
    #[error("{0}")]
    Invalid(String),
    /// The task's agent needs a credential its installation and requester do not have.
    #[error(
        "the agent `{agent}` needs a credential for `{provider}`, and none is set for this installation or its requester; set one with `bg-agent credentials set --installation {installation} --provider {provider}` (the value on stdin), then retry"
    )]
    NoCredential {
        agent: &'static str,
        provider: Provider,
        installation: i64,
    },
    #[error("cannot use the agent's credential: {0}")]
    Credential(#[from] CredentialError),
    /// The repository's `.github/bg-agent.yml`, read to choose the agent, is unusable.
    #[error("{0}; fix it on the default branch, then retry")]
    RepoConfig(String),
}

pub struct Supervisor<E> {
    store: Store,
    github: GitHubApp,
    executor: Arc<E>,
    settings: SupervisorSettings,
    signal: Signal,
    /// Tasks this process is launching or stopping right now (not to be judged lost).
    busy: BusyTasks,
    /// This server process, as recorded with the tasks it launches.
    instance: uuid::Uuid,
    /// When this process last told the database it is alive.
    last_heartbeat: Mutex<Option<std::time::Instant>>,
    /// The runner tokens of the tasks this process launched, until revoked. Held in
    /// memory only: a token must not be written anywhere; one whose server died expires
    /// on its own (it lasts the task's timeout plus [`TOKEN_MARGIN`], at most an hour).
    runner_tokens: Mutex<HashMap<TaskId, InstallationToken>>,
}

fn sha256(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The hash stored for a runner secret; the events endpoint compares against it.
pub fn runner_secret_hash(secret: &str) -> Vec<u8> {
    sha256(secret)
}

impl<E: Executor> Supervisor<E> {
    pub fn new(
        store: Store,
        github: GitHubApp,
        executor: Arc<E>,
        settings: SupervisorSettings,
        signal: Signal,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            github,
            executor,
            settings,
            signal,
            busy: BusyTasks::default(),
            instance: uuid::Uuid::new_v4(),
            last_heartbeat: Mutex::new(None),
            runner_tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Runs until shutdown, lets the launches and stops under way finish, then tells the
    /// executor the server is stopping (the local executor's runners end with it, even
    /// one launched during shutdown).
    pub async fn run(self: Arc<Self>, background: Background) {
        // Launches, stops and execution watchers: a group of their own, to be waited for
        // before the executor stops.
        let work = background.group();
        self.executor.server_starting().await;
        // Read after the executor found what runs: an execution found then whose task is
        // not active now has ended for good.
        match self.store.executing_tasks().await {
            Ok(active) => {
                let active = active.iter().map(|t| t.id.get()).collect();
                self.executor.remove_ended(&active).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the active tasks; ended tasks' executions stay")
            }
        }
        let mut wakeups = self.signal.subscribe();
        while !work.is_stopping() {
            if let Err(e) = self.pass(&work).await {
                tracing::warn!(error = %e, "supervisor pass failed; trying again");
            }
            wakeups.next(self.settings.poll, work.token()).await;
        }
        work.finish("task launches and stops", WORK_GRACE).await;
        self.executor.server_stopping().await;
        // Tasks that ended since the last pass: their tokens go now.
        if let Ok(executing) = self.store.executing_tasks().await {
            let revocations = self
                .ended_tasks_tokens(&executing)
                .into_iter()
                .map(|(id, token)| self.revoke(id, token));
            let all = futures_util::future::join_all(revocations);
            if tokio::time::timeout(WORK_GRACE, all).await.is_err() {
                tracing::warn!(
                    "runner tokens still being revoked at shutdown; they expire on their own"
                );
            }
        }
        if let Err(e) = self.store.engine_gone(self.instance).await {
            tracing::warn!(error = %e, "cannot sign off; other replicas will wait out the silence");
        }
    }

    /// One round: stop what must stop, settle ended executions, start what may start.
    /// Launches and stops go on in `work`.
    pub async fn pass(self: &Arc<Self>, work: &Background) -> Result<(), StoreError> {
        self.heartbeat().await?;
        // With an executor that sees only its own runs, another live replica's tasks are
        // that replica's to judge (one look-up per pass).
        let live_elsewhere = if self.executor.sees_all_executions() {
            None
        } else {
            Some(self.store.live_engines(INSTANCE_SILENCE).await?)
        };
        let executing = self.store.executing_tasks().await?;
        for (id, token) in self.ended_tasks_tokens(&executing) {
            let this = Arc::clone(self);
            work.spawn("runner token revocation", async move {
                this.revoke(id, token).await;
            });
        }
        for task in executing {
            if self.busy.contains(task.id) {
                continue;
            }
            // A reported push is checked on GitHub by whoever comes first (its runner has
            // nothing more to say): a task whose server died does not wait out its silence.
            let pushed = task.state == TaskState::Running && task.commit_sha.is_some();
            if let (Some(live), Some(launcher)) = (&live_elsewhere, task.launched_by)
                && !pushed
                && launcher != self.instance
                && live.contains(&launcher)
            {
                continue;
            }
            self.supervise(task, work).await?;
        }
        while let Some(task) = self
            .store
            .dispatch_next(self.settings.caps, self.instance, SUPERVISOR)
            .await?
        {
            // Just dispatched, so no one else here holds it.
            let Some(busy) = self.busy.claim(task.id) else {
                continue;
            };
            let this = Arc::clone(self);
            let span = tracing::info_span!("task", task = task.id.get());
            let launched_in = work.clone();
            work.spawn(
                "task launch",
                async move {
                    let _busy = busy;
                    this.launch(task, &launched_in).await;
                }
                .instrument(span),
            );
        }
        Ok(())
    }

    /// Takes the tokens of tasks that no longer occupy an executor (`executing` was read
    /// after they were launched: a launch under way is busy, and tasks are dispatched
    /// only after the pass has read them).
    fn ended_tasks_tokens(&self, executing: &[TaskRecord]) -> Vec<(TaskId, InstallationToken)> {
        let active: HashSet<TaskId> = executing.iter().map(|t| t.id).collect();
        let mut tokens = self
            .runner_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ended: Vec<TaskId> = tokens
            .keys()
            .filter(|id| !active.contains(id) && !self.busy.contains(**id))
            .copied()
            .collect();
        ended
            .into_iter()
            .filter_map(|id| tokens.remove(&id).map(|token| (id, token)))
            .collect()
    }

    /// `DELETE /installation/token` for an ended task's runner token.
    async fn revoke(&self, id: TaskId, token: InstallationToken) {
        match self.github.revoke_token(&token).await {
            Ok(()) => tracing::info!(task = id.get(), "runner token revoked"),
            Err(e) => tracing::warn!(
                task = id.get(),
                error = %e,
                "cannot revoke the runner token; it expires on its own"
            ),
        }
    }

    /// Passes come as often as tasks change; the heartbeat needs to be far rarer than
    /// the silence after which other replicas give up on this one.
    async fn heartbeat(&self) -> Result<(), StoreError> {
        let due = self
            .last_heartbeat
            .lock()
            .map(|last| last.is_none_or(|at| at.elapsed() >= HEARTBEAT_EVERY))
            .unwrap_or(true);
        if due {
            self.store.engine_heartbeat(self.instance).await?;
            if let Ok(mut last) = self.last_heartbeat.lock() {
                *last = Some(std::time::Instant::now());
            }
        }
        Ok(())
    }

    async fn end(&self, task: &TaskRecord, to: TaskState, error: Option<&str>) {
        match self.store.end_task(task.id, to, SUPERVISOR, error).await {
            Ok(Some(_)) => {
                tracing::info!(task = task.id.get(), state = %to, error, "task ended");
                self.signal.wake();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(task = task.id.get(), error = %e, "cannot end task"),
        }
    }

    /// Decides about one task that occupies an executor.
    async fn supervise(
        self: &Arc<Self>,
        task: TaskRecord,
        work: &Background,
    ) -> Result<(), StoreError> {
        // The runner has reported its push (and has nothing more to say): whatever its
        // process does now, the task ends with the check on GitHub.
        if task.state == TaskState::Running && task.commit_sha.is_some() {
            self.check_push(task, work);
            return Ok(());
        }
        let Some(execution) = task.execution_id.clone().map(ExecutionId) else {
            // Its server died between starting the runner and recording it (its launch
            // is not under way here: busy tasks are not supervised): a runner still
            // running is this task's, and the task goes on with it.
            if let Some(found) = self.executor.find(task.id.get()).await {
                tracing::info!(task = task.id.get(), execution = %found.0, "found the runner of a task whose launch was never recorded");
                self.store
                    .set_execution(task.id, &found.0, self.instance)
                    .await?;
                self.signal.wake();
                return Ok(());
            }
            let stuck_for = Utc::now() - task.started_at.unwrap_or(task.created_at);
            if task.cancel_requested_by.is_some() {
                self.end(&task, TaskState::Cancelled, None).await;
            } else if stuck_for.to_std().unwrap_or_default() > LAUNCH_GRACE {
                self.end(
                    &task,
                    TaskState::Failed,
                    Some("lost: the runner was never started (a server stopped while launching it); retry to run it again"),
                )
                .await;
            }
            return Ok(());
        };
        let observed = self.executor.observe(&execution).await;
        match observed {
            Observed::Running
                if !self.executor.sees_all_executions()
                    && task.launched_by != Some(self.instance) =>
            {
                // A runner whose server died, still alive on this host and adopted by
                // the executor: it is this server's now (other replicas leave it alone).
                tracing::info!(task = task.id.get(), execution = %execution.0, "took over a running task whose server is gone");
                self.store
                    .set_execution(task.id, &execution.0, self.instance)
                    .await?;
            }
            Observed::Running => {
                let deadline = task.started_at.unwrap_or(task.created_at)
                    + chrono::TimeDelta::seconds(i64::from(task.timeout_secs))
                    + chrono::TimeDelta::from_std(TIMEOUT_GRACE).unwrap_or_default();
                if Utc::now() > deadline {
                    self.stop(task, execution, TaskState::TimedOut, work);
                } else if task.cancel_requested_by.is_some() {
                    self.stop(task, execution, TaskState::Cancelled, work);
                }
            }
            Observed::Exited { code } => {
                // The runner reports its outcome before it exits; still active means it
                // died without one.
                let error = format!(
                    "the runner ended without a result ({}); retry to run it again",
                    code.map_or("killed by a signal".to_owned(), |c| format!(
                        "exit code {c}"
                    ))
                );
                self.end(&task, TaskState::Failed, Some(&error)).await;
            }
            Observed::TimedOut => {
                let error = format!("timed out after {} s", task.timeout_secs);
                self.end(&task, TaskState::TimedOut, Some(&error)).await;
            }
            Observed::Cancelled => {
                let error = task
                    .cancel_requested_by
                    .as_deref()
                    .map(|by| format!("cancelled by @{by}"));
                self.end(&task, TaskState::Cancelled, error.as_deref())
                    .await;
            }
            Observed::Unknown => {
                self.end(
                    &task,
                    TaskState::Failed,
                    Some("lost: its execution is gone (the server restarted while it ran); retry to run it again"),
                )
                .await;
            }
            Observed::Failed { reason } => {
                self.end(&task, TaskState::Failed, Some(&reason)).await;
            }
        }
        Ok(())
    }

    /// Stops an execution in the background (a runner gets a grace period) and ends the
    /// task as `to` once it has stopped.
    fn stop(
        self: &Arc<Self>,
        task: TaskRecord,
        execution: ExecutionId,
        to: TaskState,
        work: &Background,
    ) {
        let Some(busy) = self.busy.claim(task.id) else {
            return;
        };
        let this = Arc::clone(self);
        let span = tracing::info_span!("task", task = task.id.get());
        let stop = async move {
            let _busy = busy;
            if let Err(e) = this.executor.cancel(&execution).await {
                tracing::warn!(task = task.id.get(), error = %e, "cannot stop the execution");
            }
            let error = match to {
                TaskState::TimedOut => Some(format!("timed out after {} s", task.timeout_secs)),
                _ => task
                    .cancel_requested_by
                    .as_deref()
                    .map(|by| format!("cancelled by @{by}")),
            };
            this.end(&task, to, error.as_deref()).await;
        };
        work.spawn("execution stop", stop.instrument(span));
    }

    /// Ends a task whose runner reported a push: succeeded once GitHub shows the branch
    /// at the reported commit (and, if refused, validation ran), failed otherwise. A
    /// GitHub error leaves it for the next pass, until the task's time is up.
    fn check_push(self: &Arc<Self>, task: TaskRecord, work: &Background) {
        let Some(busy) = self.busy.claim(task.id) else {
            return;
        };
        let this = Arc::clone(self);
        let span = tracing::info_span!("task", task = task.id.get());
        let check = async move {
            let _busy = busy;
            match this.push_refusal(&task).await {
                Ok(None) => this.end(&task, TaskState::Succeeded, None).await,
                Ok(Some(reason)) => {
                    tracing::warn!(task = task.id.get(), %reason, "reported push refused");
                    this.end(&task, TaskState::Failed, Some(&reason)).await;
                }
                Err(e) => {
                    let deadline = task.started_at.unwrap_or(task.created_at)
                        + chrono::TimeDelta::seconds(i64::from(task.timeout_secs))
                        + chrono::TimeDelta::from_std(TIMEOUT_GRACE).unwrap_or_default();
                    if Utc::now() > deadline {
                        let error = format!(
                            "could not check the pushed branch on GitHub: {e}; retry to run it again"
                        );
                        this.end(&task, TaskState::Failed, Some(&error)).await;
                    } else {
                        tracing::warn!(task = task.id.get(), error = %e, "cannot check the pushed branch yet; trying again");
                    }
                }
            }
        };
        work.spawn("push check", check.instrument(span));
    }

    /// Why the reported push must not become a pull request, if it must not.
    async fn push_refusal(&self, task: &TaskRecord) -> Result<Option<String>, LaunchError> {
        if self.settings.unvalidated == Unvalidated::Refuse
            && self.store.validations(task.id).await?.is_empty()
        {
            return Ok(Some(
                "the repository has no validation commands and this server does not open pull requests for unchecked changes; declare `validation:` in .github/bg-agent.yml"
                    .to_owned(),
            ));
        }
        let (Some(branch), Some(commit)) = (&task.branch, &task.commit_sha) else {
            return Ok(Some("the runner reported no branch or commit".to_owned()));
        };
        let (repo, installation, _) = task_repository(task)?;
        let head = self
            .github
            .installation(installation)
            .branch_head_sha(&repo, branch)
            .await;
        Ok(match head {
            Ok(sha) if sha.eq_ignore_ascii_case(commit) => None,
            Ok(sha) => Some(format!(
                "the runner reported pushing {commit} to `{branch}`, but GitHub shows the branch at {sha}; nothing was marked validated"
            )),
            Err(GitHubError::NotFound { .. }) => Some(format!(
                "the runner reported pushing {commit} to `{branch}`, but GitHub has no such branch; nothing was marked validated"
            )),
            Err(e) => return Err(e.into()),
        })
    }

    async fn launch(self: &Arc<Self>, task: TaskRecord, work: &Background) {
        match self.try_launch(&task).await {
            Ok(execution) => {
                tracing::info!(task = task.id.get(), execution = %execution.0, "runner started");
                self.signal.wake();
                let this = Arc::clone(self);
                let stopping = work.token().clone();
                work.spawn("execution watch", async move {
                    tokio::select! {
                        _ = this.executor.wait(&execution) => {
                            // The runner's last report has been applied by now; the next
                            // pass settles anything it left open.
                            this.signal.wake();
                        }
                        // What happens to the runner now is the executor's affair.
                        () = stopping.cancelled() => {}
                    }
                });
            }
            Err(
                e @ (LaunchError::NoCredential { .. }
                | LaunchError::Credential(_)
                | LaunchError::RepoConfig(_)),
            ) => {
                tracing::warn!(task = task.id.get(), error = %e, "no usable agent credential");
                self.end(&task, TaskState::Failed, Some(&e.to_string()))
                    .await;
            }
            Err(e) => {
                tracing::warn!(task = task.id.get(), error = %e, "cannot start the runner");
                let error = format!("could not start the runner: {e}; retry to run it again");
                self.end(&task, TaskState::Failed, Some(&error)).await;
            }
        }
    }

    /// The coding agent an agent task runs (`None` for a recipe), chosen here, before
    /// anything starts, so that the credential handed over is the one of the provider
    /// that runs: the repository's `.github/bg-agent.yml` for the task's template (or for
    /// the repository), else the installation's default, else the server's.
    async fn choose_agent(
        &self,
        task: &TaskRecord,
        installation: u64,
        repo: &RepoName,
        default_branch: &str,
    ) -> Result<Option<ChosenAgent>, LaunchError> {
        if task.recipe != Recipe::Agent {
            return Ok(None);
        }
        let installation_default = self
            .store
            .default_agent(task.installation_id)
            .await?
            .and_then(|(provider, model)| {
                // The column's constraint admits only known names.
                AgentProvider::parse(&provider).map(|provider| AgentChoice { provider, model })
            });
        let config = read_repo_config(
            &self.github.installation(installation),
            repo,
            default_branch,
        )
        .await?
        .map_err(LaunchError::RepoConfig)?;
        let repository = config.agent_for(task.template.as_deref()).cloned();
        Ok(Some(choose(
            &self.settings.agent,
            installation_default,
            repository,
        )))
    }

    /// The credential the agent `provider` is given (opened), and its id: the
    /// requester's own for the provider, else the installation's. `None` for tasks whose
    /// agent needs none (recipes, the generic command); an error when one is needed and
    /// missing or unreadable, before anything is started.
    async fn agent_credential(
        &self,
        task: &TaskRecord,
        agent: Option<AgentProvider>,
    ) -> Result<Option<(Option<i64>, SecretString)>, LaunchError> {
        let Some(agent) = agent else {
            return Ok(None);
        };
        let Some(provider) = agent.credential() else {
            return Ok(None);
        };
        let stored = self
            .store
            .credential_for(task.installation_id, task.creator_id, provider)
            .await?;
        // None stored: the credential the embedding code gave every agent task, if any.
        if stored.is_none()
            && let Some(given) = &self.settings.agent_credential
        {
            return Ok(Some((None, given.clone())));
        }
        let stored = stored.ok_or(LaunchError::NoCredential {
            agent: agent.name(),
            provider,
            installation: task.installation_id,
        })?;
        let keys = self
            .settings
            .encryption_keys
            .as_ref()
            .ok_or(CredentialError::NoKey)?;
        let value = keys.open(&stored.scope, &stored.sealed)?;
        Ok(Some((Some(stored.id), value)))
    }

    async fn try_launch(&self, task: &TaskRecord) -> Result<ExecutionId, LaunchError> {
        let (repo_name, installation, repository_id) = task_repository(task)?;
        // The configured GitHub's host, never a URL from a webhook payload: the runner
        // hands its token to whatever it clones from.
        let clone_url = self.github.clone_url(&repo_name);
        let default_branch = match &task.base_branch {
            Some(branch) => branch.clone(),
            None => {
                self.github
                    .installation(installation)
                    .repository(&repo_name)
                    .await?
                    .default_branch
            }
        };
        let agent = self
            .choose_agent(task, installation, &repo_name, &default_branch)
            .await?;
        let agent_credential = self
            .agent_credential(task, agent.as_ref().map(|a| a.spec.provider))
            .await?;
        let timeout = Duration::from_secs(u64::try_from(task.timeout_secs).unwrap_or(3600));
        let token = self
            .github
            .runner_token_lasting(installation, repository_id, timeout + TOKEN_MARGIN)
            .await?;
        // Kept from here on, so that whatever becomes of the launch, the token is revoked
        // once the task has ended.
        self.runner_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(task.id, token.clone());
        let mut secret_bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret_bytes);
        let secret = hex::encode(secret_bytes);
        let branch = task
            .branch
            .clone()
            .unwrap_or_else(|| branch_name(task.id, &task.summary));
        let audit = agent.as_ref().map(ChosenAgent::describe);
        let prepared = agent
            .as_ref()
            .zip(audit.as_deref())
            .map(|(agent, audit)| PreparedAgent {
                provider: agent.spec.provider.name(),
                audit,
            });
        let Some(launching) = self
            .store
            .prepare_launch(task.id, &sha256(&secret), &branch, prepared)
            .await?
        else {
            return Err(LaunchError::Invalid(
                "the task is no longer starting".into(),
            ));
        };
        let slug = &self.settings.app_slug;
        let (commit_title, commit_body) = bg_agent_core::task::render::commit_message(
            task,
            &bg_agent_core::task::render::page_url(&self.settings.public_url, task.id),
        );
        let spec = TaskSpec {
            task_id: task.id.get(),
            repository: task.repository.clone(),
            clone_url,
            default_branch,
            branch,
            recipe: task.recipe,
            params: task.params.clone(),
            instructions: task.instructions.clone(),
            agent_command: self.settings.agent_command.clone(),
            template: task.template.clone(),
            agent: agent.map(|agent| agent.spec),
            resume_branch: launching.resume_branch,
            author_name: format!("{slug}[bot]"),
            // GitHub's noreply address for an App's bot user.
            author_email: format!(
                "{}+{slug}[bot]@users.noreply.github.com",
                self.github.app_id()
            ),
            commit_title,
            commit_body,
            npm_registry: self.settings.npm_registry.clone(),
            scope: self.settings.scope,
        };
        let spec = serde_json::to_string(&spec)
            .map_err(|e| LaunchError::Invalid(format!("cannot encode the task spec: {e}")))?;
        // Recorded before the runner starts: its reports are redacted of the value too.
        if let Some((Some(id), _)) = &agent_credential {
            self.store.credential_used(*id, task.id).await?;
        }
        let execution = self
            .executor
            .launch(Launch {
                task_id: task.id.get(),
                callback_url: self.settings.callback_url.clone(),
                task_secret: SecretString::from(secret),
                runner_token: token.secret().clone(),
                agent_credential: agent_credential.map(|(_, value)| value),
                timeout,
                env: std::iter::once((SPEC_ENV.to_owned(), spec))
                    .chain(
                        self.settings
                            .callback_ca
                            .clone()
                            .map(|pem| (CALLBACK_CA_ENV.to_owned(), pem)),
                    )
                    .collect(),
            })
            .await?;
        match self
            .store
            .mark_launched(task.id, &execution.0, self.instance, SUPERVISOR)
            .await
        {
            Ok(_) => {}
            // The runner's first report moved it to running already.
            Err(crate::store::tasks::TransitionError::Stale {
                actual: Some(TaskState::Running),
                ..
            }) => {
                if let Err(e) = self
                    .store
                    .set_execution(task.id, &execution.0, self.instance)
                    .await
                {
                    self.untracked(task, &execution).await;
                    return Err(e.into());
                }
            }
            Err(crate::store::tasks::TransitionError::Stale { actual, .. }) => {
                // Cancelled (or ended) while launching: stop what was started.
                tracing::info!(
                    task = task.id.get(),
                    ?actual,
                    "task ended while launching; stopping the runner"
                );
                let _ = self.executor.cancel(&execution).await;
            }
            Err(crate::store::tasks::TransitionError::Store(e)) => {
                self.untracked(task, &execution).await;
                return Err(e.into());
            }
            Err(crate::store::tasks::TransitionError::Illegal(e)) => {
                self.untracked(task, &execution).await;
                return Err(LaunchError::Invalid(e.to_string()));
            }
        }
        Ok(execution)
    }

    /// The runner started but its execution could not be recorded: nothing would ever
    /// watch, time out or cancel it, so it is stopped now (the task ends failed, or
    /// lost if the database stays out of reach).
    async fn untracked(&self, task: &TaskRecord, execution: &ExecutionId) {
        tracing::warn!(
            task = task.id.get(),
            execution = %execution.0,
            "cannot record the started runner; stopping it"
        );
        if let Err(e) = self.executor.cancel(execution).await {
            tracing::warn!(task = task.id.get(), error = %e, "cannot stop the untracked runner");
        }
    }
}

/// Who chose a task's coding agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentChooser {
    Repository,
    Installation,
    Server,
}

/// A task's coding agent and who chose it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChosenAgent {
    pub spec: AgentSpec,
    pub by: AgentChooser,
}

impl ChosenAgent {
    /// The task's audit event, e.g. "runs Codex CLI (model gpt-5), chosen by the
    /// repository's .github/bg-agent.yml".
    fn describe(&self) -> String {
        let model = self
            .spec
            .model
            .as_deref()
            .map(|m| format!(" (model {})", bg_agent_core::output::clip_line(m, 100)))
            .unwrap_or_default();
        let by = match self.by {
            AgentChooser::Repository => {
                format!(
                    "the repository's {}",
                    bg_agent_core::task::repo_config::PATH
                )
            }
            AgentChooser::Installation => "the installation's default".to_owned(),
            AgentChooser::Server => "the server's configuration".to_owned(),
        };
        format!(
            "runs {}{model}, chosen by {by}",
            self.spec.provider.display()
        )
    }
}

/// The agent of a task, by precedence: the repository's choice, the installation's
/// default, the server's. The model goes with the provider: a level that changes the
/// provider without naming a model leaves the provider's own default.
pub fn choose(
    server: &AgentSpec,
    installation: Option<AgentChoice>,
    repository: Option<AgentChoice>,
) -> ChosenAgent {
    let mut chosen = ChosenAgent {
        spec: server.clone(),
        by: AgentChooser::Server,
    };
    for (choice, by) in [
        (installation, AgentChooser::Installation),
        (repository, AgentChooser::Repository),
    ] {
        let Some(choice) = choice else { continue };
        if choice.provider != chosen.spec.provider {
            chosen.spec.model = None;
        }
        chosen.spec.provider = choice.provider;
        if choice.model.is_some() {
            chosen.spec.model = choice.model;
        }
        chosen.by = by;
    }
    chosen
}

/// The task's repository, installation and repository id, as GitHub calls them.
fn task_repository(task: &TaskRecord) -> Result<(RepoName, u64, u64), LaunchError> {
    let (owner, name) = task
        .repository
        .split_once('/')
        .ok_or_else(|| LaunchError::Invalid(format!("bad repository {}", task.repository)))?;
    let installation = u64::try_from(task.installation_id)
        .map_err(|_| LaunchError::Invalid("bad installation id".into()))?;
    let repository_id = u64::try_from(task.repository_id)
        .map_err(|_| LaunchError::Invalid("bad repository id".into()))?;
    Ok((RepoName::new(owner, name), installation, repository_id))
}

/// Tasks this process is launching or stopping right now. A mark is held by a
/// [`BusyTask`] guard and goes when the guard is dropped, so work that panics or is
/// cut short cannot leave its task marked busy (and never supervised again).
#[derive(Default)]
struct BusyTasks(Arc<Mutex<HashSet<TaskId>>>);

/// The mark on one busy task; dropping it clears the mark.
struct BusyTask {
    tasks: Arc<Mutex<HashSet<TaskId>>>,
    id: TaskId,
}

impl BusyTasks {
    /// Marks `id` busy, unless it is already (then someone else is at it).
    fn claim(&self, id: TaskId) -> Option<BusyTask> {
        lock(&self.0).insert(id).then(|| BusyTask {
            tasks: Arc::clone(&self.0),
            id,
        })
    }

    fn contains(&self, id: TaskId) -> bool {
        lock(&self.0).contains(&id)
    }
}

impl Drop for BusyTask {
    fn drop(&mut self) {
        lock(&self.tasks).remove(&self.id);
    }
}

/// A panic elsewhere cannot leave the set half-changed (single inserts and removals),
/// so a poisoned lock is still good to use — and a guard must release its mark anyway.
fn lock(tasks: &Mutex<HashSet<TaskId>>) -> std::sync::MutexGuard<'_, HashSet<TaskId>> {
    tasks.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_chooses_before_the_installation_before_the_server() {
        let server = AgentSpec {
            model: Some("aider-model".into()),
            ..AgentSpec::new(AgentProvider::Aider)
        };
        let choice = |provider, model: Option<&str>| AgentChoice {
            provider,
            model: model.map(str::to_owned),
        };
        let pick = |installation, repository| {
            let chosen = choose(&server, installation, repository);
            (chosen.spec.provider, chosen.spec.model, chosen.by)
        };
        assert_eq!(
            pick(None, None),
            (
                AgentProvider::Aider,
                Some("aider-model".into()),
                AgentChooser::Server
            )
        );
        // Another provider without a model: that provider's own default, not the
        // server's model for Aider.
        assert_eq!(
            pick(Some(choice(AgentProvider::ClaudeCode, None)), None),
            (AgentProvider::ClaudeCode, None, AgentChooser::Installation)
        );
        assert_eq!(
            pick(
                Some(choice(AgentProvider::ClaudeCode, Some("opus"))),
                Some(choice(AgentProvider::Codex, Some("gpt-5")))
            ),
            (
                AgentProvider::Codex,
                Some("gpt-5".into()),
                AgentChooser::Repository
            )
        );
        // The same provider again keeps the model chosen below.
        assert_eq!(
            pick(
                Some(choice(AgentProvider::Codex, Some("gpt-5"))),
                Some(choice(AgentProvider::Codex, None))
            ),
            (
                AgentProvider::Codex,
                Some("gpt-5".into()),
                AgentChooser::Repository
            )
        );
        let described = ChosenAgent {
            spec: AgentSpec {
                model: Some("gpt-5".into()),
                ..AgentSpec::new(AgentProvider::Codex)
            },
            by: AgentChooser::Repository,
        }
        .describe();
        assert_eq!(
            described,
            "runs Codex CLI (model gpt-5), chosen by the repository's .github/bg-agent.yml"
        );
    }

    #[test]
    fn a_task_is_busy_while_its_guard_lives_and_only_once() {
        let busy = BusyTasks::default();
        let guard = busy.claim(7.into()).unwrap();
        assert!(busy.contains(7.into()));
        assert!(busy.claim(7.into()).is_none(), "claimed twice");
        assert!(!busy.contains(8.into()));
        drop(guard);
        assert!(!busy.contains(7.into()));
        assert!(busy.claim(7.into()).is_some());
    }

    #[test]
    fn a_panic_while_busy_leaves_no_mark() {
        let busy = BusyTasks::default();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _busy = busy.claim(7.into()).unwrap();
            panic!("the launch failed");
        }));
        assert!(unwound.is_err());
        assert!(!busy.contains(7.into()));
    }

    #[tokio::test]
    async fn a_panicking_background_launch_leaves_no_task_marked_busy() {
        let busy = BusyTasks::default();
        let work = Background::new();
        let guard = busy.claim(7.into()).unwrap();
        work.spawn("task launch", async move {
            let _busy = guard;
            tokio::task::yield_now().await;
            panic!("the launch failed");
        });
        assert!(work.finish("test launches", Duration::from_secs(60)).await);
        assert_eq!(work.panics(), 1, "the panic was observed");
        assert!(!busy.contains(7.into()), "the task is still marked busy");
    }
}
