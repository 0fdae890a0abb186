//! Where a task's runner runs. The engine launches, observes and cancels executions
//! through [`Executor`]; `local` runs the runner as a child process in a bubblewrap
//! `sandbox` (the embedded default), and the Kubernetes executor (a later issue) runs it
//! as a Job.

pub mod local;
pub mod sandbox;

use std::future::Future;
use std::time::Duration;

use secrecy::SecretString;

pub use local::LocalExecutor;
pub use sandbox::{Sandbox, SandboxError, SandboxMode, SandboxSettings};

/// What a runner is given. Secrets travel in the environment, never in argv (which any
/// user on the machine can read in `/proc`).
#[derive(Debug, Clone)]
pub struct Launch {
    pub task_id: i64,
    /// Where the runner reports (`POST {callback_url}/internal/tasks/{id}/events`).
    pub callback_url: String,
    /// Authenticates the runner's reports; the server keeps only its hash.
    pub task_secret: SecretString,
    /// Installation token narrowed to the task's repository, `contents: write` only.
    pub runner_token: SecretString,
    /// The coding agent's provider credential, for agent tasks only; the runner hands it
    /// to the agent process alone (`BG_AGENT_AGENT_CREDENTIAL`).
    pub agent_credential: Option<SecretString>,
    /// The execution is killed after this long.
    pub timeout: Duration,
    /// Further, non-secret settings for the runner (repository, branch, recipe...).
    pub env: Vec<(String, String)>,
}

/// Identifies one execution, as stored with the task.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecutionId(pub String);

/// What an execution is doing, as far as the executor can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Running,
    /// Ended by itself; `code` is `None` when a signal ended it.
    Exited {
        code: Option<i32>,
    },
    /// Killed because it ran past its timeout.
    TimedOut,
    /// Stopped by [`Executor::cancel`].
    Cancelled,
    /// The executor knows nothing of it (e.g. the server restarted): it is lost.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("cannot prepare a workspace: {0}")]
    Workspace(std::io::Error),
    #[error("cannot start the runner {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot stop execution {0}: {1}")]
    Signal(String, String),
}

pub trait Executor: Send + Sync + 'static {
    fn launch(
        &self,
        launch: Launch,
    ) -> impl Future<Output = Result<ExecutionId, ExecutorError>> + Send;

    /// Stops the execution (and everything it started). Idempotent.
    fn cancel(&self, id: &ExecutionId) -> impl Future<Output = Result<(), ExecutorError>> + Send;

    fn observe(&self, id: &ExecutionId) -> impl Future<Output = Observed> + Send;

    /// Whether [`Executor::observe`] sees every replica's executions (Kubernetes Jobs)
    /// or only this process's own (child processes): then another replica's task is left
    /// to that replica while it is alive.
    fn sees_all_executions(&self) -> bool {
        true
    }

    /// The server is starting: executions a previous server left running are found
    /// again (the local executor's runners that outlived a killed server), and what
    /// ended ones left behind is removed.
    fn server_starting(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// The server is stopping. Executions that cannot outlive it (the local executor's
    /// child processes) are stopped, and this resolves once they have ended (within a
    /// bound); those that can (Kubernetes Jobs) keep running and are found again by the
    /// next server's reconciler.
    fn server_stopping(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Resolves once the execution is no longer running, saying how it ended. Executors
    /// that cannot be told poll [`Executor::observe`].
    fn wait(&self, id: &ExecutionId) -> impl Future<Output = Observed> + Send {
        async move {
            loop {
                let observed = self.observe(id).await;
                if observed != Observed::Running {
                    return observed;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
