//! What a runner is told and what it tells the server: the task spec it receives in its
//! environment and the events it posts to `POST /internal/tasks/{id}/events`. Both sides
//! (the server's engine and `bg-agent runner`) share these types, so the protocol has one
//! definition.

use std::collections::BTreeMap;

use crate::task::{Phase, Recipe, TaskState};

/// Environment variable holding the [`TaskSpec`] as JSON (not secret).
pub const SPEC_ENV: &str = "BG_AGENT_TASK_SPEC";
/// Environment variables the executor sets; the secrets are never passed in argv.
pub const TASK_ID_ENV: &str = "BG_AGENT_TASK_ID";
pub const CALLBACK_URL_ENV: &str = "BG_AGENT_CALLBACK_URL";
pub const TASK_SECRET_ENV: &str = "BG_AGENT_TASK_SECRET";
pub const RUNNER_TOKEN_ENV: &str = "BG_AGENT_RUNNER_TOKEN";
/// Optional: PEM certificates the runner trusts for an `https://` callback URL, besides
/// the system's (a private CA in front of the server). Not secret.
pub const CALLBACK_CA_ENV: &str = "BG_AGENT_CALLBACK_CA";
/// The coding agent's provider credential (an API key). Secret: the runner reads and
/// wipes it, and hands it only to the agent process, as the provider's own variable.
pub const AGENT_CREDENTIAL_ENV: &str = "BG_AGENT_AGENT_CREDENTIAL";

/// At most this many log lines per task are kept; later ones are counted, not stored.
pub const MAX_LOG_LINES: usize = 2000;
/// Each validation command's output tail, in characters.
pub const OUTPUT_TAIL_CHARS: usize = 4000;

/// Everything the runner needs to know about its task, apart from the secrets.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSpec {
    pub task_id: i64,
    /// `owner/name`.
    pub repository: String,
    /// HTTPS clone URL; the runner authenticates as `x-access-token:<runner token>`.
    pub clone_url: String,
    pub default_branch: String,
    /// The branch to push, `bg-agent/<task-id>-<slug>`.
    pub branch: String,
    pub recipe: Recipe,
    /// The template's bound parameters (for `npm_upgrade`: `package` and `version`).
    pub params: BTreeMap<String, String>,
    /// Rendered instructions; a coding agent reads them on stdin.
    pub instructions: String,
    /// The program (argv) the `command` provider runs; `None` when none is configured.
    pub agent_command: Option<Vec<String>>,
    /// The template the task was made from (`None`: free text).
    #[serde(default)]
    pub template: Option<String>,
    /// Which coding agent the `agent` recipe runs and its limits; `None`: the `command`
    /// provider with [`TaskSpec::agent_command`] and the defaults (older servers). The
    /// server has chosen it (the repository's `.github/bg-agent.yml` for the template,
    /// else the installation's default, else its own) and handed over that provider's
    /// credential: the runner does not choose again.
    #[serde(default)]
    pub agent: Option<AgentSpec>,
    /// A retry of a task whose agent change was kept starts from that change: the
    /// earlier attempt's WIP branch ([`wip_branch`], made by the server, never user
    /// text), fetched after the clone and applied to the checkout. `None`: from the
    /// default branch alone.
    #[serde(default)]
    pub resume_branch: Option<String>,
    /// Commit identity: the App's bot user.
    pub author_name: String,
    pub author_email: String,
    /// First line of the commit message; it names the task.
    pub commit_title: String,
    /// The rest of the commit message. Both are made by the server
    /// (`task::render::commit_message`), with any user text in them made inert: a commit
    /// on the default branch closes the issues its message names.
    #[serde(default)]
    pub commit_body: String,
    /// npm registry for the `npm_upgrade` recipe (`None`: npm's default).
    pub npm_registry: Option<String>,
    /// What the scope guard does with an agent's change before it is pushed.
    #[serde(default)]
    pub scope: ScopePolicy,
}

/// The scope guard's policy: what an agent's change may not do unnoticed (delete or skip
/// tests, touch CI configuration, exceed the diff budget), and what happens if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScopePolicy {
    #[serde(default)]
    pub mode: ScopeMode,
    #[serde(default = "ScopePolicy::default_max_files")]
    pub max_files: u32,
    #[serde(default = "ScopePolicy::default_max_lines")]
    pub max_lines: u32,
}

impl ScopePolicy {
    pub const DEFAULT_MAX_FILES: u32 = 50;
    pub const DEFAULT_MAX_LINES: u32 = 2000;

    fn default_max_files() -> u32 {
        Self::DEFAULT_MAX_FILES
    }

    fn default_max_lines() -> u32 {
        Self::DEFAULT_MAX_LINES
    }

    /// The stricter of the two, field by field: a repository's configuration may tighten
    /// the server's policy, never loosen it.
    pub fn tightened_by(self, other: Self) -> Self {
        Self {
            mode: self.mode.max(other.mode),
            max_files: self.max_files.min(other.max_files),
            max_lines: self.max_lines.min(other.max_lines),
        }
    }
}

impl Default for ScopePolicy {
    fn default() -> Self {
        Self {
            mode: ScopeMode::default(),
            max_files: Self::DEFAULT_MAX_FILES,
            max_lines: Self::DEFAULT_MAX_LINES,
        }
    }
}

/// Ordered from loosest to strictest.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ScopeMode {
    /// Nothing is checked.
    Off,
    /// The change is pushed; the check run and the pull request list the findings.
    Flag,
    /// The task fails with the findings; nothing is pushed.
    #[default]
    Refuse,
}

impl std::str::FromStr for ScopeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "refuse" => Ok(Self::Refuse),
            "flag" => Ok(Self::Flag),
            "off" => Ok(Self::Off),
            _ => Err("expected `refuse`, `flag` or `off`".to_owned()),
        }
    }
}

/// The coding-agent CLIs the runner can drive (`crates/runner/src/agent`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AgentProvider {
    ClaudeCode,
    Codex,
    Aider,
    Cline,
    Gemini,
    /// A configured program given the instructions on stdin.
    Command,
}

impl AgentProvider {
    pub const ALL: [AgentProvider; 6] = [
        AgentProvider::ClaudeCode,
        AgentProvider::Codex,
        AgentProvider::Aider,
        AgentProvider::Cline,
        AgentProvider::Gemini,
        AgentProvider::Command,
    ];

    /// The name used in configuration (`claude_code`, `codex`...).
    pub fn name(self) -> &'static str {
        match self {
            AgentProvider::ClaudeCode => "claude_code",
            AgentProvider::Codex => "codex",
            AgentProvider::Aider => "aider",
            AgentProvider::Cline => "cline",
            AgentProvider::Gemini => "gemini",
            AgentProvider::Command => "command",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The program the provider runs, looked for on `PATH` (`None`: configured argv).
    pub fn program(self) -> Option<&'static str> {
        match self {
            AgentProvider::ClaudeCode => Some("claude"),
            AgentProvider::Codex => Some("codex"),
            AgentProvider::Aider => Some("aider"),
            AgentProvider::Cline => Some("cline"),
            AgentProvider::Gemini => Some("gemini"),
            AgentProvider::Command => None,
        }
    }

    /// How people call it.
    pub fn display(self) -> &'static str {
        match self {
            AgentProvider::ClaudeCode => "Claude Code",
            AgentProvider::Codex => "Codex CLI",
            AgentProvider::Aider => "Aider",
            AgentProvider::Cline => "Cline",
            AgentProvider::Gemini => "Gemini CLI",
            AgentProvider::Command => "agent command",
        }
    }
}

fn default_verifier_rounds() -> u32 {
    2
}

fn default_max_turns() -> u32 {
    30
}

/// The coding agent a task runs, and its limits.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentSpec {
    pub provider: AgentProvider,
    /// The provider's model name; `None`: the CLI's default.
    #[serde(default)]
    pub model: Option<String>,
    /// Turns (model requests with tool use) per invocation.
    #[serde(default = "default_max_turns")]
    pub max_turns: u32,
    /// The agent is stopped once its reported cost passes this.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// Further rounds after a failed validation, each given the failing output.
    #[serde(default = "default_verifier_rounds")]
    pub verifier_rounds: u32,
    /// The model API's base URL (a proxy, or the test kit's scripted model API).
    #[serde(default)]
    pub base_url: Option<String>,
    /// One invocation of the CLI is killed after this long.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

impl AgentSpec {
    pub fn new(provider: AgentProvider) -> Self {
        Self {
            provider,
            model: None,
            max_turns: default_max_turns(),
            budget_usd: None,
            verifier_rounds: default_verifier_rounds(),
            base_url: None,
            timeout_secs: None,
        }
    }
}

/// Tokens and money one agent invocation used, as its CLI reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `None` when the CLI does not report a cost.
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

impl Usage {
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens + other.input_tokens,
            output_tokens: self.output_tokens + other.output_tokens,
            cost_usd: match (self.cost_usd, other.cost_usd) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
            },
        }
    }
}

/// Where a log line comes from, lowest first: `output` is what the commands printed; the
/// others are the runner's own lines (`info`: what it does, such as a command it starts;
/// `warn`: something a person should look at, such as a command stopped or a change kept
/// on a WIP branch; `error`: why a step failed). A filter by level keeps that level and
/// the ones above it.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    #[default]
    Output,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub const ALL: [LogLevel; 4] = [Self::Output, Self::Info, Self::Warn, Self::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Output => "output",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == text)
    }

    fn is_output(&self) -> bool {
        *self == Self::Output
    }

    /// The levels a filter at `self` keeps: this one and those above it.
    pub fn and_above(self) -> impl Iterator<Item = LogLevel> {
        Self::ALL.into_iter().filter(move |l| *l >= self)
    }
}

/// One report from the runner. `seq` starts at 1 and grows by one per report; the server
/// applies each sequence number once, so a report retried after a lost answer is harmless.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunnerReport {
    pub seq: u64,
    pub event: RunnerEvent,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunnerEvent {
    /// Entering a phase, or progress within it (0–100 overall).
    Phase { phase: Phase, progress: Option<u8> },
    /// Lines of one level, already redacted by the runner (the server redacts again).
    Log {
        lines: Vec<String>,
        /// Absent means `output` (what the commands printed).
        #[serde(default, skip_serializing_if = "LogLevel::is_output")]
        level: LogLevel,
    },
    /// One validation command finished.
    Validation(ValidationResult),
    /// What the scope guard found in the change (sent before `Finished`, once).
    ScopeFindings { findings: Vec<String> },
    /// One invocation of the coding agent ended: round 1 is the change, later rounds
    /// answer a failed validation.
    AgentRound {
        round: u32,
        provider: AgentProvider,
        /// The model it was told to use; `None`: the CLI's default.
        #[serde(default)]
        model: Option<String>,
        usage: Usage,
    },
    /// The run is over; nothing follows.
    Finished(RunOutcome),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValidationResult {
    /// The command as a person would type it.
    pub command: String,
    /// `None` when a signal ended it (or it could not start).
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The last [`OUTPUT_TAIL_CHARS`] characters of stdout and stderr, interleaved.
    pub output_tail: String,
}

impl ValidationResult {
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RunOutcome {
    /// Changed, validated, committed and pushed to the spec's branch.
    Pushed {
        branch: String,
        commit: String,
        changed_files: Vec<String>,
    },
    /// The repository already was as asked: nothing to commit, no PR.
    NoChanges,
    /// Something failed; nothing was pushed. `failing_command` names the validation
    /// command that failed, if that was the cause.
    Failed {
        error: String,
        failing_command: Option<String>,
        /// The agent's unvalidated change, pushed so that no work is lost
        /// (`bg-agent/wip/<task-id>`); no PR is opened for it.
        #[serde(default)]
        wip_branch: Option<String>,
    },
}

/// Where a failed task's agent change is kept.
pub fn wip_branch(task_id: i64) -> String {
    format!("{WIP_PREFIX}{task_id}")
}

/// The prefix of every WIP branch.
pub const WIP_PREFIX: &str = "bg-agent/wip/";

/// Whether `branch` is a WIP branch as [`wip_branch`] makes them (`bg-agent/wip/<id>`).
pub fn is_wip_branch(branch: &str) -> bool {
    branch
        .strip_prefix(WIP_PREFIX)
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

impl RunOutcome {
    /// The state a task ends in with this outcome.
    pub fn final_state(&self) -> TaskState {
        match self {
            RunOutcome::Pushed { .. } | RunOutcome::NoChanges => TaskState::Succeeded,
            RunOutcome::Failed { .. } => TaskState::Failed,
        }
    }
}

/// Removes secrets from text: the given ones and the forms they take in HTTP headers
/// (base64, git's `x-access-token:` Basic credentials), and anything shaped like a
/// GitHub token or a credential in a URL or header. Runner and server both apply it: a
/// token must not reach a log even if one side forgot.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new<S: AsRef<str>>(secrets: impl IntoIterator<Item = S>) -> Self {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut all = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.is_empty() {
                continue;
            }
            all.push(secret.to_owned());
            all.push(b64.encode(secret));
            all.push(b64.encode(format!("x-access-token:{secret}")));
        }
        // Longest first, so a secret inside another's encoding cannot leave a part behind.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        all.dedup();
        Self { secrets: all }
    }

    pub fn redact(&self, text: &str) -> String {
        static PATTERNS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
            // ghp_/gho_/ghu_/ghs_/ghr_ tokens, fine-grained PATs, `user:secret@` in URLs
            // and `Authorization:` header values.
            regex::Regex::new(
                r"(?i)\b(gh[opusr]_[A-Za-z0-9_]{16,}|github_pat_[A-Za-z0-9_]{20,})|(://[^/\s:@]+:)[^@\s/]+@|(authorization:\s*(?:basic|bearer|token)\s+)\S+",
            )
            .unwrap_or_else(|_| unreachable!("the redaction pattern is a valid constant"))
        });
        let text = self.secrets.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret, REDACTED)
        });
        if !PATTERNS.is_match(&text) {
            return text;
        }
        PATTERNS
            .replace_all(&text, |caps: &regex::Captures<'_>| {
                if let Some(prefix) = caps.get(2) {
                    format!("{}{REDACTED}@", prefix.as_str())
                } else if let Some(prefix) = caps.get(3) {
                    format!("{}{REDACTED}", prefix.as_str())
                } else {
                    REDACTED.to_owned()
                }
            })
            .into_owned()
    }
}

pub const REDACTED: &str = "[REDACTED]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_covers_given_secrets_and_token_shapes() {
        let none = Redactor::default();
        assert_eq!(
            Redactor::new(["s3cr3t-value", ""])
                .redact("cloning with s3cr3t-value and s3cr3t-value"),
            "cloning with [REDACTED] and [REDACTED]"
        );
        assert_eq!(
            none.redact("token ghs_16C7e42F292c6912E7710c838347Ae178B4a here"),
            "token [REDACTED] here"
        );
        assert_eq!(
            none.redact("fatal: https://x-access-token:abc.def@github.com/a/b"),
            "fatal: https://x-access-token:[REDACTED]@github.com/a/b"
        );
        assert_eq!(
            none.redact("Authorization: Basic eC1hY2Nlc3M="),
            "Authorization: Basic [REDACTED]"
        );
        assert_eq!(none.redact("npm test passed"), "npm test passed");
    }

    #[test]
    fn reports_have_a_stable_wire_form() {
        let report = RunnerReport {
            seq: 3,
            event: RunnerEvent::Phase {
                phase: Phase::Validating,
                progress: Some(72),
            },
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"seq": 3, "event": {"type": "phase", "phase": "validating", "progress": 72}})
        );
        let finished = RunnerEvent::Finished(RunOutcome::Failed {
            error: "npm test failed".into(),
            failing_command: Some("npm test".into()),
            wip_branch: None,
        });
        let json = serde_json::to_value(&finished).unwrap();
        assert_eq!(json["type"], "finished");
        assert_eq!(json["result"], "failed");
        assert_eq!(
            serde_json::from_value::<RunnerEvent>(json).unwrap(),
            finished
        );
    }

    #[test]
    fn log_reports_carry_their_level_and_output_is_the_default() {
        let output = serde_json::json!({"type": "log", "lines": ["npm ok"]});
        assert_eq!(
            serde_json::from_value::<RunnerEvent>(output.clone()).unwrap(),
            RunnerEvent::Log {
                lines: vec!["npm ok".into()],
                level: LogLevel::Output
            }
        );
        let warn = RunnerEvent::Log {
            lines: vec!["stopping npm".into()],
            level: LogLevel::Warn,
        };
        let json = serde_json::to_value(&warn).unwrap();
        assert_eq!(json["level"], "warn");
        assert_eq!(serde_json::from_value::<RunnerEvent>(json).unwrap(), warn);
        assert!(
            serde_json::from_value::<RunnerEvent>(
                serde_json::json!({"type": "log", "lines": [], "level": "loud"})
            )
            .is_err()
        );
        assert_eq!(
            LogLevel::Warn.and_above().collect::<Vec<_>>(),
            [LogLevel::Warn, LogLevel::Error]
        );
        assert_eq!(LogLevel::parse("info"), Some(LogLevel::Info));
        assert_eq!(LogLevel::parse("INFO"), None);
    }
}
