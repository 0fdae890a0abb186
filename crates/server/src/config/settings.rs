//! Every setting, declared once: its flag, environment variable, default and meaning.
//! `bg-agent serve --help` prints these declarations and `docs/configuration.md` mirrors
//! them (a test keeps the two in step). Values are kept as text here and checked in
//! [`super::Config`], so an invalid one is reported by its variable's name in one line,
//! and an empty variable counts as unset wherever it comes from.
//!
//! Naming rule (tested): the flag is the variable in lower case, without `BG_AGENT_`, `_`
//! turned into `-`; the config file's key is the same with `_`.

use clap::{Arg, Args, Command};
use secrecy::SecretString;

use super::DEFAULT_GITHUB_API_URL;

// The settings as clap parses them from flags and environment variables. (Not a doc
// comment: clap would make it the `about` of every subcommand given the settings.)
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Settings (flag or environment variable; the flag wins)")]
pub struct Settings {
    /// Path of an optional TOML file of defaults; its keys are the flags' names with `_`
    /// (`listen = "0.0.0.0:3000"`, `github_webhook_secret = ["new", "old"]`).
    #[arg(long, env = "BG_AGENT_CONFIG", value_name = "PATH")]
    pub config: Option<String>,

    /// Address the HTTP server binds to.
    #[arg(
        long,
        env = "BG_AGENT_LISTEN",
        default_value = "127.0.0.1:3000",
        value_name = "ADDR"
    )]
    pub listen: String,

    /// PostgreSQL URL. Unset: a private cluster is started under BG_AGENT_DATA_DIR, on a
    /// Unix socket only, and stopped with the server.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL", value_parser = secret)]
    pub database_url: Option<SecretString>,

    /// Where the embedded PostgreSQL cluster and task workspaces live.
    #[arg(
        long,
        env = "BG_AGENT_DATA_DIR",
        default_value = ".bg-agent",
        value_name = "DIR"
    )]
    pub data_dir: String,

    /// Webhook secret; several comma-separated during a rotation (any one verifies, the
    /// first signs `webhook send`). Unset: the public development secret, with a warning;
    /// with App credentials set, it is refused (anyone could forge deliveries).
    #[arg(long, env = "GITHUB_WEBHOOK_SECRET", hide_env_values = true, value_name = "SECRETS", value_parser = secret)]
    pub github_webhook_secret: Option<SecretString>,

    /// The App's id: comments made through it and check runs of other apps are ignored.
    /// Needed, with a private key, to act on GitHub.
    #[arg(long, env = "GITHUB_APP_ID", value_name = "ID")]
    pub github_app_id: Option<String>,

    /// The App's slug: comments by `<slug>[bot]` are ignored.
    #[arg(
        long,
        env = "GITHUB_APP_SLUG",
        default_value = "bg-agent",
        value_name = "SLUG"
    )]
    pub github_app_slug: String,

    /// GitHub's REST API base URL; for GitHub Enterprise Server `https://HOST/api/v3`.
    #[arg(long, env = "GITHUB_API_URL", default_value = DEFAULT_GITHUB_API_URL, value_name = "URL")]
    pub github_api_url: String,

    /// The App's private key, PEM text (a one-line value with `\n` escapes works). This or
    /// GITHUB_PRIVATE_KEY_PATH, not both; without either the server starts but does not
    /// act on GitHub.
    #[arg(long, env = "GITHUB_PRIVATE_KEY", hide_env_values = true, value_name = "PEM", value_parser = secret)]
    pub github_private_key: Option<SecretString>,

    /// Path of a file holding the App's PEM private key (instead of GITHUB_PRIVATE_KEY).
    #[arg(long, env = "GITHUB_PRIVATE_KEY_PATH", value_name = "PATH")]
    pub github_private_key_path: Option<String>,

    /// Most GitHub requests in flight at once per installation (App-level calls have their
    /// own limit of the same size).
    #[arg(
        long,
        env = "BG_AGENT_GITHUB_CONCURRENCY",
        default_value = "10",
        value_name = "N"
    )]
    pub github_concurrency: String,

    /// Timeout of one GitHub request attempt, in seconds.
    #[arg(
        long,
        env = "BG_AGENT_GITHUB_TIMEOUT_SECS",
        default_value = "30",
        value_name = "SECS"
    )]
    pub github_timeout_secs: String,

    /// Longest rate-limit wait honoured, in seconds; GitHub asking for longer fails the call.
    #[arg(
        long,
        env = "BG_AGENT_GITHUB_MAX_RETRY_WAIT_SECS",
        default_value = "60",
        value_name = "SECS"
    )]
    pub github_max_retry_wait_secs: String,

    /// Least permission on a repository needed to ask for tasks there: `read`, `write` or
    /// `admin` (maintain counts as write); others get a short refusal.
    #[arg(
        long,
        env = "BG_AGENT_REQUIRED_PERMISSION",
        default_value = "write",
        value_name = "LEVEL"
    )]
    pub required_permission: String,

    /// Whose permission a `bg-agent` label needs, as the text becomes the agent's
    /// instructions: `author-and-labeller` (the author too) or `labeller`.
    #[arg(
        long,
        env = "BG_AGENT_LABEL_TRUST",
        default_value = "author-and-labeller",
        value_name = "WHO"
    )]
    pub label_trust: String,

    /// Default task timeout, in seconds; templates may ask for less; never more than 3600.
    #[arg(
        long,
        env = "BG_AGENT_TASK_TIMEOUT_SECS",
        default_value = "3600",
        value_name = "SECS"
    )]
    pub task_timeout_secs: String,

    /// This server's base URL as runners and people reach it: runners report to it, check
    /// runs and comments link to its task pages. Unset: `http://` + BG_AGENT_LISTEN.
    #[arg(long, env = "BG_AGENT_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Who may use the status pages and the API: `github` (sign in with GitHub; each person
    /// sees the repositories they can read) or `none` (everyone is an admin; for local use,
    /// refused unless BG_AGENT_LISTEN is loopback). Unset: `none` on loopback, else `github`.
    #[arg(long, env = "BG_AGENT_AUTH", value_name = "github|none")]
    pub auth: Option<String>,

    /// The GitHub App's OAuth client id (sign in with GitHub; needed with BG_AGENT_AUTH=github).
    #[arg(long, env = "BG_AGENT_OAUTH_CLIENT_ID", value_name = "ID")]
    pub oauth_client_id: Option<String>,

    /// The GitHub App's OAuth client secret (needed with BG_AGENT_AUTH=github).
    #[arg(long, env = "BG_AGENT_OAUTH_CLIENT_SECRET", hide_env_values = true, value_name = "SECRET", value_parser = secret)]
    pub oauth_client_secret: Option<SecretString>,

    /// GitHub's web base URL, where people sign in; for GitHub Enterprise Server `https://HOST`.
    #[arg(
        long,
        env = "BG_AGENT_GITHUB_WEB_URL",
        default_value = "https://github.com",
        value_name = "URL"
    )]
    pub github_web_url: String,

    /// Key that signs session cookies (at least 32 characters). Unset: a random key is made
    /// once and kept in BG_AGENT_DATA_DIR/session-key (sessions survive restarts).
    #[arg(long, env = "BG_AGENT_SESSION_KEY", hide_env_values = true, value_name = "KEY", value_parser = secret)]
    pub session_key: Option<SecretString>,

    /// Most tasks running at once per installation; more wait, queued.
    #[arg(
        long,
        env = "BG_AGENT_MAX_TASKS_PER_INSTALLATION",
        default_value = "10",
        value_name = "N"
    )]
    pub max_tasks_per_installation: String,

    /// Most tasks running at once in all.
    #[arg(
        long,
        env = "BG_AGENT_MAX_TASKS",
        default_value = "20",
        value_name = "N"
    )]
    pub max_tasks: String,

    /// The coding agent for free-text tasks: a command line (split into argv, no shell) run
    /// in the checkout with the instructions on stdin. Unset: such tasks fail with a clear error.
    #[arg(long, env = "BG_AGENT_AGENT_COMMAND", value_name = "COMMAND")]
    pub agent_command: Option<String>,

    /// The agent's model (the provider's name for it). Unset: the CLI's default.
    #[arg(long, env = "BG_AGENT_AGENT_MODEL", value_name = "MODEL")]
    pub agent_model: Option<String>,

    /// The model API's base URL the agent talks to (a proxy). Unset: the provider's own.
    #[arg(long, env = "BG_AGENT_AGENT_BASE_URL", value_name = "URL")]
    pub agent_base_url: Option<String>,

    /// Most model turns per agent invocation.
    #[arg(
        long,
        env = "BG_AGENT_AGENT_MAX_TURNS",
        default_value = "30",
        value_name = "N"
    )]
    pub agent_max_turns: String,

    /// The agent is stopped once the cost its CLI reports passes this, in US dollars.
    /// Unset: no money limit (turns and time still hold).
    #[arg(long, env = "BG_AGENT_AGENT_BUDGET_USD", value_name = "USD")]
    pub agent_budget_usd: Option<String>,

    /// After a failed validation, the failing output goes back to the agent for up to
    /// this many more rounds. 0: one round only.
    #[arg(
        long,
        env = "BG_AGENT_VERIFIER_ROUNDS",
        default_value = "2",
        value_name = "N"
    )]
    pub verifier_rounds: String,
    /// Bearer token that `GET /metrics` requires (Prometheus' `authorization` setting).
    /// Unset: `/metrics` answers 404, so nothing about the server's work is exposed.
    #[arg(long, env = "BG_AGENT_METRICS_TOKEN", hide_env_values = true, value_name = "TOKEN", value_parser = secret)]
    pub metrics_token: Option<SecretString>,

    /// npm registry the `upgrade` recipe resolves versions from. Unset: npm's default.
    #[arg(long, env = "BG_AGENT_NPM_REGISTRY", value_name = "URL")]
    pub npm_registry: Option<String>,

    /// The coding agent of agent tasks: `command` (BG_AGENT_AGENT_COMMAND), `claude_code`,
    /// `codex`, `gemini`, `aider` or `cline`; all but `command` need a credential
    /// (`bg-agent credentials set`). Unset: `command`. A repository's .github/bg-agent.yml
    /// may choose another.
    #[arg(long, env = "BG_AGENT_AGENT_PROVIDER", value_name = "PROVIDER")]
    pub agent_provider: Option<String>,

    /// Keys that encrypt stored agent credentials and sign-in sessions' GitHub tokens
    /// (AES-256-GCM): base64 of 32 random bytes, or a keyring `id:key,id:key`; the first
    /// encrypts, all decrypt (rotation). Without one, sign-in is refused.
    #[arg(long, env = "BG_AGENT_ENCRYPTION_KEY", hide_env_values = true, value_name = "KEYS", value_parser = secret)]
    pub encryption_key: Option<SecretString>,

    /// Anthropic's API base URL (`credentials test`; Claude Code's endpoint).
    #[arg(
        long,
        env = "BG_AGENT_ANTHROPIC_BASE_URL",
        default_value = "https://api.anthropic.com",
        value_name = "URL"
    )]
    pub anthropic_base_url: String,

    /// OpenAI's API base URL (`credentials test`; Codex's endpoint).
    #[arg(
        long,
        env = "BG_AGENT_OPENAI_BASE_URL",
        default_value = "https://api.openai.com",
        value_name = "URL"
    )]
    pub openai_base_url: String,

    /// Gemini's API base URL (`credentials test`; Gemini CLI's endpoint).
    #[arg(
        long,
        env = "BG_AGENT_GEMINI_BASE_URL",
        default_value = "https://generativelanguage.googleapis.com",
        value_name = "URL"
    )]
    pub gemini_base_url: String,

    /// What the scope guard does with an agent's change that deletes or skips tests, touches
    /// CI files or exceeds the diff budget: `refuse` (the task fails), `flag` (the pull
    /// request lists the findings) or `off`.
    #[arg(
        long,
        env = "BG_AGENT_SCOPE_GUARD",
        default_value = "refuse",
        value_name = "refuse|flag|off"
    )]
    pub scope_guard: String,

    /// The diff budget of an agent's change: most files changed.
    #[arg(
        long,
        env = "BG_AGENT_DIFF_MAX_FILES",
        default_value = "50",
        value_name = "N"
    )]
    pub diff_max_files: String,

    /// The diff budget of an agent's change: most lines added and removed.
    #[arg(
        long,
        env = "BG_AGENT_DIFF_MAX_LINES",
        default_value = "2000",
        value_name = "N"
    )]
    pub diff_max_lines: String,

    /// PEM file of CA certificates runners trust, besides the system's, when they report to
    /// an `https://` BG_AGENT_PUBLIC_URL signed by a private CA.
    #[arg(long, env = "BG_AGENT_CALLBACK_CA_FILE", value_name = "PATH")]
    pub callback_ca_file: Option<String>,

    /// How the local executor isolates runners: `bubblewrap` (each runner in a bubblewrap
    /// sandbox; needs the `bwrap` program) or `off` (development only: runners run as the
    /// server's user and can read its secrets; refused unless BG_AGENT_LISTEN is loopback).
    #[arg(
        long,
        env = "BG_AGENT_SANDBOX",
        default_value = "bubblewrap",
        value_name = "MODE"
    )]
    pub sandbox: String,

    /// Host uid the sandbox runs as when the server runs as root (not 0).
    #[arg(
        long,
        env = "BG_AGENT_SANDBOX_UID",
        default_value = "65534",
        value_name = "UID"
    )]
    pub sandbox_uid: String,

    /// Host gid the sandbox runs as when the server runs as root (not 0).
    #[arg(
        long,
        env = "BG_AGENT_SANDBOX_GID",
        default_value = "65534",
        value_name = "GID"
    )]
    pub sandbox_gid: String,

    /// Most processes and threads of the sandbox's host uid (RLIMIT_NPROC); 0: no limit.
    #[arg(
        long,
        env = "BG_AGENT_SANDBOX_MAX_PROCESSES",
        default_value = "4096",
        value_name = "N"
    )]
    pub sandbox_max_processes: String,

    /// Largest file a sandboxed process may write, in MiB (RLIMIT_FSIZE); also the size
    /// of its private /tmp. 0: no limit.
    #[arg(
        long,
        env = "BG_AGENT_SANDBOX_MAX_FILE_SIZE_MB",
        default_value = "4096",
        value_name = "MIB"
    )]
    pub sandbox_max_file_size_mb: String,

    /// Address space of each sandboxed process, in MiB (RLIMIT_AS); 0: no limit. Node's
    /// WebAssembly needs more than 8192.
    #[arg(
        long,
        env = "BG_AGENT_SANDBOX_MAX_ADDRESS_SPACE_MB",
        default_value = "16384",
        value_name = "MIB"
    )]
    pub sandbox_max_address_space_mb: String,

    /// Where tasks run: `kubernetes` (each task a Job; see the settings below) or `local`
    /// (a child process of the server, in the bubblewrap sandbox). Unset: `kubernetes` when
    /// the server runs in a Kubernetes Pod with a service account token, else `local`.
    #[arg(long, env = "BG_AGENT_EXECUTOR", value_name = "kubernetes|local")]
    pub executor: Option<String>,

    /// Namespace of the runner Jobs and their Secrets. Unset: the kubeconfig context's
    /// namespace, or in a Pod its own.
    #[arg(long, env = "BG_AGENT_KUBERNETES_NAMESPACE", value_name = "NAMESPACE")]
    pub kubernetes_namespace: Option<String>,

    /// Kubeconfig file the Kubernetes executor uses. Unset: the Pod's service account in
    /// a cluster, else KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "BG_AGENT_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<String>,

    /// The runner image of the Jobs (needed by the Kubernetes executor), e.g.
    /// `ghcr.io/OWNER/bg-agent-runner@sha256:...`.
    #[arg(long, env = "BG_AGENT_RUNNER_IMAGE", value_name = "IMAGE")]
    pub runner_image: Option<String>,

    /// CPU of each runner Job, requested and limited alike (a Kubernetes quantity).
    #[arg(
        long,
        env = "BG_AGENT_RUNNER_CPU",
        default_value = "1",
        value_name = "QUANTITY"
    )]
    pub runner_cpu: String,

    /// Memory of each runner Job, requested and limited alike (a Kubernetes quantity).
    #[arg(
        long,
        env = "BG_AGENT_RUNNER_MEMORY",
        default_value = "2Gi",
        value_name = "QUANTITY"
    )]
    pub runner_memory: String,

    /// Where runners report (`POST URL/internal/tasks/ID/events`); with Kubernetes the
    /// server's in-cluster Service, e.g. `http://bg-agent.bg-agent.svc:3000` (`https://`
    /// with BG_AGENT_CALLBACK_CA_FILE for a private CA). Unset: BG_AGENT_PUBLIC_URL.
    #[arg(long, env = "BG_AGENT_CALLBACK_URL", value_name = "URL")]
    pub callback_url: Option<String>,

    /// Kubernetes removes a finished runner Job (its Pod and Secret with it) this long
    /// after it ended (`ttlSecondsAfterFinished`); the server also removes ended tasks'
    /// Jobs when it starts.
    #[arg(
        long,
        env = "BG_AGENT_JOB_TTL_SECONDS",
        default_value = "3600",
        value_name = "SECS"
    )]
    pub job_ttl_seconds: String,

    /// A change in a repository with no validation commands: `draft` (a draft pull request
    /// labelled `bg-agent:unvalidated`, with a note) or `refuse` (the task fails, no PR).
    #[arg(
        long,
        env = "BG_AGENT_UNVALIDATED",
        default_value = "draft",
        value_name = "draft|refuse"
    )]
    pub unvalidated: String,

    /// Webhook bodies and finished tasks' logs older than this many days are purged (tasks,
    /// their audit events and the deliveries' ids are kept). 0: kept forever.
    #[arg(
        long,
        env = "BG_AGENT_RETENTION_DAYS",
        default_value = "30",
        value_name = "DAYS"
    )]
    pub retention_days: String,

    /// Size of the PostgreSQL connection pool.
    #[arg(
        long,
        env = "BG_AGENT_DB_MAX_CONNECTIONS",
        default_value = "16",
        value_name = "N"
    )]
    pub db_max_connections: String,

    /// Most deliveries stored in one commit by the intake writer (group commit).
    #[arg(
        long,
        env = "BG_AGENT_INTAKE_BATCH",
        default_value = "256",
        value_name = "N"
    )]
    pub intake_batch: String,

    /// Intake writer tasks; each commits one batch at a time.
    #[arg(
        long,
        env = "BG_AGENT_INTAKE_WRITERS",
        default_value = "2",
        value_name = "N"
    )]
    pub intake_writers: String,

    /// Most webhook bodies received at once before their signature is checked (each up to
    /// GitHub's 25 MB): what unauthenticated senders can make the server hold is this many
    /// bodies, however many connect. More wait their turn, then get 503.
    #[arg(
        long,
        env = "BG_AGENT_WEBHOOK_CONCURRENCY",
        default_value = "8",
        value_name = "N"
    )]
    pub webhook_concurrency: String,

    /// How long a webhook request waits for its turn to be received before it is answered
    /// 503, in milliseconds.
    #[arg(
        long,
        env = "BG_AGENT_WEBHOOK_WAIT_MS",
        default_value = "2000",
        value_name = "MS"
    )]
    pub webhook_wait_ms: String,

    /// Time a webhook body has to arrive in full once its turn came, in seconds; a slower
    /// one is answered 408 (GitHub itself gives up on a delivery after 10 s).
    #[arg(
        long,
        env = "BG_AGENT_WEBHOOK_READ_TIMEOUT_SECS",
        default_value = "10",
        value_name = "SECS"
    )]
    pub webhook_read_timeout_secs: String,

    /// Delivery workers in this process; 0 makes an intake-only replica (others process).
    #[arg(long, env = "BG_AGENT_WORKERS", default_value = "2", value_name = "N")]
    pub workers: String,

    /// How often an idle worker looks for deliveries stored by other replicas, in milliseconds.
    #[arg(
        long,
        env = "BG_AGENT_WORKER_POLL_MS",
        default_value = "1000",
        value_name = "MS"
    )]
    pub worker_poll_ms: String,

    /// Log format, `text` or `json`; levels come from RUST_LOG (default `info`).
    #[arg(
        long,
        env = "BG_AGENT_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: String,
}

fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value.to_owned()))
}

/// One declared setting, as the clap definitions state it.
#[derive(Debug, Clone)]
pub struct Declaration {
    /// clap's id (the field's name).
    pub id: String,
    pub env: String,
    pub flag: String,
    pub default: Option<String>,
    pub help: String,
    /// Its value is never shown (`--help` hides it from the environment too).
    pub secret: bool,
}

impl Declaration {
    fn of(arg: &Arg) -> Option<Self> {
        Some(Self {
            id: arg.get_id().to_string(),
            env: arg.get_env()?.to_str()?.to_owned(),
            flag: arg.get_long()?.to_owned(),
            default: arg
                .get_default_values()
                .first()
                .and_then(|v| v.to_str())
                .map(str::to_owned),
            help: arg
                .get_long_help()
                .or(arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default(),
            secret: arg.is_hide_env_values_set(),
        })
    }

    /// The config file's key for this setting.
    pub fn file_key(&self) -> String {
        self.flag.replace('-', "_")
    }
}

impl Settings {
    /// Adds the settings to a (sub)command, so its `--help` documents them.
    pub fn add_to(command: Command) -> Command {
        <Self as Args>::augment_args(command)
    }

    /// Every setting, in declaration order.
    pub fn declarations() -> Vec<Declaration> {
        Self::add_to(Command::new("bg-agent"))
            .get_arguments()
            .filter_map(Declaration::of)
            .collect()
    }

    /// The declarations as a parser of `--flag=value` arguments only: the process
    /// environment is not read (callers pass variables in), and a later value of a flag
    /// replaces an earlier one (how layers are stacked).
    pub(super) fn parser() -> Command {
        Self::add_to(Command::new("bg-agent"))
            .no_binary_name(true)
            .args_override_self(true)
            .disable_help_flag(true)
            .mut_args(|arg| arg.env(None))
    }

    /// The declaration with clap id `id`; the ids are this struct's field names.
    pub(super) fn declaration(id: &str) -> Option<Declaration> {
        Self::declarations().into_iter().find(|d| d.id == id)
    }
}
