//! A private PostgreSQL cluster for when `DATABASE_URL` is unset: `serve` on a developer
//! machine and the test suite. It listens on a Unix socket only (no TCP port), and its
//! postmaster dies with the thread that watches it, so it never outlives us.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::oneshot;

use crate::unix_access::unsearchable_ancestor;

/// Role created by `initdb` and used by the app.
pub const SUPERUSER: &str = "bg_agent";
/// Only names the socket file (`.s.PGSQL.<port>`); nothing listens on TCP.
const SOCKET_PORT: u16 = 5432;
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server programs (initdb, postgres) were not found on PATH or under \
         /usr/lib/postgresql/*/bin: install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`) \
         or set DATABASE_URL to an existing server"
    )]
    NoBinaries,
    #[error(
        "PostgreSQL refuses to run as root and there is no `{0}` user to run it as: create that \
         user, run as another user, or set DATABASE_URL"
    )]
    NoUnprivilegedUser(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {output}")]
    CommandFailed {
        program: String,
        status: String,
        output: String,
    },
    #[error(
        "PostgreSQL did not become ready within {seconds} s; its log ({log}) ends with:\n{tail}"
    )]
    NotReady {
        seconds: u64,
        log: PathBuf,
        tail: String,
    },
}

/// How durable the cluster is: the app's own data is durable; test data need not be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Durable,
    Throwaway,
}

pub struct EmbeddedPostgres {
    /// Where the cluster lives (`pgdata`, its log): the directory asked for, or the
    /// fallback of [`reachable_cluster_dir`].
    cluster_dir: PathBuf,
    socket_dir: PathBuf,
    pid: u32,
    exited: Option<oneshot::Receiver<()>>,
    log_path: PathBuf,
}

struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
}

/// The user the server processes run as: ourselves, or an unprivileged one when we are root.
#[derive(Clone, Copy)]
struct RunAs {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

impl EmbeddedPostgres {
    /// Starts (creating on first use) the cluster under `dir`. `dir/pgdata` holds the data.
    pub async fn start(dir: &Path, durability: Durability) -> Result<Self, EmbeddedError> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::start_blocking(&dir, durability))
            .await
            .map_err(|e| EmbeddedError::Io {
                what: "starting PostgreSQL".into(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    fn start_blocking(dir: &Path, durability: Durability) -> Result<Self, EmbeddedError> {
        let binaries = find_binaries().ok_or(EmbeddedError::NoBinaries)?;
        let run_as = run_as()?;
        let io = |what: String| move |source| EmbeddedError::Io { what, source };

        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let dir = dir
            .canonicalize()
            .map_err(io(format!("resolving {}", dir.display())))?;
        let dir = match run_as {
            Some(run_as) => reachable_cluster_dir(&dir, run_as)?,
            None => dir,
        };
        let pgdata = dir.join("pgdata");
        let socket_dir = socket_dir_for(&dir);
        std::fs::create_dir_all(&socket_dir)
            .map_err(io(format!("creating {}", socket_dir.display())))?;
        std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("securing {}", socket_dir.display())))?;
        if let Some(run_as) = run_as {
            for d in [&dir, &socket_dir] {
                chown(d, run_as)?;
            }
        }

        if !pgdata.join("PG_VERSION").exists() {
            let mut initdb = Command::new(&binaries.initdb);
            initdb.arg("-D").arg(&pgdata).args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]);
            if durability == Durability::Throwaway {
                initdb.arg("--no-sync");
            }
            run_to_completion(initdb, run_as, "initdb")?;
        }

        let log_path = dir.join("postgres.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(format!("opening {}", log_path.display())))?;
        if let Some(run_as) = run_as {
            chown(&log_path, run_as)?;
        }
        let log_err = log
            .try_clone()
            .map_err(io(format!("opening {}", log_path.display())))?;

        let mut postgres = Command::new(&binaries.postgres);
        postgres
            .arg("-D")
            .arg(&pgdata)
            .arg("-k")
            .arg(&socket_dir)
            .args(["-p", &SOCKET_PORT.to_string()])
            // Unix socket only: nothing else on the machine can reach it over TCP.
            .args(["-c", "listen_addresses="])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        match durability {
            // The app's own cluster is an inbox that writes a few KB of WAL and data per
            // delivery at thousands a second; every setting here keeps commit latency flat
            // under that load (each was measured with scripts/bench-intake.sh):
            // - With the stock 1 GB max_wal_size a burst forces a checkpoint every ~20 s,
            //   and its fsync storm stalls commits for up to 150 ms: fewer, longer
            //   checkpoints, with compressed full-page images.
            // - A new 16 MB WAL segment is zero-filled while WAL writes wait: ~15 ms every
            //   few hundred ms under load. Skipping the fill (as on copy-on-write file
            //   systems) costs nothing in crash safety; a full disk shows up at the first
            //   write rather than at segment creation.
            // - Dirty pages that backends write out sit in the kernel's cache until it
            //   flushes them all at once (after 30 s), and WAL fsyncs queue behind that
            //   burst for 100-375 ms. Backends ask for early writeback, and a busier
            //   background writer does most of the writing off the commit path.
            Durability::Durable => postgres.args([
                "-c",
                "max_wal_size=4GB",
                "-c",
                "checkpoint_timeout=15min",
                "-c",
                "wal_compression=on",
                "-c",
                "wal_init_zero=off",
                "-c",
                "backend_flush_after=256kB",
                "-c",
                "bgwriter_delay=10ms",
                "-c",
                "bgwriter_lru_maxpages=1000",
                "-c",
                "bgwriter_lru_multiplier=4",
            ]),
            Durability::Throwaway => postgres.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]),
        };

        // The watcher thread spawns the postmaster and waits for it. PR_SET_PDEATHSIG is
        // tied to the spawning thread, which lives exactly as long as the child: if this
        // process dies, the kernel stops the server.
        let (spawned_tx, spawned_rx) = std::sync::mpsc::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name("embedded-postgres".into())
            .spawn(move || {
                let child = spawn_child(&mut postgres, run_as, true);
                match child {
                    Ok(mut child) => {
                        let _ = spawned_tx.send(Ok(child.id()));
                        let _ = child.wait();
                    }
                    Err(e) => {
                        let _ = spawned_tx.send(Err(e));
                    }
                }
                let _ = exited_tx.send(());
            })
            .map_err(io("spawning the PostgreSQL watcher thread".into()))?;
        let pid = spawned_rx
            .recv()
            .map_err(|e| EmbeddedError::Io {
                what: "starting postgres".into(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(io(format!("starting {}", binaries.postgres.display())))?;

        let mut server = Self {
            cluster_dir: dir.clone(),
            socket_dir,
            pid,
            exited: Some(exited_rx),
            log_path,
        };
        server.wait_until_ready()?;
        Ok(server)
    }

    fn wait_until_ready(&mut self) -> Result<(), EmbeddedError> {
        let socket = self.socket_dir.join(format!(".s.PGSQL.{SOCKET_PORT}"));
        let deadline = Instant::now() + START_TIMEOUT;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| EmbeddedError::Io {
                what: "building a runtime to probe PostgreSQL".into(),
                source,
            })?;
        let options = self.connect_options("postgres");
        loop {
            let exited = self.exited.as_mut().is_none_or(|rx| {
                !matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
            });
            if exited || Instant::now() > deadline {
                return Err(EmbeddedError::NotReady {
                    seconds: START_TIMEOUT.as_secs(),
                    log: self.log_path.clone(),
                    tail: log_tail(&self.log_path),
                });
            }
            if socket.exists() && runtime.block_on(options.connect()).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Options to reach `database` over the Unix socket.
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.socket_dir)
            .port(SOCKET_PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// Creates `database` unless it exists.
    pub async fn ensure_database(&self, database: &str) -> Result<(), sqlx::Error> {
        let mut conn = self.connect_options("postgres").connect().await?;
        let exists = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#,
            database,
        )
        .fetch_one(&mut conn)
        .await?;
        if !exists {
            // Dynamic: a database name is an identifier, which cannot be a bind parameter.
            sqlx::query(&format!("CREATE DATABASE {}", quote_ident(database)))
                .execute(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Fast shutdown: open sessions are closed, committed data is kept.
    pub async fn stop(mut self) {
        self.signal_and_wait().await;
    }

    async fn signal_and_wait(&mut self) {
        let Some(exited) = self.exited.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        if tokio::time::timeout(Duration::from_secs(30), exited)
            .await
            .is_err()
        {
            tracing::warn!(
                pid = self.pid,
                "embedded PostgreSQL did not stop in 30 s; killing it"
            );
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        // Not stopped explicitly: ask it to go; the watcher thread reaps it.
        if self.exited.is_some() {
            let pid = nix::unistd::Pid::from_raw(self.pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        }
    }
}

/// Quotes an SQL identifier (for CREATE/DROP DATABASE, which take no parameters).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn find_binaries() -> Option<Binaries> {
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
    };
    if let (Some(initdb), Some(postgres)) = (on_path("initdb"), on_path("postgres")) {
        return Some(Binaries { initdb, postgres });
    }
    // Debian keeps server programs off PATH, one directory per major version: take the newest.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| Binaries {
        initdb: bin.join("initdb"),
        postgres: bin.join("postgres"),
    })
}

fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = std::env::var("BG_AGENT_PG_OS_USER").unwrap_or_else(|_| "postgres".into());
    match nix::unistd::User::from_name(&name) {
        Ok(Some(user)) => Ok(Some(RunAs {
            uid: user.uid,
            gid: user.gid,
        })),
        _ => Err(EmbeddedError::NoUnprivilegedUser(name)),
    }
}

fn chown(path: &Path, run_as: RunAs) -> Result<(), EmbeddedError> {
    nix::unistd::chown(path, Some(run_as.uid), Some(run_as.gid)).map_err(|e| EmbeddedError::Io {
        what: format!("handing {} to the PostgreSQL user", path.display()),
        source: e.into(),
    })
}

/// Where root keeps clusters its PostgreSQL user could not reach where they were asked for.
const FALLBACK_ROOT: &str = "/var/lib/bg-agent";

/// PostgreSQL runs as an unprivileged user when we are root, and must reach its cluster:
/// one asked for under a private home (a checkout in `/root`) lives under
/// [`FALLBACK_ROOT`] instead, one directory per directory asked for, kept across restarts.
fn reachable_cluster_dir(dir: &Path, run_as: RunAs) -> Result<PathBuf, EmbeddedError> {
    let Some(parent) = dir.parent() else {
        return Ok(dir.to_owned());
    };
    let blocked = unsearchable_ancestor(parent, run_as.uid.as_raw(), run_as.gid.as_raw()).map_err(
        |source| EmbeddedError::Io {
            what: format!("checking who can reach {}", dir.display()),
            source,
        },
    )?;
    let Some(blocked) = blocked else {
        return Ok(dir.to_owned());
    };
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let fallback = Path::new(FALLBACK_ROOT).join(format!("postgres-{}", hex::encode(&digest[..8])));
    let io = |what: String| move |source| EmbeddedError::Io { what, source };
    std::fs::create_dir_all(&fallback).map_err(io(format!("creating {}", fallback.display())))?;
    std::fs::set_permissions(FALLBACK_ROOT, std::fs::Permissions::from_mode(0o711))
        .map_err(io(format!("securing {FALLBACK_ROOT}")))?;
    tracing::warn!(
        asked = %dir.display(),
        blocked = %blocked.display(),
        cluster = %fallback.display(),
        "PostgreSQL's user cannot reach the data directory; the embedded cluster lives in \
         the directory named here instead (set BG_AGENT_DATA_DIR under directories others \
         may search, e.g. /var/lib/bg-agent, to choose)"
    );
    Ok(fallback)
}

/// Unix socket paths are limited to 107 bytes; a deep data directory gets a short one in /tmp.
fn socket_dir_for(dir: &Path) -> PathBuf {
    let preferred = dir.join("run");
    if preferred.as_os_str().len() + ".s.PGSQL.5432".len() + 1 < 100 {
        return preferred;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    std::env::temp_dir().join(format!("bg-agent-pg-{}", hex::encode(&digest[..8])))
}

fn spawn_child(
    command: &mut Command,
    run_as: Option<RunAs>,
    die_with_parent: bool,
) -> std::io::Result<Child> {
    // SAFETY: only async-signal-safe calls (setgid, setuid, prctl) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if let Some(RunAs { uid, gid }) = run_as {
                nix::unistd::setgroups(&[]).map_err(std::io::Error::from)?;
                nix::unistd::setgid(gid).map_err(std::io::Error::from)?;
                nix::unistd::setuid(uid).map_err(std::io::Error::from)?;
            }
            if die_with_parent {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGINT)
                    .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    command.spawn()
}

fn run_to_completion(
    mut command: Command,
    run_as: Option<RunAs>,
    program: &str,
) -> Result<(), EmbeddedError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // initdb refuses to run from a directory its user cannot read (e.g. /root).
    command.current_dir("/");
    let child = spawn_child(&mut command, run_as, false).map_err(|source| EmbeddedError::Io {
        what: format!("running {program}"),
        source,
    })?;
    let output = child
        .wait_with_output()
        .map_err(|source| EmbeddedError::Io {
            what: format!("running {program}"),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    Err(EmbeddedError::CommandFailed {
        program: program.into(),
        status: output.status.to_string(),
        output: text.trim().chars().take(4000).collect(),
    })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
