//! `bg-agent-dev` as a developer uses it: the README's run command (the demo) and the fake
//! GitHub on its own, delivering to a server.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bg_agent::app::RunningServer;
use bg_agent::config::Config;
use bg_agent::engine::LoggingHandler;
use bg_agent_testkit::db::TestDb;
use bg_agent_testkit::process::{free_port, spawn_logged, terminate, wait_until_up};

fn dev() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bg-agent-dev"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("GITHUB_WEBHOOK_SECRET")
        .env_remove("BG_AGENT_CONFIG")
        .env("RUST_LOG", "info");
    command
}

/// The try-out without GitHub: the fake GitHub (`bg-agent-dev github-fake`) delivers a
/// comment made through its control API to the server, signed with the same development
/// secret, and the server accepts it.
#[tokio::test]
async fn github_fake_delivers_a_comment_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    // The server in this process, on the same embedded defaults as `serve`.
    let db = TestDb::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = Config::from_vars(&HashMap::new()).unwrap();
    let server = RunningServer::start(
        &config,
        db.store().clone(),
        Arc::new(LoggingHandler),
        listener,
    )
    .unwrap();
    let serve_listen = server.addr.to_string();
    let sim_listen = format!("127.0.0.1:{}", free_port());
    let sim_log = dir.path().join("sim.log");
    let mut sim = spawn_logged(
        dev().args([
            "github-fake",
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
    // It answers while it seeds its world; its banner comes once the world is there.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&sim_log)
        .unwrap_or_default()
        .contains("state: curl")
    {
        assert!(
            Instant::now() < deadline,
            "the fake GitHub never said it was ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
    server.stop().await.unwrap();
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
    let mut demo = dev()
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
