//! The embedded executor: the runner as a child process of the server, sandboxed by
//! bubblewrap (see [`super::sandbox`]), in a fresh temporary workspace and its own session
//! and process group, so a cancel or a timeout kills it and everything it started (a
//! process that left the group still dies with the sandbox's PID namespace), and the
//! workspace is removed when it ends.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use secrecy::ExposeSecret;
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, watch};

use bg_agent_core::protocol::Redactor;

use crate::background::Background;

use super::sandbox::{self, Sandbox, SandboxError};
use super::{ExecutionId, Executor, ExecutorError, Launch, Observed};

/// How long a cancelled runner gets to stop on SIGTERM before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);
/// At server shutdown, killed runners get this long to be reaped, their output read to
/// the end and their workspaces removed.
const CLEANUP_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct LocalExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    program: PathBuf,
    args: Vec<String>,
    workspaces: PathBuf,
    /// `None` only with `BG_AGENT_SANDBOX=off`.
    sandbox: Option<Sandbox>,
    executions: Mutex<HashMap<ExecutionId, Execution>>,
    /// Per runner: the task that reaps it and removes its workspace, and the readers of
    /// its output.
    work: Background,
}

struct Execution {
    state: watch::Receiver<Observed>,
    cancel: Option<oneshot::Sender<()>>,
    pgid: Option<Pid>,
}

impl LocalExecutor {
    /// Runs `program args...` (normally this binary with `runner`) for each task, inside
    /// `sandbox`, in a workspace created under `workspaces`. Fails when the sandbox user
    /// could not reach the workspaces or the program.
    pub fn sandboxed(
        program: PathBuf,
        args: Vec<String>,
        workspaces: PathBuf,
        sandbox: Sandbox,
    ) -> Result<Self, SandboxError> {
        std::fs::create_dir_all(&workspaces)?;
        sandbox.admit_workspaces(&workspaces)?;
        let program = sandbox.admit_program(&program, &workspaces)?;
        Ok(Self::with(program, args, workspaces, Some(sandbox)))
    }

    /// As [`Self::sandboxed`] with nothing between the runner and the server: it runs as
    /// the server's user and can read everything the server can. Development only
    /// (`BG_AGENT_SANDBOX=off`).
    pub fn unsandboxed(program: PathBuf, args: Vec<String>, workspaces: PathBuf) -> Self {
        Self::with(program, args, workspaces, None)
    }

    fn with(
        program: PathBuf,
        args: Vec<String>,
        workspaces: PathBuf,
        sandbox: Option<Sandbox>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                program,
                args,
                workspaces,
                sandbox,
                executions: Mutex::new(HashMap::new()),
                work: Background::new(),
            }),
        }
    }

    /// Where task workspaces are created.
    pub fn workspaces(&self) -> &std::path::Path {
        &self.inner.workspaces
    }

    fn executions(&self) -> std::sync::MutexGuard<'_, HashMap<ExecutionId, Execution>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts
        // and lookups), so a poisoned lock is still usable.
        self.inner
            .executions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runners are background work sharing the host with the server: at this niceness they
/// (and the git and npm processes they start, which inherit it) yield the CPU to webhook
/// intake and task launches when the machine is busy.
const RUNNER_NICENESS: i32 = 10;

/// Runs in the forked child before it executes bubblewrap (or the runner): only
/// async-signal-safe calls. A new session makes it the leader of its own process group,
/// with no controlling terminal for anything inside to reach; the niceness and limits
/// are inherited by everything it starts.
fn prepare_child(limits: Option<sandbox::Limits>) -> std::io::Result<()> {
    nix::unistd::setsid().map_err(std::io::Error::from)?;
    // SAFETY: setpriority takes plain integers and touches no memory of ours. Failing to
    // lower the priority is not a reason to fail the task.
    let _ = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, RUNNER_NICENESS) };
    if let Some(limits) = limits {
        sandbox::apply_limits(limits)?;
    }
    Ok(())
}

/// Signals the whole process group; a group that is already gone is not an error.
fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(pgid = pgid.as_raw(), %signal, error = %e, "cannot signal the runner")
        }
    }
}

impl Executor for LocalExecutor {
    async fn launch(&self, launch: Launch) -> Result<ExecutionId, ExecutorError> {
        std::fs::create_dir_all(&self.inner.workspaces).map_err(ExecutorError::Workspace)?;
        let workspace = tempfile::Builder::new()
            .prefix(&format!("task-{}-", launch.task_id))
            .tempdir_in(&self.inner.workspaces)
            .map_err(ExecutorError::Workspace)?;
        let (mut command, home) = match &self.inner.sandbox {
            Some(sandbox) => {
                sandbox
                    .own_workspace(workspace.path())
                    .map_err(ExecutorError::Workspace)?;
                let command =
                    sandbox.command(workspace.path(), &self.inner.program, &self.inner.args);
                (command, PathBuf::from(sandbox::WORKSPACE))
            }
            None => {
                let mut command = tokio::process::Command::new(&self.inner.program);
                command.args(&self.inner.args).current_dir(workspace.path());
                (command, workspace.path().to_owned())
            }
        };
        let limits = self.inner.sandbox.as_ref().map(Sandbox::limits);
        // SAFETY: `prepare_child` makes only async-signal-safe calls (setsid, setpriority,
        // setrlimit) between fork and exec.
        unsafe {
            command.pre_exec(move || prepare_child(limits));
        }
        command
            // Nothing of the server's environment (its database URL, its key) leaks in.
            // bubblewrap passes this environment on to the runner: secrets never go
            // through its arguments (`--setenv`), which anyone can read in /proc.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("BG_AGENT_TASK_ID", launch.task_id.to_string())
            .env("BG_AGENT_CALLBACK_URL", &launch.callback_url)
            .env("BG_AGENT_TASK_SECRET", launch.task_secret.expose_secret())
            .env("BG_AGENT_RUNNER_TOKEN", launch.runner_token.expose_secret())
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| ExecutorError::Spawn {
            program: self.inner.program.display().to_string(),
            source,
        })?;
        let pid = child.id();
        let pgid = pid
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        let id = ExecutionId(format!("local-{}-{}", launch.task_id, uuid::Uuid::new_v4()));
        let redactor = Redactor::new([
            launch.task_secret.expose_secret(),
            launch.runner_token.expose_secret(),
        ]);
        let task_id = launch.task_id;
        for output in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let redactor = redactor.clone();
            self.inner.work.spawn("runner output", async move {
                // Read in chunks and bounded per line: the runner's output is not trusted
                // to end its lines.
                let (mut output, mut chunk) = (output, vec![0u8; 8192]);
                let mut splitter = bg_agent_core::output::LineSplitter::default();
                while let Ok(n @ 1..) = output.read(&mut chunk).await {
                    for line in splitter.feed(&chunk[..n]) {
                        tracing::debug!(task = task_id, line = %redactor.redact(&line), "runner output");
                    }
                }
                if let Some(line) = splitter.finish() {
                    tracing::debug!(task = task_id, line = %redactor.redact(&line), "runner output");
                }
            });
        }

        let (state_tx, state_rx) = watch::channel(Observed::Running);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let timeout = launch.timeout;
        let sandboxed = self.inner.sandbox.is_some();
        self.inner.work.spawn("runner", async move {
            let observed = tokio::select! {
                status = child.wait() => Observed::Exited {
                    code: status.ok().and_then(|s| s.code()),
                },
                () = tokio::time::sleep(timeout) => {
                    if let Some(pgid) = pgid {
                        signal_group(pgid, Signal::SIGKILL);
                    }
                    let _ = child.wait().await;
                    Observed::TimedOut
                }
                Ok(()) = cancel_rx => {
                    // Sandboxed, the runner is its PID namespace's init, which ignores a
                    // SIGTERM it has no handler for: its children would die first and it
                    // would report their failure. It keeps nothing that needs a graceful
                    // stop, so the sandbox is killed at once.
                    let first = if sandboxed { Signal::SIGKILL } else { Signal::SIGTERM };
                    if let Some(pgid) = pgid {
                        signal_group(pgid, first);
                    }
                    if tokio::time::timeout(TERMINATE_GRACE, child.wait()).await.is_err() {
                        if let Some(pgid) = pgid {
                            signal_group(pgid, Signal::SIGKILL);
                        }
                        let _ = child.wait().await;
                    }
                    Observed::Cancelled
                }
            };
            // Whatever the runner left behind in its group goes too. Sandboxed, nothing
            // is left: bubblewrap ends after the runner, and the runner's end as the PID
            // namespace's init ends every process of the namespace, also one that left
            // the group (`setsid`).
            if let Some(pgid) = pgid {
                signal_group(pgid, Signal::SIGKILL);
            }
            if let Err(e) = workspace.close() {
                tracing::warn!(task = task_id, error = %e, "cannot remove the workspace");
            }
            tracing::info!(task = task_id, ?observed, "runner ended");
            let _ = state_tx.send(observed);
        });
        self.executions().insert(
            id.clone(),
            Execution {
                state: state_rx,
                cancel: Some(cancel_tx),
                pgid,
            },
        );
        Ok(id)
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<(), ExecutorError> {
        let (cancel, mut state) = {
            let mut executions = self.executions();
            let Some(execution) = executions.get_mut(id) else {
                return Ok(());
            };
            (execution.cancel.take(), execution.state.clone())
        };
        if let Some(cancel) = cancel {
            let _ = cancel.send(());
        }
        // Returns once it has really stopped (the grace period bounds this).
        let _ = state.wait_for(|s| *s != Observed::Running).await;
        Ok(())
    }

    async fn observe(&self, id: &ExecutionId) -> Observed {
        self.executions()
            .get(id)
            .map_or(Observed::Unknown, |e| *e.state.borrow())
    }

    fn sees_all_executions(&self) -> bool {
        false
    }

    /// Children of a stopping server would report into nothing and be judged lost by
    /// the next one anyway: they end now, with everything they started, and their
    /// workspaces go.
    async fn server_stopping(&self) {
        for execution in self.executions().values() {
            if *execution.state.borrow() == Observed::Running
                && let Some(pgid) = execution.pgid
            {
                signal_group(pgid, Signal::SIGKILL);
            }
        }
        self.inner.work.finish("runners", CLEANUP_GRACE).await;
    }

    async fn wait(&self, id: &ExecutionId) -> Observed {
        let state = self.executions().get(id).map(|e| e.state.clone());
        let Some(mut state) = state else {
            return Observed::Unknown;
        };
        match state.wait_for(|s| *s != Observed::Running).await {
            Ok(observed) => *observed,
            Err(_) => Observed::Unknown,
        }
    }
}
