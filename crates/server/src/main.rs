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

// mimalloc commits its first arena at once where the system overcommits: about 11 MB
// resident that an idle server never touches (`scripts/bench-api.sh`: idle RSS 36 MB with,
// 25 MB without). Its options must be set before its first allocation, hence a
// constructor, and std's environment functions allocate, hence `getenv`. An operator's own
// `MIMALLOC_ARENA_EAGER_COMMIT` wins.
#[used]
#[unsafe(link_section = ".init_array")]
static MIMALLOC_OPTIONS: extern "C" fn() = mimalloc_options;

/// `mi_option_arena_eager_commit` in mimalloc.h's `mi_option_e` (not named by the bindings).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

extern "C" fn mimalloc_options() {
    // SAFETY: runs before main, with one thread; `getenv` reads a NUL-terminated name and
    // `mi_option_set` only records the option.
    unsafe {
        if nix::libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

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
    /// Model-provider credentials for coding agents, stored encrypted (BG_AGENT_ENCRYPTION_KEY).
    Credentials {
        #[command(subcommand)]
        command: CredentialsCommand,
    },
    /// Per-installation settings.
    Installation {
        #[command(subcommand)]
        command: InstallationCommand,
    },
    /// Run one task in the current directory (started by an executor; reads its environment).
    #[command(hide = true)]
    Runner,
}

/// Whose credential: an installation's, or one of its users'.
#[derive(clap::Args, Clone, Copy)]
struct CredentialScope {
    /// The GitHub App installation id.
    #[arg(long)]
    installation: i64,
    /// A GitHub user id: the credential is this user's (it wins over the installation's).
    #[arg(long)]
    user: Option<i64>,
    /// `anthropic`, `openai` or `gemini` (or an agent using one: `claude_code`, `codex`, ...).
    #[arg(long, value_parser = parse_provider)]
    provider: bg_agent::credentials::Provider,
}

impl CredentialScope {
    fn scope(self) -> bg_agent::credentials::Scope {
        bg_agent::credentials::Scope {
            installation_id: self.installation,
            user_id: self.user,
            provider: self.provider,
        }
    }
}

fn parse_provider(name: &str) -> Result<bg_agent::credentials::Provider, String> {
    bg_agent::credentials::Provider::parse(name).ok_or_else(|| {
        "expected `anthropic`, `openai` or `gemini` (or `claude_code`, `codex`, `aider`, `cline`)"
            .to_owned()
    })
}

fn parse_agent(name: &str) -> Result<bg_agent::credentials::AgentProvider, String> {
    bg_agent::credentials::AgentProvider::parse(name).ok_or_else(|| {
        "expected `command`, `claude_code`, `codex`, `gemini`, `aider` or `cline`".to_owned()
    })
}

#[derive(Subcommand)]
enum CredentialsCommand {
    /// Store a credential, read from stdin (never from the command line); replaces one set before.
    Set {
        #[command(flatten)]
        scope: CredentialScope,
    },
    /// List stored credentials: provider, scope, fingerprint, when made and last used (never values).
    List {
        /// Only this installation's.
        #[arg(long)]
        installation: Option<i64>,
    },
    /// Make one minimal request to the provider's API with the credential (lists models).
    Test {
        #[command(flatten)]
        scope: CredentialScope,
    },
    /// Delete a credential.
    Delete {
        #[command(flatten)]
        scope: CredentialScope,
    },
}

#[derive(Subcommand)]
enum InstallationCommand {
    /// Set the installation's default coding agent (and model).
    SetDefault {
        #[arg(long)]
        installation: i64,
        /// `command`, `claude_code`, `codex`, `gemini`, `aider` or `cline`.
        #[arg(long, value_parser = parse_agent)]
        provider: bg_agent::credentials::AgentProvider,
        /// The model, as the agent names it; unset: the agent's default.
        #[arg(long)]
        model: Option<String>,
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

/// The command line: [`Cli`] with the settings added to the subcommands that read them.
fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("serve", Settings::add_to)
        .mut_subcommand("migrate", Settings::add_to)
        .mut_subcommand("webhook", |webhook| {
            webhook.mut_subcommand("send", Settings::add_to)
        })
        .mut_subcommand("credentials", |credentials| {
            ["set", "list", "test", "delete"]
                .into_iter()
                .fold(credentials, |c, name| {
                    c.mut_subcommand(name, Settings::add_to)
                })
        })
        .mut_subcommand("installation", |installation| {
            installation.mut_subcommand("set-default", Settings::add_to)
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
    match &cli.command {
        // Their output is for people and scripts: logs go to stderr, warnings by default.
        Commands::Credentials { .. } | Commands::Installation { .. } => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .init();
        }
        _ => init_logging(config.log_format, "info"),
    }
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
            Commands::Credentials { command } => credentials(config, command).await,
            Commands::Installation {
                command:
                    InstallationCommand::SetDefault {
                        installation,
                        provider,
                        model,
                    },
            } => set_default_agent(config, installation, provider, model).await,
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

/// `bg-agent credentials ...`: values are read from stdin, sealed before they reach the
/// database, and never printed; only fingerprints are. The work is
/// `credentials::Manager`'s, which the API and the settings page share.
async fn credentials(config: Config, command: CredentialsCommand) -> anyhow::Result<()> {
    use bg_agent::credentials::{ManageError, Manager, TestOutcome};

    // Checked before the database is opened (and possibly started).
    if !matches!(
        command,
        CredentialsCommand::List { .. } | CredentialsCommand::Delete { .. }
    ) && config.run.encryption_keys.is_none()
    {
        return Err(bg_agent::credentials::CredentialError::NoKey.into());
    }
    let database = Database::open(&config).await?;
    let manager = Manager::new(
        database.store.clone(),
        config.run.encryption_keys.clone(),
        config.run.provider_endpoints.clone(),
    );
    let result = async {
        match command {
            CredentialsCommand::Set { scope } => {
                let scope = scope.scope();
                let mut value = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
                    .context("cannot read the credential from stdin")?;
                let stored = manager
                    .set(&scope, &secrecy::SecretString::from(value))
                    .await?;
                println!(
                    "{} the {} credential of {} {} (fingerprint {}, key {})",
                    if stored.replaced {
                        "replaced"
                    } else {
                        "stored"
                    },
                    scope.provider,
                    installation_words(scope.installation_id),
                    user_words(scope.user_id),
                    stored.fingerprint,
                    stored.key_id,
                );
            }
            CredentialsCommand::List { installation } => {
                let listed = manager.list(installation).await?;
                print!("{}", credential_table(&listed));
            }
            CredentialsCommand::Test { scope } => {
                let scope = scope.scope();
                let tested = match manager.test(&scope).await {
                    Ok(tested) => tested,
                    Err(ManageError::Unreachable { base, error }) => {
                        anyhow::bail!("cannot reach {base}: {error}")
                    }
                    Err(e) => return Err(e.into()),
                };
                let what = format!(
                    "the {} credential (fingerprint {}) at {}",
                    scope.provider, tested.fingerprint, tested.base
                );
                match tested.outcome {
                    TestOutcome::Accepted => println!("ok: {what} was accepted"),
                    TestOutcome::Refused(status) => {
                        anyhow::bail!("refused: {what} was refused ({status}); set a valid one")
                    }
                    TestOutcome::Unexpected(status) => {
                        anyhow::bail!("unexpected answer {status} to {what}; try again later")
                    }
                }
            }
            CredentialsCommand::Delete { scope } => {
                let scope = scope.scope();
                manager.delete(&scope).await?;
                println!(
                    "deleted the {} credential of {} {}",
                    scope.provider,
                    installation_words(scope.installation_id),
                    user_words(scope.user_id)
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    database.close().await;
    result
}

fn installation_words(installation: i64) -> String {
    format!("installation {installation}")
}

fn user_words(user: Option<i64>) -> String {
    match user {
        None => "(every user)".to_owned(),
        Some(user) => format!("(user {user})"),
    }
}

/// The listing: one line per credential, never a value.
fn credential_table(listed: &[bg_agent::store::credentials::CredentialInfo]) -> String {
    if listed.is_empty() {
        return "no credentials stored\n".to_owned();
    }
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    let mut rows = vec![[
        "INSTALLATION".to_owned(),
        "USER".to_owned(),
        "PROVIDER".to_owned(),
        "FINGERPRINT".to_owned(),
        "KEY".to_owned(),
        "CREATED".to_owned(),
        "LAST USED".to_owned(),
    ]];
    for c in listed {
        rows.push([
            c.installation_id.to_string(),
            c.user_id
                .map_or_else(|| "(all)".to_owned(), |u| u.to_string()),
            c.provider.clone(),
            c.fingerprint.clone(),
            c.key_id.clone(),
            time(c.created_at),
            c.last_used_at.map_or_else(|| "never".to_owned(), time),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn set_default_agent(
    config: Config,
    installation: i64,
    provider: bg_agent::credentials::AgentProvider,
    model: Option<String>,
) -> anyhow::Result<()> {
    let model = model.filter(|m| !m.trim().is_empty());
    let database = Database::open(&config).await?;
    let result = database
        .store
        .set_default_agent(installation, provider.name(), model.as_deref())
        .await;
    database.close().await;
    result?;
    println!(
        "installation {installation}: default agent {}{}",
        provider.name(),
        model.map(|m| format!(", model {m}")).unwrap_or_default()
    );
    Ok(())
}
