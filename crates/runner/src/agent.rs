//! The coding agent: one module per CLI (`agent/<provider>.rs`) saying how it is invoked
//! non-interactively and how its machine-readable output reads; this module runs an
//! invocation with the limits (turns, money, time) and reports what it used.
//!
//! The provider credential reaches the agent process only, as the provider's own
//! variable: never validation, never git (`process::ChildEnv` holds no secret; the agent's
//! environment is that plus the credential).

pub mod aider;
pub mod claude_code;
pub mod cline;
pub mod codex;
pub mod command;
pub mod gemini;

use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::events::{EventError, EventSender};
use crate::process::{self, ChildEnv, ProcessError, Verdict};
use bg_agent_core::output;
use bg_agent_core::protocol::{AgentProvider, AgentSpec, OUTPUT_TAIL_CHARS, TaskSpec, Usage};

/// One invocation of a CLI is killed after this long unless the spec says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The last lines of a failed agent's output that go into the task's error.
const LAST_LINES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("no coding agent is configured")]
    NoAgent,
    #[error("{provider} failed ({status}); its last output:\n{last_lines}")]
    Failed {
        provider: &'static str,
        status: String,
        last_lines: String,
    },
    #[error("{provider} was stopped: {reason}; its last output:\n{last_lines}")]
    Stopped {
        provider: &'static str,
        reason: String,
        last_lines: String,
    },
    #[error("cannot write the agent's settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Report(#[from] EventError),
}

/// How one provider is run: argv (no user text in it: the prompt goes to stdin or a
/// file), the non-secret variables it needs, and the variable that carries the
/// credential.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The provider's own variable for the API key (`ANTHROPIC_API_KEY`...).
    pub credential_var: Option<&'static str>,
    pub stdin: Option<String>,
    /// Files the CLI reads its settings from, written under its `HOME` first (path
    /// relative to it, content).
    pub home_files: Vec<(String, String)>,
}

/// What the CLI's output said, as it went.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub usage: Usage,
    /// Model turns seen so far.
    pub turns: u32,
    /// The CLI's final answer, if it gave one.
    pub result: Option<String>,
    /// The CLI said it ended in error (it may still exit 0).
    pub error: Option<String>,
}

/// Reads one output line of a provider: what to log, and updates `seen`.
pub type Observer = fn(&str, &mut Observation) -> Option<String>;

/// Everything a round needs besides the prompt.
pub struct AgentContext<'a> {
    pub spec: &'a TaskSpec,
    pub agent: &'a AgentSpec,
    pub repo_dir: &'a Path,
    /// Where the CLI keeps its own state (its `HOME`): outside the checkout.
    pub home: &'a Path,
    pub env: &'a ChildEnv,
    pub credential: Option<&'a SecretString>,
    pub events: &'a EventSender,
    /// The earlier attempt's branch whose change the checkout starts from (a retry).
    pub resumed_from: Option<&'a str>,
}

/// Runs the agent once with `prompt` in the checkout; the usage it reported.
pub async fn invoke(ctx: &AgentContext<'_>, prompt: &str) -> Result<Usage, AgentError> {
    let provider = ctx.agent.provider;
    let (invocation, observer): (Invocation, Observer) = match provider {
        AgentProvider::ClaudeCode => (
            claude_code::invocation(ctx.agent, prompt),
            claude_code::observe,
        ),
        AgentProvider::Codex => (codex::invocation(ctx.agent, prompt), codex::observe),
        AgentProvider::Command => (command::invocation(ctx.spec, prompt)?, command::observe),
        AgentProvider::Gemini => (gemini::invocation(ctx.agent, prompt), gemini::observe),
        AgentProvider::Aider => (
            aider::invocation(ctx.agent, prompt, ctx.repo_dir, ctx.home),
            aider::observe,
        ),
        AgentProvider::Cline => (
            cline::invocation(ctx.agent, prompt, ctx.credential.map(|c| c.expose_secret())),
            cline::observe,
        ),
    };
    let program = invocation.argv.first().cloned().unwrap_or_default();
    for (path, content) in &invocation.home_files {
        let path = ctx.home.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| AgentError::Settings(e.to_string()))?;
        }
        std::fs::write(&path, content).map_err(|e| AgentError::Settings(e.to_string()))?;
    }
    let mut env = ctx.env.with("HOME", ctx.home);
    for (name, value) in &invocation.env {
        env = env.with(name, value);
    }
    if let (Some(var), Some(credential)) = (invocation.credential_var, ctx.credential) {
        env = env.with(var, credential.expose_secret());
    }
    ctx.events
        .info(format!("$ {} < instructions", invocation.argv.join(" ")))
        .await?;
    let mut command = env
        .command(&invocation.argv, ctx.repo_dir)
        .ok_or(AgentError::NoAgent)?;
    // Its own process group: a stop (budget, time) ends the shells and tools it started.
    command.process_group(0);
    let budget = ctx.agent.budget_usd;
    let max_turns = ctx.agent.max_turns;
    let mut seen = Observation::default();
    let mut observe = |line: &str| {
        let log = observer(line, &mut seen);
        if let (Some(budget), Some(cost)) = (budget, seen.usage.cost_usd)
            && cost > budget
        {
            return Verdict::Stop(format!(
                "its reported cost ${cost:.4} passed the budget of ${budget:.2}"
            ));
        }
        // The CLIs that take a turn limit stop themselves; this catches the others.
        if max_turns > 0 && seen.turns > max_turns {
            return Verdict::Stop(format!("it passed the limit of {max_turns} turns"));
        }
        Verdict::Log(log)
    };
    let limit = ctx
        .agent
        .timeout_secs
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let end = process::run_observed(
        command,
        &program,
        invocation.stdin.as_deref().map(str::as_bytes),
        ctx.events,
        OUTPUT_TAIL_CHARS,
        &mut observe,
        Some(limit),
    )
    .await?;
    let last_lines = last_lines(&end.finished.tail);
    if let Some(reason) = end.stopped {
        return Err(AgentError::Stopped {
            provider: provider.display(),
            reason,
            last_lines,
        });
    }
    if !end.finished.success() {
        return Err(AgentError::Failed {
            provider: provider.display(),
            status: match end.finished.code {
                Some(code) => format!("exit {code}"),
                None => "killed by a signal".into(),
            },
            last_lines,
        });
    }
    if let Some(error) = seen.error {
        return Err(AgentError::Failed {
            provider: provider.display(),
            status: error,
            last_lines,
        });
    }
    Ok(seen.usage)
}

fn last_lines(tail: &str) -> String {
    let lines: Vec<&str> = tail.lines().collect();
    lines[lines.len().saturating_sub(LAST_LINES)..]
        .iter()
        .map(|l| output::clip_line(l, 300).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first round's prompt: the task's instructions (an untrusted issue's text is
/// already fenced and marked in them), the rules of the workspace, and for a retry that
/// starts from an earlier attempt's change, that it does.
pub fn first_prompt(spec: &TaskSpec, resumed_from: Option<&str>) -> String {
    let mut prompt = format!("{}\n\n{}", spec.instructions.trim_end(), WORKSPACE_RULES);
    if let Some(branch) = resumed_from {
        prompt.push_str(&format!(
            "\n\nAn earlier attempt at this task did not pass the checks; its change (kept on \
             branch {branch}) is already in the working tree. Continue from it."
        ));
    }
    prompt
}

const WORKSPACE_RULES: &str = "You work in a checkout of the repository (the current \
directory). Change files only inside it. Do not commit, push or open pull requests: when \
you stop, bg-agent runs the repository's checks on your change and opens the pull request.";

/// A later round's prompt: the instructions again, and what failed with the end of its
/// output, in a fence the output cannot close.
pub fn feedback_prompt(spec: &TaskSpec, command: &str, reason: &str, tail: &str) -> String {
    let longest = tail.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!(
        "{}\n\n{}\n\nYour change is in the working tree, but it failed the repository's checks: \
         `{command}` {reason}. The end of its output:\n\n{fence}text\n{}\n{fence}\n\nFix the \
         change so that the checks pass.",
        spec.instructions.trim_end(),
        WORKSPACE_RULES,
        tail.trim_end(),
    )
}

/// The first line of `text`, clipped: what a log line shows of a model's message.
pub(crate) fn summary(text: &str) -> String {
    let first = text.trim().lines().next().unwrap_or_default();
    output::clip_line(first, 200).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_fences_cannot_be_closed_by_the_output() {
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "task_id": 1, "repository": "o/r", "clone_url": "x", "default_branch": "main",
            "branch": "b", "recipe": "agent", "params": {}, "instructions": "Fix it.",
            "agent_command": null, "author_name": "a", "author_email": "e",
            "commit_title": "t", "npm_registry": null
        }))
        .unwrap();
        let prompt = feedback_prompt(&spec, "npm test", "exited 1", "x\n````\nnot ok 1\n");
        assert!(
            prompt.contains("`````text\nx\n````\nnot ok 1\n`````"),
            "{prompt}"
        );
        assert!(prompt.starts_with("Fix it.\n\n"));
    }
}
