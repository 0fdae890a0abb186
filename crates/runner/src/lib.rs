//! `bg-agent runner`: what runs inside a task's workspace (a Job, or the local executor's
//! child process). It reads its task from the environment, clones the one repository it
//! may touch, applies the recipe, runs the repository's validation, and only if every
//! check passes commits and pushes the task's branch. Everything it does is reported to
//! the server as sequenced events (`bg_agent_core::protocol`); the server opens the PR.
//!
//! Secrets (the scoped runner token, the per-task secret) never appear in argv, in a URL,
//! in a child's environment other than git's for the clone and the push, or in any line
//! reported or printed. The runner wipes them from its own environment block once read,
//! and every process the repository's code started is ended before the push (`reaper`).

pub mod agent;
pub mod events;
pub mod git;
pub mod process;
pub mod reaper;
pub mod recipe;
pub mod scope;
pub mod validate;

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

pub use bg_agent_core::protocol::Redactor;
use bg_agent_core::protocol::{
    AGENT_CREDENTIAL_ENV, AgentProvider, AgentSpec, CALLBACK_CA_ENV, CALLBACK_URL_ENV,
    RUNNER_TOKEN_ENV, RunOutcome, SPEC_ENV, TASK_ID_ENV, TASK_SECRET_ENV, TaskSpec, Usage,
    is_wip_branch, wip_branch,
};
use bg_agent_core::task::{Phase, Recipe, ValidationCommand};

use self::events::{EventError, EventSender};
use self::git::Git;
use self::process::ChildEnv;
use self::recipe::Applied;

/// Progress (0–100) at which each phase starts; validation advances within 70..90.
pub const PROGRESS_CLONING: u8 = 10;
pub const PROGRESS_APPLYING: u8 = 30;
pub const PROGRESS_VALIDATING: u8 = 70;
pub const PROGRESS_PUSHING: u8 = 90;

/// Why a run could not go on. Each becomes `Finished(Failed)` with this message (redacted).
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("the runner's environment lacks {0}")]
    MissingEnv(&'static str),
    #[error("{TASK_ID_ENV} is not a task id: {0:?}")]
    BadTaskId(String),
    #[error("the task spec ({SPEC_ENV}) is not valid: {0}")]
    BadSpec(String),
    #[error("the task spec is for task {spec}, not task {env}")]
    TaskMismatch { spec: i64, env: i64 },
    #[error("cannot prepare the workspace: {0}")]
    Workspace(std::io::Error),
    #[error(transparent)]
    Git(#[from] git::GitError),
    #[error(transparent)]
    Recipe(#[from] recipe::RecipeError),
    #[error(transparent)]
    Validate(#[from] validate::ValidateError),
    #[error(transparent)]
    Reap(#[from] reaper::ReapError),
    #[error(transparent)]
    Scope(#[from] scope::ScopeError),
    #[error(transparent)]
    Agent(#[from] agent::AgentError),
    #[error("the server no longer takes this task's reports: {0}")]
    Report(#[from] EventError),
}

/// What the executor passes in the environment.
pub struct RunnerEnv {
    pub task_id: i64,
    pub callback_url: String,
    /// PEM certificates trusted for an `https` callback, besides the system's.
    pub callback_ca: Option<String>,
    pub task_secret: SecretString,
    pub runner_token: SecretString,
    /// The coding agent's provider credential, for the agent process alone.
    pub agent_credential: Option<SecretString>,
    /// The raw spec; parsed after reporting is possible, so a bad spec is reported.
    pub spec_json: Option<String>,
    /// Passed on to children (tools look for their config there); the workspace if unset.
    pub home: Option<PathBuf>,
    pub path: Option<std::ffi::OsString>,
}

impl RunnerEnv {
    /// Reads the variables; fails only on what reporting itself needs.
    pub fn from_env() -> Result<Self, RunnerError> {
        let var = |name: &'static str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or(RunnerError::MissingEnv(name))
        };
        let raw_id = var(TASK_ID_ENV)?;
        let task_id = raw_id
            .trim()
            .parse()
            .map_err(|_| RunnerError::BadTaskId(raw_id.clone()))?;
        Ok(Self {
            task_id,
            callback_url: var(CALLBACK_URL_ENV)?,
            callback_ca: std::env::var(CALLBACK_CA_ENV)
                .ok()
                .filter(|v| !v.is_empty()),
            task_secret: SecretString::from(var(TASK_SECRET_ENV)?),
            // A missing token is reported as a failure rather than stopping here.
            runner_token: SecretString::from(std::env::var(RUNNER_TOKEN_ENV).unwrap_or_default()),
            agent_credential: std::env::var(AGENT_CREDENTIAL_ENV)
                .ok()
                .filter(|v| !v.is_empty())
                .map(SecretString::from),
            spec_json: std::env::var(SPEC_ENV).ok(),
            home: std::env::var_os("HOME").map(PathBuf::from),
            path: std::env::var_os("PATH"),
        })
    }
}

/// The `runner` subcommand: runs the task described by the environment in the current
/// directory. `Ok` once a final outcome (success or not) was reported; `Err` only when
/// nothing could be reported.
pub async fn run_from_env() -> anyhow::Result<()> {
    // Children run as the same user; a non-dumpable process's `/proc/<pid>/environ` (which
    // holds the token) and memory are closed to them (not to root: defence in depth).
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("bg-agent runner: cannot make the process non-dumpable: {e}");
    }
    let env = RunnerEnv::from_env()?;
    // Root (or anyone with CAP_SYS_PTRACE) can still read a non-dumpable process's
    // `/proc/<pid>/environ`: the secrets, read, are wiped from it.
    wipe_from_environment(&[TASK_SECRET_ENV, RUNNER_TOKEN_ENV, AGENT_CREDENTIAL_ENV]);
    let workspace = std::env::current_dir().map_err(RunnerError::Workspace)?;
    let outcome = run(env, &workspace).await?;
    eprintln!("bg-agent runner: finished: {}", describe(&outcome));
    Ok(())
}

/// Overwrites the values of `names` in the environment block the kernel laid out at exec
/// (what `/proc/<pid>/environ` shows), then removes the variables. Called once, early,
/// before anything else reads or changes the environment.
fn wipe_from_environment(names: &[&str]) {
    for name in names {
        let Ok(c_name) = std::ffi::CString::new(*name) else {
            continue;
        };
        // SAFETY: getenv returns null or a pointer to the variable's NUL-terminated value,
        // which lives as long as the environment is not changed; nothing else touches the
        // environment while this runs (see above), and the bytes overwritten are the value
        // only, not its terminator.
        unsafe {
            let value = nix::libc::getenv(c_name.as_ptr());
            if !value.is_null() {
                let len = nix::libc::strlen(value);
                std::ptr::write_bytes(value, b'0', len);
            }
            std::env::remove_var(name);
        }
    }
}

fn describe(outcome: &RunOutcome) -> String {
    match outcome {
        RunOutcome::Pushed { branch, commit, .. } => format!("pushed {commit} to {branch}"),
        RunOutcome::NoChanges => "no changes needed".into(),
        RunOutcome::Failed { error, .. } => format!("failed: {error}"),
    }
}

/// Runs one task in `workspace` (the repository is cloned into `workspace/repo`) and
/// reports everything; returns the outcome it reported as final. The process becomes the
/// subreaper of what it starts and ends all its descendants before the push and at the
/// end: call it in a process of its own.
pub async fn run(env: RunnerEnv, workspace: &Path) -> Result<RunOutcome, EventError> {
    let redactor = Redactor::new(
        [
            env.task_secret.expose_secret(),
            env.runner_token.expose_secret(),
        ]
        .into_iter()
        .chain(env.agent_credential.as_ref().map(|c| c.expose_secret())),
    );
    let events = EventSender::start(
        &env.callback_url,
        env.callback_ca.as_deref(),
        env.task_id,
        env.task_secret.clone(),
        redactor.clone(),
    )?;
    let outcome = match execute(&env, workspace, &events).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let failing_command = match &e {
                RunnerError::Validate(validate::ValidateError::Failed { command, .. }) => {
                    Some(command.clone())
                }
                _ => None,
            };
            RunOutcome::Failed {
                error: redactor.redact(&e.to_string()),
                failing_command,
                wip_branch: None,
            }
        }
    };
    // Nothing the repository's code started outlives the run (daemons included, which a
    // process group does not hold).
    if let Err(e) = reaper::end_descendants().await {
        eprintln!("bg-agent runner: {e}");
    }
    // Why it failed, also as a line of the log: a reader filtering by level finds it there.
    if let RunOutcome::Failed { error, .. } = &outcome {
        events.error(format!("failed: {error}")).await?;
    }
    events.finish(outcome.clone()).await?;
    Ok(outcome)
}

async fn execute(
    env: &RunnerEnv,
    workspace: &Path,
    events: &EventSender,
) -> Result<RunOutcome, RunnerError> {
    // Before anything is started: orphans of what the runner starts become its children,
    // so that `reaper::end_descendants` finds daemons too.
    reaper::become_subreaper()?;
    let spec: TaskSpec = serde_json::from_str(env.spec_json.as_deref().unwrap_or_default())
        .map_err(|e| RunnerError::BadSpec(e.to_string()))?;
    if spec.task_id != env.task_id {
        return Err(RunnerError::TaskMismatch {
            spec: spec.task_id,
            env: env.task_id,
        });
    }
    let token = env.runner_token.expose_secret();
    if token.is_empty() {
        return Err(RunnerError::MissingEnv(RUNNER_TOKEN_ENV));
    }
    let child_env = ChildEnv::new(
        env.path.clone().unwrap_or_default(),
        env.home.clone().unwrap_or_else(|| workspace.to_path_buf()),
        workspace,
    );
    // The recipe's lockfile refresh and validation's `npm ci` resolve from one registry.
    let child_env = match spec.npm_registry.as_deref().filter(|r| !r.is_empty()) {
        Some(registry) => child_env.with("npm_config_registry", registry),
        None => child_env,
    };
    let repo_dir = workspace.join("repo");

    events.phase(Phase::Cloning, PROGRESS_CLONING).await?;
    let git = Git::clone_repo(
        child_env.clone(),
        &env.runner_token,
        &repo_dir,
        events,
        &spec.clone_url,
        &spec.default_branch,
    )
    .await?;

    // A retry's earlier change is fetched now, while the token may still be used (no
    // code of the repository has run), and applied once validation is decided.
    let resume = match spec.resume_branch.as_deref() {
        Some(branch) if spec.recipe == Recipe::Agent => fetch_resume(&git, branch, events)
            .await?
            .map(|c| (branch, c)),
        _ => None,
    };

    // Validation is decided from the default branch as cloned, before anything changes
    // it: an agent must not be able to weaken the checks its own change is held to.
    let commands = validate::commands_for(&repo_dir).await?;

    events.phase(Phase::Applying, PROGRESS_APPLYING).await?;
    let staged = if spec.recipe == Recipe::Agent {
        let resumed_from = match resume {
            Some((branch, commit)) => apply_resume(&spec, &git, branch, &commit, events).await?,
            None => None,
        };
        let agent_home = workspace.join("agent-home");
        std::fs::create_dir_all(&agent_home).map_err(RunnerError::Workspace)?;
        // The server's choice (the repository's configuration included): the credential
        // it handed over is that provider's.
        let agent_spec = spec
            .agent
            .clone()
            .unwrap_or_else(|| AgentSpec::new(AgentProvider::Command));
        let ctx = agent::AgentContext {
            spec: &spec,
            agent: &agent_spec,
            resumed_from,
            repo_dir: &repo_dir,
            home: &agent_home,
            env: &child_env,
            credential: env.agent_credential.as_ref(),
            events,
        };
        match agent_rounds(&ctx, &git, &commands).await? {
            Rounds::Validated(staged) => staged,
            Rounds::NoChanges => return Ok(RunOutcome::NoChanges),
            Rounds::Failed {
                error,
                failing_command,
                staged,
            } => {
                // Work is never lost: the unvalidated change goes to a branch of its own.
                let wip_branch = match staged {
                    Some(staged) => Some(push_wip(&spec, &git, &staged, events).await?),
                    None => None,
                };
                return Ok(RunOutcome::Failed {
                    error,
                    failing_command,
                    wip_branch,
                });
            }
        }
    } else {
        let applied = recipe::apply(&spec, &repo_dir, &child_env, events).await?;
        // Staged before validation, so what the checks leave behind (coverage reports,
        // build output) is not part of the change.
        let staged = git.stage().await?;
        if applied == Applied::NoChanges || staged.changed_files.is_empty() {
            events
                .info("no changes: nothing to validate or push")
                .await?;
            return Ok(RunOutcome::NoChanges);
        }
        events.phase(Phase::Validating, PROGRESS_VALIDATING).await?;
        validate::run_all(&commands, &repo_dir, &child_env, events).await?;
        staged
    };
    // What the change touches (tests deleted or skipped, CI, its size), before the push.
    scope::guard(&spec, &git, events).await?;

    events.phase(Phase::Pushing, PROGRESS_PUSHING).await?;
    // Made by the server, user text inert: no instructions reach the message here.
    let body = &spec.commit_body;
    let commit = git
        .commit(
            &staged.tree,
            &spec.author_name,
            &spec.author_email,
            &spec.commit_title,
            body,
        )
        .await?;
    // Nothing the repository's code started (the checks, the agent, or a program its git
    // configuration named for the commands above) may watch the push, whose environment
    // holds the token, or change what git reads for it.
    let ended = reaper::end_descendants().await?;
    if ended > 0 {
        events
            .info(format!(
                "ended {ended} processes the repository's code left running"
            ))
            .await?;
    }
    git.push(events, &commit, &spec.branch).await?;
    Ok(RunOutcome::Pushed {
        branch: spec.branch.clone(),
        commit,
        changed_files: staged.changed_files,
    })
}

/// Fetches the earlier attempt's branch `branch`; its commit, or `None` (logged) when it
/// is gone.
async fn fetch_resume(
    git: &Git,
    branch: &str,
    events: &EventSender,
) -> Result<Option<String>, RunnerError> {
    // Made by the server from a task id; anything else is not followed.
    if !is_wip_branch(branch) {
        return Err(RunnerError::BadSpec(format!(
            "{branch:?} is not a WIP branch to start from"
        )));
    }
    let commit = git.fetch_branch(events, branch).await?;
    if commit.is_none() {
        events
            .warn(format!(
                "the earlier attempt's branch {branch} is gone: starting fresh from the default branch"
            ))
            .await?;
    }
    Ok(commit)
}

/// Applies the change kept on `branch` (at `commit`) to the checkout; the branch when it
/// applied, `None` (logged) when it did not and the run starts fresh.
async fn apply_resume<'a>(
    spec: &TaskSpec,
    git: &Git,
    branch: &'a str,
    commit: &str,
    events: &EventSender,
) -> Result<Option<&'a str>, RunnerError> {
    match git
        .apply_change_of(commit, &spec.author_name, &spec.author_email)
        .await?
    {
        Ok(()) => {
            events
                .info(format!(
                    "starting from the earlier attempt's change on {branch} ({})",
                    &commit[..commit.len().min(12)]
                ))
                .await?;
            Ok(Some(branch))
        }
        Err(reason) => {
            events
                .warn(format!(
                    "the earlier attempt's change on {branch} does not apply to {} as it is now ({reason}): starting fresh",
                    spec.default_branch
                ))
                .await?;
            Ok(None)
        }
    }
}

/// How the agent's rounds ended.
enum Rounds {
    Validated(git::Staged),
    NoChanges,
    /// The agent failed, or its change failed validation after the last round;
    /// `staged` holds its change, if it made one.
    Failed {
        error: String,
        failing_command: Option<String>,
        staged: Option<git::Staged>,
    },
}

/// The verifier loop: the agent changes the checkout, the repository's checks run, and a
/// failure goes back to the agent with the end of its output, for up to
/// `verifier_rounds` more rounds. Each round is reported with what it used.
async fn agent_rounds(
    ctx: &agent::AgentContext<'_>,
    git: &Git,
    commands: &[ValidationCommand],
) -> Result<Rounds, RunnerError> {
    let spec = ctx.spec;
    let provider = ctx.agent.provider;
    let rounds = ctx.agent.verifier_rounds.saturating_add(1);
    let mut prompt = if provider == AgentProvider::Command {
        // The generic command reads exactly the instructions, as it always has.
        spec.instructions.clone()
    } else {
        agent::first_prompt(spec, ctx.resumed_from)
    };
    for round in 1..=rounds {
        if round > 1 {
            ctx.events.phase(Phase::Applying, PROGRESS_APPLYING).await?;
        }
        let invoked = agent::invoke(ctx, &prompt).await;
        let staged = git.stage().await?;
        let changed = (!staged.changed_files.is_empty()).then_some(staged);
        let usage = match invoked {
            Ok(usage) => usage,
            Err(agent::AgentError::Report(e)) => return Err(e.into()),
            Err(e) => {
                ctx.events
                    .agent_round(round, provider, ctx.agent.model.clone(), Usage::default())
                    .await?;
                return Ok(Rounds::Failed {
                    error: e.to_string(),
                    failing_command: None,
                    staged: changed,
                });
            }
        };
        ctx.events
            .agent_round(round, provider, ctx.agent.model.clone(), usage)
            .await?;
        let Some(staged) = changed else {
            ctx.events
                .info("no changes: nothing to validate or push")
                .await?;
            return Ok(Rounds::NoChanges);
        };
        ctx.events
            .phase(Phase::Validating, PROGRESS_VALIDATING)
            .await?;
        match validate::run_all(commands, ctx.repo_dir, ctx.env, ctx.events).await {
            Ok(()) => return Ok(Rounds::Validated(staged)),
            Err(validate::ValidateError::Failed {
                command,
                reason,
                output_tail,
            }) => {
                if round < rounds {
                    ctx.events
                        .warn(format!(
                            "round {round}: `{command}` {reason}; its output goes back to the agent (round {} of {rounds})",
                            round + 1
                        ))
                        .await?;
                    prompt = agent::feedback_prompt(spec, &command, &reason, &output_tail);
                    continue;
                }
                return Ok(Rounds::Failed {
                    error: format!("validation failed: {command} {reason}"),
                    failing_command: Some(command),
                    staged: Some(staged),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    // The loop returns in its last round.
    Ok(Rounds::NoChanges)
}

/// Commits the agent's unvalidated change and pushes it to `bg-agent/wip/<task-id>`.
async fn push_wip(
    spec: &TaskSpec,
    git: &Git,
    staged: &git::Staged,
    events: &EventSender,
) -> Result<String, RunnerError> {
    let branch = wip_branch(spec.task_id);
    let commit = git
        .commit(
            &staged.tree,
            &spec.author_name,
            &spec.author_email,
            &format!("WIP (not validated): {}", spec.commit_title),
            &spec.commit_body,
        )
        .await?;
    reaper::end_descendants().await?;
    git.push(events, &commit, &branch).await?;
    events
        .warn(format!(
            "the unvalidated change is kept on {branch} (no pull request)"
        ))
        .await?;
    Ok(branch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secrets_and_their_header_forms() {
        use base64::Engine as _;
        let redactor = Redactor::new(["ghs_token", "", "task-secret"]);
        let basic = base64::engine::general_purpose::STANDARD.encode("x-access-token:ghs_token");
        let line = format!("Authorization: Basic {basic} ghs_token task-secret");
        assert_eq!(
            redactor.redact(&line),
            "Authorization: Basic [REDACTED] [REDACTED] [REDACTED]"
        );
        assert_eq!(redactor.redact("nothing here"), "nothing here");
    }
}
