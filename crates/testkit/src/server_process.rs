//! The server as an operator runs it: `bg-agent serve`, a process of its own configured
//! by environment variables against a scenario's database and fake GitHub, so that a
//! fault test can kill it (SIGKILL) and start another on the same database and address.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::fixtures::SECRET;
use crate::harness::Harness;
use crate::process::{spawn_logged, terminate, wait_until_up};

/// A `bg-agent serve` process. Killed (SIGKILL) when dropped.
pub struct ServerProcess {
    child: Child,
    listen: String,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `program serve` listening on `listen` (its public URL too, so a runner's
    /// callback reaches whichever server listens there), with the harness's database,
    /// fake GitHub, npm registry and data directory, and points the App's webhook at it.
    /// Returns once it answers `/readyz`. Its log is `log_dir/serve-<n>.log`.
    pub async fn start(program: &Path, h: &Harness, listen: &str, log_dir: &Path) -> Self {
        Self::start_with(program, h, listen, log_dir, &[]).await
    }

    /// As [`Self::start`], with more settings (`BG_AGENT_MAX_TASKS`...).
    pub async fn start_with(
        program: &Path,
        h: &Harness,
        listen: &str,
        log_dir: &Path,
        settings: &[(&str, &str)],
    ) -> Self {
        let log = (1..)
            .map(|n| log_dir.join(format!("serve-{n}.log")))
            .find(|path| !path.exists())
            .expect("a free log name");
        let mut command = Command::new(program);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "HOME",
                std::env::var_os("HOME").unwrap_or_else(|| "/".into()),
            )
            .env("RUST_LOG", "info,bg_agent=debug")
            .env("DATABASE_URL", h.db.url())
            .env("BG_AGENT_LISTEN", listen)
            .env("BG_AGENT_PUBLIC_URL", format!("http://{listen}"))
            .env("BG_AGENT_DATA_DIR", &h.config.data_dir)
            .env("GITHUB_API_URL", h.sim.api_url())
            .env("GITHUB_APP_ID", h.sim.app_id().to_string())
            .env("GITHUB_APP_SLUG", h.sim.app_slug())
            .env("GITHUB_PRIVATE_KEY", h.sim.app_private_key_pem())
            .env("GITHUB_WEBHOOK_SECRET", SECRET)
            .env("BG_AGENT_NPM_REGISTRY", h.sim.npm_registry_url());
        command.envs(settings.iter().copied());
        if let Some(tmp) = std::env::var_os("TMPDIR") {
            command.env("TMPDIR", tmp);
        }
        let mut child = spawn_logged(&mut command, &log);
        wait_until_up(&format!("http://{listen}/readyz"), &mut child, &log).await;
        h.sim
            .set_webhook_url(Some(format!("http://{listen}/webhook")));
        Self {
            child,
            listen: listen.to_owned(),
            log,
        }
    }

    pub fn listen(&self) -> &str {
        &self.listen
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("a pid")
    }

    /// SIGKILL, as a crash or the OOM killer would: nothing of its own shutdown runs.
    /// Returns once it is gone.
    pub fn kill(&mut self) {
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "did not die on SIGKILL");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the exit status (a graceful stop).
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child).await
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}
