//! The local executor's sandbox: each runner runs under bubblewrap (`bwrap`), in new user,
//! PID, IPC, UTS, cgroup and mount namespaces, as an unprivileged uid, seeing only the
//! system directories (read-only), a fresh `/proc` and `/dev`, a private `/tmp` and its
//! own workspace. The server's data directory, key files, configuration file, database
//! socket and every other workspace are not mounted at all; what is sensitive but lies
//! under a mounted directory (a key file under `/etc`) is masked.
//!
//! The network namespace is shared: the runner reports to the server and clones from
//! GitHub. Limiting egress is the Kubernetes executor's NetworkPolicy. See
//! `docs/security.md` for what this isolates and what it does not.
//!
//! [`bwrap_args`] is a pure function of a [`Layout`] (what was found on the host) and a
//! [`Run`] (one launch), so the exact sandbox is unit-tested; [`Sandbox`] finds the layout
//! once at start, checks that a sandbox really starts, and builds each runner's command.

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::unix_access::{allows, unsearchable_ancestor};

/// Where bubblewrap is looked for when `PATH` does not have it.
const BWRAP_FALLBACK: &str = "/usr/bin/bwrap";
/// System directories mounted read-only when they exist (a symlink, as `/lib` -> `usr/lib`
/// on merged-/usr systems, is recreated as the same symlink).
const SYSTEM_DIRS: [&str; 8] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];
/// Files under `/etc` that are often symlinks to elsewhere (`/run` on systemd-resolved
/// hosts): their targets are mounted too, or DNS would not resolve in the sandbox.
const ETC_LINKS: [&str; 2] = ["/etc/resolv.conf", "/etc/hosts"];
/// Inside the sandbox: the task's workspace (the runner's working directory and `HOME`)
/// and the runner program.
pub const WORKSPACE: &str = "/workspace";
pub const RUNNER: &str = "/opt/bg-agent/runner";
/// The uid and gid the runner has inside its user namespace (mapped to the host's
/// [`SandboxSettings::uid`] when the server is root, else to the server's own uid).
pub const INNER_ID: u32 = 1000;

/// Whether tasks run sandboxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    Bubblewrap,
    /// Development only: the runner runs as the server's user with nothing between them.
    Off,
}

/// Resource limits set on the sandbox (setrlimit before bubblewrap starts; inherited by
/// everything inside). 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// RLIMIT_NPROC: processes and threads of the sandbox's host uid (shared by concurrent
    /// sandboxes; when the server is not root, its own user's processes count too).
    pub max_processes: u64,
    /// RLIMIT_FSIZE: largest file a process may write, in bytes; also the size of the
    /// private `/tmp`.
    pub max_file_size: u64,
    /// RLIMIT_AS: address space of each process, in bytes.
    pub max_address_space: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_processes: 4096,
            max_file_size: 4 << 30,
            max_address_space: 16 << 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSettings {
    pub mode: SandboxMode,
    /// Host uid and gid bubblewrap runs as when the server runs as root.
    pub uid: u32,
    pub gid: u32,
    pub limits: Limits,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            mode: SandboxMode::Bubblewrap,
            uid: 65534,
            gid: 65534,
            limits: Limits::default(),
        }
    }
}

/// One system path as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemPath {
    /// A directory, bound read-only at the same path.
    Dir(PathBuf),
    /// A file outside the mounted directories (the target of `/etc/resolv.conf`),
    /// bound read-only at the same path.
    File(PathBuf),
    /// A symlink, recreated with the same target.
    Symlink { path: PathBuf, target: PathBuf },
}

/// A sensitive path under a mounted directory, hidden from the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Masked {
    /// Covered by an empty tmpfs.
    Dir(PathBuf),
    /// Covered by `/dev/null` (mounted `nodev`: it cannot even be opened).
    File(PathBuf),
}

/// What the sandbox mounts, as found on the host when the server starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    pub system: Vec<SystemPath>,
    pub masked: Vec<Masked>,
}

/// One launch: the host paths bound into the sandbox, and the runner's arguments.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    pub workspace: &'a Path,
    pub program: &'a Path,
    pub args: &'a [String],
    /// Size of the private `/tmp` in bytes; 0 for tmpfs's default.
    pub tmp_size: u64,
}

/// bubblewrap's arguments for one run (everything after `bwrap`). No secret is ever in
/// them: they are in `/proc/<pid>/cmdline` for anyone to read. The environment reaches
/// the runner from bubblewrap's own (cleared) environment instead.
pub fn bwrap_args(layout: &Layout, run: &Run<'_>) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&std::ffi::OsStr]| args.extend(items.iter().map(|s| s.to_os_string()));
    let id = INNER_ID.to_string();
    push(&[
        "--unshare-user".as_ref(),
        "--unshare-pid".as_ref(),
        "--unshare-ipc".as_ref(),
        "--unshare-uts".as_ref(),
        "--unshare-cgroup-try".as_ref(),
        // The runner is the PID namespace's init: when it ends, the kernel kills every
        // process left in the namespace (also one that left the process group with
        // `setsid`) before bubblewrap, waiting for it, exits. (bubblewrap's own init would
        // outlive the runner while anything else runs, and signal its exit early.) As
        // init, the runner also cannot be signalled from inside.
        "--as-pid-1".as_ref(),
        // Repository code cannot make a user namespace of its own (and get capabilities
        // in it to mount or unshare further).
        "--disable-userns".as_ref(),
        // Not --new-session: it would put the sandbox in a session and process group of
        // its own, out of reach of the executor's group kill. The executor makes
        // bubblewrap a session leader instead (setsid before exec), so nothing inside has
        // a controlling terminal to push input into (TIOCSTI) either way.
        "--cap-drop".as_ref(),
        "ALL".as_ref(),
        "--uid".as_ref(),
        id.as_ref(),
        "--gid".as_ref(),
        id.as_ref(),
        "--hostname".as_ref(),
        "bg-agent-runner".as_ref(),
    ]);
    // Deliberately no --die-with-parent: a runner may outlive a killed server.
    for path in &layout.system {
        match path {
            SystemPath::Dir(dir) | SystemPath::File(dir) => {
                push(&["--ro-bind".as_ref(), dir.as_os_str(), dir.as_os_str()]);
            }
            SystemPath::Symlink { path, target } => {
                push(&["--symlink".as_ref(), target.as_os_str(), path.as_os_str()]);
            }
        }
    }
    for masked in &layout.masked {
        match masked {
            Masked::Dir(dir) => push(&["--tmpfs".as_ref(), dir.as_os_str()]),
            Masked::File(file) => {
                push(&["--ro-bind".as_ref(), "/dev/null".as_ref(), file.as_os_str()]);
            }
        }
    }
    push(&[
        "--proc".as_ref(),
        "/proc".as_ref(),
        "--dev".as_ref(),
        "/dev".as_ref(),
    ]);
    let tmp_size = run.tmp_size.to_string();
    if run.tmp_size > 0 {
        push(&["--size".as_ref(), tmp_size.as_ref()]);
    }
    push(&[
        "--tmpfs".as_ref(),
        "/tmp".as_ref(),
        "--bind".as_ref(),
        run.workspace.as_os_str(),
        WORKSPACE.as_ref(),
        "--ro-bind".as_ref(),
        run.program.as_os_str(),
        RUNNER.as_ref(),
        "--chdir".as_ref(),
        WORKSPACE.as_ref(),
        "--".as_ref(),
        RUNNER.as_ref(),
    ]);
    args.extend(run.args.iter().map(OsString::from));
    args
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "bubblewrap (`bwrap`) is not installed: the local executor runs every task in a \
         bubblewrap sandbox. Install it (Debian/Ubuntu: `apt-get install bubblewrap`), or on a \
         development machine only set BG_AGENT_SANDBOX=off"
    )]
    Missing,
    #[error(
        "bubblewrap cannot start a sandbox here ({0}); unprivileged user namespaces must be \
         allowed (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0, \
         no AppArmor restriction on bwrap)"
    )]
    Broken(String),
    #[error(
        "the sandbox user (uid {uid}) cannot reach {path}: {reason}; choose a \
         BG_AGENT_DATA_DIR (and runner program) under directories others may search, e.g. \
         /var/lib/bg-agent"
    )]
    Unreachable {
        uid: u32,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot prepare the sandbox: {0}")]
    Io(#[from] std::io::Error),
}

/// Paths the sandbox must never show, wherever they are: masked when they lie under a
/// mounted system directory (elsewhere they are simply not mounted).
#[derive(Debug, Clone, Default)]
pub struct Protected {
    pub paths: Vec<PathBuf>,
}

/// The runner program's name in the workspaces' root when its own place is unreachable.
const RUNNER_LINK: &str = ".bg-agent-runner";

/// The prepared sandbox; cheap to share between launches.
#[derive(Debug, Clone)]
pub struct Sandbox {
    bwrap: PathBuf,
    layout: Layout,
    /// The host uid and gid bubblewrap runs as; `None` when the server is not root (the
    /// user namespace alone separates the runner from the server).
    run_as: Option<(u32, u32)>,
    limits: Limits,
}

impl Sandbox {
    /// Finds bubblewrap and the system layout, and starts one sandbox to prove it works,
    /// so a host that cannot sandbox fails at start rather than at the first task.
    pub fn prepare(
        settings: &SandboxSettings,
        protected: &Protected,
    ) -> Result<Self, SandboxError> {
        let bwrap = find_bwrap().ok_or(SandboxError::Missing)?;
        let run_as = nix::unistd::geteuid()
            .is_root()
            .then_some((settings.uid, settings.gid));
        let sandbox = Self {
            bwrap,
            layout: Layout::find(protected),
            run_as,
            limits: settings.limits,
        };
        sandbox.check()?;
        Ok(sandbox)
    }

    /// The host uid bubblewrap runs as, when it is not the server's.
    pub fn host_uid(&self) -> Option<u32> {
        self.run_as.map(|(uid, _)| uid)
    }

    /// Makes `dir` (the workspaces' root, created by the server) reachable by the sandbox
    /// user: bubblewrap resolves the paths it binds as that user. The directory gets
    /// search permission only (it cannot be listed), and every ancestor must already
    /// allow it.
    pub fn admit_workspaces(&self, dir: &Path) -> Result<(), SandboxError> {
        let Some((uid, gid)) = self.run_as else {
            return Ok(());
        };
        let dir = std::fs::canonicalize(dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        // The data directory holding it is the server's own: search only, too.
        if let Some(parent) = dir.parent() {
            let meta = std::fs::metadata(parent)?;
            if meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o001 == 0 {
                std::fs::set_permissions(
                    parent,
                    std::fs::Permissions::from_mode((meta.mode() & 0o7777) | 0o001),
                )?;
            }
        }
        searchable_by(&dir, uid, gid)
    }

    /// A path of the runner program that the sandbox user can read: where it lies when
    /// it can, else a hard link (or copy) in `workspaces` (already admitted) — a program
    /// built under a private home directory, as cargo does for root, still runs.
    pub fn admit_program(
        &self,
        program: &Path,
        workspaces: &Path,
    ) -> Result<PathBuf, SandboxError> {
        let program = std::fs::canonicalize(program)?;
        let Some((uid, gid)) = self.run_as else {
            return Ok(program);
        };
        let readable = |path: &Path| -> Result<(), SandboxError> {
            if let Some(parent) = path.parent() {
                searchable_by(parent, uid, gid)?;
            }
            let meta = std::fs::metadata(path)?;
            if !allows(&meta, uid, gid, 0o4) {
                return Err(SandboxError::Unreachable {
                    uid,
                    path: path.to_owned(),
                    reason: "it may not read it".into(),
                });
            }
            Ok(())
        };
        if readable(&program).is_ok() {
            return Ok(program);
        }
        let admitted = std::fs::canonicalize(workspaces)?.join(RUNNER_LINK);
        // Made under a fresh name and renamed over the old one: a runner of an earlier
        // server may still be starting from it.
        let fresh = admitted.with_extension(format!("new-{}", std::process::id()));
        let _ = std::fs::remove_file(&fresh);
        // A link shares the program's mode, so only a program others may read is linked;
        // any other is copied and the copy opened up (the original is left as it is).
        let shareable = allows(&std::fs::metadata(&program)?, uid, gid, 0o4);
        if !shareable || std::fs::hard_link(&program, &fresh).is_err() {
            std::fs::copy(&program, &fresh)?;
            std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))?;
        }
        std::fs::rename(&fresh, &admitted)?;
        readable(&admitted)?;
        Ok(admitted)
    }

    /// Hands the workspace (created by the server) to the sandbox user.
    pub fn own_workspace(&self, workspace: &Path) -> std::io::Result<()> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(workspace, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    /// The command that runs `program args...` sandboxed in `workspace`. The caller sets
    /// the environment (cleared first: bubblewrap passes its own on to the runner).
    pub fn command(
        &self,
        workspace: &Path,
        program: &Path,
        args: &[String],
    ) -> tokio::process::Command {
        let run = Run {
            workspace,
            program,
            args,
            tmp_size: self.limits.max_file_size,
        };
        let mut command = tokio::process::Command::new(&self.bwrap);
        command
            .args(bwrap_args(&self.layout, &run))
            // bubblewrap itself must be able to stand in its working directory.
            .current_dir("/");
        if let Some((uid, gid)) = self.run_as {
            // As root, std also clears the supplementary groups before setuid.
            command.uid(uid).gid(gid);
        }
        command
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Starts one sandbox running `/bin/sh -c 'exit 0'` in an empty workspace.
    fn check(&self) -> Result<(), SandboxError> {
        let dir = tempfile::Builder::new()
            .prefix("bg-agent-sandbox-check-")
            .tempdir()?;
        let workspace = dir.path().join("workspace");
        std::fs::create_dir(&workspace)?;
        if let Some((uid, gid)) = self.run_as {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
            std::os::unix::fs::chown(&workspace, Some(uid), Some(gid))?;
        }
        let run = Run {
            workspace: &workspace,
            program: Path::new("/bin/sh"),
            args: &["-c".to_owned(), "exit 0".to_owned()],
            tmp_size: 0,
        };
        let mut command = std::process::Command::new(&self.bwrap);
        command
            .args(bwrap_args(&self.layout, &run))
            .current_dir("/")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        let output = command.output()?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(SandboxError::Broken(format!(
            "{}: {}",
            output.status,
            stderr.trim()
        )))
    }
}

fn find_bwrap() -> Option<PathBuf> {
    find_bwrap_in(
        std::env::var_os("PATH").as_deref(),
        Path::new(BWRAP_FALLBACK),
    )
}

/// `bwrap` on `path` (a `PATH` value), else `fallback` if it exists.
fn find_bwrap_in(path: Option<&std::ffi::OsStr>, fallback: &Path) -> Option<PathBuf> {
    let on_path = path.and_then(|path| {
        std::env::split_paths(path)
            .map(|dir| dir.join("bwrap"))
            .find(|candidate| is_executable(candidate))
    });
    on_path.or_else(|| is_executable(fallback).then(|| fallback.to_owned()))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Every directory from `/` down to `dir` must let `uid`/`gid` search it.
fn searchable_by(dir: &Path, uid: u32, gid: u32) -> Result<(), SandboxError> {
    match unsearchable_ancestor(dir, uid, gid)? {
        Some(ancestor) => Err(SandboxError::Unreachable {
            uid,
            path: dir.to_owned(),
            reason: format!("{} is not searchable by it", ancestor.display()),
        }),
        None => Ok(()),
    }
}

impl Layout {
    /// The system directories present on this host, and the protected paths that lie
    /// under one of them.
    pub fn find(protected: &Protected) -> Self {
        let mut system = Vec::new();
        for dir in SYSTEM_DIRS {
            let path = PathBuf::from(dir);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(target) = std::fs::read_link(&path) {
                    system.push(SystemPath::Symlink { path, target });
                }
            } else if meta.is_dir() {
                system.push(SystemPath::Dir(path));
            }
        }
        let mounted: Vec<PathBuf> = system
            .iter()
            .filter_map(|p| match p {
                SystemPath::Dir(dir) => std::fs::canonicalize(dir).ok(),
                _ => None,
            })
            .collect();
        let is_mounted = |path: &Path| mounted.iter().any(|dir| path.starts_with(dir));
        for link in ETC_LINKS {
            if let Ok(target) = std::fs::canonicalize(link)
                && target != Path::new(link)
                && target.is_file()
                && !is_mounted(&target)
            {
                system.push(SystemPath::File(target));
            }
        }
        let masked = protected
            .paths
            .iter()
            .filter_map(|path| std::fs::canonicalize(path).ok())
            .filter(|path| is_mounted(path))
            .map(|path| {
                if path.is_dir() {
                    Masked::Dir(path)
                } else {
                    Masked::File(path)
                }
            })
            .collect();
        Self { system, masked }
    }
}

/// Applies the limits in the forked child, before bubblewrap starts: only
/// async-signal-safe calls (setrlimit). Core dumps are off too: a dump of the runner
/// would hold its token.
pub fn apply_limits(limits: Limits) -> std::io::Result<()> {
    let set = |resource, value: u64| -> std::io::Result<()> {
        let limit = nix::libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit reads the struct we pass and touches no other memory.
        if unsafe { nix::libc::setrlimit(resource, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(nix::libc::RLIMIT_CORE, 0)?;
    for (resource, value) in [
        (nix::libc::RLIMIT_NPROC, limits.max_processes),
        (nix::libc::RLIMIT_FSIZE, limits.max_file_size),
        (nix::libc::RLIMIT_AS, limits.max_address_space),
    ] {
        if value > 0 {
            set(resource, value)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            system: vec![
                SystemPath::Dir("/usr".into()),
                SystemPath::Symlink {
                    path: "/lib".into(),
                    target: "usr/lib".into(),
                },
                SystemPath::Dir("/etc".into()),
                SystemPath::File("/run/systemd/resolve/stub-resolv.conf".into()),
            ],
            masked: vec![
                Masked::File("/etc/bg-agent/app.pem".into()),
                Masked::Dir("/etc/bg-agent/data".into()),
            ],
        }
    }

    #[test]
    fn the_sandbox_mounts_the_system_read_only_and_only_its_own_workspace() {
        let args = bwrap_args(
            &layout(),
            &Run {
                workspace: Path::new("/srv/data/workspaces/task-7-abc"),
                program: Path::new("/usr/local/bin/bg-agent"),
                args: &["runner".to_owned()],
                tmp_size: 1024,
            },
        );
        let line = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            line,
            "--unshare-user --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try \
             --as-pid-1 --disable-userns --cap-drop ALL --uid 1000 --gid 1000 \
             --hostname bg-agent-runner \
             --ro-bind /usr /usr --symlink usr/lib /lib --ro-bind /etc /etc \
             --ro-bind /run/systemd/resolve/stub-resolv.conf /run/systemd/resolve/stub-resolv.conf \
             --ro-bind /dev/null /etc/bg-agent/app.pem --tmpfs /etc/bg-agent/data \
             --proc /proc --dev /dev --size 1024 --tmpfs /tmp \
             --bind /srv/data/workspaces/task-7-abc /workspace \
             --ro-bind /usr/local/bin/bg-agent /opt/bg-agent/runner \
             --chdir /workspace -- /opt/bg-agent/runner runner"
        );
        // The network stays shared (the runner reports back), and the runner may outlive
        // a killed server.
        assert!(!line.contains("--unshare-net") && !line.contains("--unshare-all"));
        assert!(!line.contains("--die-with-parent"));
        // The sandbox stays in the executor's process group (see `bwrap_args`).
        assert!(!line.contains("--new-session"));
        // The host's root is never mounted as a whole.
        assert!(!line.contains("--bind / /") && !line.contains("--ro-bind / /"));
    }

    #[test]
    fn only_protected_paths_under_a_mounted_directory_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "pem").unwrap();
        let layout = Layout::find(&Protected {
            paths: vec![
                // Under /etc (mounted): masked.
                "/etc/passwd".into(),
                "/etc/ssl".into(),
                // Under /tmp (never mounted): nothing to do.
                key,
                // Absent: nothing to mask.
                "/etc/bg-agent-nonexistent.pem".into(),
            ],
        });
        assert_eq!(
            layout.masked,
            vec![
                Masked::File("/etc/passwd".into()),
                Masked::Dir("/etc/ssl".into())
            ]
        );
        assert!(layout.system.contains(&SystemPath::Dir("/usr".into())));
        assert!(layout.system.contains(&SystemPath::Dir("/etc".into())));
    }

    #[test]
    fn without_bubblewrap_the_error_says_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let nowhere = empty.path().join("bwrap");
        assert_eq!(
            find_bwrap_in(Some(empty.path().as_os_str()), &nowhere),
            None
        );
        assert_eq!(
            find_bwrap_in(None, Path::new(BWRAP_FALLBACK)).as_deref(),
            Some(Path::new(BWRAP_FALLBACK)),
            "bubblewrap is installed where Debian puts it"
        );
        let message = SandboxError::Missing.to_string();
        assert!(message.contains("apt-get install bubblewrap"), "{message}");
        assert!(message.contains("BG_AGENT_SANDBOX=off"), "{message}");
    }

    #[test]
    fn workspaces_the_sandbox_user_cannot_reach_are_refused_with_the_reason() {
        let sandbox = Sandbox {
            bwrap: BWRAP_FALLBACK.into(),
            layout: Layout::default(),
            run_as: Some((65534, 65534)),
            limits: Limits::default(),
        };
        let home = tempfile::tempdir().unwrap();
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let data = home.path().join("data");
        let workspaces = data.join("workspaces");
        std::fs::create_dir_all(&workspaces).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();

        let err = sandbox.admit_workspaces(&workspaces).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("{} is not searchable", home.path().display())),
            "{message}"
        );
        assert!(message.contains("BG_AGENT_DATA_DIR"), "{message}");
        // The server's own directories were opened for search (not listing) anyway.
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&workspaces), 0o711);
        assert_eq!(mode(&data), 0o701);

        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        sandbox.admit_workspaces(&workspaces).unwrap();
    }

    /// cargo builds under root's private home: the runner is linked where the sandbox
    /// user can read it, and a reachable program is used where it lies.
    #[test]
    fn a_runner_program_the_sandbox_user_cannot_reach_is_linked_into_the_workspaces() {
        let sandbox = Sandbox {
            bwrap: BWRAP_FALLBACK.into(),
            layout: Layout::default(),
            run_as: Some((65534, 65534)),
            limits: Limits::default(),
        };
        let private = tempfile::tempdir().unwrap();
        std::fs::set_permissions(private.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let program = private.path().join("bg-agent");
        std::fs::write(&program, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o700)).unwrap();
        let open = tempfile::tempdir().unwrap();
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let workspaces = open.path().join("workspaces");
        std::fs::create_dir(&workspaces).unwrap();
        sandbox.admit_workspaces(&workspaces).unwrap();

        let admitted = sandbox.admit_program(&program, &workspaces).unwrap();
        assert_eq!(
            admitted,
            workspaces.canonicalize().unwrap().join(RUNNER_LINK)
        );
        assert_eq!(std::fs::read(&admitted).unwrap(), b"#!/bin/sh\n");
        let mode = std::fs::metadata(&admitted).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode & 0o005,
            0o005,
            "readable and runnable by others: {mode:o}"
        );
        let original = std::fs::metadata(&program).unwrap().permissions().mode() & 0o777;
        assert_eq!(original, 0o700, "the original is left as it was");
        // Again (a restarted server): replaced, not an error.
        assert_eq!(
            sandbox.admit_program(&program, &workspaces).unwrap(),
            admitted
        );

        let reachable = open.path().join("runner");
        std::fs::write(&reachable, b"x").unwrap();
        std::fs::set_permissions(&reachable, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            sandbox.admit_program(&reachable, &workspaces).unwrap(),
            reachable.canonicalize().unwrap()
        );
    }

    #[test]
    fn permission_bits_are_read_for_owner_group_or_others() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o710)).unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        assert!(allows(&meta, meta.uid(), 99_999, 0o1));
        assert!(allows(&meta, 99_999, meta.gid(), 0o1));
        assert!(!allows(&meta, 99_999, 99_999, 0o1));
    }
}
