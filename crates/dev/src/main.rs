//! `bg-agent-dev`: bg-agent on a developer's machine, never shipped. `demo` shows the
//! whole product on embedded defaults (a private PostgreSQL, the fake GitHub with a sample
//! npm repository, the local executor); `github-fake` serves the fake GitHub alone.

mod demo;

use std::process::ExitCode;

use bg_agent::app::{init_logging, shutdown_signal};
use bg_agent::config::{Config, Settings};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "bg-agent on a developer's machine: the demo and a fake GitHub"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Try it all on this machine: a fake GitHub with a sample npm repository, a comment
    /// asking for an upgrade, and the task followed to its pull request.
    ///
    /// Takes bg-agent's settings (below); the GitHub App and the npm registry are the fake's.
    Demo,
    /// Run a local fake GitHub (API, git over HTTP, webhooks) seeded with the test fixtures' world.
    GithubFake {
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
    /// Run one task in the current directory (the demo's local executor starts this).
    #[command(hide = true)]
    Runner,
}

fn main() -> ExitCode {
    let matches = Cli::command()
        .mut_subcommand("demo", Settings::add_to)
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let config = match matches.subcommand() {
        Some(("demo", demo)) => Config::from_matches(demo),
        // The others only want the webhook secret and the log format, from the environment.
        _ => Config::from_env(),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bg-agent-dev: configuration error: {e}");
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
            eprintln!("bg-agent-dev: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Demo => {
                demo::run(config, async {
                    shutdown_signal().await;
                })
                .await
            }
            Commands::GithubFake {
                listen,
                webhook_url,
                webhook_secret,
            } => github_fake(&config, listen, webhook_url, webhook_secret).await,
            Commands::Runner => bg_agent_runner::run_from_env().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bg-agent-dev: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn github_fake(
    config: &Config,
    listen: std::net::SocketAddr,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
) -> anyhow::Result<()> {
    use github_fake::{GitHubSim, SimConfig, world};
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
        "  App {} ({}), private key: crates/github-fake/dev-app-private-key.pem (also GET {base}/_sim/app)",
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
