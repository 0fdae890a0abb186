//! Every process the repository's code started ends before the runner pushes.
//!
//! Validation commands and agents may leave processes behind: a server a test forgot to
//! stop, or a daemon (double-forked, `setsid`) waiting to read the push's environment
//! through `/proc` or to rewrite files git reads. The runner is a child subreaper
//! ([`become_subreaper`]), so such orphans are re-parented to it instead of leaving its
//! tree, and [`end_descendants`] kills its whole tree before the commit and the push.
//!
//! Only descendants are ever signalled: each is opened as a pidfd and its ancestry checked
//! again through that pidfd's process before the signal, so a recycled pid can never make
//! the runner kill a process that is not its own (it may run without a PID namespace).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Rounds of "find the descendants, kill them, look again" before giving up: a process
/// that forks as fast as it can is out of children after a few rounds, since every
/// child it made before being killed is re-parented to the runner and found next round.
const MAX_ROUNDS: u32 = 200;
/// Between rounds, for the killed to exit (doubling from the first, up to the last).
const FIRST_PAUSE: Duration = Duration::from_millis(2);
const LONGEST_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ReapError {
    #[error("cannot become the subreaper of the processes the runner starts: {0}")]
    Subreaper(std::io::Error),
    #[error("cannot list the processes the repository's code left running: {0}")]
    List(std::io::Error),
    #[error("{0} processes the repository's code started did not end")]
    Survivors(usize),
    #[error("ending the processes the repository's code started needs Linux")]
    Unsupported,
}

/// Makes orphaned descendants (daemons included) the runner's children rather than
/// init's, so that [`end_descendants`] finds them. Call before starting anything.
pub fn become_subreaper() -> Result<(), ReapError> {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| ReapError::Subreaper(std::io::Error::from(e)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(ReapError::Unsupported)
    }
}

/// Kills every descendant of this process with SIGKILL and waits until none is left;
/// returns how many were killed. Zombies among the runner's own children are reaped, so
/// call this only when the runner waits for no child of its own (between steps).
pub async fn end_descendants() -> Result<usize, ReapError> {
    #[cfg(target_os = "linux")]
    {
        linux::end_descendants().await
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(ReapError::Unsupported)
    }
}

/// One process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    ppid: i32,
    /// `R`, `S`, `D`, `Z` (exited, not yet reaped), `X` (dead)...
    state: u8,
}

impl Stat {
    fn exited(self) -> bool {
        matches!(self.state, b'Z' | b'X')
    }
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid ...`, where `comm` is whatever the
/// process named itself (spaces and parentheses included), so fields are counted from
/// the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { ppid, state })
}

/// The descendants of `root` in a process table (pid → stat), nearest first.
fn descendants(root: i32, table: &HashMap<i32, Stat>) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (&pid, stat) in table {
        children.entry(stat.ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut seen = HashSet::from([root]);
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if seen.insert(child) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashMap;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};

    use nix::libc;
    use nix::sys::wait::{WaitPidFlag, waitpid};
    use nix::unistd::Pid;

    use super::{FIRST_PAUSE, LONGEST_PAUSE, MAX_ROUNDS, ReapError, Stat, descendants};

    pub(super) fn read_stat(pid: i32) -> Option<Stat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        super::parse_stat(&text)
    }

    /// Every process visible in `/proc`. One that exits while the table is read is
    /// simply missing from it.
    pub(super) fn process_table() -> std::io::Result<HashMap<i32, Stat>> {
        let mut table = HashMap::new();
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(stat) = read_stat(pid) {
                table.insert(pid, stat);
            }
        }
        Ok(table)
    }

    /// Whether `pid`'s chain of parents, read now, reaches `root`. A descendant stays one
    /// (orphans are re-parented to the runner, a subreaper), and no other process can
    /// become one, so a chain that reaches `root` names a descendant.
    fn descends_from(pid: i32, root: i32) -> bool {
        let mut current = pid;
        // Bounds a chain read while it changes. A deeper descendant is left for a later
        // round: once its ancestors nearer the runner are killed, it is re-parented to it.
        for _ in 0..4096 {
            match read_stat(current) {
                Some(stat) if stat.ppid == root => return true,
                Some(stat) if stat.ppid > 0 && stat.ppid != current => current = stat.ppid,
                _ => return false,
            }
        }
        false
    }

    /// SIGKILL for `pid`, only if it is a descendant of `root`. The pidfd pins the
    /// process: if the pid is recycled after the check, the signal goes to the process
    /// that was checked (and fails if it is gone), never to the new one.
    pub(super) fn kill_descendant(pid: i32, root: i32) {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            // Gone already (ESRCH), or a kernel without pidfds (before 5.3): nothing that
            // can be signalled without a race.
            return;
        }
        let Ok(raw) = RawFd::try_from(fd) else {
            return;
        };
        // SAFETY: the descriptor was just returned to us and is owned by nothing else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
        if !descends_from(pid, root) {
            return;
        }
        // SAFETY: pidfd_send_signal takes a live descriptor (borrowed for the call), a
        // signal number, a null siginfo and flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                std::os::fd::AsRawFd::as_raw_fd(&pidfd),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }

    pub(super) async fn end_descendants() -> Result<usize, ReapError> {
        let me = i32::try_from(std::process::id()).map_err(|_| {
            ReapError::List(std::io::Error::other("the runner's pid is out of range"))
        })?;
        let mut killed = std::collections::HashSet::new();
        let mut pause = FIRST_PAUSE;
        let mut alive = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let table = process_table().map_err(ReapError::List)?;
            alive.clear();
            for pid in descendants(me, &table) {
                let stat = table[&pid];
                if !stat.exited() {
                    alive.push(pid);
                } else if stat.ppid == me {
                    // An orphan adopted by the runner: only the runner can reap it.
                    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
                }
            }
            if alive.is_empty() {
                return Ok(killed.len());
            }
            for &pid in &alive {
                kill_descendant(pid, me);
                killed.insert(pid);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LONGEST_PAUSE);
        }
        Err(ReapError::Survivors(alive.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_from_the_last_parenthesis() {
        assert_eq!(
            parse_stat("42 (sh) S 7 42 42 0 -1 4194560 ..."),
            Some(Stat {
                ppid: 7,
                state: b'S'
            })
        );
        // A process may name itself anything, `) R 1 (` included.
        assert_eq!(
            parse_stat("43 (x) R 1 (y) Z 9 43 43 0"),
            Some(Stat {
                ppid: 9,
                state: b'Z'
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn descendants_are_found_through_every_generation() {
        let table: HashMap<i32, Stat> = [(10, 1), (11, 10), (12, 11), (13, 1), (14, 13), (15, 12)]
            .into_iter()
            .map(|(pid, ppid)| (pid, Stat { ppid, state: b'S' }))
            .collect();
        let mut found = descendants(10, &table);
        found.sort_unstable();
        assert_eq!(found, [11, 12, 15]);
        assert!(descendants(15, &table).is_empty());
    }

    /// A process that is not a descendant (an orphan adopted by init) is left alone; a
    /// child is killed.
    #[cfg(target_os = "linux")]
    #[test]
    fn only_descendants_are_signalled() {
        let me = i32::try_from(std::process::id()).unwrap();
        let output = std::process::Command::new("sh")
            .args(["-c", "sleep 600 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let stranger: i32 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let child_pid = i32::try_from(child.id()).unwrap();

        linux::kill_descendant(stranger, me);
        linux::kill_descendant(child_pid, me);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        let stranger_alive = linux::read_stat(stranger).is_some_and(|s| !s.exited());
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(stranger),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        assert!(
            stranger_alive,
            "a process that is not a descendant was killed"
        );
    }

    /// What `daemons_left_behind_are_ended` runs in a process of its own: it becomes a
    /// subreaper and kills all its descendants, which must not touch other tests' children.
    const HELPER_ENV: &str = "BG_AGENT_REAPER_TEST_HELPER";

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn helper_process_for_daemons_left_behind() {
        if std::env::var_os(HELPER_ENV).is_none() {
            return;
        }
        become_subreaper().unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        // A daemon: a new session, its parent gone, its own child sleeping.
        let output = std::process::Command::new("sh")
            .args([
                "-c",
                "setsid sh -c 'sleep 600 & echo $!; wait' > \"$0\" 2>/dev/null & exit 0",
            ])
            .arg(std::env::var_os(HELPER_ENV).unwrap())
            .output()
            .unwrap();
        assert!(output.status.success());
        let pidfile = std::env::var_os(HELPER_ENV).unwrap();
        let sleeper = loop {
            if let Ok(text) = std::fs::read_to_string(&pidfile)
                && let Ok(pid) = text.trim().parse::<i32>()
            {
                break pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let table = linux::process_table().unwrap();
        assert!(
            descendants(me, &table).contains(&sleeper),
            "the daemon was re-parented to the subreaper"
        );
        assert!(end_descendants().await.unwrap() >= 2);
        let table = linux::process_table().unwrap();
        assert!(
            descendants(me, &table)
                .iter()
                .all(|pid| table[pid].exited()),
            "{table:?}"
        );
        assert!(table.get(&sleeper).is_none_or(|s| s.exited()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn daemons_left_behind_are_ended() {
        let pidfile = tempfile::NamedTempFile::new().unwrap();
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "reaper::tests::helper_process_for_daemons_left_behind",
                "--nocapture",
            ])
            .env(HELPER_ENV, pidfile.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("1 passed"), "{stdout}");
    }
}
