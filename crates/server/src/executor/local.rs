//! The embedded executor: the runner as a child process of the server, sandboxed by
//! bubblewrap (see [`super::sandbox`]), in a fresh temporary workspace and its own session
//! and process group, so a cancel or a timeout kills it and everything it started (a
//! process that left the group still dies with the sandbox's PID namespace), and the
//! workspace is removed when it ends.
//!
//! A runner outlives a server killed without warning (SIGKILL, OOM): its execution id
//! names its sandbox's process on this host (boot id, pid, start time) and its workspace,
//! so the next server finds it again ([`Handle`]), watches it, can cancel it, and removes
//! its workspace once it has ended. Its output goes to a file beside the workspace, not a
//! pipe to the server, which would break with the server and end the runner's logging.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use secrecy::ExposeSecret;
use tokio::sync::{oneshot, watch};

use bg_agent_core::protocol::{AGENT_CREDENTIAL_ENV, Redactor};

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
    /// Started by an earlier server (or another on this host): left running when this
    /// one stops.
    adopted: bool,
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

/// How often an adopted runner (one a previous server started) is looked at.
const ADOPTED_POLL: Duration = Duration::from_millis(500);
/// At most this much of a runner's output is logged when it ends.
const OUTPUT_TAIL: u64 = 64 << 10;

/// What finds a runner's sandbox again on this host: the process the server started
/// (bubblewrap, the leader of the runner's process group), its start time (a pid is
/// reused; pid and start time together are not), the boot it was started in, and its
/// workspace's name under the workspaces directory. Stored as the execution id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handle {
    boot: String,
    pid: i32,
    start: u64,
    workspace: String,
}

impl Handle {
    const PREFIX: &'static str = "local:";

    /// The handle of the process `pid` just started in `workspace`.
    fn of(pid: Pid, workspace: &Path) -> Option<Self> {
        let (_, start) = process_stat(pid.as_raw())?;
        Some(Self {
            boot: boot_id()?,
            pid: pid.as_raw(),
            start,
            workspace: workspace.file_name()?.to_str()?.to_owned(),
        })
    }

    fn encode(&self) -> String {
        format!(
            "{}{}:{}:{}:{}",
            Self::PREFIX,
            self.boot,
            self.pid,
            self.start,
            self.workspace
        )
    }

    /// `None` for anything but a handle this executor wrote (an older id, another
    /// executor's); the workspace must be a plain name, so that removing it can only
    /// remove a directory under the workspaces directory.
    fn parse(id: &str) -> Option<Self> {
        let mut parts = id.strip_prefix(Self::PREFIX)?.splitn(4, ':');
        let boot = parts.next()?.to_owned();
        let pid: i32 = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        let workspace = parts.next()?.to_owned();
        let plain =
            workspace.starts_with("task-") && !workspace.contains('/') && !workspace.contains("..");
        (pid > 1 && plain && !boot.is_empty()).then_some(Self {
            boot,
            pid,
            start,
            workspace,
        })
    }

    /// Whether the process still runs: same boot, same pid started at the same time,
    /// not a zombie.
    fn alive(&self) -> bool {
        boot_id().as_deref() == Some(self.boot.as_str())
            && process_stat(self.pid)
                .is_some_and(|(state, start)| start == self.start && !matches!(state, 'Z' | 'X'))
    }
}

/// This boot of the host (a pid and a start time mean nothing across a reboot).
fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && !id.contains(':')).then(|| id.to_owned())
}

/// A process's state and start time (clock ticks since boot), from `/proc/<pid>/stat`.
fn process_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (2nd field) may hold spaces and parentheses: fields are counted
    // from the last ')'.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// A runner's output file, beside its workspace (`<workspace>.out`): the workspaces
/// directory is not in the sandbox's view.
struct OutputFile(PathBuf);

impl OutputFile {
    fn beside(workspace: &Path) -> Self {
        let mut name = workspace.as_os_str().to_owned();
        name.push(".out");
        Self(PathBuf::from(name))
    }

    fn create(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.0)
    }

    /// Logs the end of the output (debug level), with the runner's secrets redacted.
    fn log_tail(&self, task_id: i64, redactor: &Redactor) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let Ok(mut file) = std::fs::File::open(&self.0) else {
            return;
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut tail = Vec::new();
        if file
            .seek(SeekFrom::Start(len.saturating_sub(OUTPUT_TAIL)))
            .and_then(|_| file.read_to_end(&mut tail))
            .is_err()
        {
            return;
        }
        for line in String::from_utf8_lossy(&tail).lines() {
            tracing::debug!(task = task_id, line = %redactor.redact(line), "runner output");
        }
    }

    fn remove(&self) {
        remove_file(&self.0);
    }
}

impl LocalExecutor {
    /// Takes over a runner a previous server on this host started and that still runs:
    /// from now on it is watched like one of this server's own (cancel, workspace
    /// removal when it ends). `None` if `id` names no such runner.
    fn adopt(&self, id: &ExecutionId) -> Option<watch::Receiver<Observed>> {
        let handle = Handle::parse(&id.0)?;
        let mut executions = self.executions();
        if let Some(execution) = executions.get(id) {
            return Some(execution.state.clone());
        }
        let workspace = self.inner.workspaces.join(&handle.workspace);
        if !handle.alive() {
            // Gone with its server, or since: what it left goes now.
            remove_left_behind(&workspace);
            return None;
        }
        let (state_tx, state_rx) = watch::channel(Observed::Running);
        let (cancel_tx, mut cancel_rx) = oneshot::channel::<()>();
        let pgid = Pid::from_raw(handle.pid);
        tracing::info!(execution = %id.0, "adopted a runner a previous server started");
        let stopping = self.inner.work.token().clone();
        self.inner.work.spawn("adopted runner", async move {
            let observed = loop {
                tokio::select! {
                    // This server stops; the runner goes on, for the next to adopt.
                    () = stopping.cancelled() => return,
                    () = tokio::time::sleep(ADOPTED_POLL) => {
                        if !handle.alive() {
                            // It reported its end (if it could) before exiting; its exit
                            // status went to whoever reaped it.
                            break Observed::Unknown;
                        }
                    }
                    Ok(()) = &mut cancel_rx => {
                        // The sandbox, as with an own runner, is killed at once.
                        if handle.alive() {
                            signal_group(pgid, Signal::SIGKILL);
                        }
                        while handle.alive() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        break Observed::Cancelled;
                    }
                }
            };
            remove_left_behind(&workspace);
            tracing::info!(workspace = %workspace.display(), ?observed, "adopted runner ended");
            let _ = state_tx.send(observed);
        });
        executions.insert(
            id.clone(),
            Execution {
                state: state_rx.clone(),
                cancel: Some(cancel_tx),
                pgid: Some(pgid),
                adopted: true,
            },
        );
        Some(state_rx)
    }

    /// This server's own execution, or an adopted one.
    fn state(&self, id: &ExecutionId) -> Option<watch::Receiver<Observed>> {
        let own = self.executions().get(id).map(|e| e.state.clone());
        own.or_else(|| self.adopt(id))
    }
}

/// `<workspace>.id`: the execution id of the runner in `workspace`.
fn id_file(workspace: &Path) -> PathBuf {
    let mut name = workspace.as_os_str().to_owned();
    name.push(".id");
    PathBuf::from(name)
}

/// A runner's workspace, output and id file.
fn remove_left_behind(workspace: &Path) {
    remove_workspace(workspace);
    OutputFile::beside(workspace).remove();
    remove_file(&id_file(workspace));
}

fn remove_file(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a runner's file")
        }
    }
}

fn remove_workspace(workspace: &Path) {
    match std::fs::remove_dir_all(workspace) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(workspace = %workspace.display(), error = %e, "cannot remove the workspace")
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
        // The runner's output goes to a file the server owns, outside the sandbox's view:
        // a pipe would break when the server dies, and the runner with its next line.
        let output = OutputFile::beside(workspace.path());
        let output_file = output.create().map_err(ExecutorError::Workspace)?;
        let stderr = output_file.try_clone().map_err(ExecutorError::Workspace)?;
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
            .envs(
                launch
                    .agent_credential
                    .as_ref()
                    .map(|c| (AGENT_CREDENTIAL_ENV, c.expose_secret())),
            )
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(output_file)
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| {
            output.remove();
            ExecutorError::Spawn {
                program: self.inner.program.display().to_string(),
                source,
            }
        })?;
        let pid = child.id();
        let pgid = pid
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        // Named by what finds the process again after a restart; where that cannot be
        // read (no /proc), by a random id that only this server knows.
        let id = pgid
            .and_then(|pid| Handle::of(pid, workspace.path()))
            .map_or_else(
                || ExecutionId(format!("local-{}-{}", launch.task_id, uuid::Uuid::new_v4())),
                |handle| ExecutionId(handle.encode()),
            );
        // Beside the workspace, so that the next server finds this runner even before
        // its task is looked at (see `server_starting`).
        if let Err(e) = std::fs::write(id_file(workspace.path()), &id.0) {
            tracing::warn!(task = launch.task_id, error = %e, "cannot record the execution beside its workspace");
        }
        let redactor = Redactor::new(
            [
                launch.task_secret.expose_secret(),
                launch.runner_token.expose_secret(),
            ]
            .into_iter()
            .chain(launch.agent_credential.as_ref().map(|c| c.expose_secret())),
        );
        let task_id = launch.task_id;

        let (state_tx, state_rx) = watch::channel(Observed::Running);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let timeout = launch.timeout;
        let sandboxed = self.inner.sandbox.is_some();
        let workspace_path = workspace.path().to_owned();
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
            output.log_tail(task_id, &redactor);
            output.remove();
            remove_file(&id_file(&workspace_path));
            tracing::info!(task = task_id, ?observed, "runner ended");
            let _ = state_tx.send(observed);
        });
        self.executions().insert(
            id.clone(),
            Execution {
                state: state_rx,
                cancel: Some(cancel_tx),
                pgid,
                adopted: false,
            },
        );
        Ok(id)
    }

    async fn cancel(&self, id: &ExecutionId) -> Result<(), ExecutorError> {
        // A runner a previous server started is taken over first, so that it can be
        // stopped too.
        let _ = self.state(id);
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
        self.state(id)
            .map_or(Observed::Unknown, |state| state.borrow().clone())
    }

    fn sees_all_executions(&self) -> bool {
        false
    }

    /// A runner of the task still alive on this host, from the id file beside its
    /// workspace (`task-<id>-*.id`), adopted.
    async fn find(&self, task_id: i64) -> Option<ExecutionId> {
        let prefix = format!("task-{task_id}-");
        let entries = std::fs::read_dir(&self.inner.workspaces).ok()?;
        entries.flatten().find_map(|entry| {
            let path = entry.path();
            let name = path.file_name()?.to_str()?;
            if !name.starts_with(&prefix) || path.extension().is_none_or(|e| e != "id") {
                return None;
            }
            let id = ExecutionId(std::fs::read_to_string(&path).ok()?);
            let handle = Handle::parse(&id.0)?;
            let workspace = path.with_extension("");
            if workspace.file_name()? != handle.workspace.as_str() {
                return None;
            }
            let state = self.state(&id)?;
            let running = *state.borrow() == Observed::Running;
            running.then_some(id)
        })
    }

    /// Runners a killed server left are adopted at once (their tasks are reconciled
    /// once that server's silence has shown it gone); ended ones' workspaces go.
    async fn server_starting(&self) {
        let Ok(entries) = std::fs::read_dir(&self.inner.workspaces) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "id") {
                continue;
            }
            let workspace = path.with_extension("");
            match std::fs::read_to_string(&path) {
                Ok(id)
                    if Handle::parse(&id).is_some_and(|h| {
                        workspace
                            .file_name()
                            .is_some_and(|n| n == h.workspace.as_str())
                    }) =>
                {
                    // Removes what an ended one left.
                    let _ = self.adopt(&ExecutionId(id));
                }
                _ => remove_left_behind(&workspace),
            }
        }
    }

    /// A server that stops on request takes the runners it started with it: they end
    /// now, with everything they started, and their workspaces go. Only a server that
    /// dies without stopping (SIGKILL, a crash) leaves its runners for the next to
    /// adopt; runners it adopted itself are left running for the next too (they may be
    /// another live server's on this host).
    async fn server_stopping(&self) {
        for execution in self.executions().values() {
            if *execution.state.borrow() == Observed::Running
                && !execution.adopted
                && let Some(pgid) = execution.pgid
            {
                signal_group(pgid, Signal::SIGKILL);
            }
        }
        // Adopted runners' watchers end; the runners do not.
        self.inner.work.stop();
        self.inner.work.finish("runners", CLEANUP_GRACE).await;
    }

    async fn wait(&self, id: &ExecutionId) -> Observed {
        let Some(mut state) = self.state(id) else {
            return Observed::Unknown;
        };
        match state.wait_for(|s| *s != Observed::Running).await {
            Ok(observed) => observed.clone(),
            Err(_) => Observed::Unknown,
        }
    }
}
