//! Wiring: the database (external or embedded), the HTTP server, the intake writers, the
//! delivery workers and the task engine, started together and stopped in order (see
//! [`RunningServer::start_with`]), all background work tracked by [`Background`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::PgConnectOptions;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::background::Background;

use crate::config::{Config, ExecutorKind, KubernetesSettings, LogFormat, PrivateKeySource};
use crate::engine::redelivery::{Redelivery, RedeliverySettings};
use crate::engine::reporter::{Reporter, ReporterSettings};
use crate::engine::retention::Retention;
use crate::engine::supervise::{Supervisor, SupervisorSettings};
use crate::engine::tasks::TaskIntake;
use crate::engine::{DeliveryWorker, Signal, TriggerHandler};
use crate::executor::kubernetes::JobSettings;
use crate::executor::sandbox::{Protected, SandboxError};
use crate::executor::{
    Configured, Executor, KubernetesExecutor, LocalExecutor, Sandbox, SandboxMode,
};
use crate::store::Store;
use crate::store::embedded::{Durability, EmbeddedPostgres};
use crate::store::tasks::Caps;
use crate::webhook::DecodeContext;
use crate::webhook::inbox::IntakeWriter;
use bg_agent_github::GitHubApp;

/// Database of the embedded cluster.
const EMBEDDED_DATABASE: &str = "bg_agent";

/// The app's database, and the private cluster serving it when `DATABASE_URL` is unset.
pub struct Database {
    pub store: Store,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects (starting the embedded cluster if needed) and applies migrations.
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        let (options, embedded) = match &config.database_url {
            Some(url) => {
                let options: PgConnectOptions = url
                    .expose_secret()
                    .parse()
                    .context("DATABASE_URL is not a valid PostgreSQL URL")?;
                (options, None)
            }
            None => {
                let dir = config.data_dir.join("postgres");
                tracing::info!(dir = %dir.display(), "DATABASE_URL is unset: starting the embedded PostgreSQL");
                let embedded = EmbeddedPostgres::start(&dir, Durability::Durable).await?;
                embedded
                    .ensure_database(EMBEDDED_DATABASE)
                    .await
                    .context("creating the embedded database")?;
                (embedded.connect_options(EMBEDDED_DATABASE), Some(embedded))
            }
        };
        let store = Store::connect(options, config.db_max_connections)
            .await
            .context("connecting to PostgreSQL")?;
        store.migrate().await.context("applying migrations")?;
        Ok(Self { store, embedded })
    }

    pub async fn close(self) {
        self.store.close().await;
        if let Some(embedded) = self.embedded {
            embedded.stop().await;
        }
    }
}

/// How long shutdown waits for each kind of background work (intake writers, delivery
/// workers, the engine's loops) before leaving it to end with the process.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A running server; [`RunningServer::stop`] shuts it down gracefully.
pub struct RunningServer {
    pub addr: SocketAddr,
    background: Background,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Serves on `listener` until stopped: webhook intake and its workers, with no task
    /// engine behind them.
    pub fn start<H: TriggerHandler>(
        config: &Config,
        store: Store,
        handler: Arc<H>,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        Self::start_with(
            config,
            store,
            handler,
            listener,
            Signal::new(),
            Vec::new(),
            None,
        )
    }

    /// As [`Self::start`], with background loops (the task engine's) that run until the
    /// same shutdown, and the signal runner reports wake them with.
    pub fn start_with<H: TriggerHandler>(
        config: &Config,
        store: Store,
        handler: Arc<H>,
        listener: TcpListener,
        signal: Signal,
        loops: Vec<BackgroundLoop>,
        api: Option<Arc<TaskIntake>>,
    ) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        // One stop request for everything; a group per kind of work, so shutdown can
        // wait for each in turn.
        let background = Background::new();
        let (writers, workers, engine) =
            (background.group(), background.group(), background.group());
        let (writer, fresh) = IntakeWriter::spawn(store.clone(), &config.intake, &writers);
        let context = DecodeContext {
            app_id: config.app_id.and_then(|id| i64::try_from(id).ok()),
            app_slug: config.app_slug.clone(),
        };
        let worker = DeliveryWorker::new(store.clone(), handler, context, config.worker.clone());
        for _ in 0..config.worker.workers {
            let run = worker.clone().run(fresh.clone(), workers.token().clone());
            workers.spawn("delivery worker", run);
        }
        for start in loops {
            start(&engine);
        }
        let auth = crate::web::auth::AuthState::new(
            &config.auth,
            &config.github.api_url,
            &config.run.public_url,
            &config.data_dir,
            config.tasks.required_permission,
            store.clone(),
            config.run.encryption_keys.clone(),
        )?;
        let credentials = crate::credentials::Manager::new(
            store.clone(),
            config.run.encryption_keys.clone(),
            config.run.provider_endpoints.clone(),
        );
        // The JSON API and MCP where tasks can be made (the intake is there), metrics and
        // the settings page.
        let mut extra = axum::Router::new()
            .route("/metrics", axum::routing::get(crate::metrics::serve))
            .with_state(crate::metrics::MetricsState {
                store: store.clone(),
                token: config.metrics_token.clone(),
            })
            .merge(crate::web::settings::routes(
                crate::web::settings::SettingsState {
                    auth: auth.clone(),
                    credentials: credentials.clone(),
                },
            ));
        if let Some(intake) = api {
            let state = crate::web::api::ApiState {
                store: store.clone(),
                intake,
                auth: auth.clone(),
                signal: signal.clone(),
                public_url: config.run.public_url.clone(),
                agent_available: config.run.agent_command.is_some(),
                shutdown: background.token().clone(),
                credentials: credentials.clone(),
            };
            extra = extra
                .merge(crate::web::api::router(state.clone()))
                .merge(crate::web::mcp::router(state));
        }
        let router = crate::web::router(
            store,
            Arc::new(config.webhook_secrets.clone()),
            writer,
            crate::webhook::unverified::UnverifiedBodies::new(&config.intake),
            signal,
            config.run.public_url.clone(),
            config.run.encryption_keys.clone(),
            auth,
            background.token().clone(),
        );
        let router = crate::web::observed(router.merge(extra));
        let stopping = background.clone();
        let task = tokio::spawn(async move {
            let stop_serving = stopping.token().clone().cancelled_owned();
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop_serving)
                .await;
            // Also when serving failed: the rest must not run on without intake.
            stopping.stop();
            // In-flight requests are answered; the router's writer handles are gone, so
            // the writers store what they hold and stop. The workers and the engine were
            // asked to stop with the server; the supervisor ends the local runners last.
            writers.finish("intake writers", SHUTDOWN_GRACE).await;
            workers.finish("delivery workers", SHUTDOWN_GRACE).await;
            engine.finish("the task engine", SHUTDOWN_GRACE).await;
            served.context("HTTP server failed")?;
            match stopping.panics() {
                0 => Ok(()),
                n => Err(anyhow::anyhow!(
                    "{n} piece(s) of background work panicked; see the log"
                )),
            }
        });
        Ok(Self {
            addr,
            background,
            task,
        })
    }

    /// Graceful stop: finish in-flight requests, store what was accepted, stop workers.
    /// Fails if the server failed or any of its background work panicked.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.background.stop();
        self.wait().await
    }

    /// Waits for the server to end (after a stop requested elsewhere).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task panicked")?
    }

    /// Cancelling this token stops the server as [`RunningServer::stop`] does.
    pub fn stop_token(&self) -> CancellationToken {
        self.background.token().clone()
    }
}

/// Starts a loop in the given group, with the server; the loop must end once the
/// group's token is cancelled.
pub type BackgroundLoop = Box<dyn FnOnce(&Background) + Send>;

/// How the task engine runs, beyond the configuration.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The program whose `runner` subcommand runs tasks (normally this binary).
    pub runner_program: std::path::PathBuf,
    /// How often the engine looks again without a wake-up.
    pub poll: std::time::Duration,
    /// Progress-only check-run updates go out at most this often per task.
    pub report_throttle: std::time::Duration,
    /// How missed deliveries are found and asked for again.
    pub redelivery: RedeliverySettings,
    /// The provider credential handed to agent tasks (until credentials are stored per
    /// installation).
    pub agent_credential: Option<secrecy::SecretString>,
}

impl EngineOptions {
    pub fn new(runner_program: std::path::PathBuf) -> Self {
        Self {
            runner_program,
            poll: std::time::Duration::from_secs(2),
            report_throttle: std::time::Duration::from_secs(3),
            redelivery: RedeliverySettings::default(),
            agent_credential: None,
        }
    }
}

/// The whole app with a GitHub App behind it: intake turns triggers into tasks, the
/// supervisor runs them on the configured executor, the reporter shows them on GitHub.
pub async fn start_app(
    config: &Config,
    store: Store,
    github: GitHubApp,
    listener: TcpListener,
    options: &EngineOptions,
) -> anyhow::Result<RunningServer> {
    let executor = Arc::new(executor(config, &options.runner_program).await?);
    if matches!(config.executor, ExecutorKind::Local) {
        log_agent_clis(&config.run.agent);
    }
    start_app_on(config, store, github, listener, options, executor)
}

/// The executor `BG_AGENT_EXECUTOR` chose, as configured.
pub async fn executor(
    config: &Config,
    runner_program: &std::path::Path,
) -> anyhow::Result<Configured> {
    match config.executor {
        ExecutorKind::Local => Ok(Configured::Local(local_executor(config, runner_program)?)),
        ExecutorKind::Kubernetes => Ok(Configured::Kubernetes(
            kubernetes_executor(&config.kubernetes).await?,
        )),
    }
}

/// The Kubernetes executor as configured; it watches its namespace's Jobs from now on.
pub async fn kubernetes_executor(
    settings: &KubernetesSettings,
) -> anyhow::Result<KubernetesExecutor> {
    let image = settings.runner_image.clone().context(
        "BG_AGENT_RUNNER_IMAGE is not set; the kubernetes executor needs the runner image",
    )?;
    let (client, default_namespace) =
        crate::executor::kubernetes::client(settings.kubeconfig.as_deref()).await?;
    let namespace = settings.namespace.clone().unwrap_or(default_namespace);
    tracing::info!(%namespace, %image, "tasks run as Kubernetes Jobs");
    Ok(KubernetesExecutor::new(
        client,
        JobSettings {
            namespace,
            image,
            cpu: settings.runner_cpu.clone(),
            memory: settings.runner_memory.clone(),
            ttl_secs: settings.job_ttl_secs,
        },
    ))
}

/// Says which coding-agent CLIs the local executor's runners find on `PATH` (they
/// inherit the server's), and warns when the configured default is not among them.
fn log_agent_clis(default: &bg_agent_core::protocol::AgentSpec) {
    use bg_agent_core::protocol::AgentProvider;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found: Vec<&str> = AgentProvider::ALL
        .into_iter()
        .filter_map(AgentProvider::program)
        .filter(|program| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .collect();
    tracing::info!(found = ?found, default = default.provider.name(), "coding-agent CLIs on PATH");
    if let Some(program) = default.provider.program()
        && !found.contains(&program)
    {
        tracing::warn!(
            provider = default.provider.name(),
            program,
            "the default coding agent's CLI is not on PATH: agent tasks will fail"
        );
    }
}

/// The local executor as configured: runners in a bubblewrap sandbox (the server refuses
/// to start when it cannot make one), or with `BG_AGENT_SANDBOX=off` unsandboxed, loudly.
pub fn local_executor(
    config: &Config,
    runner_program: &std::path::Path,
) -> anyhow::Result<LocalExecutor> {
    let program = runner_program.to_owned();
    let args = vec!["runner".to_owned()];
    let workspaces = config.data_dir.join("workspaces");
    match config.sandbox.mode {
        SandboxMode::Off => {
            tracing::warn!(
                "BG_AGENT_SANDBOX=off: runners and the repository code they run are NOT \
                 sandboxed; they run as this server's user and can read its key, its \
                 environment, its database socket and every workspace. Development only."
            );
            Ok(LocalExecutor::unsandboxed(program, args, workspaces))
        }
        SandboxMode::Bubblewrap => {
            let sandbox = Sandbox::prepare(&config.sandbox, &protected_paths(config))
                .context("the local executor cannot sandbox runners")?;
            tracing::info!(
                host_uid = sandbox.host_uid(),
                "runners run in a bubblewrap sandbox"
            );
            match LocalExecutor::sandboxed(
                program.clone(),
                args.clone(),
                workspaces.clone(),
                sandbox.clone(),
            ) {
                Err(SandboxError::Unreachable { uid, path, reason }) => {
                    // A data directory under a private home (a checkout in /root, say):
                    // workspaces are throwaway, so they go where the sandbox user can reach.
                    let fallback = tempfile::Builder::new()
                        .prefix("bg-agent-workspaces-")
                        .tempdir()
                        .context("creating a workspaces directory the sandbox can reach")?
                        .keep();
                    tracing::warn!(
                        uid,
                        unreachable = %path.display(),
                        %reason,
                        workspaces = %fallback.display(),
                        "the sandbox user cannot reach the data directory; task workspaces go to a \
                         private temporary directory instead (set BG_AGENT_DATA_DIR under \
                         directories others may search, e.g. /var/lib/bg-agent, to choose)"
                    );
                    LocalExecutor::sandboxed(program, args, fallback, sandbox)
                        .context("the local executor cannot sandbox runners")
                }
                result => result.context("the local executor cannot sandbox runners"),
            }
        }
    }
}

/// What a sandbox must never see even when it lies under a system directory it mounts:
/// the data directory (database, workspaces), the key file, the configuration file.
fn protected_paths(config: &Config) -> Protected {
    let mut paths = vec![config.data_dir.clone()];
    if let Some(PrivateKeySource::Path(key)) = &config.github.private_key {
        paths.push(key.clone());
    }
    paths.extend(config.config_file.clone());
    Protected { paths }
}

/// [`start_app`] on any executor.
pub fn start_app_on<E: Executor>(
    config: &Config,
    store: Store,
    github: GitHubApp,
    listener: TcpListener,
    options: &EngineOptions,
    executor: Arc<E>,
) -> anyhow::Result<RunningServer> {
    let signal = Signal::new();
    let intake = TaskIntake::new(store.clone(), github.clone(), config.tasks.into())
        .with_signal(signal.clone())
        .with_public_url(&config.run.public_url);
    let supervisor = Supervisor::new(
        store.clone(),
        github.clone(),
        executor,
        SupervisorSettings {
            caps: Caps {
                per_installation: config.tasks.max_per_installation,
                global: config.tasks.max_global,
                check_run_wait: std::time::Duration::from_secs(30),
            },
            public_url: config.run.public_url.clone(),
            callback_url: config
                .run
                .callback_url
                .clone()
                .unwrap_or_else(|| config.run.public_url.clone()),
            agent_command: config.run.agent_command.clone(),
            agent: config.run.agent.clone(),
            agent_credential: options.agent_credential.clone(),
            npm_registry: config.run.npm_registry.clone(),
            callback_ca: config.run.callback_ca.clone(),
            app_slug: config.app_slug.clone(),
            poll: options.poll,
            unvalidated: config.run.unvalidated,
            encryption_keys: config.run.encryption_keys.clone(),
            scope: config.run.scope,
        },
        signal.clone(),
    );
    let redelivery = Redelivery::new(store.clone(), github.clone(), options.redelivery.clone());
    let reporter = Reporter::new(
        store.clone(),
        github,
        ReporterSettings {
            public_url: config.run.public_url.clone(),
            throttle: options.report_throttle,
            poll: options.poll,
        },
        signal.clone(),
    );
    let mut background: Vec<BackgroundLoop> = vec![
        Box::new(move |engine: &Background| {
            engine.spawn("supervisor", supervisor.run(engine.clone()));
        }),
        Box::new(move |engine: &Background| {
            engine.spawn("reporter", reporter.run(engine.clone()));
        }),
        Box::new(move |engine: &Background| {
            engine.spawn("redelivery", redelivery.run(engine.clone()));
        }),
    ];
    if let Some(age) = config.run.retention {
        let retention = Retention::new(store.clone(), age);
        background.push(Box::new(move |engine: &Background| {
            engine.spawn("retention", retention.run(engine.clone()));
        }));
    }
    let intake = Arc::new(intake);
    RunningServer::start_with(
        config,
        store,
        intake.clone(),
        listener,
        signal,
        background,
        Some(intake),
    )
}

/// Logs to stdout as `format` says; `RUST_LOG` overrides `default_level`.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only for a person at a terminal: escape codes would garble log files.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Waits for SIGTERM or SIGINT and names the one that came.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers only Ctrl-C through tokio's fallback remains.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
