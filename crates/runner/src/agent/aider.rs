//! Aider (PyPI `aider-chat`, pinned in `.ci/run`, in a virtual environment of its own):
//! one non-interactive message (`--message-file`, written under the agent's `HOME`: the
//! prompt never goes in argv), `--yes-always`, no commits of its own, its history files
//! outside the checkout, and the OpenAI-compatible API (`--openai-api-base`,
//! `OPENAI_API_KEY`, a model `openai/<name>`). Aider does not use tool calls: the model
//! answers with edits in Aider's `whole` format (the file's path, then its new content
//! in a fence), which Aider applies. It does not read `AGENTS.md` by itself: the file is
//! passed read-only with `--read` when the repository has one (with `CONVENTIONS.md`).
//! It prints `Tokens: N sent, M received. Cost: $x message, $y session.`; one message is
//! its own turn limit (plus its few reflections on a failed edit).

use std::path::Path;

use super::{Invocation, Observation};
use bg_agent_core::protocol::{AgentSpec, Usage};

/// Under the agent's `HOME`.
pub const PROMPT_FILE: &str = ".bg-agent/prompt.md";

pub fn invocation(agent: &AgentSpec, prompt: &str, repo_dir: &Path, home: &Path) -> Invocation {
    let model = agent
        .model
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or("gpt-4.1");
    let mut argv: Vec<String> = [
        "aider",
        "--yes-always",
        "--no-auto-commits",
        "--no-dirty-commits",
        "--no-gitignore",
        "--no-check-update",
        "--no-show-release-notes",
        "--no-analytics",
        "--no-pretty",
        "--no-fancy-input",
        "--no-stream",
        "--map-tokens",
        "0",
        "--edit-format",
        "whole",
    ]
    .map(String::from)
    .to_vec();
    argv.push("--model".into());
    argv.push(format!("openai/{model}"));
    if let Some(base) = agent.base_url.as_deref().filter(|b| !b.is_empty()) {
        argv.push("--openai-api-base".into());
        argv.push(base.to_owned());
    }
    for (flag, file) in [
        ("--chat-history-file", ".bg-agent/aider.chat.history.md"),
        ("--input-history-file", ".bg-agent/aider.input.history"),
        ("--message-file", PROMPT_FILE),
    ] {
        argv.push(flag.into());
        argv.push(home.join(file).display().to_string());
    }
    for instructions in ["AGENTS.md", "CONVENTIONS.md"] {
        if repo_dir.join(instructions).is_file() {
            argv.push("--read".into());
            argv.push(instructions.into());
        }
    }
    Invocation {
        argv,
        // litellm's prices ship with it; it must not fetch them.
        env: vec![("LITELLM_LOCAL_MODEL_COST_MAP".into(), "True".into())],
        credential_var: Some("OPENAI_API_KEY"),
        stdin: None,
        home_files: vec![(PROMPT_FILE.into(), prompt.to_owned())],
    }
}

/// Aider's plain output: usage from its `Tokens:` lines; every line is logged.
pub fn observe(line: &str, seen: &mut Observation) -> Option<String> {
    let trimmed = line.trim();
    if let Some(rest) = trimmed.strip_prefix("Tokens:") {
        seen.turns += 1;
        let (tokens, cost) = rest.split_once("Cost:").unwrap_or((rest, ""));
        let mut sent = 0;
        let mut received = 0;
        for part in tokens.split(',') {
            let part = part.trim().trim_end_matches('.');
            if let Some(n) = part.strip_suffix(" sent") {
                sent = count(n);
            } else if let Some(n) = part.strip_suffix(" received") {
                received = count(n);
            }
        }
        let session_cost = cost
            .split(',')
            .find_map(|p| p.trim().trim_end_matches('.').strip_suffix(" session"))
            .and_then(|c| c.trim().trim_start_matches('$').parse::<f64>().ok());
        seen.usage = Usage {
            input_tokens: seen.usage.input_tokens + sent,
            output_tokens: seen.usage.output_tokens + received,
            cost_usd: session_cost.or(seen.usage.cost_usd),
        };
    }
    Some(line.to_owned())
}

/// `1,234`, `1.2k`, `3M` as Aider prints them.
fn count(text: &str) -> u64 {
    let text = text.trim().replace(',', "");
    let (number, scale) = match text.chars().last() {
        Some('k') => (&text[..text.len() - 1], 1_000.0),
        Some('M') => (&text[..text.len() - 1], 1_000_000.0),
        _ => (text.as_str(), 1.0),
    };
    number
        .parse::<f64>()
        .map(|n| (n * scale).round() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_comes_from_the_tokens_line() {
        let mut seen = Observation::default();
        observe(
            "Tokens: 2.5k sent, 120 received. Cost: $0.0061 message, $0.0061 session.",
            &mut seen,
        );
        assert_eq!(seen.usage.input_tokens, 2500);
        assert_eq!(seen.usage.output_tokens, 120);
        assert_eq!(seen.usage.cost_usd, Some(0.0061));
    }
}
