//! The local executor with real processes: secrets reach the runner through its
//! environment only, the server's own environment does not, cancel and timeout kill the
//! whole process group, and the workspace is removed afterwards.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bg_agent::executor::{Executor, Launch, LocalExecutor, Observed};

const TOKEN: &str = "runner-token-not-for-argv";
const SECRET: &str = "per-task-secret";

fn executor(script: &str, workspaces: &Path) -> LocalExecutor {
    LocalExecutor::new(
        PathBuf::from("/bin/sh"),
        vec!["-c".into(), script.into()],
        workspaces.to_path_buf(),
    )
}

fn launch(out: &Path, timeout: Duration) -> Launch {
    Launch {
        task_id: 7,
        callback_url: "http://127.0.0.1:9/".into(),
        task_secret: SECRET.into(),
        runner_token: TOKEN.into(),
        timeout,
        env: vec![("OUT".into(), out.display().to_string())],
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

async fn wait_for_file(path: &Path) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn secrets_go_through_the_environment_and_the_workspace_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let executor = executor(
        r#"env > "$OUT/env"; tr '\0' ' ' < /proc/$$/cmdline > "$OUT/cmdline"; pwd > "$OUT/pwd"; exit 3"#,
        &dir.path().join("workspaces"),
    );
    let id = executor
        .launch(launch(&out, Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(executor.wait(&id).await, Observed::Exited { code: Some(3) });
    assert_eq!(
        executor.observe(&id).await,
        Observed::Exited { code: Some(3) }
    );

    let env = std::fs::read_to_string(out.join("env")).unwrap();
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
    // Nothing of the server's environment (DATABASE_URL, keys...) is inherited: only
    // what the executor sets, and what `sh` adds itself.
    for line in env.lines() {
        let name = line.split('=').next().unwrap();
        assert!(
            name.starts_with("BG_AGENT_")
                || ["PATH", "HOME", "OUT", "PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
            "unexpected variable in the runner's environment: {line}"
        );
    }
    let cmdline = std::fs::read_to_string(out.join("cmdline")).unwrap();
    assert!(
        !cmdline.contains(TOKEN) && !cmdline.contains(SECRET),
        "{cmdline}"
    );
    let workspace = std::fs::read_to_string(out.join("pwd")).unwrap();
    let workspace = Path::new(workspace.trim());
    assert!(
        workspace.starts_with(dir.path().join("workspaces")),
        "{}",
        workspace.display()
    );
    assert!(
        !workspace.exists(),
        "the workspace is removed after the run"
    );
}

#[tokio::test]
async fn cancel_stops_the_runner_and_everything_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_path_buf();
    let executor = executor(
        r#"echo $$ > "$OUT/runner"; sleep 1000 & echo $! > "$OUT/grandchild"; wait"#,
        &dir.path().join("workspaces"),
    );
    let id = executor
        .launch(launch(&out, Duration::from_secs(600)))
        .await
        .unwrap();
    let grandchild: i32 = wait_for_file(&out.join("grandchild"))
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(alive(grandchild));
    assert_eq!(executor.observe(&id).await, Observed::Running);
    let runner: i32 = wait_for_file(&out.join("runner"))
        .await
        .trim()
        .parse()
        .unwrap();
    assert_eq!(niceness(runner), 10, "runners yield the CPU to the server");

    executor.cancel(&id).await.unwrap();
    assert_eq!(executor.observe(&id).await, Observed::Cancelled);
    assert!(
        dies(grandchild).await,
        "the runner's children are killed with it"
    );
    executor.cancel(&id).await.unwrap(); // idempotent
}

#[tokio::test]
async fn a_runner_past_its_timeout_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_path_buf();
    let executor = executor(
        r#"sleep 1000 & echo $! > "$OUT/grandchild"; wait"#,
        &dir.path().join("workspaces"),
    );
    let id = executor
        .launch(launch(&out, Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(executor.wait(&id).await, Observed::TimedOut);
    let grandchild: i32 = wait_for_file(&out.join("grandchild"))
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(dies(grandchild).await);
}

#[tokio::test]
async fn an_unknown_execution_is_reported_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let executor = executor("true", dir.path());
    let unknown = bg_agent::executor::ExecutionId("local-1-gone".into());
    assert_eq!(executor.observe(&unknown).await, Observed::Unknown);
    executor.cancel(&unknown).await.unwrap();
}
