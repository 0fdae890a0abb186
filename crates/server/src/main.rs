use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::net::TcpListener;

use bg_agent::app::{
    Database, EngineOptions, RunningServer, init_logging, shutdown_signal, start_app,
};
use bg_agent::config::{Config, ConfigError, Settings};
use bg_agent::engine::LoggingHandler;
use bg_agent::github_app;
use bg_agent_github::{GitHubApp, SystemClock};

// Allocation-heavy request handling (JSON, headers) runs measurably faster than on glibc malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// `serve`, `migrate` and `webhook send` also take the settings (`config::Settings`, added
// in `command()`), so their `--help` lists them all.
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
    ///
    /// Every setting below is a flag or an environment variable (the flag wins), or a key
    /// of the BG_AGENT_CONFIG file; docs/configuration.md has the same list.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Developer tools for webhooks.
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
    /// Run one task in the current directory (started by an executor; reads its environment).
    #[command(hide = true)]
    Runner,
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

/// The command line: [`Cli`] with the settings added to the subcommands that read them.
fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("serve", Settings::add_to)
        .mut_subcommand("migrate", Settings::add_to)
        .mut_subcommand("webhook", |webhook| {
            webhook.mut_subcommand("send", Settings::add_to)
        })
}

/// The matches of the subcommand that was run, where its settings are.
fn innermost(matches: &ArgMatches) -> &ArgMatches {
    match matches.subcommand() {
        Some((_, sub)) => innermost(sub),
        None => matches,
    }
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let config = match &cli.command {
        // The runner takes no flags; its log format comes from the environment it is given.
        Commands::Runner => Config::from_env(),
        _ => Config::from_matches(innermost(&matches)),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bg-agent: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log_format, "info");
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
            Commands::Runner => bg_agent_runner::run_from_env().await,
            Commands::Webhook {
                command:
                    WebhookCommand::Send {
                        event,
                        url,
                        delivery,
                        file,
                    },
            } => send_webhook(&config, &event, url, delivery, &file).await,
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

async fn serve(config: Config) -> anyhow::Result<()> {
    // Not dumpable: a process of the same user (a runner with the sandbox off, anything
    // else running as this user) cannot read this one's environment or memory through
    // /proc or attach a debugger to it. Root still can.
    nix::sys::prctl::set_dumpable(false).context("cannot make the server non-dumpable")?;
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
    let server = match github_app::client_config(&config) {
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
            )
            .await?
        }
        Err(missing @ ConfigError::Missing { .. }) => {
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
