//! The binary as a newcomer uses it: `serve` on embedded defaults (no DATABASE_URL, no
//! secret), `webhook send` against it, and a clean stop on SIGTERM.

use std::process::{Command, Stdio};

use bg_agent_testkit::process::{free_port, spawn_logged, terminate, wait_until_up};

fn bg_agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bg-agent"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("GITHUB_WEBHOOK_SECRET")
        .env_remove("BG_AGENT_CONFIG")
        .env("RUST_LOG", "info");
    command
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
        "{}/../../tests/fixtures/webhooks/issue_comment.created.json",
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

/// The development secret is public: `serve` with App credentials and no webhook secret
/// of its own refuses to start, before it opens a database or a port.
#[test]
fn serve_with_app_credentials_and_no_webhook_secret_refuses_to_start() {
    // Were it to start after all, its files go to a temporary directory.
    let dir = tempfile::tempdir().unwrap();
    let output = bg_agent()
        .arg("serve")
        .env("BG_AGENT_DATA_DIR", dir.path())
        .env("BG_AGENT_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("GITHUB_APP_ID", "310001")
        .env("GITHUB_PRIVATE_KEY_PATH", "/nonexistent/app-key.pem")
        .env_remove("GITHUB_PRIVATE_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    insta::assert_snapshot!(stderr, @"bg-agent: configuration error: GITHUB_WEBHOOK_SECRET is not set, but GitHub App credentials are (GITHUB_APP_ID, GITHUB_PRIVATE_KEY_PATH): the development webhook secret is public, so anyone could forge deliveries and start tasks; set GITHUB_WEBHOOK_SECRET to the App's webhook secret");
}

/// `serve --help` is the reference of every setting: each variable is named, and secrets
/// set in the environment are not shown.
#[test]
fn serve_help_lists_every_setting_and_shows_no_secret() {
    let output = bg_agent()
        .args(["serve", "--help"])
        .env("GITHUB_WEBHOOK_SECRET", "hunter2-webhook")
        .env("DATABASE_URL", "postgres://u:pa55word@h/db")
        .env("GITHUB_PRIVATE_KEY", "pem-that-is-secret")
        .env("BG_AGENT_WORKERS", "7")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.starts_with("Run the server"), "{help}");
    for declaration in bg_agent::config::Settings::declarations() {
        assert!(
            help.contains(&format!("--{} <", declaration.flag)),
            "{help}"
        );
        assert!(help.contains(&declaration.env), "{help}");
    }
    assert!(help.contains("[env: BG_AGENT_WORKERS=7]"), "{help}");
    for secret in ["hunter2", "pa55word", "pem-that-is-secret"] {
        assert!(!help.contains(secret), "{help}");
    }
}

#[test]
fn a_flag_is_checked_like_its_variable() {
    let output = bg_agent()
        .args(["serve", "--workers", "many"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("BG_AGENT_WORKERS = \"many\""), "{stderr}");
}
