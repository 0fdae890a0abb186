//! The binary as a newcomer uses it: `serve` on embedded defaults (no DATABASE_URL, no
//! secret), `webhook send` against it, and a clean stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn bg_agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bg-agent"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("GITHUB_WEBHOOK_SECRET")
        .env_remove("BG_AGENT_CONFIG")
        .env("RUST_LOG", "info");
    command
}

/// Spawns `command` with its output in `log_path`.
fn spawn_logged(command: &mut Command, log_path: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::create(log_path).unwrap();
    command
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits until `url` answers 200, failing with the process's log if it exits or never does.
async fn wait_until_up(url: &str, child: &mut std::process::Child, log_path: &std::path::Path) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client.get(url).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return;
        }
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        assert!(child.try_wait().unwrap().is_none(), "exited early:\n{log}");
        assert!(Instant::now() < deadline, "{url} never came up:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then the exit status.
async fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_serve(dir: &std::path::Path, listen: &str) -> std::process::Child {
    spawn_logged(
        bg_agent()
            .arg("serve")
            .env("BG_AGENT_LISTEN", listen)
            .env("BG_AGENT_DATA_DIR", dir.join("data")),
        &dir.join("serve.log"),
    )
}

#[tokio::test]
async fn serve_on_embedded_defaults_then_send_a_webhook_then_stop() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let log_path = dir.path().join("serve.log");
    let mut server = start_serve(dir.path(), &listen);
    wait_until_up(&format!("http://{listen}/readyz"), &mut server, &log_path).await;

    let fixture = format!(
        "{}/tests/fixtures/webhooks/issue_comment.created.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let send = |delivery: Option<&str>, secret: Option<&str>| {
        let mut command = bg_agent();
        command
            .args(["webhook", "send", "--event", "issue_comment"])
            .arg(&fixture)
            .env("BG_AGENT_LISTEN", &listen)
            .stdin(Stdio::null());
        if let Some(delivery) = delivery {
            command.args(["--delivery", delivery]);
        }
        if let Some(secret) = secret {
            command.env("GITHUB_WEBHOOK_SECRET", secret);
        }
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success(), stdout)
    };

    let (ok, stdout) = send(Some("cli-1"), None);
    assert!(ok && stdout.contains("202 Accepted"), "{stdout}");

    // A second send of the same delivery id is acknowledged as a duplicate.
    let (ok, stdout) = send(Some("cli-1"), None);
    assert!(ok && stdout.contains("200 OK"), "{stdout}");

    // A wrong secret is refused, and the tool says so with a failing exit status.
    let (ok, stdout) = send(None, Some("not-the-server-secret"));
    assert!(!ok && stdout.contains("401"), "{stdout}");

    let status = terminate(&mut server).await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("development secret"),
        "warns about the default secret:\n{log}"
    );
    assert!(log.contains("stopped"), "{log}");
    assert!(
        !dir.path()
            .join("data/postgres/pgdata/postmaster.pid")
            .exists(),
        "the embedded PostgreSQL was stopped with the server"
    );
}

#[test]
fn configuration_errors_are_one_clear_line() {
    let output = bg_agent()
        .arg("serve")
        .env("BG_AGENT_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("BG_AGENT_LISTEN"), "{stderr}");
}

/// The end-to-end try-out without GitHub: the fake GitHub (`dev github-sim`) delivers a
/// comment made through its control API to `serve`, signed with the same development
/// secret, and `serve` accepts it.
#[tokio::test]
async fn github_sim_delivers_a_comment_to_serve() {
    let dir = tempfile::tempdir().unwrap();
    let serve_listen = format!("127.0.0.1:{}", free_port());
    let mut server = start_serve(dir.path(), &serve_listen);
    let sim_listen = format!("127.0.0.1:{}", free_port());
    let sim_log = dir.path().join("sim.log");
    let mut sim = spawn_logged(
        bg_agent().args([
            "dev",
            "github-sim",
            "--listen",
            &sim_listen,
            "--webhook-url",
            &format!("http://{serve_listen}/webhook"),
        ]),
        &sim_log,
    );
    wait_until_up(
        &format!("http://{sim_listen}/_sim/state"),
        &mut sim,
        &sim_log,
    )
    .await;
    wait_until_up(
        &format!("http://{serve_listen}/readyz"),
        &mut server,
        &dir.path().join("serve.log"),
    )
    .await;

    let client = reqwest::Client::new();
    let made = client
        .post(format!(
            "http://{sim_listen}/_sim/repos/acme/widgets/issues/17/comments"
        ))
        .json(&serde_json::json!({"user": "octo-lead", "body": "/bg-agent help"}))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success(), "{:?}", made.text().await);
    let state: serde_json::Value = client
        .get(format!("http://{sim_listen}/_sim/state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let delivered: Vec<(String, u64)> = state["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["event"].as_str().unwrap().to_owned(),
                d["status_code"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(delivered, [("issue_comment".to_owned(), 202)]);

    // The API refuses anonymous calls, as GitHub does.
    let anonymous = client
        .get(format!("http://{sim_listen}/repos/acme/widgets"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    assert!(terminate(&mut sim).await.success());
    assert!(terminate(&mut server).await.success());
}

/// The README's run command: the demo comments on the sample issue, follows the task to
/// its pull request, prints it, keeps running, and stops cleanly on Ctrl-C.
#[tokio::test]
async fn the_demo_follows_a_task_to_its_pull_request() {
    let dir = tempfile::tempdir().unwrap();
    // The embedded cluster runs as the postgres user when we are root.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let out_path = dir.path().join("demo.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut demo = bg_agent()
        .arg("demo")
        .env_remove("RUST_LOG")
        .env("BG_AGENT_LISTEN", &listen)
        .env("BG_AGENT_DATA_DIR", dir.path().join("data"))
        .stdout(out)
        .stderr(std::fs::File::create(dir.path().join("demo.err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let printed = loop {
        let printed = std::fs::read_to_string(&out_path).unwrap_or_default();
        if printed.contains("Ctrl-C") {
            break printed;
        }
        assert!(
            demo.try_wait().unwrap().is_none(),
            "exited early:\n{printed}"
        );
        assert!(Instant::now() < deadline, "no pull request yet:\n{printed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        printed.contains("/bg-agent upgrade lodash 4.17.21"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("http://{listen}/tasks/1")),
        "{printed}"
    );
    assert!(printed.contains("validating"), "{printed}");
    assert!(printed.contains("pull request    http://"), "{printed}");
    assert!(
        printed.contains("\"[bg-agent] upgrade lodash 4.17.21\""),
        "{printed}"
    );
    assert!(
        !printed.contains(" INFO "),
        "logs stay quiet in the demo:\n{printed}"
    );
    // Still serving for a look around: the task page answers.
    let page = reqwest::get(format!("http://{listen}/tasks/1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("succeeded"), "{page}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGINT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
