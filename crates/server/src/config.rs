//! Typed configuration from flags, environment variables and an optional TOML file.
//!
//! Every setting is declared once, with clap, in [`Settings`]: `bg-agent serve --help`
//! prints them all and `docs/configuration.md` mirrors them (a test compares the two).
//! Precedence: flag > environment variable > file (`BG_AGENT_CONFIG`) > default.
//! Secrets are held in `secrecy` types: their `Debug` prints `[REDACTED]`, and `--help`
//! never shows their values.

mod settings;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::FromArgMatches;
use clap::parser::ValueSource;
use secrecy::{ExposeSecret, SecretString};

pub use settings::{Declaration, Settings};

use crate::executor::sandbox::{Limits, SandboxMode, SandboxSettings};

/// The secret used when none is configured, so `serve` and `webhook send` work together
/// out of the box on a developer machine. It is public knowledge: `serve` warns loudly.
pub const DEVELOPMENT_WEBHOOK_SECRET: &str = "bg-agent-development-secret";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("config file {path} has an unknown key `{key}` (docs/configuration.md lists them)")]
    UnknownKey { path: PathBuf, key: String },
    #[error("{name} = {value:?} is invalid: {reason}")]
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
    #[error("{name} is not set; it is needed {needed_for}")]
    Missing {
        name: String,
        needed_for: &'static str,
    },
    #[error(
        "{name} is not set, but GitHub App credentials are ({credentials}): the development \
         webhook secret is public, so anyone could forge deliveries and start tasks; set \
         {name} to the App's webhook secret"
    )]
    WebhookSecretMissing { name: String, credentials: String },
    #[error("cannot read the settings: {0}")]
    Arguments(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One or more webhook secrets; several during a rotation.
#[derive(Clone)]
pub struct WebhookSecrets {
    secrets: Vec<SecretString>,
    is_development_default: bool,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecrets({} redacted)", self.secrets.len())
    }
}

impl WebhookSecrets {
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            secrets: secrets
                .into_iter()
                .map(|s| SecretString::from(s.into()))
                .collect(),
            is_development_default: false,
        }
    }

    pub fn development() -> Self {
        Self {
            is_development_default: true,
            ..Self::new([DEVELOPMENT_WEBHOOK_SECRET])
        }
    }

    /// Parses `a,b,c`; blank entries are dropped, surrounding spaces trimmed.
    fn parse(raw: &str) -> Option<Self> {
        let secrets: Vec<&str> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        (!secrets.is_empty()).then(|| Self::new(secrets))
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.secrets.iter().map(|s| s.expose_secret().as_bytes())
    }

    /// The secret used to sign outgoing test deliveries: the first (newest) one.
    pub fn signing_secret(&self) -> &[u8] {
        self.iter()
            .next()
            .unwrap_or(DEVELOPMENT_WEBHOOK_SECRET.as_bytes())
    }

    pub fn is_development_default(&self) -> bool {
        self.is_development_default
    }
}

#[derive(Debug, Clone)]
pub struct IntakeConfig {
    pub batch_max: usize,
    pub writers: usize,
    /// Webhook bodies received at once before their signature is checked.
    pub unverified_concurrency: usize,
    /// How long a request waits for its turn to be received before a 503.
    pub unverified_wait: Duration,
    /// Time a body has, from its turn, to arrive in full before a 408.
    pub read_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub workers: usize,
    pub poll_interval: Duration,
    /// Deliveries claimed per transaction.
    pub claim_batch: i64,
}

/// Where the App's private key comes from.
#[derive(Debug, Clone)]
pub enum PrivateKeySource {
    /// PEM text (`GITHUB_PRIVATE_KEY`).
    Pem(SecretString),
    /// A file holding PEM text (`GITHUB_PRIVATE_KEY_PATH`), read when the client is built.
    Path(PathBuf),
}

/// GitHub settings as configured; all optional so the server starts without any of them.
/// `crate::github_app::client_config` turns them into what the client needs.
#[derive(Debug, Clone)]
pub struct GitHubSettings {
    pub api_url: String,
    pub private_key: Option<PrivateKeySource>,
    pub concurrency_per_installation: usize,
    pub request_timeout: Duration,
    pub max_retry_wait: Duration,
}

pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database_url: Option<SecretString>,
    pub data_dir: PathBuf,
    pub webhook_secrets: WebhookSecrets,
    pub app_id: Option<u64>,
    pub app_slug: String,
    pub github: GitHubSettings,
    pub db_max_connections: u32,
    pub intake: IntakeConfig,
    pub worker: WorkerConfig,
    pub tasks: TaskSettings,
    pub run: RunSettings,
    pub sandbox: SandboxSettings,
    /// Sign-in for the status pages and the API.
    pub auth: AuthSettings,
    /// Where tasks run (`BG_AGENT_EXECUTOR`).
    pub executor: ExecutorKind,
    pub kubernetes: KubernetesSettings,
    /// The configuration file (`BG_AGENT_CONFIG`), which may hold secrets: never shown
    /// to a sandbox.
    pub config_file: Option<PathBuf>,
    pub log_format: LogFormat,
    /// What `GET /metrics` requires as a bearer token; `None`: `/metrics` is off.
    pub metrics_token: Option<SecretString>,
}

#[derive(Debug, Clone, Copy)]
pub struct TaskSettings {
    pub required_permission: bg_agent_core::task::Permission,
    pub label_trust: bg_agent_core::task::LabelTrust,
    pub default_timeout_secs: u32,
    pub max_per_installation: u32,
    pub max_global: u32,
}

/// Where tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorKind {
    Local,
    Kubernetes,
}

/// Where a Pod finds its service account token: its presence means "in a cluster".
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The Kubernetes executor's settings, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// `None`: the kubeconfig's (or the Pod's) namespace.
    pub namespace: Option<String>,
    /// `None`: in-cluster, `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Needed to run Jobs; checked when the executor is made.
    pub runner_image: Option<String>,
    pub runner_cpu: String,
    pub runner_memory: String,
    pub job_ttl_secs: i32,
}

/// How tasks are run, beyond the limits.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Base URL of this server for runners and links, without a trailing slash.
    pub public_url: String,
    /// Where runners report, without a trailing slash (`BG_AGENT_CALLBACK_URL`); `None`:
    /// the public URL.
    pub callback_url: Option<String>,
    pub agent_command: Option<Vec<String>>,
    /// The installation's default coding agent and its limits.
    pub agent: bg_agent_core::protocol::AgentSpec,
    pub npm_registry: Option<String>,
    /// CA certificates (PEM) runners trust for the callback, from BG_AGENT_CALLBACK_CA_FILE.
    pub callback_ca: Option<String>,
    pub unvalidated: Unvalidated,
    /// Delivery bodies and finished tasks' logs are purged after this long; `None`: never.
    pub retention: Option<Duration>,
    /// Encrypts and decrypts stored agent credentials; `None`: none can be used.
    pub encryption_keys: Option<crate::credentials::Keyring>,
    /// Model providers' API base URLs (`credentials test`).
    pub provider_endpoints: crate::credentials::ProviderEndpoints,
    /// The scope guard's policy for agent tasks.
    pub scope: bg_agent_core::protocol::ScopePolicy,
}

impl RunSettings {
    /// The coding agent of agent tasks (`BG_AGENT_AGENT_PROVIDER`; a repository may choose
    /// another).
    pub fn agent_provider(&self) -> bg_agent_core::protocol::AgentProvider {
        self.agent.provider
    }
}

/// The PEM text of BG_AGENT_CALLBACK_CA_FILE; it must hold a certificate.
fn read_callback_ca(path: &str) -> Result<String, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "BG_AGENT_CALLBACK_CA_FILE".into(),
        value: path.to_owned(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(invalid("it holds no PEM certificate".into()));
    }
    Ok(pem)
}

/// Sign-in: the mode, the App's OAuth client, where GitHub's web pages are, the cookie key.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: crate::web::auth::AuthMode,
    /// The App's OAuth client; always set in `github` mode.
    pub oauth: Option<OAuthClient>,
    /// GitHub's web base URL, without a trailing slash.
    pub github_web_url: String,
    /// `None`: generated and kept in the data directory.
    pub session_key: Option<SecretString>,
}

#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// Least length of BG_AGENT_SESSION_KEY.
const MIN_SESSION_KEY_CHARS: usize = 32;

fn auth_settings(s: &Settings, listen: SocketAddr) -> Result<AuthSettings, ConfigError> {
    use crate::web::auth::AuthMode;
    let mode = match s.auth.as_deref() {
        None if listen.ip().is_loopback() => AuthMode::None,
        None | Some("github") => AuthMode::GitHub,
        Some("none") if listen.ip().is_loopback() => AuthMode::None,
        Some("none") => {
            return Err(invalid(
                "auth",
                "none",
                format!(
                    "refused: the server listens on {listen}, beyond this machine; without \
                     sign-in anyone who reaches it reads every task and cancels them, so \
                     `none` is for local use on a loopback address only"
                ),
            ));
        }
        Some(other) => return Err(invalid("auth", other, "expected `github` or `none`")),
    };
    let oauth = match (&s.oauth_client_id, &s.oauth_client_secret) {
        (Some(client_id), Some(client_secret)) => Some(OAuthClient {
            client_id: client_id.clone(),
            client_secret: client_secret.clone(),
        }),
        _ => None,
    };
    if mode == AuthMode::GitHub && oauth.is_none() {
        let missing = if s.oauth_client_id.is_none() {
            "oauth_client_id"
        } else {
            "oauth_client_secret"
        };
        return Err(ConfigError::Missing {
            name: env_name(missing),
            needed_for: "to sign people in with GitHub (BG_AGENT_AUTH=github, the default \
                         beyond loopback)",
        });
    }
    let github_web_url = s.github_web_url.trim().trim_end_matches('/').to_owned();
    if !(github_web_url.starts_with("https://") || github_web_url.starts_with("http://")) {
        return Err(invalid(
            "github_web_url",
            &s.github_web_url,
            "must start with http:// or https://",
        ));
    }
    if let Some(key) = &s.session_key
        && key.expose_secret().chars().count() < MIN_SESSION_KEY_CHARS
    {
        return Err(invalid(
            "session_key",
            "[REDACTED]",
            format!("is shorter than {MIN_SESSION_KEY_CHARS} characters"),
        ));
    }
    Ok(AuthSettings {
        mode,
        oauth,
        github_web_url,
        session_key: s.session_key.clone(),
    })
}

/// What becomes of a change in a repository with no validation commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unvalidated {
    /// A draft pull request labelled `bg-agent:unvalidated`, with a note.
    Draft,
    /// The task fails; no pull request.
    Refuse,
}

impl Config {
    /// Reads the process environment (and the file it names); flags are not looked at.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars = std::env::vars_os()
            .map(|(name, value)| {
                (
                    name.to_string_lossy().into_owned(),
                    value.to_string_lossy().into_owned(),
                )
            })
            .collect();
        Self::from_vars(&vars)
    }

    /// Builds a config from what clap matched for a command extended by
    /// [`Settings::add_to`]: the flags and variables given (a flag wins over its variable)
    /// go through [`Config::from_vars`], so the file and the defaults apply to the rest.
    pub fn from_matches(matches: &clap::ArgMatches) -> Result<Self, ConfigError> {
        let mut vars = HashMap::new();
        for declaration in Settings::declarations() {
            // Asked first: it answers "absent" for a command without the settings, where
            // `value_source` would panic.
            let Ok(Some(mut raw)) = matches.try_get_raw(&declaration.id) else {
                continue;
            };
            let given = matches!(
                matches.value_source(&declaration.id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if let (true, Some(value)) = (given, raw.next()) {
                vars.insert(declaration.env, value.to_string_lossy().into_owned());
            }
        }
        Self::from_vars(&vars)
    }

    /// Builds a config from a variable map (the environment, or a literal in tests) through
    /// the same declarations as the command line; the process environment is not read.
    /// Precedence: variable > file (`BG_AGENT_CONFIG`) > default; an empty value is unset.
    pub fn from_vars(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let declarations = Settings::declarations();
        let given = |d: &Declaration| env.get(&d.env).filter(|v| !v.is_empty());
        // Each layer is a run of `--flag=value`; a later value of a flag replaces an earlier one.
        let mut args = Vec::new();
        if let Some(path) = declarations
            .iter()
            .find(|d| d.id == "config")
            .and_then(given)
        {
            let path = PathBuf::from(path);
            for (key, value) in load_file(&path)? {
                let Some(declaration) = declarations.iter().find(|d| d.file_key() == key) else {
                    return Err(ConfigError::UnknownKey { path, key });
                };
                if !value.is_empty() {
                    args.push(format!("--{}={value}", declaration.flag));
                }
            }
        }
        for declaration in &declarations {
            if let Some(value) = given(declaration) {
                args.push(format!("--{}={value}", declaration.flag));
            }
        }
        // Every value is text and every flag is declared, so clap has nothing to refuse;
        // its message could quote a secret, hence only the kind.
        let settings = Settings::parser()
            .try_get_matches_from(args)
            .and_then(|matches| Settings::from_arg_matches(&matches))
            .map_err(|e| ConfigError::Arguments(e.kind().to_string()))?;
        Self::from_settings(settings)
    }

    /// Checks and converts the declared settings' text.
    fn from_settings(s: Settings) -> Result<Self, ConfigError> {
        let listen: SocketAddr = parse("listen", &s.listen)?;
        let webhook_secrets = match &s.github_webhook_secret {
            Some(raw) => WebhookSecrets::parse(raw.expose_secret()).ok_or_else(|| {
                invalid(
                    "github_webhook_secret",
                    "[REDACTED]",
                    "holds no secret (only commas or spaces)",
                )
            })?,
            None => WebhookSecrets::development(),
        };
        let app_id = s
            .github_app_id
            .as_deref()
            .map(|raw| parse::<u64>("github_app_id", raw))
            .transpose()?;
        let github = github_settings(&s)?;
        // The development secret is public: a server acting as a real App with it would run
        // tasks for anyone who can reach `/webhook`. (The demo sets its App up after
        // reading the settings, so it keeps the development secret.)
        if webhook_secrets.is_development_default() {
            let credentials: Vec<String> = [
                ("github_app_id", app_id.is_some()),
                ("github_private_key", s.github_private_key.is_some()),
                (
                    "github_private_key_path",
                    s.github_private_key_path.is_some(),
                ),
            ]
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(id, _)| env_name(id))
            .collect();
            if !credentials.is_empty() {
                return Err(ConfigError::WebhookSecretMissing {
                    name: env_name("github_webhook_secret"),
                    credentials: credentials.join(", "),
                });
            }
        }
        let worker = WorkerConfig {
            workers: parse("workers", &s.workers)?,
            poll_interval: Duration::from_millis(positive("worker_poll_ms", &s.worker_poll_ms)?),
            claim_batch: 128,
        };
        let required_permission = match s.required_permission.as_str() {
            "read" => bg_agent_core::task::Permission::Read,
            "write" => bg_agent_core::task::Permission::Write,
            "admin" => bg_agent_core::task::Permission::Admin,
            other => {
                return Err(invalid(
                    "required_permission",
                    other,
                    "expected `read`, `write` or `admin`",
                ));
            }
        };
        let label_trust = s
            .label_trust
            .parse()
            .map_err(|expected: String| invalid("label_trust", &s.label_trust, &expected))?;
        let tasks = TaskSettings {
            required_permission,
            label_trust,
            default_timeout_secs: positive::<u32>("task_timeout_secs", &s.task_timeout_secs)?
                .min(bg_agent_core::task::MAX_TIMEOUT_SECS),
            max_per_installation: positive(
                "max_tasks_per_installation",
                &s.max_tasks_per_installation,
            )?,
            max_global: positive("max_tasks", &s.max_tasks)?,
        };
        let sandbox = sandbox_settings(&s, listen)?;
        let auth = auth_settings(&s, listen)?;
        let agent_command = match &s.agent_command {
            None => None,
            Some(line) => match bg_agent_core::task::repo_config::split_words(line) {
                Some(argv) if !argv.is_empty() => Some(argv),
                _ => {
                    return Err(invalid(
                        "agent_command",
                        line,
                        "expected a command line (quotes must be closed)",
                    ));
                }
            },
        };
        let unvalidated = match s.unvalidated.as_str() {
            "draft" => Unvalidated::Draft,
            "refuse" => Unvalidated::Refuse,
            other => {
                return Err(invalid(
                    "unvalidated",
                    other,
                    "expected `draft` or `refuse`",
                ));
            }
        };
        // The value is never shown, not even in the error.
        let encryption_keys = match &s.encryption_key {
            None => None,
            Some(keys) => Some(
                crate::credentials::Keyring::parse(keys)
                    .map_err(|e| invalid("encryption_key", "(hidden)", e.to_string()))?,
            ),
        };
        let (executor, kubernetes) = executor_settings(&s)?;
        let public_url = s
            .public_url
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_owned();
        let callback_url = match s.callback_url.as_deref() {
            None => None,
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                Some(url.trim_end_matches('/').to_owned())
            }
            Some(url) => {
                return Err(invalid(
                    "callback_url",
                    url,
                    "expected an http:// or https:// URL",
                ));
            }
        };
        let agent = bg_agent_core::protocol::AgentSpec {
            provider: {
                use bg_agent_core::protocol::AgentProvider;
                match s.agent_provider.as_deref().filter(|p| !p.is_empty()) {
                    None => AgentProvider::Command,
                    Some(name) => AgentProvider::parse(name).ok_or_else(|| {
                        invalid(
                            "agent_provider",
                            name,
                            "expected claude_code, codex, aider, cline, gemini or command",
                        )
                    })?,
                }
            },
            model: s.agent_model.filter(|m| !m.is_empty()),
            max_turns: positive("agent_max_turns", &s.agent_max_turns)?,
            budget_usd: match s.agent_budget_usd.as_deref().filter(|b| !b.is_empty()) {
                None => None,
                Some(raw) => Some(
                    raw.parse::<f64>()
                        .ok()
                        .filter(|b| b.is_finite() && *b > 0.0)
                        .ok_or_else(|| {
                            invalid("agent_budget_usd", raw, "expected a positive amount")
                        })?,
                ),
            },
            verifier_rounds: parse("verifier_rounds", &s.verifier_rounds)?,
            base_url: s.agent_base_url.filter(|u| !u.is_empty()),
            timeout_secs: None,
        };
        let run = RunSettings {
            public_url,
            callback_url,
            agent_command,
            agent,
            npm_registry: s.npm_registry,
            callback_ca: match s.callback_ca_file.as_deref().filter(|p| !p.is_empty()) {
                None => None,
                Some(path) => Some(read_callback_ca(path)?),
            },
            unvalidated,
            retention: match parse::<u32>("retention_days", &s.retention_days)? {
                0 => None,
                days => Some(Duration::from_secs(u64::from(days) * 24 * 3600)),
            },
            encryption_keys,
            provider_endpoints: crate::credentials::ProviderEndpoints {
                anthropic: s.anthropic_base_url.clone(),
                openai: s.openai_base_url.clone(),
                gemini: s.gemini_base_url.clone(),
            },
            scope: bg_agent_core::protocol::ScopePolicy {
                mode: parse("scope_guard", &s.scope_guard)?,
                max_files: positive("diff_max_files", &s.diff_max_files)?,
                max_lines: positive("diff_max_lines", &s.diff_max_lines)?,
            },
        };
        let log_format = match s.log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("log_format", other, "expected `text` or `json`")),
        };
        Ok(Self {
            listen,
            database_url: s.database_url,
            data_dir: PathBuf::from(s.data_dir),
            webhook_secrets,
            app_id,
            app_slug: s.github_app_slug,
            github,
            db_max_connections: positive("db_max_connections", &s.db_max_connections)?,
            intake: IntakeConfig {
                batch_max: positive("intake_batch", &s.intake_batch)?,
                writers: positive("intake_writers", &s.intake_writers)?,
                unverified_concurrency: positive("webhook_concurrency", &s.webhook_concurrency)?,
                unverified_wait: Duration::from_millis(parse(
                    "webhook_wait_ms",
                    &s.webhook_wait_ms,
                )?),
                read_timeout: Duration::from_secs(positive(
                    "webhook_read_timeout_secs",
                    &s.webhook_read_timeout_secs,
                )?),
            },
            worker,
            tasks,
            run,
            sandbox,
            auth,
            executor,
            kubernetes,
            config_file: s.config.map(PathBuf::from),
            log_format,
            metrics_token: s.metrics_token,
        })
    }
}

fn sandbox_settings(s: &Settings, listen: SocketAddr) -> Result<SandboxSettings, ConfigError> {
    let mode = match s.sandbox.as_str() {
        "bubblewrap" => SandboxMode::Bubblewrap,
        "off" if listen.ip().is_loopback() => SandboxMode::Off,
        "off" => {
            return Err(invalid(
                "sandbox",
                "off",
                format!(
                    "refused: the server listens on {listen}, beyond this machine; an unsandboxed \
                     runner can read the server's secrets, so `off` is for development on a \
                     loopback address only"
                ),
            ));
        }
        other => return Err(invalid("sandbox", other, "expected `bubblewrap` or `off`")),
    };
    let id = |name: &str, raw: &str| -> Result<u32, ConfigError> {
        let value = parse::<u32>(name, raw)?;
        if value == 0 {
            return Err(invalid(name, raw, "must not be root (0)"));
        }
        Ok(value)
    };
    let mib = |name: &str, raw: &str| -> Result<u64, ConfigError> {
        parse::<u64>(name, raw)?
            .checked_mul(1 << 20)
            .ok_or_else(|| invalid(name, raw, "too large"))
    };
    Ok(SandboxSettings {
        mode,
        uid: id("sandbox_uid", &s.sandbox_uid)?,
        gid: id("sandbox_gid", &s.sandbox_gid)?,
        limits: Limits {
            max_processes: parse("sandbox_max_processes", &s.sandbox_max_processes)?,
            max_file_size: mib("sandbox_max_file_size_mb", &s.sandbox_max_file_size_mb)?,
            max_address_space: mib(
                "sandbox_max_address_space_mb",
                &s.sandbox_max_address_space_mb,
            )?,
        },
    })
}

fn executor_settings(s: &Settings) -> Result<(ExecutorKind, KubernetesSettings), ConfigError> {
    let executor = match s.executor.as_deref() {
        Some("kubernetes") => ExecutorKind::Kubernetes,
        Some("local") => ExecutorKind::Local,
        Some(other) => {
            return Err(invalid(
                "executor",
                other,
                "expected `kubernetes` or `local`",
            ));
        }
        None if Path::new(SERVICE_ACCOUNT_TOKEN).exists() => ExecutorKind::Kubernetes,
        None => ExecutorKind::Local,
    };
    let quantity = |id: &str, raw: &str| -> Result<String, ConfigError> {
        if is_quantity(raw) {
            Ok(raw.to_owned())
        } else {
            Err(invalid(
                id,
                raw,
                "expected a Kubernetes quantity such as `500m`, `2` or `4Gi`",
            ))
        }
    };
    let kubernetes = KubernetesSettings {
        namespace: s.kubernetes_namespace.clone(),
        kubeconfig: s.kubeconfig.as_deref().map(PathBuf::from),
        runner_image: s.runner_image.clone(),
        runner_cpu: quantity("runner_cpu", &s.runner_cpu)?,
        runner_memory: quantity("runner_memory", &s.runner_memory)?,
        job_ttl_secs: parse("job_ttl_seconds", &s.job_ttl_seconds)?,
    };
    if kubernetes.job_ttl_secs < 0 {
        return Err(invalid(
            "job_ttl_seconds",
            &s.job_ttl_seconds,
            "must not be negative",
        ));
    }
    Ok((executor, kubernetes))
}

/// A Kubernetes resource quantity as people write them: a positive decimal number with
/// an optional suffix (`m`, `k`, `M`, `G`, `T`, `Ki`, `Mi`, `Gi`, `Ti`).
fn is_quantity(raw: &str) -> bool {
    const SUFFIXES: [&str; 10] = ["Ki", "Mi", "Gi", "Ti", "m", "k", "M", "G", "T", ""];
    SUFFIXES.iter().any(|suffix| {
        raw.strip_suffix(suffix).is_some_and(|number| {
            let mut parts = number.splitn(2, '.');
            let whole = parts.next().unwrap_or_default();
            let fraction = parts.next();
            !whole.is_empty()
                && whole.bytes().all(|b| b.is_ascii_digit())
                && fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
                && number.bytes().any(|b| (b'1'..=b'9').contains(&b))
        })
    })
}

fn github_settings(s: &Settings) -> Result<GitHubSettings, ConfigError> {
    let api_url = s.github_api_url.trim_end_matches('/').to_owned();
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(invalid(
            "github_api_url",
            api_url,
            "expected an http:// or https:// URL",
        ));
    }
    let private_key = match (&s.github_private_key, &s.github_private_key_path) {
        (Some(_), Some(path)) => {
            return Err(invalid(
                "github_private_key_path",
                path,
                format!(
                    "{} is set too; set only one of them",
                    env_name("github_private_key")
                ),
            ));
        }
        (Some(pem), None) => Some(PrivateKeySource::Pem(SecretString::from(unescape_pem(
            pem.expose_secret(),
        )))),
        (None, Some(path)) => Some(PrivateKeySource::Path(PathBuf::from(path))),
        (None, None) => None,
    };
    Ok(GitHubSettings {
        api_url,
        private_key,
        concurrency_per_installation: positive("github_concurrency", &s.github_concurrency)?,
        request_timeout: Duration::from_secs(positive(
            "github_timeout_secs",
            &s.github_timeout_secs,
        )?),
        max_retry_wait: Duration::from_secs(parse(
            "github_max_retry_wait_secs",
            &s.github_max_retry_wait_secs,
        )?),
    })
}

/// The environment variable of the setting whose clap id (field of [`Settings`]) is `id`:
/// errors name what a person sets.
pub fn env_name(id: &str) -> String {
    Settings::declaration(id).map_or_else(|| id.to_owned(), |d| d.env)
}

fn invalid(id: &str, value: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: env_name(id),
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse<T>(id: &str, raw: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    raw.parse()
        .map_err(|e: T::Err| invalid(id, raw, e.to_string()))
}

fn positive<T>(id: &str, raw: &str) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + Default,
    T::Err: std::fmt::Display,
{
    let value = parse(id, raw)?;
    if value <= T::default() {
        return Err(invalid(id, raw, "must be greater than zero"));
    }
    Ok(value)
}

/// Env files and CI secrets often carry a PEM on one line with literal `\n`; a value
/// that has no real line break gets them restored.
fn unescape_pem(pem: &str) -> String {
    if pem.contains('\n') {
        pem.to_owned()
    } else {
        pem.replace("\\n", "\n")
    }
}

fn load_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let table: HashMap<String, toml::Value> =
        toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
    Ok(table
        .into_iter()
        .map(|(key, value)| {
            let value = match value {
                toml::Value::String(s) => s,
                // Lists are how a file spells several webhook secrets.
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            (key, value)
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Variables for [`Config::from_vars`], from pairs.
    pub(crate) fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_run_without_any_configuration() {
        let config = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:3000".parse().unwrap());
        assert!(config.database_url.is_none());
        assert!(config.webhook_secrets.is_development_default());
        assert_eq!(
            config.webhook_secrets.signing_secret(),
            DEVELOPMENT_WEBHOOK_SECRET.as_bytes()
        );
    }

    /// The development secret is public: a server with App credentials and no secret of
    /// its own would let anyone forge deliveries, so it is refused, naming what is set.
    #[test]
    fn app_credentials_without_a_webhook_secret_are_refused() {
        let refused = |pairs: &[(&str, &str)]| Config::from_vars(&vars(pairs)).unwrap_err();
        let err = refused(&[
            ("GITHUB_APP_ID", "42"),
            ("GITHUB_PRIVATE_KEY_PATH", "/k.pem"),
        ]);
        insta::assert_snapshot!(err, @"GITHUB_WEBHOOK_SECRET is not set, but GitHub App credentials are (GITHUB_APP_ID, GITHUB_PRIVATE_KEY_PATH): the development webhook secret is public, so anyone could forge deliveries and start tasks; set GITHUB_WEBHOOK_SECRET to the App's webhook secret");
        // A key alone counts too; an empty secret is unset.
        let err = refused(&[("GITHUB_PRIVATE_KEY", "pem"), ("GITHUB_WEBHOOK_SECRET", "")]);
        assert!(
            matches!(err, ConfigError::WebhookSecretMissing { .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("pem"), "{err}");

        let config = Config::from_vars(&vars(&[
            ("GITHUB_APP_ID", "42"),
            ("GITHUB_PRIVATE_KEY_PATH", "/k.pem"),
            ("GITHUB_WEBHOOK_SECRET", "s3cret"),
        ]))
        .unwrap();
        assert!(!config.webhook_secrets.is_development_default());
        // Without App credentials the development secret is still the default.
        assert!(
            Config::from_vars(&HashMap::new())
                .unwrap()
                .webhook_secrets
                .is_development_default()
        );
    }

    #[test]
    fn several_secrets_for_rotation() {
        let config = Config::from_vars(&vars(&[("GITHUB_WEBHOOK_SECRET", "new, old ,")])).unwrap();
        let secrets: Vec<&[u8]> = config.webhook_secrets.iter().collect();
        assert_eq!(secrets, vec![b"new".as_slice(), b"old".as_slice()]);
        assert!(!config.webhook_secrets.is_development_default());
    }

    #[test]
    fn secrets_are_never_printed() {
        let config = Config::from_vars(&vars(&[
            ("GITHUB_WEBHOOK_SECRET", "hunter2-very-secret"),
            ("DATABASE_URL", "postgres://u:pa55word@h/db"),
        ]))
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("pa55word"), "{printed}");
    }

    #[test]
    fn the_coding_agent_and_its_limits_are_read() {
        use bg_agent_core::protocol::AgentProvider;
        let config = Config::from_vars(&vars(&[
            ("BG_AGENT_AGENT_PROVIDER", "claude_code"),
            ("BG_AGENT_AGENT_MODEL", "claude-x"),
            ("BG_AGENT_AGENT_BUDGET_USD", "2.5"),
            ("BG_AGENT_VERIFIER_ROUNDS", "0"),
        ]))
        .unwrap();
        let agent = &config.run.agent;
        assert_eq!(agent.provider, AgentProvider::ClaudeCode);
        assert_eq!(agent.model.as_deref(), Some("claude-x"));
        assert_eq!(agent.budget_usd, Some(2.5));
        assert_eq!((agent.verifier_rounds, agent.max_turns), (0, 30));
        let defaults = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(defaults.run.agent.provider, AgentProvider::Command);
        assert_eq!(defaults.run.agent.verifier_rounds, 2);
        for (name, value) in [
            ("BG_AGENT_AGENT_PROVIDER", "skynet"),
            ("BG_AGENT_AGENT_BUDGET_USD", "-1"),
            ("BG_AGENT_AGENT_MAX_TURNS", "0"),
        ] {
            let err = Config::from_vars(&vars(&[(name, value)])).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let err = Config::from_vars(&vars(&[("BG_AGENT_LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().starts_with("BG_AGENT_LISTEN"), "{err}");
        let err = Config::from_vars(&vars(&[("BG_AGENT_INTAKE_WRITERS", "0")])).unwrap_err();
        assert!(err.to_string().contains("greater than zero"), "{err}");
        let err = Config::from_vars(&vars(&[("GITHUB_WEBHOOK_SECRET", " , ")])).unwrap_err();
        assert!(err.to_string().contains("holds no secret"), "{err}");
        assert!(!err.to_string().contains(" , "));
    }

    #[test]
    fn file_values_are_overridden_by_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bg-agent.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:4000\"\nworkers = 3\ngithub_webhook_secret = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let config = Config::from_vars(&vars(&[
            ("BG_AGENT_CONFIG", path),
            ("BG_AGENT_WORKERS", "5"),
        ]))
        .unwrap();
        assert_eq!(config.listen.port(), 4000);
        assert_eq!(config.worker.workers, 5);
        assert_eq!(config.webhook_secrets.iter().count(), 2);

        let err =
            Config::from_vars(&vars(&[("BG_AGENT_CONFIG", "/nonexistent/x.toml")])).unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }));
    }

    #[test]
    fn the_sandbox_is_on_by_default_and_off_only_on_loopback() {
        let config = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(config.sandbox, SandboxSettings::default());
        assert_eq!(config.sandbox.mode, SandboxMode::Bubblewrap);
        assert_eq!(config.sandbox.limits.max_file_size, 4 << 30);

        let config = Config::from_vars(&vars(&[("BG_AGENT_SANDBOX", "off")])).unwrap();
        assert_eq!(config.sandbox.mode, SandboxMode::Off);
        let config = Config::from_vars(&vars(&[
            ("BG_AGENT_SANDBOX", "off"),
            ("BG_AGENT_LISTEN", "[::1]:3000"),
        ]))
        .unwrap();
        assert_eq!(config.sandbox.mode, SandboxMode::Off);

        let err = Config::from_vars(&vars(&[
            ("BG_AGENT_SANDBOX", "off"),
            ("BG_AGENT_LISTEN", "0.0.0.0:3000"),
        ]))
        .unwrap_err();
        assert!(err.to_string().starts_with("BG_AGENT_SANDBOX"), "{err}");
        assert!(err.to_string().contains("loopback"), "{err}");
        let err = Config::from_vars(&vars(&[("BG_AGENT_SANDBOX", "docker")])).unwrap_err();
        assert!(err.to_string().contains("`bubblewrap` or `off`"), "{err}");
        let err = Config::from_vars(&vars(&[("BG_AGENT_SANDBOX_UID", "0")])).unwrap_err();
        assert!(err.to_string().starts_with("BG_AGENT_SANDBOX_UID"), "{err}");
        assert!(err.to_string().contains("root"), "{err}");
    }

    #[test]
    fn sign_in_is_needed_beyond_loopback_and_none_is_refused_there() {
        use crate::web::auth::AuthMode;
        let config = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(config.auth.mode, AuthMode::None);
        assert_eq!(config.auth.github_web_url, "https://github.com");

        let err = Config::from_vars(&vars(&[
            ("BG_AGENT_AUTH", "none"),
            ("BG_AGENT_LISTEN", "0.0.0.0:3000"),
        ]))
        .unwrap_err();
        assert!(err.to_string().starts_with("BG_AGENT_AUTH"), "{err}");
        assert!(err.to_string().contains("loopback"), "{err}");

        // Beyond loopback the default is sign-in, which needs the App's OAuth client.
        let err = Config::from_vars(&vars(&[("BG_AGENT_LISTEN", "0.0.0.0:3000")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("BG_AGENT_OAUTH_CLIENT_ID is not set"),
            "{err}"
        );
        let config = Config::from_vars(&vars(&[
            ("BG_AGENT_LISTEN", "0.0.0.0:3000"),
            ("BG_AGENT_OAUTH_CLIENT_ID", "Iv23li"),
            ("BG_AGENT_OAUTH_CLIENT_SECRET", "s3cret"),
            ("BG_AGENT_GITHUB_WEB_URL", "https://ghe.example.com/"),
        ]))
        .unwrap();
        assert_eq!(config.auth.mode, AuthMode::GitHub);
        assert_eq!(config.auth.github_web_url, "https://ghe.example.com");
        assert!(!format!("{config:?}").contains("s3cret"));

        let config = Config::from_vars(&vars(&[
            ("BG_AGENT_AUTH", "github"),
            ("BG_AGENT_OAUTH_CLIENT_ID", "Iv23li"),
            ("BG_AGENT_OAUTH_CLIENT_SECRET", "s3cret"),
        ]))
        .unwrap();
        assert_eq!(config.auth.mode, AuthMode::GitHub);
        let err = Config::from_vars(&vars(&[("BG_AGENT_AUTH", "maybe")])).unwrap_err();
        assert!(err.to_string().contains("`github` or `none`"), "{err}");
        let err = Config::from_vars(&vars(&[("BG_AGENT_SESSION_KEY", "tiny-key")])).unwrap_err();
        assert!(err.to_string().starts_with("BG_AGENT_SESSION_KEY"), "{err}");
        assert!(!err.to_string().contains("tiny-key"), "{err}");
    }

    #[test]
    fn a_callback_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (good, bad) = (dir.path().join("ca.pem"), dir.path().join("junk.pem"));
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        std::fs::write(&good, pem).unwrap();
        std::fs::write(&bad, "not a certificate").unwrap();
        let config = Config::from_vars(&vars(&[(
            "BG_AGENT_CALLBACK_CA_FILE",
            good.to_str().unwrap(),
        )]))
        .unwrap();
        assert_eq!(config.run.callback_ca.as_deref(), Some(pem));
        let err = Config::from_vars(&vars(&[(
            "BG_AGENT_CALLBACK_CA_FILE",
            bad.to_str().unwrap(),
        )]))
        .unwrap_err();
        assert!(
            err.to_string().starts_with("BG_AGENT_CALLBACK_CA_FILE"),
            "{err}"
        );
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        assert_eq!(Config::from_vars(&vars(&[])).unwrap().run.callback_ca, None);
    }

    #[test]
    fn the_kubernetes_settings_are_checked() {
        let config = Config::from_vars(&vars(&[
            ("BG_AGENT_EXECUTOR", "kubernetes"),
            ("BG_AGENT_KUBERNETES_NAMESPACE", "runners"),
            ("BG_AGENT_RUNNER_IMAGE", "registry.example/runner:1"),
            ("BG_AGENT_RUNNER_CPU", "500m"),
            (
                "BG_AGENT_CALLBACK_URL",
                "https://bg-agent.bg-agent.svc:3000/",
            ),
        ]))
        .unwrap();
        assert_eq!(config.executor, ExecutorKind::Kubernetes);
        assert_eq!(config.kubernetes.namespace.as_deref(), Some("runners"));
        assert_eq!(config.kubernetes.runner_cpu, "500m");
        assert_eq!(config.kubernetes.runner_memory, "2Gi");
        assert_eq!(config.kubernetes.job_ttl_secs, 3600);
        assert_eq!(
            config.run.callback_url.as_deref(),
            Some("https://bg-agent.bg-agent.svc:3000")
        );
        let config = Config::from_vars(&vars(&[("BG_AGENT_EXECUTOR", "local")])).unwrap();
        assert_eq!(config.executor, ExecutorKind::Local);
        assert_eq!(config.run.callback_url, None);
        for (name, value) in [
            ("BG_AGENT_EXECUTOR", "docker"),
            ("BG_AGENT_RUNNER_CPU", "lots"),
            ("BG_AGENT_RUNNER_MEMORY", "0"),
            ("BG_AGENT_RUNNER_MEMORY", "1.Gi"),
            ("BG_AGENT_CALLBACK_URL", "bg-agent.svc"),
            ("BG_AGENT_JOB_TTL_SECONDS", "-1"),
        ] {
            let err = Config::from_vars(&vars(&[(name, value)])).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
        for good in ["1", "0.5", "250m", "512Mi", "4Gi", "2G"] {
            assert!(is_quantity(good), "{good}");
        }
    }

    #[test]
    fn label_trust_defaults_to_the_author_and_the_labeller() {
        use bg_agent_core::task::LabelTrust;
        let config = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(config.tasks.label_trust, LabelTrust::AuthorAndLabeller);
        let config = Config::from_vars(&vars(&[("BG_AGENT_LABEL_TRUST", "labeller")])).unwrap();
        assert_eq!(config.tasks.label_trust, LabelTrust::Labeller);
        let err = Config::from_vars(&vars(&[("BG_AGENT_LABEL_TRUST", "anyone")])).unwrap_err();
        assert!(err.to_string().starts_with("BG_AGENT_LABEL_TRUST"), "{err}");
    }

    #[test]
    fn invalid_github_settings_name_the_variable() {
        let err = Config::from_vars(&vars(&[("GITHUB_API_URL", "api.github.com")])).unwrap_err();
        assert!(err.to_string().starts_with("GITHUB_API_URL"), "{err}");
        let err = Config::from_vars(&vars(&[("BG_AGENT_GITHUB_CONCURRENCY", "0")])).unwrap_err();
        assert!(
            err.to_string().starts_with("BG_AGENT_GITHUB_CONCURRENCY"),
            "{err}"
        );
        let err = Config::from_vars(&vars(&[
            ("GITHUB_PRIVATE_KEY", "pem"),
            ("GITHUB_PRIVATE_KEY_PATH", "/k.pem"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("set only one"), "{err}");
    }

    #[test]
    fn flags_and_file_keys_follow_the_variable_names() {
        let declarations = Settings::declarations();
        assert_eq!(
            declarations.len(),
            Settings::parser().get_arguments().count()
        );
        for d in &declarations {
            let expected = d.env.to_lowercase();
            let expected = expected.strip_prefix("bg_agent_").unwrap_or(&expected);
            assert_eq!(d.flag, expected.replace('_', "-"), "{}", d.env);
            assert_eq!(d.file_key(), expected, "{}", d.env);
            assert!(!d.help.is_empty(), "{} has no meaning", d.env);
        }
        // Values `--help` must never show, even when they are set in the environment.
        let secrets: Vec<&str> = declarations
            .iter()
            .filter(|d| d.secret)
            .map(|d| d.env.as_str())
            .collect();
        assert_eq!(
            secrets,
            [
                "DATABASE_URL",
                "GITHUB_WEBHOOK_SECRET",
                "GITHUB_PRIVATE_KEY",
                "BG_AGENT_OAUTH_CLIENT_SECRET",
                "BG_AGENT_SESSION_KEY",
                "BG_AGENT_METRICS_TOKEN",
                "BG_AGENT_ENCRYPTION_KEY",
            ]
        );
        assert!(
            declarations
                .iter()
                .all(|d| !d.secret || d.default.is_none())
        );
    }

    #[test]
    fn flags_win_over_the_file_and_empty_is_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bg-agent.toml");
        std::fs::write(&path, "workers = 3\nintake_batch = 7\nmax_tasks = 9\n").unwrap();
        // The process environment is left out, as `from_vars` leaves it out.
        let command = Settings::add_to(clap::Command::new("serve")).mut_args(|a| a.env(None));
        let matches = command
            .try_get_matches_from([
                "serve",
                "--config",
                path.to_str().unwrap(),
                "--workers=5",
                "--listen",
                "127.0.0.1:4100",
                "--log-format=",
            ])
            .unwrap();
        let config = Config::from_matches(&matches).unwrap();
        assert_eq!(config.worker.workers, 5);
        assert_eq!(config.intake.batch_max, 7);
        assert_eq!(config.tasks.max_global, 9);
        assert_eq!(config.listen.port(), 4100);
        assert_eq!(config.run.public_url, "http://127.0.0.1:4100");
        // Empty is unset: the default.
        assert_eq!(config.log_format, LogFormat::Text);

        let err = Config::from_matches(
            &Settings::add_to(clap::Command::new("serve"))
                .mut_args(|a| a.env(None))
                .try_get_matches_from(["serve", "--intake-writers", "0"])
                .unwrap(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("BG_AGENT_INTAKE_WRITERS"),
            "{err}"
        );
    }

    #[test]
    fn a_file_key_that_is_no_setting_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bg-agent.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:4000\"\nworkerz = 3\n").unwrap();
        let err =
            Config::from_vars(&vars(&[("BG_AGENT_CONFIG", path.to_str().unwrap())])).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { ref key, .. } if key == "workerz"));
        assert!(err.to_string().contains("docs/configuration.md"), "{err}");
    }

    /// docs/configuration.md's table and the clap declarations agree: every setting is
    /// documented with its flag and default, and nothing else is.
    #[test]
    fn docs_configuration_lists_every_setting_as_declared() {
        let doc = include_str!("../../../docs/configuration.md");
        let rows: Vec<Vec<&str>> = doc
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                line.trim()
                    .trim_matches('|')
                    .split(" | ")
                    .map(str::trim)
                    .collect()
            })
            .collect();
        let declarations = Settings::declarations();
        let documented: Vec<&str> = rows.iter().map(|row| row[0].trim_matches('`')).collect();
        let declared: Vec<&str> = declarations.iter().map(|d| d.env.as_str()).collect();
        assert_eq!(
            documented, declared,
            "the table lists the settings in order"
        );
        for (row, d) in rows.iter().zip(&declarations) {
            assert_eq!(row.len(), 4, "{row:?}");
            assert_eq!(row[1], format!("`--{}`", d.flag), "{}", d.env);
            match &d.default {
                Some(default) => assert_eq!(row[2], format!("`{default}`"), "{}", d.env),
                None => assert!(row[2].starts_with('('), "{}: no default: {}", d.env, row[2]),
            }
            assert!(!row[3].is_empty(), "{} has no meaning", d.env);
        }
    }
}
