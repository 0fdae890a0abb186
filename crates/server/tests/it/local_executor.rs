//! The local executor with real processes, in its bubblewrap sandbox: secrets reach the
//! runner through its environment only (never an argv, not even bubblewrap's), the
//! server's own environment does not, the runner sees its workspace at a fixed path as an
//! unprivileged user, cancel and timeout kill everything it started (also what left its
//! process group with `setsid`), and the workspace is removed afterwards.
//!
//! The "runner" is `/bin/sh -c script`; the script writes what it sees into its
//! workspace (the only place it can write that the test can read) and waits for the test
//! to create `go` there.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bg_agent::executor::sandbox::Protected;
use bg_agent::executor::{Executor, Launch, LocalExecutor, Observed, Sandbox, SandboxSettings};

const TOKEN: &str = "runner-token-not-for-argv";
const SECRET: &str = "per-task-secret";

/// A sensitive file under a directory the sandbox mounts (`/etc`): masked. Any
/// world-readable file there serves; this one exists everywhere.
const PROTECTED: &str = "/etc/passwd";

fn executor(script: &str, workspaces: &Path) -> LocalExecutor {
    let protected = Protected {
        paths: vec![PathBuf::from(PROTECTED)],
    };
    let sandbox = Sandbox::prepare(&SandboxSettings::default(), &protected).unwrap();
    LocalExecutor::sandboxed(
        PathBuf::from("/bin/sh"),
        vec!["-c".into(), script.into()],
        workspaces.to_path_buf(),
        sandbox,
    )
    .unwrap()
}

fn launch(timeout: Duration) -> Launch {
    Launch {
        task_id: 7,
        callback_url: "http://127.0.0.1:9/".into(),
        task_secret: SECRET.into(),
        runner_token: TOKEN.into(),
        agent_credential: None,
        timeout,
        env: vec![("EXTRA".into(), "non-secret".into())],
    }
}

/// Alive, and not a zombie waiting for a reaper.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

/// The process's nice value (field 19 of /proc/PID/stat).
fn niceness(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    fields[16].parse().unwrap()
}

/// Live processes (host pids) whose argv is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<i32> {
    let wanted: Vec<u8> = argv.join("\0").into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.strip_suffix(b"\0").unwrap_or(&cmdline) == wanted)
        })
        .collect()
}

/// Every live process's argv, as text.
fn all_cmdlines() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .collect()
}

/// SIGKILL is delivered asynchronously: give the kernel a moment (bounded) to finish it.
async fn dies(pid: i32) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// The one workspace under `workspaces`, once the script has written `name` in it.
async fn workspace_with(workspaces: &Path, name: &str) -> PathBuf {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = std::fs::read_dir(workspaces)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|dir| {
                std::fs::read_to_string(dir.join(name)).is_ok_and(|text| text.ends_with('\n'))
            });
        if let Some(dir) = found {
            return dir;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read(workspace: &Path, name: &str) -> String {
    std::fs::read_to_string(workspace.join(name)).unwrap()
}

/// The script's last step: wait for the test's go-ahead.
const WAIT_FOR_GO: &str = "while [ ! -e go ]; do sleep 0.05; done";

#[tokio::test]
async fn secrets_go_through_the_environment_and_the_workspace_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let workspaces = dir.path().join("workspaces");
    let executor = executor(
        &format!(
            r#"env > env; tr '\0' ' ' < /proc/$$/cmdline > cmdline; pwd > pwd; id -u > uid; ls / > root; cat /proc/self/limits > limits; if cat {PROTECTED} > /dev/null 2>&1; then echo readable; else echo masked; fi > protected; echo done > ready; {WAIT_FOR_GO}; exit 3"#
        ),
        &workspaces,
    );
    let id = executor
        .launch(launch(Duration::from_secs(60)))
        .await
        .unwrap();
    let workspace = workspace_with(&workspaces, "ready").await;
    // No process on the machine has a secret in its arguments (bubblewrap's included).
    for cmdline in all_cmdlines() {
        assert!(
            !cmdline.contains(TOKEN) && !cmdline.contains(SECRET),
            "{cmdline}"
        );
    }
    let env = read(&workspace, "env");
    assert!(env.contains("BG_AGENT_TASK_ID=7\n"), "{env}");
    assert!(
        env.contains(&format!("BG_AGENT_RUNNER_TOKEN={TOKEN}\n")),
        "{env}"
    );
    assert!(
        env.contains(&format!("BG_AGENT_TASK_SECRET={SECRET}\n")),
        "{env}"
    );
    assert!(
        env.contains("BG_AGENT_CALLBACK_URL=http://127.0.0.1:9/\n"),
        "{env}"
    );
    assert!(env.contains("HOME=/workspace\n"), "{env}");
    // Nothing of the server's environment (DATABASE_URL, keys...) is inherited: only
    // what the executor sets, and what `sh` adds itself.
    for line in env.lines() {
        let name = line.split('=').next().unwrap();
        assert!(
            name.starts_with("BG_AGENT_")
                || ["PATH", "HOME", "EXTRA", "PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
            "unexpected variable in the runner's environment: {line}"
        );
    }
    let cmdline = read(&workspace, "cmdline");
    assert!(
        !cmdline.contains(TOKEN) && !cmdline.contains(SECRET),
        "{cmdline}"
    );
    // The sandbox's view: the workspace at a fixed path, an unprivileged uid, and of the
    // host only system directories (no /root, /home, /var, /work...).
    assert_eq!(read(&workspace, "pwd"), "/workspace\n");
    assert_eq!(read(&workspace, "uid"), "1000\n");
    let root: Vec<String> = read(&workspace, "root")
        .lines()
        .map(str::to_owned)
        .collect();
    for name in &root {
        assert!(
            [
                "bin",
                "dev",
                "etc",
                "lib",
                "lib32",
                "lib64",
                "libx32",
                "opt",
                "proc",
                "run",
                "sbin",
                "tmp",
                "usr",
                "workspace"
            ]
            .contains(&name.as_str()),
            "/{name} is visible in the sandbox: {root:?}"
        );
    }
    // The limits, as the processes inside have them.
    let limits = read(&workspace, "limits");
    for (name, value) in [
        ("Max processes", "4096"),
        ("Max file size", "4294967296"),
        ("Max address space", "17179869184"),
        ("Max core file size", "0"),
    ] {
        assert!(
            limits
                .lines()
                .any(|l| l.starts_with(name) && l.split_whitespace().any(|w| w == value)),
            "{name} is not {value}:\n{limits}"
        );
    }
    // A protected file under /etc is masked (it is readable to anyone on the host).
    assert!(std::fs::read_to_string(PROTECTED).is_ok_and(|text| !text.is_empty()));
    assert_eq!(read(&workspace, "protected"), "masked\n");
    if nix::unistd::geteuid().is_root() {
        // On the host, what the sandbox wrote belongs to the sandbox user, not root.
        assert_eq!(
            std::fs::metadata(workspace.join("env")).unwrap().uid(),
            65534
        );
    }

    std::fs::write(workspace.join("go"), "").unwrap();
    assert_eq!(executor.wait(&id).await, Observed::Exited { code: Some(3) });
    assert_eq!(
        executor.observe(&id).await,
        Observed::Exited { code: Some(3) }
    );
    assert!(
        !workspace.exists(),
        "the workspace is removed after the run"
    );
}

#[tokio::test]
async fn cancel_stops_the_runner_and_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let workspaces = dir.path().join("workspaces");
    let executor = executor(
        r#"sleep 1001 & setsid sleep 1002 & echo started > started; wait"#,
        &workspaces,
    );
    let id = executor
        .launch(launch(Duration::from_secs(600)))
        .await
        .unwrap();
    workspace_with(&workspaces, "started").await;
    let child = wait_for_process(&["sleep", "1001"]).await;
    let daemon = wait_for_process(&["sleep", "1002"]).await;
    assert_eq!(executor.observe(&id).await, Observed::Running);
    assert_eq!(niceness(child), 10, "runners yield the CPU to the server");

    executor.cancel(&id).await.unwrap();
    assert_eq!(executor.observe(&id).await, Observed::Cancelled);
    assert!(
        dies(child).await,
        "the runner's children are killed with it"
    );
    assert!(
        dies(daemon).await,
        "a process that left the group dies with the sandbox"
    );
    executor.cancel(&id).await.unwrap(); // idempotent
}

#[tokio::test]
async fn a_runner_past_its_timeout_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let workspaces = dir.path().join("workspaces");
    let executor = executor(
        r#"sleep 1003 & setsid sleep 1004 & echo started > started; wait"#,
        &workspaces,
    );
    // Long enough for the sandbox to start on a busy machine; the test waits for it.
    let id = executor
        .launch(launch(Duration::from_secs(5)))
        .await
        .unwrap();
    workspace_with(&workspaces, "started").await;
    let child = wait_for_process(&["sleep", "1003"]).await;
    let daemon = wait_for_process(&["sleep", "1004"]).await;
    assert_eq!(executor.wait(&id).await, Observed::TimedOut);
    assert!(dies(child).await);
    assert!(dies(daemon).await);
}

/// A runner that ends by itself takes everything it started with it, also a daemon that
/// left its process group and session (`setsid`): the sandbox's PID namespace ends.
#[tokio::test]
async fn a_daemon_left_by_the_runner_ends_with_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let workspaces = dir.path().join("workspaces");
    let executor = executor(
        &format!("setsid sleep 1005 & echo started > started; {WAIT_FOR_GO}; exit 0"),
        &workspaces,
    );
    let id = executor
        .launch(launch(Duration::from_secs(600)))
        .await
        .unwrap();
    let workspace = workspace_with(&workspaces, "started").await;
    let daemon = wait_for_process(&["sleep", "1005"]).await;
    std::fs::write(workspace.join("go"), "").unwrap();
    assert_eq!(executor.wait(&id).await, Observed::Exited { code: Some(0) });
    assert!(!alive(daemon), "the daemon is gone once the task has ended");
}

/// The one live process with this argv, once it exists.
async fn wait_for_process(argv: &[&str]) -> i32 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let [pid] = processes(argv)[..] {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{argv:?} never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_unknown_execution_is_reported_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let executor = executor("true", &dir.path().join("workspaces"));
    let unknown = bg_agent::executor::ExecutionId("local-1-gone".into());
    assert_eq!(executor.observe(&unknown).await, Observed::Unknown);
    executor.cancel(&unknown).await.unwrap();
}

/// A runner whose server is gone is found again by a new executor on the same
/// workspaces (as after a server killed and started again): seen running, cancelled
/// with everything it started, and its workspace removed. An id naming a process that
/// is not the one started (another start time), or a workspace outside the workspaces
/// directory, is not adopted.
#[tokio::test]
async fn a_new_executor_adopts_a_running_runner_and_can_cancel_it() {
    let dir = tempfile::tempdir().unwrap();
    let workspaces = dir.path().join("workspaces");
    let script = "sleep 600 & echo > started; wait";
    let first = executor(script, &workspaces);
    let id = first
        .launch(launch(Duration::from_secs(600)))
        .await
        .unwrap();
    let workspace = workspace_with(&workspaces, "started").await;
    let sleeper = processes(&["sleep", "600"]);
    assert_eq!(sleeper.len(), 1, "{sleeper:?}");

    let second = executor(script, &workspaces);
    // Not the process started (pid reused): not adopted, and nothing is removed.
    let parts: Vec<&str> = id.0.splitn(5, ':').collect();
    let start: u64 = parts[3].parse().unwrap();
    let reused = bg_agent::executor::ExecutionId(format!(
        "local:{}:{}:{}:{}",
        parts[1],
        parts[2],
        start + 1,
        parts[4]
    ));
    let escaping = bg_agent::executor::ExecutionId(format!(
        "local:{}:{}:{}:../x",
        parts[1], parts[2], parts[3]
    ));
    for id in [&reused, &escaping] {
        assert_eq!(second.observe(id).await, Observed::Unknown, "{id:?}");
    }
    assert!(alive(sleeper[0]));

    assert_eq!(second.observe(&id).await, Observed::Running);
    second.cancel(&id).await.unwrap();
    assert_eq!(second.observe(&id).await, Observed::Cancelled);
    assert!(!alive(sleeper[0]), "what the runner started outlived it");
    assert!(!workspace.exists(), "the workspace is left");
    first.server_stopping().await;
}
