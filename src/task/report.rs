//! What a runner is told and what it tells the server: the task spec it receives in its
//! environment and the events it posts to `POST /internal/tasks/{id}/events`. Both sides
//! (the server's engine and `bg-agent runner`) share these types, so the protocol has one
//! definition.

use std::collections::BTreeMap;

use super::{Phase, Recipe, TaskState};

/// Environment variable holding the [`TaskSpec`] as JSON (not secret).
pub const SPEC_ENV: &str = "BG_AGENT_TASK_SPEC";
/// Environment variables the executor sets; the secrets are never passed in argv.
pub const TASK_ID_ENV: &str = "BG_AGENT_TASK_ID";
pub const CALLBACK_URL_ENV: &str = "BG_AGENT_CALLBACK_URL";
pub const TASK_SECRET_ENV: &str = "BG_AGENT_TASK_SECRET";
pub const RUNNER_TOKEN_ENV: &str = "BG_AGENT_RUNNER_TOKEN";

/// At most this many log lines per task are kept; later ones are counted, not stored.
pub const MAX_LOG_LINES: usize = 2000;
/// Each validation command's output tail, in characters.
pub const OUTPUT_TAIL_CHARS: usize = 4000;

/// Everything the runner needs to know about its task, apart from the secrets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// The program (argv) the `agent` recipe runs; `None` when none is configured.
    pub agent_command: Option<Vec<String>>,
    /// Commit identity: the App's bot user.
    pub author_name: String,
    pub author_email: String,
    /// First line of the commit message; it names the task.
    pub commit_title: String,
    /// npm registry for the `npm_upgrade` recipe (`None`: npm's default).
    pub npm_registry: Option<String>,
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
    /// Output lines, already redacted by the runner (the server redacts again).
    Log { lines: Vec<String> },
    /// One validation command finished.
    Validation(ValidationResult),
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
    },
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

/// Replaces the given secrets, and anything shaped like a GitHub token or a credential
/// in a URL or header, in one line of output. Runner and server both apply it: a token
/// must not reach a log even if one side forgot.
pub fn redact<S: AsRef<str>>(line: &str, secrets: &[S]) -> String {
    static PATTERNS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        // ghp_/gho_/ghu_/ghs_/ghr_ tokens, fine-grained PATs, `user:secret@` in URLs and
        // `Authorization:` header values.
        regex::Regex::new(
            r"(?i)\b(gh[opusr]_[A-Za-z0-9_]{16,}|github_pat_[A-Za-z0-9_]{20,})|(://[^/\s:@]+:)[^@\s/]+@|(authorization:\s*(?:basic|bearer|token)\s+)\S+",
        )
        .unwrap_or_else(|_| unreachable!("the redaction pattern is a valid constant"))
    });
    let mut line = secrets
        .iter()
        .map(AsRef::as_ref)
        .filter(|s| s.len() >= 4)
        .fold(line.to_owned(), |line, secret| {
            line.replace(secret, REDACTED)
        });
    if PATTERNS.is_match(&line) {
        line = PATTERNS
            .replace_all(&line, |caps: &regex::Captures<'_>| {
                if let Some(prefix) = caps.get(2) {
                    format!("{}{REDACTED}@", prefix.as_str())
                } else if let Some(prefix) = caps.get(3) {
                    format!("{}{REDACTED}", prefix.as_str())
                } else {
                    REDACTED.to_owned()
                }
            })
            .into_owned();
    }
    line
}

pub const REDACTED: &str = "[REDACTED]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_covers_given_secrets_and_token_shapes() {
        const NONE: &[&str] = &[];
        assert_eq!(
            redact(
                "cloning with s3cr3t-value and s3cr3t-value",
                &["s3cr3t-value", ""]
            ),
            "cloning with [REDACTED] and [REDACTED]"
        );
        assert_eq!(
            redact("token ghs_16C7e42F292c6912E7710c838347Ae178B4a here", NONE),
            "token [REDACTED] here"
        );
        assert_eq!(
            redact("fatal: https://x-access-token:abc.def@github.com/a/b", NONE),
            "fatal: https://x-access-token:[REDACTED]@github.com/a/b"
        );
        assert_eq!(
            redact("Authorization: Basic eC1hY2Nlc3M=", NONE),
            "Authorization: Basic [REDACTED]"
        );
        assert_eq!(redact("npm test passed", NONE), "npm test passed");
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
        });
        let json = serde_json::to_value(&finished).unwrap();
        assert_eq!(json["type"], "finished");
        assert_eq!(json["result"], "failed");
        assert_eq!(
            serde_json::from_value::<RunnerEvent>(json).unwrap(),
            finished
        );
    }
}
