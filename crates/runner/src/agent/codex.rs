//! Codex CLI (npm `@openai/codex`, pinned in `.ci/run`): `codex exec --json -` reads the
//! prompt on stdin and prints one JSON event per line (`item.started`/`item.completed`
//! for commands, file changes and messages, `turn.completed` with `usage`). The model
//! API is a custom model provider declared with `-c` (`base_url`, `env_key` naming the
//! variable that carries the credential, the Responses wire API). Its own sandbox is off
//! (`danger-full-access`): it needs user namespaces, which the runner's bubblewrap
//! sandbox (the real boundary) does not allow inside. It reads `AGENTS.md` from the
//! working directory itself. It reports tokens, not money, and takes no turn limit: the
//! runner counts its tool calls and stops it past the limit.

use super::{Invocation, Observation, summary};
use bg_agent_core::protocol::{AgentSpec, Usage};

const PROVIDER_ID: &str = "bg_agent";
const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// A TOML basic string (JSON's escapes are valid TOML for any string).
fn toml_string(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

pub fn invocation(agent: &AgentSpec, prompt: &str) -> Invocation {
    let base_url = agent
        .base_url
        .as_deref()
        .filter(|b| !b.is_empty())
        .unwrap_or(DEFAULT_BASE_URL);
    let mut argv: Vec<String> = [
        "codex",
        "exec",
        "--json",
        "--skip-git-repo-check",
        "--sandbox",
        "danger-full-access",
        "-c",
    ]
    .map(String::from)
    .to_vec();
    argv.push(format!("model_provider={}", toml_string(PROVIDER_ID)));
    for (key, value) in [
        ("name", toml_string("bg-agent")),
        ("base_url", toml_string(base_url)),
        ("env_key", toml_string("OPENAI_API_KEY")),
        ("wire_api", toml_string("responses")),
    ] {
        argv.push("-c".into());
        argv.push(format!("model_providers.{PROVIDER_ID}.{key}={value}"));
    }
    if let Some(model) = agent.model.as_deref().filter(|m| !m.is_empty()) {
        argv.push("-c".into());
        argv.push(format!("model={}", toml_string(model)));
    }
    // The prompt is read from stdin.
    argv.push("-".into());
    Invocation {
        argv,
        env: Vec::new(),
        credential_var: Some("OPENAI_API_KEY"),
        stdin: Some(prompt.to_owned()),
        home_files: Vec::new(),
    }
}

/// One `--json` event: a short line for the log; usage from `turn.completed`.
pub fn observe(line: &str, seen: &mut Observation) -> Option<String> {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
        return Some(line.to_owned());
    };
    match event["type"].as_str().unwrap_or_default() {
        "item.completed" => {
            let item = &event["item"];
            match item["type"].as_str().unwrap_or_default() {
                "agent_message" => Some(format!(
                    "codex: {}",
                    summary(item["text"].as_str().unwrap_or_default())
                )),
                "command_execution" => {
                    seen.turns += 1;
                    Some(format!(
                        "codex ran {} (exit {})",
                        summary(item["command"].as_str().unwrap_or_default()),
                        item["exit_code"]
                    ))
                }
                "file_change" => {
                    seen.turns += 1;
                    let paths: Vec<&str> = item["changes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["path"].as_str())
                        .collect();
                    Some(format!("codex changed {}", paths.join(", ")))
                }
                "error" => Some(format!(
                    "codex: {}",
                    summary(item["message"].as_str().unwrap_or_default())
                )),
                "reasoning" => None,
                other => {
                    seen.turns += 1;
                    Some(format!("codex: {other}"))
                }
            }
        }
        "turn.completed" => {
            let usage = &event["usage"];
            seen.usage = seen.usage.plus(Usage {
                input_tokens: usage["input_tokens"].as_u64().unwrap_or(0),
                output_tokens: usage["output_tokens"].as_u64().unwrap_or(0),
                cost_usd: None,
            });
            Some(format!(
                "Codex finished the turn: {} input and {} output tokens",
                seen.usage.input_tokens, seen.usage.output_tokens
            ))
        }
        "turn.failed" | "error" => {
            let message = event["error"]["message"]
                .as_str()
                .or(event["message"].as_str())
                .unwrap_or("an error");
            if event["type"] == "turn.failed" {
                seen.error = Some(format!("it failed: {}", summary(message)));
            }
            Some(format!("codex: {}", summary(message)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_is_declared_in_toml_and_the_prompt_goes_to_stdin() {
        let agent = AgentSpec {
            base_url: Some("http://127.0.0.1:9/v1".into()),
            model: Some("gpt-x".into()),
            ..AgentSpec::new(bg_agent_core::protocol::AgentProvider::Codex)
        };
        let invocation = invocation(&agent, "do \"it\"");
        assert_eq!(
            invocation.argv.join(" "),
            "codex exec --json --skip-git-repo-check --sandbox danger-full-access \
             -c model_provider=\"bg_agent\" -c model_providers.bg_agent.name=\"bg-agent\" \
             -c model_providers.bg_agent.base_url=\"http://127.0.0.1:9/v1\" \
             -c model_providers.bg_agent.env_key=\"OPENAI_API_KEY\" \
             -c model_providers.bg_agent.wire_api=\"responses\" -c model=\"gpt-x\" -"
        );
        assert_eq!(invocation.stdin.as_deref(), Some("do \"it\""));
    }

    #[test]
    fn usage_comes_from_completed_turns() {
        let mut seen = Observation::default();
        observe(
            r#"{"type":"item.completed","item":{"id":"i","type":"command_execution","command":"ls","exit_code":0}}"#,
            &mut seen,
        );
        observe(
            r#"{"type":"turn.completed","usage":{"input_tokens":200,"cached_input_tokens":0,"output_tokens":40}}"#,
            &mut seen,
        );
        assert_eq!(seen.turns, 1);
        assert_eq!(
            (seen.usage.input_tokens, seen.usage.output_tokens),
            (200, 40)
        );
        assert_eq!(seen.usage.cost_usd, None);
    }
}
