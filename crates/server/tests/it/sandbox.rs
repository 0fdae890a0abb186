//! A hostile repository against the local executor's sandbox. The repository's validation
//! command is a probe that tries, from inside a real task run by the real runner, each
//! thing repository code must not do: read the App key file, read the server's
//! environment through /proc, connect to the database's Unix socket, list, read and write
//! another task's workspace, signal the server, and leave a process behind. With the
//! sandbox every attempt fails and the task still ends in its pull request; with the
//! sandbox off the same probe finds the leaks (so the probe is not vacuous).
//!
//! The targets are made world-readable (and the socket world-connectable), so an attempt
//! that fails proves the thing is out of the sandbox's sight, not merely protected by its
//! file mode.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bg_agent::executor::SandboxMode;
use bg_agent_core::task::TaskState;
use bg_agent_testkit::harness::{Harness, LEAD, REPO, Scenario, WAIT};

const PROBE: &str = r#"// Tries what a hostile repository would; one line per attempt.
const fs = require('fs');
const net = require('net');
const cp = require('child_process');
const t = JSON.parse(fs.readFileSync('probe-targets.json', 'utf8'));
const say = (name, leaked, why) =>
  console.log(`probe ${name}: ${leaked ? 'LEAKED' : 'blocked'} (${why})`);
const attempt = (name, f) => {
  try {
    const [leaked, why] = f();
    say(name, leaked, why);
  } catch (e) {
    say(name, false, e.code || e.message);
  }
};
attempt('key-file', () => {
  const text = fs.readFileSync(t.keyFile, 'utf8');
  return [text.includes(t.keyMarker), `read ${text.length} bytes`];
});
attempt('server-environ', () => {
  const environ = fs.readFileSync(`/proc/${t.serverPid}/environ`);
  return [environ.length > 0, `read ${environ.length} bytes`];
});
attempt('list-workspaces', () => {
  const names = fs.readdirSync(t.workspaces);
  return [names.includes(t.plantedName), `${names.length} entries`];
});
attempt('read-workspace', () => {
  const text = fs.readFileSync(`${t.plantedDir}/secret.txt`, 'utf8');
  return [true, `read ${text.length} bytes`];
});
attempt('write-workspace', () => {
  fs.writeFileSync(`${t.plantedDir}/dropped.txt`, 'was here');
  return [true, 'wrote'];
});
attempt('signal-server', () => {
  // SIGCONT: delivered, it proves the power to signal without stopping the test.
  process.kill(t.serverPid, 'SIGCONT');
  return [true, 'SIGCONT delivered'];
});
const connect = (name, path) =>
  new Promise((resolve) => {
    const socket = net.connect({ path });
    socket.on('connect', () => { say(name, true, 'connected'); socket.destroy(); resolve(); });
    socket.on('error', (e) => { say(name, false, e.code); resolve(); });
  });
(async () => {
  await connect('db-socket', t.socket);
  await connect('db-socket-tmp', t.tmpSocket);
  const child = cp.spawn('setsid', ['sleep', t.sleep], { detached: true, stdio: 'ignore' });
  child.unref();
  console.log(`probe background: started`);
})();
"#;

/// Every attempt the probe makes; each prints `probe <name>: blocked|LEAKED (...)`.
const ATTEMPTS: [&str; 8] = [
    "key-file",
    "server-environ",
    "list-workspaces",
    "read-workspace",
    "write-workspace",
    "signal-server",
    "db-socket",
    "db-socket-tmp",
];

/// What the probe aims at, set up around a running harness as the server would have them.
struct Targets {
    _key_dir: tempfile::TempDir,
    key_file: PathBuf,
    planted: PathBuf,
    sockets: Vec<PathBuf>,
    _tmp_socket_dir: tempfile::TempDir,
    connections: Arc<AtomicUsize>,
    sleep: String,
}

const KEY_MARKER: &str = "-----BEGIN RSA PRIVATE KEY----- probe-marker";
const PLANTED_SECRET: &str = "another task's checkout";

impl Targets {
    /// A key file, another task's workspace and the embedded database's socket paths
    /// (under the data directory, and the `/tmp` fallback for long paths), all of them
    /// world-accessible; then the probe and its targets are pushed to the repository.
    async fn plant(h: &Harness, sleep: &str) -> Self {
        let key_dir = tempfile::tempdir().unwrap();
        let key_file = key_dir.path().join("app.pem");
        std::fs::write(&key_file, KEY_MARKER).unwrap();
        world_readable(key_dir.path(), &key_file);

        let workspaces = h.config.data_dir.join("workspaces");
        let planted = workspaces.join("task-999-planted");
        std::fs::create_dir_all(&planted).unwrap();
        std::fs::write(planted.join("secret.txt"), PLANTED_SECRET).unwrap();
        world_readable(&planted, &planted.join("secret.txt"));
        std::fs::set_permissions(&workspaces, std::fs::Permissions::from_mode(0o755)).unwrap();

        let tmp_socket_dir = tempfile::Builder::new()
            .prefix("bg-agent-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let sockets = vec![
            h.config.data_dir.join("postgres/run/.s.PGSQL.5432"),
            tmp_socket_dir.path().join(".s.PGSQL.5432"),
        ];
        let connections = Arc::new(AtomicUsize::new(0));
        for socket in &sockets {
            let dir = socket.parent().unwrap();
            std::fs::create_dir_all(dir).unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            let listener = tokio::net::UnixListener::bind(socket).unwrap();
            std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o777)).unwrap();
            let connections = connections.clone();
            tokio::spawn(async move {
                while listener.accept().await.is_ok() {
                    connections.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let targets = serde_json::json!({
            "keyFile": key_file,
            "keyMarker": KEY_MARKER,
            "serverPid": std::process::id(),
            "workspaces": workspaces,
            "plantedName": "task-999-planted",
            "plantedDir": planted,
            "socket": sockets[0],
            "tmpSocket": sockets[1],
            "sleep": sleep,
        });
        push(
            h,
            &[
                ("probe.js", PROBE.to_owned()),
                ("probe-targets.json", targets.to_string()),
                (
                    ".github/bg-agent.yml",
                    "validation:\n  - node probe.js\n".to_owned(),
                ),
            ],
        );
        Self {
            _key_dir: key_dir,
            key_file,
            planted,
            sockets,
            _tmp_socket_dir: tmp_socket_dir,
            connections,
            sleep: sleep.to_owned(),
        }
    }

    /// Runs the probe in a task to its end; returns the probe's lines and the processes
    /// it left behind.
    async fn run_probe(&self, h: &Harness) -> (Vec<String>, Vec<i32>) {
        h.comment(LEAD, "/bg-agent upgrade lodash 4.17.21").await;
        let task = h.only_task().await.expect_state(TaskState::Succeeded).await;
        assert!(
            task.pr_number.is_some(),
            "the task ends in its pull request"
        );
        let validations = h.task(task.id).validations().await;
        assert_eq!(validations.len(), 1, "{validations:#?}");
        assert!(validations[0].passed(), "{validations:#?}");
        let lines: Vec<String> = validations[0]
            .output_tail
            .lines()
            .filter(|line| line.starts_with("probe "))
            .map(str::to_owned)
            .collect();
        // Once the task's workspace is removed the sandbox has ended (the executor
        // removes it after reaping the runner).
        let deadline = tokio::time::Instant::now() + WAIT;
        while h.task_workspaces().len() > 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the workspace stays"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        (lines, processes(&["sleep", &self.sleep]))
    }
}

fn world_readable(dir: &Path, file: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Commits `files` to the repository's default branch, as a collaborator would.
fn push(h: &Harness, files: &[(&str, String)]) {
    let (git_dir, branch) = h
        .sim
        .read(|s| {
            s.repo(REPO)
                .map(|r| (r.git_dir.clone(), r.default_branch.clone()))
        })
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let output = std::process::Command::new("git")
            .args(["-c", "user.name=Hostile", "-c", "user.email=h@example.com"])
            .args(args)
            .current_dir(work.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
    };
    git(&["clone", "-q", git_dir.to_str().unwrap(), "."]);
    for (path, content) in files {
        let path = work.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "add a probe"]);
    git(&["push", "-q", "origin", &format!("HEAD:{branch}")]);
}

/// Live processes whose argv is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<i32> {
    let wanted: Vec<u8> = argv.join("\0").into_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.strip_suffix(b"\0").unwrap_or(&cmdline) == wanted)
        })
        .collect()
}

fn verdict<'a>(lines: &'a [String], attempt: &str) -> &'a str {
    let prefix = format!("probe {attempt}: ");
    lines
        .iter()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("the probe made no {attempt} attempt: {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_repository_reaches_nothing_of_the_server_and_the_task_still_succeeds() {
    let h = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .start()
        .await;
    assert_eq!(
        h.config.sandbox.mode,
        SandboxMode::Bubblewrap,
        "the default"
    );
    let targets = Targets::plant(&h, "3141.5").await;
    let (lines, survivors) = targets.run_probe(&h).await;

    for attempt in ATTEMPTS {
        let verdict = verdict(&lines, attempt);
        assert!(
            verdict.starts_with("blocked"),
            "{attempt}: {verdict}\n{lines:#?}"
        );
    }
    assert!(!lines.iter().any(|l| l.contains("LEAKED")), "{lines:#?}");
    assert!(
        lines.contains(&"probe background: started".to_owned()),
        "{lines:#?}"
    );
    assert_eq!(survivors, Vec::<i32>::new(), "a process outlived its task");
    assert_eq!(targets.connections.load(Ordering::SeqCst), 0);
    // The other workspace is as it was, the key file too; the server still answers.
    let planted: Vec<_> = std::fs::read_dir(&targets.planted)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(planted, ["secret.txt"]);
    assert_eq!(
        std::fs::read_to_string(targets.planted.join("secret.txt")).unwrap(),
        PLANTED_SECRET
    );
    assert_eq!(
        std::fs::read_to_string(&targets.key_file).unwrap(),
        KEY_MARKER
    );
    let health = reqwest::get(format!("{}/healthz", h.public_url()))
        .await
        .unwrap();
    assert!(health.status().is_success());
    assert!(targets.sockets.iter().all(|s| s.exists()));
    h.finish().await;
}

/// The same probe with the sandbox off finds the leaks: the test above is not vacuous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sandbox_off_the_same_probe_finds_the_leaks() {
    let mut h = Scenario::engine(env!("CARGO_BIN_EXE_bg-agent"))
        .start()
        .await;
    h.stop_server().await;
    h.config.sandbox.mode = SandboxMode::Off;
    h.start_server().await;
    let targets = Targets::plant(&h, "2718.3").await;
    let (lines, survivors) = targets.run_probe(&h).await;
    for pid in &survivors {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL);
    }

    for attempt in ATTEMPTS {
        let verdict = verdict(&lines, attempt);
        assert!(
            verdict.starts_with("LEAKED"),
            "{attempt}: {verdict}\n{lines:#?}"
        );
    }
    assert!(targets.connections.load(Ordering::SeqCst) >= 2);
    assert!(targets.planted.join("dropped.txt").exists());
    // Whether a left-behind process survives unsandboxed depends on the runner (which
    // may end its descendants itself); the sandboxed run above must never have one.
    h.finish().await;
}

/// `serve` makes itself non-dumpable: a process of the same (non-root) user cannot read
/// its environment, where its secrets are. As root the test runs both as the sandbox's
/// default user; root itself is not stopped by this (nor meant to be). A process of that
/// user that did not make itself non-dumpable is readable the same way, so the check is
/// not vacuous.
#[tokio::test]
async fn the_server_environment_is_unreadable_to_its_own_user() {
    use bg_agent_testkit::process::{free_port, spawn_logged, terminate, wait_until_up};
    use std::os::unix::process::CommandExt;

    const MARKER: &str = "webhook-secret-in-the-environment";
    let as_user = |command: &mut std::process::Command| {
        if nix::unistd::geteuid().is_root() {
            command.uid(65534).gid(65534);
        }
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    }
    let listen = format!("127.0.0.1:{}", free_port());
    let log_path = dir.path().join("serve.log");
    // The build may lie under a private home directory: the user runs its own copy.
    let program = dir.path().join("bg-agent");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_bg-agent"), &program).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_bg-agent"), &program).unwrap();
    }
    let mut command = std::process::Command::new(&program);
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GITHUB_WEBHOOK_SECRET", MARKER)
        .env("BG_AGENT_LISTEN", &listen)
        .env("BG_AGENT_DATA_DIR", &data)
        .current_dir(dir.path());
    as_user(&mut command);
    let mut server = spawn_logged(&mut command, &log_path);
    wait_until_up(&format!("http://{listen}/readyz"), &mut server, &log_path).await;

    let read_environ = |pid: u32| {
        let mut cat = std::process::Command::new("cat");
        cat.arg(format!("/proc/{pid}/environ"));
        as_user(&mut cat);
        cat.output().unwrap()
    };
    let read = read_environ(server.id());
    let status = terminate(&mut server).await;
    assert!(
        !String::from_utf8_lossy(&read.stdout).contains(MARKER) && !read.status.success(),
        "the server's environment was readable"
    );
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("Permission denied"),
        "{read:?}"
    );
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log_path).unwrap()
    );

    // The same reader on an ordinary process of that user does read it.
    let mut sleeper = std::process::Command::new("sleep");
    sleeper.arg("60").env("PROBE_MARKER", MARKER);
    as_user(&mut sleeper);
    let mut sleeper = sleeper.spawn().unwrap();
    let read = read_environ(sleeper.id());
    sleeper.kill().unwrap();
    let _ = sleeper.wait();
    assert!(
        String::from_utf8_lossy(&read.stdout).contains(MARKER),
        "{read:?}"
    );
}

/// A data directory the sandbox user cannot reach (a checkout under root's private home,
/// where the demo keeps `.bg-agent/`): the server still starts, with its workspaces in a
/// private temporary directory the sandbox can reach, and says so.
#[tokio::test]
async fn a_data_directory_under_a_private_home_still_runs_sandboxed_tasks() {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = home.path().join("checkout/.bg-agent");
    std::fs::create_dir_all(&data).unwrap();
    let mut config = bg_agent_testkit::recording::test_config();
    config.data_dir = data.clone();
    let executor =
        bg_agent::app::local_executor(&config, Path::new(env!("CARGO_BIN_EXE_bg-agent"))).unwrap();
    if nix::unistd::geteuid().is_root() {
        assert!(
            !executor.workspaces().starts_with(home.path()),
            "{}",
            executor.workspaces().display()
        );
        let mode = std::fs::metadata(executor.workspaces())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o711, "searchable, not listable");
        std::fs::remove_dir_all(executor.workspaces()).unwrap();
    } else {
        // Not root: the sandbox runs as this user (behind a user namespace), which can
        // reach its own data directory.
        assert_eq!(executor.workspaces(), data.join("workspaces"));
    }
}
