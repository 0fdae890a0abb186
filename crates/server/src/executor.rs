//! Where a task's runner runs. The engine launches, observes and cancels executions
//! through [`Executor`]; `local` runs the runner as a child process in a bubblewrap
//! `sandbox` (the embedded default), and `kubernetes` runs it as a Job. [`Configured`]
//! is the one the configuration chose.

pub mod kubernetes;
pub mod local;
pub mod runner_image;
pub mod sandbox;

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use secrecy::SecretString;

pub use kubernetes::KubernetesExecutor;
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Ended for a reason of the executor's own (a Kubernetes Job evicted, out of memory,
    /// its image not pulled): `reason` is the task's error as the person who asked reads
    /// it (its first line is what GitHub shows).
    Failed {
        reason: String,
    },
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
    #[error("Kubernetes: {0}")]
    Kubernetes(String),
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

    /// The running execution of `task_id`, found without its id: a server killed between
    /// launching a runner and recording its execution left a task with none, and the
    /// runner may still be running. `None` when there is none (or no way to tell).
    fn find(&self, task_id: i64) -> impl Future<Output = Option<ExecutionId>> + Send {
        let _ = task_id;
        async { None }
    }

    /// The server is starting: executions a previous server left running are found
    /// again (the local executor's runners that outlived a killed server), and what
    /// ended ones left behind is removed.
    fn server_starting(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Called once after [`Executor::server_starting`] with the tasks still active then:
    /// executions found at start whose task has ended are removed.
    fn remove_ended(&self, active_tasks: &HashSet<i64>) -> impl Future<Output = ()> + Send {
        let _ = active_tasks;
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

/// The executor the configuration chose (`BG_AGENT_EXECUTOR`).
#[derive(Clone)]
pub enum Configured {
    Local(LocalExecutor),
    Kubernetes(KubernetesExecutor),
}

impl Executor for Configured {
    async fn launch(&self, launch: Launch) -> Result<ExecutionId, ExecutorError> {
        match self {
            Self::Local(e) => e.launch(launch).await,
            Self::Kubernetes(e) => e.launch(launch).await,
        }
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<(), ExecutorError> {
        match self {
            Self::Local(e) => e.cancel(id).await,
            Self::Kubernetes(e) => e.cancel(id).await,
        }
    }

    async fn observe(&self, id: &ExecutionId) -> Observed {
        match self {
            Self::Local(e) => e.observe(id).await,
            Self::Kubernetes(e) => e.observe(id).await,
        }
    }

    fn sees_all_executions(&self) -> bool {
        match self {
            Self::Local(e) => e.sees_all_executions(),
            Self::Kubernetes(e) => e.sees_all_executions(),
        }
    }

    async fn find(&self, task_id: i64) -> Option<ExecutionId> {
        match self {
            Self::Local(e) => e.find(task_id).await,
            Self::Kubernetes(e) => e.find(task_id).await,
        }
    }

    async fn server_starting(&self) {
        match self {
            Self::Local(e) => e.server_starting().await,
            Self::Kubernetes(e) => e.server_starting().await,
        }
    }

    async fn remove_ended(&self, active_tasks: &HashSet<i64>) {
        match self {
            Self::Local(e) => e.remove_ended(active_tasks).await,
            Self::Kubernetes(e) => e.remove_ended(active_tasks).await,
        }
    }

    async fn server_stopping(&self) {
        match self {
            Self::Local(e) => e.server_stopping().await,
            Self::Kubernetes(e) => e.server_stopping().await,
        }
    }

    async fn wait(&self, id: &ExecutionId) -> Observed {
        match self {
            Self::Local(e) => e.wait(id).await,
            Self::Kubernetes(e) => e.wait(id).await,
        }
    }
}
