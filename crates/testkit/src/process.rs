//! Programs under test as a person runs them: a free port, output to a log file, "up"
//! when a URL answers, SIGTERM and the exit status.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Spawns `command` with its output in `log_path`.
pub fn spawn_logged(command: &mut Command, log_path: &std::path::Path) -> Child {
    let log = std::fs::File::create(log_path).unwrap();
    command
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits until `url` answers 200, failing with the process's log if it exits or never does.
pub async fn wait_until_up(url: &str, child: &mut Child, log_path: &std::path::Path) {
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
pub async fn terminate(child: &mut Child) -> ExitStatus {
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
