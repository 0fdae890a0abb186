//! Child processes of the runner: always argv (no shell), always a cleared environment
//! that holds none of the runner's secrets, output streamed to the events line by line.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bg_agent_core::output::LineSplitter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::events::{EventError, EventSender};

/// How long output is still read after a child has exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// The environment children start from. It never holds the runner token, the task secret
/// or the task spec: what runs in the repository (its tests, an agent) is not trusted
/// with them.
#[derive(Clone, Debug)]
pub struct ChildEnv {
    vars: Vec<(OsString, OsString)>,
}

impl ChildEnv {
    pub fn new(path: OsString, home: PathBuf, workspace: &Path) -> Self {
        let mut vars: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), path),
            ("HOME".into(), home.into_os_string()),
            // Tools behave as in CI: no prompts, no colours, no spinners.
            ("CI".into(), "true".into()),
            ("NO_COLOR".into(), "1".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            // npm: a cache inside the workspace (removed with it), and no calls home.
            (
                "npm_config_cache".into(),
                workspace.join(".npm-cache").into_os_string(),
            ),
            ("npm_config_update_notifier".into(), "false".into()),
            ("npm_config_fund".into(), "false".into()),
            ("npm_config_audit".into(), "false".into()),
        ];
        vars.retain(|(_, value)| !value.is_empty());
        Self { vars }
    }

    /// This environment plus (or with a new value for) `name`.
    pub fn with(&self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        let name = name.into();
        let mut vars: Vec<_> = self
            .vars
            .iter()
            .filter(|(n, _)| *n != name)
            .cloned()
            .collect();
        vars.push((name, value.into()));
        Self { vars }
    }

    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_os_str())
    }

    /// `argv[0] argv[1..]` in `cwd` with exactly this environment, stdin closed.
    pub fn command(&self, argv: &[String], cwd: &Path) -> Option<tokio::process::Command> {
        let (program, args) = argv.split_first()?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Some(command)
    }
}

/// How a streamed child ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// `None` when a signal ended it.
    pub code: Option<i32>,
    pub duration: Duration,
    /// The last characters of stdout and stderr, interleaved as they arrived.
    pub tail: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for {program} failed: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error("an empty command")]
    Empty,
    #[error(transparent)]
    Report(#[from] EventError),
}

/// Runs `command`, feeding `stdin` (then closing it) if given, reporting each output line
/// and keeping the last `tail_chars` characters.
pub async fn run_streamed(
    command: tokio::process::Command,
    program: &str,
    stdin: Option<&[u8]>,
    events: &EventSender,
    tail_chars: usize,
) -> Result<Finished, ProcessError> {
    let finished = run_observed(
        command,
        program,
        stdin,
        events,
        tail_chars,
        &mut |line| Verdict::Log(Some(line.to_owned())),
        None,
    )
    .await?;
    Ok(finished.finished)
}

/// What to do with one output line of an observed child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Report this (the line, or a summary of it), or nothing.
    Log(Option<String>),
    /// End the child (and its process group) now, for this reason.
    Stop(String),
}

/// How an observed child ended.
#[derive(Debug, Clone)]
pub struct ObservedEnd {
    pub finished: Finished,
    /// Why the runner ended it (a limit), if it did.
    pub stopped: Option<String>,
}

/// As [`run_streamed`], with each line handed to `observe` first (it decides what is
/// reported, and may stop the child), and the child's whole process group killed after
/// `limit`. The command must have been made the leader of its own process group
/// (`process_group(0)`), so that a stop ends what it started too.
pub async fn run_observed(
    mut command: tokio::process::Command,
    program: &str,
    stdin: Option<&[u8]>,
    events: &EventSender,
    tail_chars: usize,
    observe: &mut (dyn FnMut(&str) -> Verdict + Send),
    limit: Option<Duration>,
) -> Result<ObservedEnd, ProcessError> {
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let started = Instant::now();
    let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
        program: program.to_owned(),
        source,
    })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        // Written concurrently with reading the output, so neither side can block the other;
        // a child that exits without reading its input is not an error.
        tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
            let _ = pipe.shutdown().await;
        });
    }
    let (lines_tx, mut lines) = mpsc::channel::<String>(64);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(forward_lines(out, lines_tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(forward_lines(err, lines_tx.clone()));
    }
    drop(lines_tx);
    let mut tail = Tail::new(tail_chars);
    let pgid = child.id().and_then(|pid| i32::try_from(pid).ok());
    let mut stopped = None;
    let deadline = limit.map(|limit| tokio::time::Instant::now() + limit);
    // Output is read until the child has exited and its pipes are closed; a grandchild
    // left running (a server a test forgot to stop) keeps them open, so after the exit
    // the rest gets a short grace instead of holding the run until its timeout.
    let mut exited = None;
    let mut grace_ends = None;
    loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => {
                    tail.push(&line);
                    match observe(&line) {
                        Verdict::Log(Some(text)) => events.log(&text).await?,
                        Verdict::Log(None) => {}
                        Verdict::Stop(reason) => {
                            if stopped.is_none() {
                                events.warn(format!("stopping {program}: {reason}")).await?;
                                kill_group(pgid, &mut child);
                                stopped = Some(reason);
                            }
                        }
                    }
                }
                None => break,
            },
            status = child.wait(), if exited.is_none() => {
                exited = Some((status, started.elapsed()));
                grace_ends = Some(tokio::time::Instant::now() + OUTPUT_GRACE);
            }
            () = sleep_until(deadline), if deadline.is_some() && stopped.is_none() && exited.is_none() => {
                let reason = format!(
                    "it ran past its time limit ({}s)",
                    limit.map_or(0, |l| l.as_secs())
                );
                events.warn(format!("stopping {program}: {reason}")).await?;
                kill_group(pgid, &mut child);
                stopped = Some(reason);
            }
            () = sleep_until(grace_ends), if grace_ends.is_some() => break,
        }
    }
    let (status, duration) = match exited {
        Some(exited) => exited,
        None => (child.wait().await, started.elapsed()),
    };
    let status = status.map_err(|source| ProcessError::Wait {
        program: program.to_owned(),
        source,
    })?;
    Ok(ObservedEnd {
        finished: Finished {
            code: status.code(),
            duration,
            tail: tail.into_string(),
        },
        stopped,
    })
}

/// Kills the child's process group (the child leads it), or the child alone.
fn kill_group(pgid: Option<i32>, child: &mut tokio::process::Child) {
    match pgid {
        Some(pgid) if pgid > 1 => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        _ => {
            let _ = child.start_kill();
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Forwards `output` line by line, reading it in chunks: a line is bounded
/// ([`LineSplitter`]), so output without a newline is never held whole.
async fn forward_lines(mut output: impl AsyncRead + Unpin, lines: mpsc::Sender<String>) {
    let mut splitter = LineSplitter::default();
    let mut chunk = vec![0u8; 8192];
    loop {
        match output.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                for line in splitter.feed(&chunk[..n]) {
                    if lines.send(line).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    if let Some(line) = splitter.finish() {
        let _ = lines.send(line).await;
    }
}

/// The last `max` characters of a stream of lines.
struct Tail {
    max: usize,
    text: String,
}

impl Tail {
    fn new(max: usize) -> Self {
        Self {
            max,
            text: String::new(),
        }
    }

    fn push(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
        // Trimmed in bulk, not per line, to stay linear in the output's size.
        if self.text.len() > self.max.saturating_mul(8).max(4096) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        let chars = self.text.chars().count();
        if chars > self.max {
            let cut = self
                .text
                .char_indices()
                .nth(chars - self.max)
                .map_or(self.text.len(), |(i, _)| i);
            self.text.drain(..cut);
        }
    }

    fn into_string(mut self) -> String {
        self.trim();
        self.text
    }
}

/// Output of a short command whose output is data (git plumbing), not a log.
#[derive(Debug)]
pub struct Captured {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

pub async fn run_captured(
    mut command: tokio::process::Command,
    program: &str,
) -> Result<Captured, ProcessError> {
    let output = command
        .output()
        .await
        .map_err(|source| ProcessError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    Ok(Captured {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_characters() {
        let mut tail = Tail::new(10);
        for i in 0..1000 {
            tail.push(&format!("line {i}"));
        }
        assert_eq!(tail.into_string(), "\nline 999\n");
        let mut short = Tail::new(100);
        short.push("é ok");
        assert_eq!(short.into_string(), "é ok\n");
    }

    #[tokio::test]
    async fn output_without_newlines_is_forwarded_in_bounded_lines() {
        use bg_agent_core::output::{CUT_MARKER, MAX_LINE_BYTES};
        // 10 MB without a newline, then a last line without one either.
        let mut output = vec![b'x'; 10 * 1024 * 1024];
        output.extend_from_slice(b"\nthe end");
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(forward_lines(std::io::Cursor::new(output), tx));
        let mut lines = Vec::new();
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES + CUT_MARKER.len());
        assert!(lines[0].ends_with(CUT_MARKER));
        assert_eq!(lines[1], "the end");
    }

    #[test]
    fn the_child_environment_holds_only_what_is_set() {
        let env = ChildEnv::new("/bin".into(), "/home/x".into(), Path::new("/ws"))
            .with("npm_config_registry", "http://r/");
        assert_eq!(env.get("PATH"), Some(OsStr::new("/bin")));
        assert_eq!(
            env.get("npm_config_cache"),
            Some(OsStr::new("/ws/.npm-cache"))
        );
        assert_eq!(
            env.get("npm_config_registry"),
            Some(OsStr::new("http://r/"))
        );
        assert!(
            env.vars
                .iter()
                .all(|(name, _)| !name.to_string_lossy().starts_with("BG_AGENT"))
        );
    }
}
