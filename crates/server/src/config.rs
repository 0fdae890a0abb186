//! Typed configuration from environment variables and an optional TOML file.
//!
//! Precedence: environment variable > file (`BG_AGENT_CONFIG`) > default. Every
//! variable is listed in [`VARIABLES`] (and the README) so none goes undocumented.
//! Secrets are held in `secrecy` types: their `Debug` prints `[REDACTED]`.

use bg_agent_github::GitHubConfig;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// The secret used when none is configured, so `serve` and `webhook send` work together
/// out of the box on a developer machine. It is public knowledge: `serve` warns loudly.
pub const DEVELOPMENT_WEBHOOK_SECRET: &str = "bg-agent-development-secret";

/// (variable, default, meaning) — the README's configuration table mirrors this list.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    (
        "BG_AGENT_CONFIG",
        "(none)",
        "Path of an optional TOML file; its keys are the variable names in lower case without the `BG_AGENT_` prefix.",
    ),
    (
        "BG_AGENT_LISTEN",
        "127.0.0.1:3000",
        "Address the HTTP server binds to.",
    ),
    (
        "DATABASE_URL",
        "(embedded)",
        "PostgreSQL URL. Unset: a private cluster is started under BG_AGENT_DATA_DIR on a Unix socket.",
    ),
    (
        "BG_AGENT_DATA_DIR",
        ".bg-agent",
        "Where the embedded PostgreSQL cluster (and later, workspaces) live.",
    ),
    (
        "GITHUB_WEBHOOK_SECRET",
        "(development secret)",
        "Webhook secret(s), comma-separated to rotate: any one verifies. Unset: a well-known development secret, with a warning.",
    ),
    (
        "GITHUB_APP_ID",
        "(none)",
        "The App's id; comments made through it are ignored (no loops).",
    ),
    (
        "GITHUB_APP_SLUG",
        "bg-agent",
        "The App's slug; comments by `<slug>[bot]` are ignored.",
    ),
    (
        "GITHUB_API_URL",
        "https://api.github.com",
        "GitHub's REST API base URL; for GitHub Enterprise Server `https://HOST/api/v3`.",
    ),
    (
        "GITHUB_PRIVATE_KEY",
        "(none)",
        "The App's RSA private key, PEM text (`\\n` escapes accepted). Set this or GITHUB_PRIVATE_KEY_PATH to talk to GitHub.",
    ),
    (
        "GITHUB_PRIVATE_KEY_PATH",
        "(none)",
        "Path of a file holding the App's PEM private key (instead of GITHUB_PRIVATE_KEY).",
    ),
    (
        "BG_AGENT_GITHUB_CONCURRENCY",
        "10",
        "Most GitHub requests in flight at once per installation (App-level calls have their own limit).",
    ),
    (
        "BG_AGENT_GITHUB_TIMEOUT_SECS",
        "30",
        "Timeout of one GitHub request attempt.",
    ),
    (
        "BG_AGENT_GITHUB_MAX_RETRY_WAIT_SECS",
        "60",
        "Longest wait honoured when GitHub rate-limits a request; a longer one fails the call.",
    ),
    (
        "BG_AGENT_REQUIRED_PERMISSION",
        "write",
        "Least permission on a repository (`read`, `write` or `admin`; maintain counts as write) needed to start tasks there.",
    ),
    (
        "BG_AGENT_TASK_TIMEOUT_SECS",
        "3600",
        "Default task timeout; templates may ask for less; never more than 3600.",
    ),
    (
        "BG_AGENT_PUBLIC_URL",
        "http://BG_AGENT_LISTEN",
        "The server's base URL as runners and people reach it: runners report to it, and check runs and comments link to its task pages.",
    ),
    (
        "BG_AGENT_MAX_TASKS_PER_INSTALLATION",
        "10",
        "At most this many tasks run at once per installation; more wait, queued.",
    ),
    (
        "BG_AGENT_MAX_TASKS",
        "20",
        "At most this many tasks run at once in all.",
    ),
    (
        "BG_AGENT_AGENT_COMMAND",
        "(none)",
        "The coding agent for free-text tasks: a command line (split into argv, no shell) that reads the instructions on stdin in the repository's checkout. Unset: free-text tasks fail with a clear error.",
    ),
    (
        "BG_AGENT_NPM_REGISTRY",
        "(npm's default)",
        "npm registry the `upgrade` recipe resolves versions from.",
    ),
    (
        "BG_AGENT_DB_MAX_CONNECTIONS",
        "16",
        "Size of the PostgreSQL connection pool.",
    ),
    (
        "BG_AGENT_INTAKE_BATCH",
        "256",
        "Most deliveries committed together by the intake writer (group commit).",
    ),
    (
        "BG_AGENT_INTAKE_WRITERS",
        "2",
        "Intake writer tasks; each commits one batch at a time.",
    ),
    (
        "BG_AGENT_WORKERS",
        "2",
        "Delivery workers in this process; 0 makes an intake-only replica (others process).",
    ),
    (
        "BG_AGENT_WORKER_POLL_MS",
        "1000",
        "How often an idle worker looks for deliveries stored by other replicas.",
    ),
    (
        "BG_AGENT_LOG_FORMAT",
        "text",
        "`text` or `json`. Levels come from RUST_LOG (default `info`).",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("{name} = {value:?} is invalid: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("{name} is not set; it is needed {needed_for}")]
    Missing {
        name: &'static str,
        needed_for: &'static str,
    },
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
/// [`Config::github_app`] turns them into the [`GitHubConfig`] the client needs.
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
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy)]
pub struct TaskSettings {
    pub required_permission: bg_agent_core::task::Permission,
    pub default_timeout_secs: u32,
    pub max_per_installation: u32,
    pub max_global: u32,
}

/// How tasks are run, beyond the limits.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Base URL of this server for runners and links, without a trailing slash.
    pub public_url: String,
    pub agent_command: Option<Vec<String>>,
    pub npm_registry: Option<String>,
}

impl Config {
    /// Reads the process environment (and the file it names).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Builds a config from a variable map (the environment in production, a literal in tests).
    pub fn from_vars(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let file = match env.get("BG_AGENT_CONFIG").filter(|p| !p.is_empty()) {
            Some(path) => load_file(PathBuf::from(path))?,
            None => HashMap::new(),
        };
        let vars = Vars { env, file: &file };

        let listen = vars.parsed("BG_AGENT_LISTEN", "127.0.0.1:3000".parse().ok())?;
        let database_url = vars
            .get("DATABASE_URL")
            .map(|s| SecretString::from(s.to_owned()));
        let data_dir = vars
            .get("BG_AGENT_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".bg-agent"));
        let webhook_secrets = match vars.get("GITHUB_WEBHOOK_SECRET") {
            Some(raw) => WebhookSecrets::parse(raw).ok_or(ConfigError::Invalid {
                name: "GITHUB_WEBHOOK_SECRET",
                value: "[REDACTED]".into(),
                reason: "holds no secret (only commas or spaces)".into(),
            })?,
            None => WebhookSecrets::development(),
        };
        let app_id = match vars.get("GITHUB_APP_ID") {
            Some(_) => Some(vars.parsed::<u64>("GITHUB_APP_ID", None)?),
            None => None,
        };
        let app_slug = vars.get("GITHUB_APP_SLUG").unwrap_or("bg-agent").to_owned();
        let github = github_settings(&vars)?;
        let db_max_connections = vars.positive("BG_AGENT_DB_MAX_CONNECTIONS", 16)?;
        let intake = IntakeConfig {
            batch_max: vars.positive("BG_AGENT_INTAKE_BATCH", 256)?,
            writers: vars.positive("BG_AGENT_INTAKE_WRITERS", 2)?,
        };
        let worker = WorkerConfig {
            workers: vars.parsed("BG_AGENT_WORKERS", Some(2))?,
            poll_interval: Duration::from_millis(vars.positive("BG_AGENT_WORKER_POLL_MS", 1000)?),
            claim_batch: 128,
        };
        let tasks = TaskSettings {
            required_permission: match vars.get("BG_AGENT_REQUIRED_PERMISSION").unwrap_or("write") {
                "read" => bg_agent_core::task::Permission::Read,
                "write" => bg_agent_core::task::Permission::Write,
                "admin" => bg_agent_core::task::Permission::Admin,
                other => {
                    return Err(ConfigError::Invalid {
                        name: "BG_AGENT_REQUIRED_PERMISSION",
                        value: other.into(),
                        reason: "expected `read`, `write` or `admin`".into(),
                    });
                }
            },
            default_timeout_secs: vars
                .positive(
                    "BG_AGENT_TASK_TIMEOUT_SECS",
                    bg_agent_core::task::MAX_TIMEOUT_SECS,
                )?
                .min(bg_agent_core::task::MAX_TIMEOUT_SECS),
            max_per_installation: vars.positive("BG_AGENT_MAX_TASKS_PER_INSTALLATION", 10)?,
            max_global: vars.positive("BG_AGENT_MAX_TASKS", 20)?,
        };
        let agent_command = match vars.get("BG_AGENT_AGENT_COMMAND") {
            None => None,
            Some(line) => match bg_agent_core::task::repo_config::split_words(line) {
                Some(argv) if !argv.is_empty() => Some(argv),
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "BG_AGENT_AGENT_COMMAND",
                        value: line.into(),
                        reason: "expected a command line (quotes must be closed)".into(),
                    });
                }
            },
        };
        let run = RunSettings {
            public_url: vars
                .get("BG_AGENT_PUBLIC_URL")
                .map_or_else(|| format!("http://{listen}"), str::to_owned)
                .trim_end_matches('/')
                .to_owned(),
            agent_command,
            npm_registry: vars.get("BG_AGENT_NPM_REGISTRY").map(str::to_owned),
        };
        let log_format = match vars.get("BG_AGENT_LOG_FORMAT").unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::Invalid {
                    name: "BG_AGENT_LOG_FORMAT",
                    value: other.into(),
                    reason: "expected `text` or `json`".into(),
                });
            }
        };
        Ok(Self {
            listen,
            database_url,
            data_dir,
            webhook_secrets,
            app_id,
            app_slug,
            github,
            db_max_connections,
            intake,
            worker,
            tasks,
            run,
            log_format,
        })
    }
}

impl Config {
    /// The GitHub client's configuration, or an error naming the first missing variable.
    /// Reads the key file named by `GITHUB_PRIVATE_KEY_PATH`.
    pub fn github_app(&self) -> Result<GitHubConfig, ConfigError> {
        const NEEDED_FOR: &str = "to act as the GitHub App";
        let app_id = self.app_id.ok_or(ConfigError::Missing {
            name: "GITHUB_APP_ID",
            needed_for: NEEDED_FOR,
        })?;
        let private_key_pem = match &self.github.private_key {
            Some(PrivateKeySource::Pem(pem)) => pem.clone(),
            Some(PrivateKeySource::Path(path)) => std::fs::read_to_string(path)
                .map(SecretString::from)
                .map_err(|source| ConfigError::ReadFile {
                    path: path.clone(),
                    source,
                })?,
            None => {
                return Err(ConfigError::Missing {
                    name: "GITHUB_PRIVATE_KEY (or GITHUB_PRIVATE_KEY_PATH)",
                    needed_for: NEEDED_FOR,
                });
            }
        };
        Ok(GitHubConfig {
            concurrency_per_installation: self.github.concurrency_per_installation,
            request_timeout: self.github.request_timeout,
            max_retry_wait: self.github.max_retry_wait,
            ..GitHubConfig::new(self.github.api_url.clone(), app_id, private_key_pem)
        })
    }
}

fn github_settings(vars: &Vars<'_>) -> Result<GitHubSettings, ConfigError> {
    let api_url = vars
        .get("GITHUB_API_URL")
        .unwrap_or(DEFAULT_GITHUB_API_URL)
        .trim_end_matches('/')
        .to_owned();
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(ConfigError::Invalid {
            name: "GITHUB_API_URL",
            value: api_url,
            reason: "expected an http:// or https:// URL".into(),
        });
    }
    let private_key = match (
        vars.get("GITHUB_PRIVATE_KEY"),
        vars.get("GITHUB_PRIVATE_KEY_PATH"),
    ) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                name: "GITHUB_PRIVATE_KEY_PATH",
                value: vars
                    .get("GITHUB_PRIVATE_KEY_PATH")
                    .unwrap_or_default()
                    .into(),
                reason: "GITHUB_PRIVATE_KEY is set too; set only one of them".into(),
            });
        }
        (Some(pem), None) => Some(PrivateKeySource::Pem(SecretString::from(unescape_pem(pem)))),
        (None, Some(path)) => Some(PrivateKeySource::Path(PathBuf::from(path))),
        (None, None) => None,
    };
    Ok(GitHubSettings {
        api_url,
        private_key,
        concurrency_per_installation: vars.positive("BG_AGENT_GITHUB_CONCURRENCY", 10)?,
        request_timeout: Duration::from_secs(vars.positive("BG_AGENT_GITHUB_TIMEOUT_SECS", 30)?),
        max_retry_wait: Duration::from_secs(
            vars.parsed("BG_AGENT_GITHUB_MAX_RETRY_WAIT_SECS", Some(60))?,
        ),
    })
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

fn load_file(path: PathBuf) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadFile {
        path: path.clone(),
        source,
    })?;
    let table: HashMap<String, toml::Value> =
        toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
            path: path.clone(),
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

struct Vars<'a> {
    env: &'a HashMap<String, String>,
    file: &'a HashMap<String, String>,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        if let Some(v) = self.env.get(name).filter(|v| !v.is_empty()) {
            return Some(v);
        }
        let key = name
            .strip_prefix("BG_AGENT_")
            .unwrap_or(name)
            .to_lowercase();
        self.file
            .get(&key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn parsed<T>(&self, name: &'static str, default: Option<T>) -> Result<T, ConfigError>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        match (self.get(name), default) {
            (Some(raw), _) => raw.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                value: raw.into(),
                reason: e.to_string(),
            }),
            (None, Some(default)) => Ok(default),
            (None, None) => Err(ConfigError::Invalid {
                name,
                value: String::new(),
                reason: "is required".into(),
            }),
        }
    }

    fn positive<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + Default + Copy,
        T::Err: std::fmt::Display,
    {
        let value = self.parsed(name, Some(default))?;
        if value <= T::default() {
            return Err(ConfigError::Invalid {
                name,
                value: self.get(name).unwrap_or_default().into(),
                reason: "must be greater than zero".into(),
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
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
    fn github_is_optional_and_its_absence_names_the_variable() {
        let config = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(config.github.api_url, DEFAULT_GITHUB_API_URL);
        assert_eq!(config.github.concurrency_per_installation, 10);
        assert_eq!(config.github.request_timeout, Duration::from_secs(30));
        assert_eq!(config.github.max_retry_wait, Duration::from_secs(60));
        let err = config.github_app().unwrap_err();
        assert!(
            err.to_string().starts_with("GITHUB_APP_ID is not set"),
            "{err}"
        );

        let config = Config::from_vars(&vars(&[("GITHUB_APP_ID", "42")])).unwrap();
        let err = config.github_app().unwrap_err();
        assert!(err.to_string().starts_with("GITHUB_PRIVATE_KEY"), "{err}");
    }

    #[test]
    fn github_app_config_from_pem_text_or_file() {
        let pem = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n";
        let config = Config::from_vars(&vars(&[
            ("GITHUB_APP_ID", "42"),
            ("GITHUB_PRIVATE_KEY", &pem.replace('\n', "\\n")),
            ("GITHUB_API_URL", "https://ghe.example.com/api/v3/"),
            ("BG_AGENT_GITHUB_CONCURRENCY", "3"),
            ("BG_AGENT_GITHUB_TIMEOUT_SECS", "5"),
            ("BG_AGENT_GITHUB_MAX_RETRY_WAIT_SECS", "0"),
        ]))
        .unwrap();
        let github = config.github_app().unwrap();
        assert_eq!(github.app_id, 42);
        assert_eq!(github.private_key_pem.expose_secret(), pem);
        assert_eq!(github.api_url, "https://ghe.example.com/api/v3");
        assert_eq!(github.concurrency_per_installation, 3);
        assert_eq!(github.request_timeout, Duration::from_secs(5));
        assert_eq!(github.max_retry_wait, Duration::ZERO);
        assert!(!format!("{config:?} {github:?}").contains("abc"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, pem).unwrap();
        let config = Config::from_vars(&vars(&[
            ("GITHUB_APP_ID", "42"),
            ("GITHUB_PRIVATE_KEY_PATH", path.to_str().unwrap()),
        ]))
        .unwrap();
        assert_eq!(
            config.github_app().unwrap().private_key_pem.expose_secret(),
            pem
        );

        let missing = Config::from_vars(&vars(&[
            ("GITHUB_APP_ID", "42"),
            ("GITHUB_PRIVATE_KEY_PATH", "/nonexistent/key.pem"),
        ]))
        .unwrap();
        assert!(matches!(
            missing.github_app(),
            Err(ConfigError::ReadFile { .. })
        ));
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
    fn every_variable_is_documented_in_the_readme() {
        let readme = include_str!("../../../README.md");
        for (name, _, _) in VARIABLES {
            assert!(readme.contains(name), "README.md does not document {name}");
        }
    }
}
