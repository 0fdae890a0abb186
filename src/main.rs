use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use bg_agent::app::{Database, EngineOptions, RunningServer, start_app};
use bg_agent::config::{Config, LogFormat};
use bg_agent::engine::LoggingHandler;
use bg_agent::github::{GitHubApp, SystemClock};

// Allocation-heavy request handling (JSON, headers) runs measurably faster than on glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// bg-agent: a GitHub App that runs background coding tasks and opens validated pull requests.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the server (webhook intake, workers). Without DATABASE_URL it starts its own PostgreSQL.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Try it all on this machine: a fake GitHub with a sample npm repository, a comment
    /// asking for an upgrade, and the task followed to its pull request.
    Demo,
    /// Developer tools for webhooks.
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Run one task in the current directory (started by an executor; reads its environment).
    #[command(hide = true)]
    Runner,
    /// Local development tools.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
}

#[derive(Subcommand)]
enum DevCommand {
    /// Run a local fake GitHub (API, git over HTTP, webhooks) seeded with the test fixtures' world.
    GithubSim {
        /// Where to listen; the API root and git host is http://LISTEN.
        #[arg(long, default_value = "127.0.0.1:8780")]
        listen: std::net::SocketAddr,
        /// Where to send webhooks (e.g. http://127.0.0.1:3000/webhook); none are sent without it.
        #[arg(long)]
        webhook_url: Option<String>,
        /// Secret that signs webhooks; defaults to the server's GITHUB_WEBHOOK_SECRET.
        #[arg(long)]
        webhook_secret: Option<String>,
    },
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Sign a payload with the configured secret and POST it to a running server, as GitHub would.
    Send {
        /// The X-GitHub-Event header, e.g. issue_comment.
        #[arg(long)]
        event: String,
        /// Where to send it; defaults to the server at BG_AGENT_LISTEN.
        #[arg(long)]
        url: Option<String>,
        /// The X-GitHub-Delivery header; a new UUID by default.
        #[arg(long)]
        delivery: Option<String>,
        /// The JSON payload.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bg-agent: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    // The demo speaks for itself; its logs would drown what it prints.
    let default_level = if matches!(cli.command, Commands::Demo) {
        "warn"
    } else {
        "info"
    };
    init_logging(config.log_format, default_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bg-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Serve => serve(config).await,
            Commands::Migrate => migrate(config).await,
            Commands::Demo => {
                bg_agent::demo::run(config, async {
                    shutdown_signal().await;
                })
                .await
            }
            Commands::Runner => bg_agent::runner::run_from_env().await,
            Commands::Webhook {
                command:
                    WebhookCommand::Send {
                        event,
                        url,
                        delivery,
                        file,
                    },
            } => send_webhook(&config, &event, url, delivery, &file).await,
            Commands::Dev {
                command:
                    DevCommand::GithubSim {
                        listen,
                        webhook_url,
                        webhook_secret,
                    },
            } => github_sim(&config, listen, webhook_url, webhook_secret).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bg-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
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

async fn serve(config: Config) -> anyhow::Result<()> {
    if config.webhook_secrets.is_development_default() {
        tracing::warn!(
            "GITHUB_WEBHOOK_SECRET is not set: using the public development secret; \
             anyone can forge deliveries. Set it before exposing this server."
        );
    }
    let database = Database::open(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // Without App credentials the server still takes deliveries (and can be tried with
    // `webhook send`), but cannot act on GitHub.
    let server = match config.github_app() {
        Ok(github) => {
            let github = GitHubApp::new(github, Arc::new(SystemClock))
                .context("configuring the GitHub App client")?;
            let runner = std::env::current_exe().context("cannot find this program")?;
            start_app(
                &config,
                database.store.clone(),
                github,
                listener,
                &EngineOptions::new(runner),
            )?
        }
        Err(missing @ bg_agent::config::ConfigError::Missing { .. }) => {
            tracing::warn!(%missing, "not acting on GitHub: deliveries are stored and decoded only");
            RunningServer::start(
                &config,
                database.store.clone(),
                Arc::new(LoggingHandler),
                listener,
            )?
        }
        // Credentials given but unusable (unreadable key file, ...): refuse to start.
        Err(error) => return Err(error.into()),
    };
    tracing::info!(addr = %server.addr, "bg-agent listening; POST /webhook, GET /healthz, GET /readyz");

    let signal = shutdown_signal().await;
    tracing::info!(signal, "shutting down: finishing in-flight requests");
    let result = server.stop().await;
    database.close().await;
    tracing::info!("stopped");
    result
}

async fn shutdown_signal() -> &'static str {
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

async fn migrate(config: Config) -> anyhow::Result<()> {
    let database = Database::open(&config).await?;
    tracing::info!("migrations applied");
    database.close().await;
    Ok(())
}

async fn send_webhook(
    config: &Config,
    event: &str,
    url: Option<String>,
    delivery: Option<String>,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let body = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    serde_json::from_slice::<serde_json::Value>(&body)
        .with_context(|| format!("{} is not JSON", file.display()))?;
    let url = url.unwrap_or_else(|| format!("http://{}/webhook", config.listen));
    let delivery = delivery.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let signature = bg_agent::webhook::sign(config.webhook_secrets.signing_secret(), &body);
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/bg-agent-dev")
        .header("x-github-event", event)
        .header("x-github-delivery", &delivery)
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{status} {text}");
    println!("delivery {delivery}");
    anyhow::ensure!(status.is_success(), "the server answered {status}");
    Ok(())
}

async fn github_sim(
    config: &Config,
    listen: std::net::SocketAddr,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
) -> anyhow::Result<()> {
    use bg_agent::github_sim::{GitHubSim, SimConfig, world};
    let webhook_secret = match webhook_secret {
        Some(secret) => secret,
        None => String::from_utf8_lossy(config.webhook_secrets.signing_secret()).into_owned(),
    };
    let sim = GitHubSim::start(SimConfig {
        listen,
        webhook_url: webhook_url.clone(),
        webhook_secret,
        // A person is driving: log schema violations instead of panicking.
        panic_on_violations: false,
        ..SimConfig::default()
    })
    .await?;
    let seeded = sim.seed_world().await?;
    let base = sim.base_url();
    println!("github-sim: fake GitHub at {base} (GITHUB_API_URL={base})");
    println!(
        "  App {} ({}), private key: src/github_sim/dev-app-private-key.pem (also GET {base}/_sim/app)",
        sim.app_id(),
        sim.app_slug()
    );
    println!(
        "  installation {} on {}: {} and {}",
        seeded.installation_id,
        world::ORG,
        seeded.widgets.clone_url,
        seeded.gadgets.clone_url
    );
    println!(
        "  users {} (admin), {} (read); open issue {}#{}",
        world::LEAD,
        world::DRIVE_BY,
        world::WIDGETS,
        seeded.issue_number
    );
    match &webhook_url {
        Some(url) => println!("  webhooks go to {url}"),
        None => println!("  no --webhook-url: webhooks are recorded, not sent"),
    }
    println!(
        "  act as a user: curl -X POST {base}/_sim/repos/acme/widgets/issues/17/comments \\\n      -H 'content-type: application/json' -d '{{\"user\": \"octo-lead\", \"body\": \"/bg-agent upgrade lodash 4.17.21\"}}'"
    );
    println!("  state: curl {base}/_sim/state");
    let signal = shutdown_signal().await;
    tracing::info!(signal, "github-sim stopping");
    let violations = sim.take_violations();
    if !violations.is_empty() {
        tracing::warn!(
            count = violations.len(),
            "github-sim recorded schema violations"
        );
    }
    sim.stop().await;
    Ok(())
}
